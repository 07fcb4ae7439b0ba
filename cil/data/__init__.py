"""Data for class-incremental learning: data sets, FACIL's scenario, and on-device augmentation.

``load_dataset(name, root)`` gives a :class:`Dataset` (uint8 images, in memory or decoded from files
on demand); ``make_scenario(dataset, num_tasks, nc_first_task, seed)`` cuts it into tasks;
``augment`` and ``normalize`` prepare batches on the training device. The data sets themselves are rows
of the torch-free catalog :mod:`cil.catalog`.

The names below are loaded on first use, so importing a torch-free submodule (``cil.data.errors``, which
the catalog and the config use) does not import torch.
"""

from __future__ import annotations

from cil.extras import lazy_attributes

_LAZY = {
    "DATASET_NAMES": "cil.catalog",
    "ICARL_CLASS_ORDER": "cil.catalog",
    "AugmentSpec": "cil.data.dataset",
    "DataError": "cil.data.errors",
    "Dataset": "cil.data.dataset",
    "FileImageSet": "cil.data.imageset",
    "ImageSet": "cil.data.imageset",
    "Scenario": "cil.data.scenario",
    "TensorImageSet": "cil.data.imageset",
    "augment": "cil.data.augment",
    "classes_per_task": "cil.data.scenario",
    "load_dataset": "cil.data.datasets",
    "make_scenario": "cil.data.scenario",
    "normalize": "cil.data.augment",
}

__all__ = list(_LAZY)


__getattr__ = lazy_attributes(__name__, _LAZY)
