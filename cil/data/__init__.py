"""Data for class-incremental learning: data sets, FACIL's scenario, and on-device augmentation.

``load_dataset(name, root)`` gives a :class:`Dataset` (uint8 images, in memory or decoded from files
on demand); ``make_scenario(dataset, num_tasks, nc_first_task, seed)`` cuts it into tasks;
``augment`` and ``normalize`` prepare batches on the training device.
"""

from cil.data.augment import augment, normalize
from cil.data.dataset import ICARL_CLASS_ORDER, AugmentSpec, Dataset
from cil.data.datasets import DATASET_NAMES, load_dataset
from cil.data.errors import DataError
from cil.data.imageset import FileImageSet, ImageSet, TensorImageSet
from cil.data.scenario import Scenario, classes_per_task, make_scenario

__all__ = [
    "DATASET_NAMES",
    "ICARL_CLASS_ORDER",
    "AugmentSpec",
    "DataError",
    "Dataset",
    "FileImageSet",
    "ImageSet",
    "Scenario",
    "TensorImageSet",
    "augment",
    "classes_per_task",
    "load_dataset",
    "make_scenario",
    "normalize",
]
