"""The ``Dataset`` record, what a loader is given (:class:`LoadRequest`) and the training augmentation
of a data set's policy (the per-data-set constants are rows of :mod:`cil.catalog`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cil.catalog import AUGMENT_MODES, dataset_spec
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

    ``facil``: the data set's policy in the catalog: FACIL's training transform for the data sets FACIL
    configures (cifar100: Pad(4), RandomResizedCrop(32), flip; imagenet100 and folder: RandomResizedCrop
    of the stored image, flip; mnist and svhn: none) and this project's own choice for the others
    (digits: none; synthetic: pad ``size // 8``, shift crop, flip). ``crop``: the same with every resized
    crop replaced by a translation-only crop of the image padded by ``size // 8`` (4 at 32x32).
    ``none``: no augmentation.
    """
    if mode not in AUGMENT_MODES:
        raise ValueError(f"augment mode {mode!r} is not valid: choose one of {', '.join(AUGMENT_MODES)}")
    spec = dataset_spec(dataset)
    if mode == "none" or spec.augment == "none":
        return AugmentSpec()
    if spec.augment == "shift" or mode == "crop":
        return AugmentSpec(pad=max(1, image_size // 8), crop="shift", flip=True)
    return AugmentSpec(pad=spec.augment_pad, crop="resized", flip=True)


@dataclass(frozen=True)
class LoadRequest:
    """What a catalog loader is given: the data root (``./data`` when none was given, for the data sets
    that download), the parsed parameters of the name (``{}`` without any), whether it may download,
    the stored image size asked for (None: the data set's own) and the decoded-image cache's folder."""

    root: Path
    params: dict[str, int]
    download: bool = True
    image_size: int | None = None
    cache_dir: str | os.PathLike | None = None


@dataclass
class Dataset:
    """A loaded data set: train and test image sets plus what the model needs to know about them.

    ``class_order`` is set only when a fixed order was asked for (``fixed_class_order=True``); the
    scenario then uses it instead of a seeded shuffle, as FACIL does for ``cifar100_icarl``.
    ``mean``/``std`` (when the catalog has the data set's statistics) and ``augment`` are filled from the
    catalog by :func:`cil.data.load_dataset`; loaders set what depends on the images.
    """

    name: str
    train: ImageSet
    test: ImageSet
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    class_order: list[int] | None = None
    class_names: list[str] | None = None


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units, rounded (for digits and synthetic)."""
    x = images.to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    mean = tuple(round(float(v), 4) for v in x.mean(1))
    std = tuple(round(max(float(v), 1e-3), 4) for v in x.std(1))
    return mean, std
