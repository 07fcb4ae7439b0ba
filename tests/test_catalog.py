"""The declarations every list of names reads: the data-set and network catalog (cil.catalog) and the loss
family's table (cil.approaches.family), tied to the code that implements each row."""

from __future__ import annotations

import dataclasses

import pytest

from cil import catalog, losses
from cil.approaches import family
from cil.approaches.registry import SPECS
from cil.config import ConfigError, ExperimentConfig, LossConfig
from cil.data import load_dataset
from cil.networks import make_backbone


@pytest.mark.parametrize("name", catalog.DATASET_NAMES)
def test_every_data_set_row_names_a_loader_and_valid_policies(name: str) -> None:
    d = catalog.DATASETS[name]
    assert callable(d.load())  # "module:function" resolves
    assert d.network in catalog.NETWORKS and d.augment in catalog.AUGMENT_POLICIES and d.source in catalog.SOURCES
    assert d.fixed_order is None or sorted(d.fixed_order) == list(range(d.classes))
    assert ExperimentConfig.from_dict({"data.dataset": name, "data.num_tasks": 2}).model.network == d.network


@pytest.mark.parametrize("name", catalog.NETWORK_NAMES)
def test_every_network_row_builds_a_backbone(name: str) -> None:
    backbone, dim = make_backbone(name, 3, 32)
    assert dim == backbone.out_dim and hasattr(backbone, "last_relu")


def test_a_loaded_data_set_takes_its_statistics_and_augmentation_from_its_row() -> None:
    ds = load_dataset("synthetic:classes=4,train=5,test=2,size=16", None)
    assert ds.num_classes == 4 and ds.augment.pad == 2 and ds.augment.crop == "shift"  # policy shift: size // 8
    assert len(ds.mean) == 3  # computed from the images: the row has no statistics
    with pytest.raises(ConfigError, match="'digits' has no parameters: only synthetic takes"):
        ExperimentConfig.from_dict({"data.dataset": "digits:classes=3"})


def test_the_loss_weights_and_the_family_functions_come_from_the_term_table() -> None:
    weights = [t.weight for t in family.TERMS if t.weight]
    assert [f.name for f in dataclasses.fields(LossConfig)] == ["lamb", "T", *weights, "bce_pred_with_exemplars"]
    for term in family.DISTILLATION_TERMS:  # each distillation row has its function in cil.losses
        assert callable(getattr(losses, term.name))
    # every family's variants are the same five suffixes, in the registry
    for name in ("lwf", "lwm", "lucir"):
        assert [s for s in SPECS if s == name or s.startswith(name + "-")] == \
            [name, *(name + v.suffix for v in family.VARIANTS)]
