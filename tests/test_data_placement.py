"""Where splits live (device or host), chosen by size against the budget, with the same numbers either way;
and the next task decoded in the background."""

from __future__ import annotations

import time

import pytest
import torch
from test_data_cache import read_log

from benchmarks.fake_imagenet import write_fake_imagenet
from cil import ExperimentConfig, run
from cil.config import ConfigError
from cil.data import load_dataset, make_scenario
from cil.data.placement import GIB, DeviceScenario, memory_budget

CLASSES, TRAIN, TEST, SIZE = 6, 8, 3, 16
IMAGE = 3 * SIZE * SIZE + 8  # bytes per sample as the placement counts them: uint8 image, int64 label


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_fake_imagenet(tmp_path_factory.mktemp("tree"), classes=CLASSES, train=TRAIN, test=TEST,
                               width=40, height=30, seed=5)


def _run(cfg: dict, log: list[str] | None = None):
    results = list(run(ExperimentConfig.from_dict(cfg), log=None if log is None else log.append))
    last = results[-1]
    return last.acc_taw, last.acc_tag, last.state["model"], [r.task_rows for r in results]


def _same(a, b) -> None:
    assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
    assert a[2].keys() == b[2].keys() and all(torch.equal(a[2][k], b[2][k]) for k in a[2])
    drop = {"train_seconds", "data.on_device", "data.device_memory_budget"}
    assert [[{k: v for k, v in r.items() if k not in drop} for r in rows] for rows in a[3]] == \
           [[{k: v for k, v in r.items() if k not in drop} for r in rows] for rows in b[3]]


def test_joint_trains_with_host_data_when_the_budget_is_below_the_training_set(tree, tmp_path):
    base = {"approach": "joint", "data.dataset": "folder", "data.data_root": str(tree), "data.image_size": SIZE,
            "data.num_tasks": 3, "data.cache_dir": str(tmp_path / "cache"), "model.network": "convnet",
            "train.nepochs": 2, "run.device": "cpu"}
    training_set = CLASSES * TRAIN * IMAGE
    budget = training_set * 3 // 4  # the tests and task 0 fit beside each other; the union of all tasks does not
    log: list[str] = []
    host = _run(base | {"data.device_memory_budget": budget / GIB}, log)
    moved = [line for line in log if "kept on the host" in line]
    assert any(line.startswith("tasks [0, 1, 2] train:") for line in moved), log
    assert not any(line.startswith("tasks [0] train:") for line in moved), log  # task 0 fitted
    _same(host, _run(base))  # no budget on the CPU: everything "on the device"
    _same(host, _run(base | {"data.on_device": False}))  # the override: everything on the host


@pytest.mark.parametrize("approach, extra", [
    ("bic", {"memory.num_exemplars_per_class": 4}),
    ("il2m", {"memory.num_exemplars_per_class": 4}),
    ("eeil", {"memory.num_exemplars_per_class": 4}),
    ("ewc", {}),
])
def test_host_and_device_placement_give_the_same_numbers(approach, extra):
    """Approaches that index the training data themselves (held-out exemplars, class statistics,
    balanced sets, importance batches) get bit-equal results from host-resident data."""
    cfg = {"approach": approach, "data.dataset": "digits", "data.num_tasks": 2, "model.network": "convnet",
           "train.nepochs": 1, "run.device": "cpu"} | extra
    _same(_run(cfg | {"data.on_device": True}), _run(cfg | {"data.on_device": False}))


def test_the_automatic_choice_counts_what_is_already_on_the_device():
    ds = load_dataset("synthetic:classes=4,train=10,test=5,size=8", None)
    sc = make_scenario(ds, 2, None, seed=0, val_fraction=0.0)
    sample = 3 * 8 * 8 + 8
    cpu = torch.device("cpu")
    ds_sc = DeviceScenario(sc, cpu, None, budget=40 * sample)  # 20 test images + task 0's 20 training images
    for t in range(2):
        ds_sc.task_split(t, "test")
    ds_sc.task_split(0, "train")
    ds_sc.union_split([0, 1], "train")
    assert ds_sc.placements == {((0,), "test"): "device", ((1,), "test"): "device",
                                ((0,), "train"): "device", ((0, 1), "train"): "host"}
    # the forced placements ignore the budget
    assert DeviceScenario(sc, cpu, False, budget=None).task_split(0, "test") is not None
    forced = DeviceScenario(sc, cpu, True, budget=0)
    forced.union_split([0, 1], "train")
    assert forced.placements == {((0, 1), "train"): "device"}


def test_the_budget_comes_from_the_config_or_the_device():
    assert memory_budget(torch.device("cpu"), 1.5) == int(1.5 * GIB)
    assert memory_budget(torch.device("cpu"), 0) == 0
    assert memory_budget(torch.device("cpu"), None) is None  # the CPU: the data is on the host anyway


def test_config_keeps_old_placements_valid_and_checks_the_budget():
    for value in (True, False, None):
        assert ExperimentConfig.from_dict({"data.on_device": value}).data.on_device is value
    cfg = ExperimentConfig()
    assert cfg.data.on_device is None and cfg.data.device_memory_budget is None and cfg.data.cache_dir is None
    with pytest.raises(ConfigError, match=r"data.device_memory_budget = -1.0 is not valid"):
        ExperimentConfig.from_dict({"data.device_memory_budget": -1})
    # where a run happens does not change what it computes: the trial id stays
    moved = ExperimentConfig.from_dict({"data.on_device": False, "data.device_memory_budget": 2,
                                        "data.cache_dir": "/elsewhere"})
    assert moved.fingerprint() == cfg.fingerprint()


def test_the_next_task_is_decoded_while_the_current_one_trains(tree, tmp_path):
    cache = tmp_path / "cache"
    ds = load_dataset("folder", tree, image_size=SIZE, cache_dir=cache)
    sc = DeviceScenario(make_scenario(ds, 3, None, seed=0, val_fraction=0.0), torch.device("cpu"))
    sc.task_split(0, "train")  # decodes task 0's 2 classes, then starts task 1's in the background
    deadline = time.monotonic() + 120
    while len(read_log(cache)) < 4:  # nobody asks for task 1: the prefetch decodes it
        assert time.monotonic() < deadline, read_log(cache)
        time.sleep(0.05)
    x, _ = sc.task_split(1, "train")
    assert len(x) == 2 * TRAIN and len(read_log(cache)) == 4  # read, not decoded again
    sc.task_split(2, "train")  # the last task: nothing left to prefetch
    assert len(read_log(cache)) == 6
