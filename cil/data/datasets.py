"""``load_dataset``: one entry point from a data set's name to a :class:`~cil.data.dataset.Dataset`."""

from __future__ import annotations

import os
from pathlib import Path

from cil.config import AUGMENT_MODES
from cil.data import builtin, downloaded, folders
from cil.data.cache import DecodeCache
from cil.data.dataset import Dataset, training_augment
from cil.data.errors import DataError

DATASET_NAMES = ("digits", "cifar100", "mnist", "svhn", "imagenet100", "folder", "synthetic")
DEFAULT_ROOT = "data"  # used for downloadable sets when no root is given (FACIL: ../data)
_FIXED_ORDER = ("cifar100", "imagenet100")


def load_dataset(name: str, root: str | os.PathLike | None, *, download: bool = True,
                 image_size: int | None = None, fixed_class_order: bool = False,
                 augment: str = "facil", cache_dir: str | os.PathLike | None = None) -> Dataset:
    """Load a data set by name.

    ``root``: the data root. cifar100, mnist and svhn use torchvision's layouts under it
    (``cifar-100-python/``, ``MNIST/raw/``, ``{train,test}_32x32.mat``) and are downloaded there on
    first use when ``download`` is true (``root=None``: ``./data``). imagenet100 reads ``root`` or
    ``root/imagenet100``; folder reads ``root``. digits and synthetic ignore it.
    ``synthetic`` takes parameters in its name: ``synthetic:classes=20,train=50,test=10,size=16``.
    ``image_size`` overrides the native size (in-memory sets are resized once, bilinear).
    ``fixed_class_order`` asks for the data set's fixed order (cifar100, imagenet100: iCaRL's).
    ``augment`` picks the training augmentation (``facil``, ``crop`` or ``none``; see
    :func:`~cil.data.dataset.training_augment`). ``cache_dir``: where file-backed sets keep their
    decoded images (:mod:`cil.data.cache`; None: ``$CIL_CACHE_DIR`` or ``~/.cache/cil/decoded``).
    """
    if not isinstance(name, str):
        raise DataError(f"dataset name must be a string, got {name!r}; "
                        f"valid names: {', '.join(DATASET_NAMES)}")
    base, _, params = name.partition(":")
    if base not in DATASET_NAMES or (params and base != "synthetic"):
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    if augment not in AUGMENT_MODES:
        raise DataError(f"augment = {augment!r} is not valid: choose one of {', '.join(AUGMENT_MODES)}")
    if fixed_class_order and base not in _FIXED_ORDER:
        raise DataError(f"dataset {base!r} has no fixed class order "
                        f"(only {', '.join(_FIXED_ORDER)} have one)")

    ds = _load(base, params, root, download, image_size, fixed_class_order, cache_dir)
    if augment != "facil":
        ds.augment = training_augment(base, augment, ds.image_size)
    return ds


def _load(base: str, params: str, root: str | os.PathLike | None, download: bool, image_size: int | None,
          fixed_class_order: bool, cache_dir: str | os.PathLike | None) -> Dataset:
    if base == "digits":
        return builtin.load_digits(image_size)
    if base == "synthetic":
        return builtin.load_synthetic(params, image_size)
    if root is None:
        if base in ("imagenet100", "folder"):
            raise DataError(f"dataset {base!r} needs a data folder (root); expected {folders.LAYOUTS}")
        root = DEFAULT_ROOT
    path = Path(os.fspath(root)).expanduser()
    if base == "cifar100":
        return downloaded.load_cifar100(path, download, image_size, fixed_class_order)
    if base == "mnist":
        return downloaded.load_mnist(path, download, image_size)
    if base == "svhn":
        return downloaded.load_svhn(path, download, image_size)
    if base == "imagenet100":
        return folders.load_imagenet100(path, image_size, fixed_class_order, DecodeCache(cache_dir))
    return folders.load_folder(path, image_size, DecodeCache(cache_dir))
