"""Config keys of the data and model sections that depend on the data set: data.augment and model.network."""

import pytest

from cil.config import AUGMENT_MODES, ConfigError, ExperimentConfig


def test_augment_defaults_to_facil_and_bad_modes_name_the_valid_ones():
    assert ExperimentConfig().data.augment == "facil" and AUGMENT_MODES == ("facil", "crop", "none")
    assert ExperimentConfig.from_dict({"data.augment": "crop"}).to_flat()["data.augment"] == "crop"
    with pytest.raises(ConfigError, match="data.augment = 'zoom' is not valid: choose one of facil, crop, none"):
        ExperimentConfig.from_dict({"data.augment": "zoom"})


def test_experiment_trains_with_the_configured_augmentation():
    from cil.loop import Experiment

    cfg = ExperimentConfig.from_dict({"data.dataset": "synthetic", "data.augment": "none", "run.device": "cpu"})
    assert not Experiment(cfg).dataset.augment.active


def test_fp32_by_default_and_in_the_paper_presets():
    import os

    from tune.spec import load_spec

    assert ExperimentConfig().train.amp is False
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("cifar100_lwf_paper.yaml", "cifar100_lwf_lamb_optuna.yaml", "imagenet100_lwf.yaml"):
        base = load_spec(os.path.join(root, "tune", "presets", name)).base
        cfg = ExperimentConfig.from_dict({k: v for k, v in base.items() if k != "data.data_root"})
        assert cfg.train.amp is False and cfg.data.augment == "facil", name
