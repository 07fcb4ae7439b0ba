"""The experiment config: round trip, presets, and one clear error per bad value."""

import re

import pytest

from cil.approaches.registry import SPECS
from cil.config import ConfigError, ExperimentConfig, valid_keys


def test_round_trip_nested_and_dotted():
    cfg = ExperimentConfig.from_dict({"approach": "lwf-sr", "loss": {"lamb": 2}, "train.lr": 0.05})
    assert ExperimentConfig.from_dict(cfg.to_dict()) == cfg
    assert ExperimentConfig.from_dict(cfg.to_flat()) == cfg
    assert set(cfg.to_flat()) == set(valid_keys())
    assert cfg.loss.lamb == 2.0 and isinstance(cfg.loss.lamb, float)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_presets_fill_unset_weights_and_overrides_win(name):
    memory = {"memory.num_exemplars": 20} if SPECS[name].needs_exemplars else {}
    cfg = ExperimentConfig.from_dict({"approach": name} | memory)
    for key, value in SPECS[name].loss.items():
        assert getattr(cfg.loss, key) == value
    if "w_task" not in SPECS[name].loss:  # an approach outside the loss family refuses its keys
        with pytest.raises(ConfigError, match=f"loss.w_task = 0.25 is set but approach '{name}' does not use it"):
            ExperimentConfig.from_dict({"approach": name, "loss.w_task": 0.25} | memory)
        return
    over = ExperimentConfig.from_dict({"approach": name, "loss.w_task": 0.25} | memory)
    assert over.loss.w_task == 0.25


def test_baselines_have_no_distillation():
    cfg = ExperimentConfig(approach="finetuning")
    assert cfg.loss.w_joint == cfg.loss.w_task == cfg.loss.lamb == 0.0


@pytest.mark.parametrize("values, fragment", [
    ({"los.lamb": 1}, "unknown config key 'los.lamb'; did you mean 'loss.lamb'"),
    ({"lamb": 1}, "did you mean 'loss.lamb'"),
    ({"data.num_tasks": 11}, "data.num_tasks = 11 is not valid: digits has 10 classes"),
    ({"data.nc_first_task": 9}, "data.nc_first_task = 9 is not valid"),
    ({"train.batch_size": 0}, "train.batch_size = 0 is not valid: must be > 0"),
    ({"loss.w_task": -1}, "loss.w_task = -1.0 is not valid: must be >= 0"),
    ({"approach": "lwf-x"}, "approach = 'lwf-x' is not valid"),
    ({"data.dataset": "digits:classes=4"}, "only synthetic takes parameters after ':'"),
    ({"data.dataset": "synthetic:colour=3"}, "synthetic parameter 'colour=3' is not valid"),
    ({"data.dataset": "synthetic:classes=8", "data.num_tasks": 9}, "synthetic:classes=8 has 8 classes"),
    ({"train.lr": "fast"}, "train.lr = 'fast' has the wrong type: expected float"),
    ({"train.nepochs": True}, "train.nepochs = True has the wrong type"),
    ({"memory.num_exemplars": 10, "memory.num_exemplars_per_class": 2}, "cannot both be set"),
    ({"run.device": "tpu"}, "run.device = 'tpu' is not valid"),
])
def test_bad_values_name_key_value_and_valid(values, fragment):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict(values)
    assert fragment in str(err.value)


def test_synthetic_takes_its_parameters_in_the_name():
    cfg = ExperimentConfig.from_dict({"data.dataset": "synthetic:classes=50,channels=1,size=8", "data.num_tasks": 25})
    assert cfg.data.dataset == "synthetic:classes=50,channels=1,size=8" and cfg.data.num_tasks == 25


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict({"train.batch_size": 0, "loss.T": -1})
    assert "train.batch_size" in str(err.value) and "loss.T" in str(err.value)


def test_fingerprint_ignores_machine_keys_only():
    a = ExperimentConfig.from_dict({"run.device": "cpu", "data.data_root": "/tmp/a"})
    b = ExperimentConfig.from_dict({"run.device": "auto", "data.data_root": "/tmp/b"})
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != a.replace(**{"loss.lamb": 3.0}).fingerprint()


def test_data_root_is_absolute():
    assert ExperimentConfig.from_dict({"data.data_root": "rel/dir"}).data.data_root.startswith("/")


@pytest.mark.parametrize("values, fragment", [
    ({"run.seed": -1}, "run.seed = -1 is not valid"),
    ({"run.device": "cuda:x"}, "run.device = 'cuda:x' is not valid"),
])
def test_more_bad_values(values, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        ExperimentConfig.from_dict(values)


def test_direct_construction_is_checked_too():
    from cil.config import DataConfig, TrainConfig

    with pytest.raises(ConfigError, match="data.num_tasks = '5' has the wrong type"):
        ExperimentConfig(data=DataConfig(num_tasks="5"))
    assert ExperimentConfig(train=TrainConfig(lr=1)).train.lr == 1.0 and isinstance(
        ExperimentConfig(train=TrainConfig(lr=1)).train.lr, float)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks a machine without CUDA")
def test_unavailable_cuda_is_a_config_error():
    with pytest.raises(ConfigError, match="run.device = 'cuda' is not available"):
        ExperimentConfig.from_dict({"run.device": "cuda"}).resolved_device()
