"""Check a data source before any training starts, cheaply: the layout, not every image.

A sweep calls this for each distinct data source of its trials before Ray starts, so a wrong path or
a half-copied folder is one clear error instead of every trial failing in turn. A corrupt image that
only shows when it is decoded later still fails its trial with a ``DataError`` naming the file.
"""

from __future__ import annotations

import os

from cil.catalog import dataset_params, dataset_spec
from cil.data.cache import decode_image
from cil.data.datasets import load_dataset
from cil.data.imageset import FileImageSet


def check_data_source(dataset: str, data_root: str | os.PathLike | None, *, image_size: int | None = None,
                      fixed_class_order: bool = False) -> None:
    """Raise ``DataError`` if ``dataset`` at ``data_root`` cannot be used as a trial would use it.

    Folder data sets (folder, imagenet100) have their whole layout checked (folders, lists, every
    listed file present) and the first image of each split decoded; data sets torchvision downloads
    are read (and fetched once here when missing, instead of by every trial); bundled ones (digits,
    synthetic) only have their parameters parsed.
    """
    spec = dataset_spec(str(dataset))
    dataset_params(str(dataset))
    if spec.source == "bundled":  # generated or shipped with a package: nothing to read
        return
    ds = load_dataset(dataset, data_root, image_size=image_size, fixed_class_order=fixed_class_order)
    for split in (ds.train, ds.test):
        if isinstance(split, FileImageSet) and len(split):  # decoded directly: the cache is the trials' node's
            decode_image(split.paths[0], split.image_size)
