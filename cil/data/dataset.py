"""The ``Dataset`` record and the per-data-set constants FACIL uses (normalisation, augmentation, order)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cil.data.imageset import ImageSet


@dataclass(frozen=True)
class AugmentSpec:
    """Training-time augmentation, applied on the device by :func:`cil.data.augment.augment`.

    ``pad`` > 0 means: zero-pad every side by ``pad`` pixels, then crop a random window of the
    original size (FACIL's ``Pad`` + crop). ``flip``: random horizontal flip with p = 0.5.
    """

    pad: int = 0
    flip: bool = False

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip


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
