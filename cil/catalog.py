"""Every data set and every network, as data: the one list the config, the loaders, the network factory,
the CLI and the docs read (torch-free, like :mod:`cil.approaches.registry`: a config or a sweep spec is
validated without importing torch).

Adding a data set: write its loader (``cil/data/<module>.py``, a function of a
:class:`cil.data.dataset.LoadRequest` that returns a :class:`cil.data.dataset.Dataset`) and add one
:class:`DatasetSpec` row to :data:`DATASETS`. Adding a network: write its module class in
``cil/networks.py`` (built as ``Class(in_channels, image_size)``, with ``out_dim`` and ``last_relu``) and
add one :class:`NetworkSpec` row to :data:`NETWORKS`. ``docs/development.md`` has both recipes.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cil.data.errors import DataError

#: data.augment: FACIL's training transform per data set, translation-only crops, or nothing (what each
#: means for each data set: the ``augment`` column of :data:`DATASETS`, applied by
#: cil.data.dataset.training_augment)
AUGMENT_MODES = ("facil", "crop", "none")
#: a data set's augmentation policy under ``data.augment: facil``: none; ``shift``: pad ``size // 8``,
#: random translation-only crop, flip; ``resized``: pad ``augment_pad``, FACIL's RandomResizedCrop, flip
#: (``data.augment: crop`` turns ``resized`` into ``shift``)
AUGMENT_POLICIES = ("none", "shift", "resized")
#: where a data set's images come from: generated or shipped with a package (nothing to check before a
#: sweep), downloaded by torchvision into the data root on first use, or files under the data root
SOURCES = ("bundled", "download", "files")

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


@dataclass(frozen=True)
class DatasetSpec:
    """One data set. ``classes``: its number of classes where it is known before loading (None: read
    from the files; a ``params`` parser may change it). ``network``: ``model.network`` when the config
    leaves it unset (FACIL's choice for its data sets). ``fixed_order``: the class order
    ``data.fixed_class_order: true`` asks for (None: the data set has none). ``stats``: the normalisation
    (mean, std) per channel (None: computed from the training images by the loader). ``augment`` and
    ``augment_pad``: the policy of :data:`AUGMENT_POLICIES`. ``loader``: ``"module:function"``, imported
    when the data set is loaded. ``params``: the parser of the parameters after ``:`` in the name
    (``synthetic:classes=50``), torch-free, returning at least ``classes`` (None: takes none).
    ``source``: one of :data:`SOURCES`."""

    name: str
    loader: str
    classes: int | None
    network: str
    augment: str
    augment_pad: int = 0
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    fixed_order: tuple[int, ...] | None = None
    params: Callable[[str], dict[str, int]] | None = None
    source: str = "bundled"
    doc: str = ""

    @property
    def needs_root(self) -> bool:
        """Read from ``data.data_root``: no default folder to download into."""
        return self.source == "files"

    def load(self) -> Callable[..., Any]:
        """The loader function (imports its module, and with it torch)."""
        module, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module), function)


@dataclass(frozen=True)
class NetworkSpec:
    """One backbone: ``impl`` is ``"module:Class"``, built as ``Class(in_channels, image_size)``."""

    name: str
    impl: str
    doc: str = ""

    def build(self) -> Callable[[int, int], Any]:
        module, _, cls = self.impl.partition(":")
        return getattr(importlib.import_module(module), cls)


SYNTHETIC_DEFAULTS = {"classes": 10, "train": 100, "test": 20, "channels": 3, "size": 32, "seed": 0}


def parse_synthetic(params: str) -> dict[str, int]:
    """Parse ``key=value,...`` after ``synthetic:`` (keys: classes, train, test, channels, size, seed)."""
    out = dict(SYNTHETIC_DEFAULTS)
    for item in filter(None, (p.strip() for p in params.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in SYNTHETIC_DEFAULTS:
            raise DataError(f"synthetic parameter {item!r} is not valid: expected key=value with key in "
                            f"{sorted(SYNTHETIC_DEFAULTS)}")
        try:
            out[key] = int(value)
        except ValueError:
            raise DataError(f"synthetic parameter {key}={value!r} is not an integer") from None
        if out[key] < (0 if key == "seed" else 1):
            raise DataError(f"synthetic parameter {key}={out[key]} must be positive")
    return out


_DATASETS = [
    DatasetSpec("digits", "cil.data.builtin:load_digits", 10, "convnet", "none",
                doc="scikit-learn's 1,797 real 8x8 digits; every 5th image of each class is the test split"),
    DatasetSpec("cifar100", "cil.data.downloaded:load_cifar100", 100, "resnet32", "resized", augment_pad=4,
                stats=CIFAR100_STATS, fixed_order=tuple(ICARL_CLASS_ORDER), source="download",
                doc="downloaded by torchvision into the data root (`cifar-100-python/`)"),
    DatasetSpec("mnist", "cil.data.downloaded:load_mnist", 10, "resnet32", "none", stats=MNIST_STATS, source="download",
                doc="downloaded by torchvision into the data root (`MNIST/raw/`)"),
    DatasetSpec("svhn", "cil.data.downloaded:load_svhn", 10, "resnet32", "none", stats=SVHN_STATS, source="download",
                doc="downloaded by torchvision into the data root (`train_32x32.mat`, `test_32x32.mat`)"),
    DatasetSpec("imagenet100", "cil.data.folders:load_imagenet100", 100, "resnet18", "resized",
                stats=IMAGENET_STATS, fixed_order=tuple(ICARL_CLASS_ORDER), source="files",
                doc="an ImageFolder tree or FACIL's lists under the data root, stored at 224"),
    DatasetSpec("folder", "cil.data.folders:load_folder", None, "resnet32", "resized", stats=IMAGENET_STATS,
                source="files", doc="any ImageFolder tree with train/ and test/ (or val/), stored at 32"),
    DatasetSpec("synthetic", "cil.data.builtin:load_synthetic", 10, "convnet", "shift", params=parse_synthetic,
                doc="seeded images around class-specific patterns; parameters after `:`, e.g. "
                    "`synthetic:classes=50,channels=1,size=8,train=40` (also `test`, `seed`)"),
]
_NETWORKS = [
    NetworkSpec("convnet", "cil.networks:ConvNet", "two conv blocks and a 128-d fully connected layer, for tiny "
                                                   "images"),
    NetworkSpec("resnet32", "cil.networks:ResNet32", "FACIL's CIFAR ResNet-32, 64-d features"),
    NetworkSpec("resnet18", "cil.networks:ResNet18", "torchvision's ResNet-18, 512-d features"),
]

DATASETS: Mapping[str, DatasetSpec] = MappingProxyType({d.name: d for d in _DATASETS})
NETWORKS: Mapping[str, NetworkSpec] = MappingProxyType({n.name: n for n in _NETWORKS})
DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)
NETWORK_NAMES: tuple[str, ...] = tuple(NETWORKS)


def dataset_spec(name: str) -> DatasetSpec:
    """The row of data set ``name`` (parameters after ``:`` ignored); DataError naming the valid names."""
    spec = DATASETS.get(name.partition(":")[0]) if isinstance(name, str) else None
    if spec is None:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    return spec


def dataset_params(name: str) -> dict[str, int]:
    """The parsed parameters of ``name`` (``{}`` without any); DataError when they are not valid."""
    spec, (base, sep, params) = dataset_spec(name), name.partition(":")
    if spec.params is None:
        if sep:
            takes = ", ".join(d.name for d in _DATASETS if d.params is not None)
            raise DataError(f"dataset {base!r} has no parameters: only {takes} takes parameters after ':'")
        return {}
    return spec.params(params)


def num_classes(name: str) -> int | None:
    """Classes of data set ``name`` where known before loading (None: unknown name, or read from files)."""
    try:
        return dataset_params(name).get("classes", dataset_spec(name).classes)
    except DataError:
        return None


def dataset_problem(name: str) -> str | None:
    """a name of the data-set catalog ([Data sets](cli.md#data-sets)), `synthetic` with parameters after `:`"""
    if name.partition(":")[0] not in DATASETS:
        close = difflib.get_close_matches(name, DATASET_NAMES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown data set{hint}: choose one of {', '.join(DATASET_NAMES)}"
    try:
        dataset_params(name)
    except DataError as err:
        return str(err)
    return None
