"""The experiment config, torch-free: one validated dataclass tree with dotted names.

The package's modules, in the order they build on each other:

- :mod:`cil.config.schema`: the shared sections (``data``, ``model``, ``train``, ``loss``, ``memory``,
  ``run``, ``gridsearch``), each key declared once with its metadata (check, FACIL flag) and docstring;
- :mod:`cil.config.coercion`: dotted and nested keys, each value checked against its field's type;
- :mod:`cil.config.validation`: the ``check`` vocabulary, the problem collector (:class:`Problems`, also
  used by ``tune.spec``) and the rules that relate several keys;
- :mod:`cil.config.presets`: what the approach and the data set resolve (preset weights, defaults);
- :mod:`cil.config.experiment`: :class:`ExperimentConfig`, built from all of the above.

The approach sections are declared in :mod:`cil.approaches.registry`, data sets and networks in
:mod:`cil.catalog`, the device logic is :mod:`cil.device`.
"""

from cil.catalog import AUGMENT_MODES
from cil.catalog import DATASET_NAMES as DATASETS
from cil.catalog import DATASETS as _CATALOG
from cil.catalog import NETWORK_NAMES as NETWORKS
from cil.config.coercion import flatten
from cil.config.experiment import _HINTS, _LEAVES, ExperimentConfig, _CoreConfig, leaf_types, valid_keys
from cil.config.presets import SECTION_TYPES
from cil.config.schema import (
    MACHINE_KEYS,
    SELECTIONS,
    SGD_IMPLS,
    SHARED_SECTIONS,
    DataConfig,
    GridSearchConfig,
    LossConfig,
    MemoryConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    default_data_root,
)
from cil.config.validation import Problems
from cil.errors import ConfigError

# Views of the catalog under the names this module had before it was a package (read from cil.catalog,
# never written here): the data sets, the networks, each data set's default network and known classes.
DEFAULT_NETWORKS = {d.name: d.network for d in _CATALOG.values()}
KNOWN_NUM_CLASSES = {d.name: d.classes for d in _CATALOG.values() if d.classes is not None}

# the approach sections' all-optional views, picklable by name (their __module__ is this package)
globals().update({t.__name__: t for t in SECTION_TYPES.values()})

__all__ = [
    "AUGMENT_MODES",
    "DATASETS",
    "DEFAULT_NETWORKS",
    "KNOWN_NUM_CLASSES",
    "NETWORKS",
    "MACHINE_KEYS",
    "SELECTIONS",
    "SGD_IMPLS",
    "SHARED_SECTIONS",
    "_HINTS",
    "_LEAVES",
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "GridSearchConfig",
    "LossConfig",
    "MemoryConfig",
    "ModelConfig",
    "Problems",
    "RunConfig",
    "TrainConfig",
    "_CoreConfig",
    "default_data_root",
    "flatten",
    "leaf_types",
    "valid_keys",
]
