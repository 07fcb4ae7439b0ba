"""The ``Dataset`` record and the per-data-set constants FACIL uses (normalisation, augmentation, order)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cil.config import AUGMENT_MODES
from cil.data.imageset import ImageSet

CROPS = ("shift", "resized")


@dataclass(frozen=True)
class AugmentSpec:
    """Training-time augmentation, applied on the device by :func:`cil.data.augment.augment`.

    ``pad``: zero-pad every side by ``pad`` pixels first (FACIL's ``Pad``). ``crop``: how a window of
    the original size is taken from the (padded) image: ``"shift"`` cuts it at a random offset
    (translation only; needs ``pad`` > 0 to do anything), ``"resized"`` is FACIL's
    ``RandomResizedCrop``: a box of random area (fraction ``scale`` of the padded image) and aspect
    ratio (``ratio``, width / height) resized bilinearly to the original size. ``flip``: random
    horizontal flip with p = 0.5.
    """

    pad: int = 0
    crop: str = "shift"
    flip: bool = False
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"AugmentSpec.crop = {self.crop!r} is not valid: choose one of {', '.join(CROPS)}")
        if self.pad < 0:
            raise ValueError(f"AugmentSpec.pad = {self.pad!r} is not valid: must be >= 0")
        lo, hi = self.scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"AugmentSpec.scale = {self.scale!r} is not valid: need 0 < low <= high <= 1")
        lo, hi = self.ratio
        if not 0 < lo <= hi:
            raise ValueError(f"AugmentSpec.ratio = {self.ratio!r} is not valid: need 0 < low <= high")

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip or self.crop == "resized"


def training_augment(dataset: str, mode: str, image_size: int) -> AugmentSpec:
    """The training augmentation of ``dataset`` under ``data.augment = mode`` (see cil.config).

    ``facil``: FACIL's training transform for the data sets FACIL configures (cifar100: Pad(4),
    RandomResizedCrop(32), flip; imagenet100 and folder: RandomResizedCrop of the stored image, flip;
    mnist and svhn: none) and this project's own choice for the others (digits: none; synthetic:
    pad ``size // 8``, shift crop, flip). ``crop``: the same with every resized crop replaced by a
    translation-only crop of the image padded by ``size // 8`` (4 at 32x32). ``none``: no augmentation.
    """
    if mode not in AUGMENT_MODES:
        raise ValueError(f"augment mode {mode!r} is not valid: choose one of {', '.join(AUGMENT_MODES)}")
    pad = max(1, image_size // 8)
    if mode == "none" or dataset in ("digits", "mnist", "svhn"):
        return AugmentSpec()
    if dataset == "synthetic" or mode == "crop":
        return AugmentSpec(pad=pad, crop="shift", flip=True)
    if dataset == "cifar100":
        return AugmentSpec(pad=4, crop="resized", flip=True)
    return AugmentSpec(crop="resized", flip=True)  # imagenet100, folder


@dataclass
class Dataset:
    """A loaded data set: train and test image sets plus what the model needs to know about them.

    ``class_order`` is set only when a fixed order was asked for (``fixed_class_order=True``); the
    scenario then uses it instead of a seeded shuffle, as FACIL does for ``cifar100_icarl``.
    """

    name: str
    train: ImageSet
    test: ImageSet
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: AugmentSpec
    class_order: list[int] | None = None
    class_names: list[str] | None = None


# FACIL's normalisation constants (src/datasets/dataset_config.py). SVHN: FACIL resizes SVHN to 224
# and uses ImageNet's statistics; we keep SVHN at 32x32, so its own statistics fit better.
CIFAR100_STATS = ((0.5071, 0.4866, 0.4409), (0.2009, 0.1984, 0.2023))
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MNIST_STATS = ((0.1307,), (0.3081,))
SVHN_STATS = ((0.4377, 0.4438, 0.4728), (0.198, 0.201, 0.197))

# iCaRL's fixed CIFAR-100 class order, as FACIL's dataset_config.py gives it for `cifar100_icarl`
# (FACIL uses the same list for `imagenet_subset`, the 100-class ImageNet subset).
ICARL_CLASS_ORDER = [
    68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38, 58, 70, 77, 1, 85,
    19, 17, 50, 28, 53, 13, 81, 45, 82, 6, 59, 83, 16, 15, 44, 91, 41, 72, 60, 79, 52, 20, 10, 31, 54,
    37, 95, 14, 71, 96, 98, 97, 2, 64, 66, 42, 22, 35, 86, 24, 34, 87, 21, 99, 0, 88, 27, 18, 94, 11,
    12, 47, 25, 30, 46, 62, 69, 36, 61, 7, 63, 75, 5, 32, 4, 51, 48, 73, 93, 39, 67, 29, 49, 57, 33,
]
assert sorted(ICARL_CLASS_ORDER) == list(range(100))


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, rounded (for digits and synthetic)."""
    x = images.to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    mean = tuple(round(float(v), 4) for v in x.mean(1))
    std = tuple(round(max(float(v), 1e-3), 4) for v in x.std(1))
    return mean, std
