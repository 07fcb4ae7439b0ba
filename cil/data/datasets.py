"""``load_dataset``: one entry point from a data set's name to a :class:`~cil.data.dataset.Dataset`,
through the data set's row of the catalog (:data:`cil.catalog.DATASETS`)."""

from __future__ import annotations

import os
from pathlib import Path

from cil.catalog import AUGMENT_MODES, DATASET_NAMES, dataset_params, dataset_spec
from cil.data.dataset import Dataset, LoadRequest, training_augment
from cil.data.errors import DataError
from cil.data.folders import LAYOUTS

DEFAULT_ROOT = "data"  # used for downloadable sets when no root is given (FACIL: ../data)


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
    The data set's row of the catalog gives its loader, statistics, augmentation and fixed order.
    """
    if not isinstance(name, str):
        raise DataError(f"dataset name must be a string, got {name!r}; "
                        f"valid names: {', '.join(DATASET_NAMES)}")
    spec = dataset_spec(name)
    params = dataset_params(name)
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int)
                                   or image_size < 1):
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    if augment not in AUGMENT_MODES:
        raise DataError(f"augment = {augment!r} is not valid: choose one of {', '.join(AUGMENT_MODES)}")
    if fixed_class_order and spec.fixed_order is None:
        with_order = ", ".join(d for d in DATASET_NAMES if dataset_spec(d).fixed_order is not None)
        raise DataError(f"dataset {spec.name!r} has no fixed class order (only {with_order} have one)")
    if root is None:
        if spec.needs_root:
            raise DataError(f"dataset {spec.name!r} needs a data folder (root); expected {LAYOUTS}")
        root = DEFAULT_ROOT
    request = LoadRequest(Path(os.fspath(root)).expanduser(), params, download, image_size, cache_dir)
    ds = spec.load()(request)
    if spec.stats is not None:
        ds.mean, ds.std = spec.stats
    ds.augment = training_augment(spec.name, augment, ds.image_size)
    if fixed_class_order:
        if ds.num_classes != len(spec.fixed_order):
            raise DataError(f"the fixed {spec.name} class order needs {len(spec.fixed_order)} classes; "
                            f"{str(request.root)!r} has {ds.num_classes}")
        ds.class_order = list(spec.fixed_order)
    return ds
