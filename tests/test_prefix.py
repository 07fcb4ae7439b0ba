"""Prefix sharing is sound: what the prefix key leaves out cannot change a bit of what is shared.

For every approach of the registry, tiny synthetic runs (no Ray) of task 0: changing any key outside
the prefix key of task 0 gives the same rows (timings aside) and the same state after task 0, bit for
bit, as the shared entry adopted by that config; approaches with the same key (finetuning and the LwF
family) agree bit for bit; changing a sampled key inside the key changes the key. End to end: a trial
that takes a prefix from the store and trains on gives the rows and state of a trial that trained all
of it.
"""

from __future__ import annotations

import random
from typing import Any

import pytest
import torch

from cil.approaches.registry import APPROACHES, SPECS
from cil.config import ConfigError, ExperimentConfig
from cil.loop import run
from cil.results_schema import EPOCHS, HEADS, SHARED_COLUMN, TASK_RESULTS, to_arrow
from tune.prefix import (
    LOOP_FIRST_TASK_UNUSED,
    NEVER_ACTS,
    PrefixStore,
    adopt,
    entry_of,
    key_config,
    numeric_environment,
    prefix_key,
    shared_run,
)

TIMING = ("train_seconds", "seconds", "eval_seconds")
ENV = numeric_environment("cpu")


def tiny(approach: str, **over: Any) -> dict[str, Any]:
    """A run of two 2-class tasks of 8x8 synthetic images, one epoch each: well under a second."""
    values = {"approach": approach, "data.dataset": "synthetic:classes=4,channels=1,size=8,train=8,test=2",
              "data.num_tasks": 2, "model.network": "convnet", "train.nepochs": 1, "train.batch_size": 8,
              "run.device": "cpu", "run.stop_at_task": 1}
    if SPECS[approach].needs_exemplars:
        values["memory.num_exemplars"] = 4
    if approach == "dmc":
        values["dmc.aux_dataset"] = "synthetic:classes=4,train=4,test=1"
    return values | over


def first(values: dict[str, Any]):
    cfg = ExperimentConfig.from_dict(values)
    return cfg, next(iter(run(cfg)))


def _without_timing(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k not in TIMING and k != SHARED_COLUMN} for r in rows]


def assert_same(shared, own) -> None:
    """Rows (timings aside) and state (its timings aside) equal bit for bit."""
    for table in ("task_rows", "head_rows", "epoch_rows"):
        _same_tree(_without_timing(getattr(shared, table)), _without_timing(getattr(own, table)), table)
    _same_tree({k: v for k, v in shared.state.items() if k != "train_seconds"},
               {k: v for k, v in own.state.items() if k != "train_seconds"}, "state")
    assert {k: v for k, v in shared.metrics.items() if k not in TIMING} == \
        {k: v for k, v in own.metrics.items() if k not in TIMING}


def _same_tree(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, where
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {set(a) ^ set(b)}"
        for k in a:
            _same_tree(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b or (a != a and b != b), f"{where}: {a!r} != {b!r}"  # NaN equals NaN here


def changed(values: dict[str, Any], key: str, tmp: str) -> dict[str, Any] | None:
    """``values`` with ``key`` set to another valid value (None when no candidate is valid)."""
    current = ExperimentConfig.from_dict(values).to_flat()[key]
    if key in ("data.data_root", "data.cache_dir"):
        candidates: list[Any] = [tmp]
    elif key == "data.on_device":
        candidates = [True, False]
    elif key == "run.device":
        candidates = []  # the CPU is the only device here
    elif isinstance(current, bool):
        candidates = [not current]
    elif isinstance(current, int):
        candidates = [current + 1, current + 2, current - 1]
    elif isinstance(current, float):
        candidates = [current * 2 + 0.5, current / 2, current + 0.1, abs(current) * 2 + 0.5]
    elif isinstance(current, list):
        candidates = [[x / 2 for x in current], current[:1]]
    elif current is None:
        candidates = [0.5, 1, True]
    else:
        candidates = []
    for value in candidates:
        if value == current:
            continue
        try:
            ExperimentConfig.from_dict(values | {key: value})
        except ConfigError:
            continue
        return values | {key: value}
    return None


def outside_keys(values: dict[str, Any]) -> list[str]:
    """The keys of the config that task 0's prefix key leaves out (a key at its neutral value is out
    only there: changing it moves it in)."""
    cfg = ExperimentConfig.from_dict(values)
    neutral = SPECS[cfg.approach].first_task.neutral
    return sorted(set(cfg.to_flat()) - set(key_config(cfg, 0)) - set(neutral))


# The default run checks the declared keys of three approaches (the alias family, the BCE term that
# acts from task 0, an end-of-task Fisher); `pytest -m slow` checks every key the prefix key leaves out
# (the machine keys, run.stop_at_task, gridsearch.* while the search is off too) for every approach.
DEFAULT_RUN = ("finetuning", "lwf-br2", "ewc")


@pytest.mark.parametrize("approach, every_key", [
    *((a, False) for a in DEFAULT_RUN), *(pytest.param(a, True, marks=pytest.mark.slow) for a in APPROACHES)])
def test_keys_outside_the_first_task_key_change_no_bit(approach, every_key, tmp_path):
    values = tiny(approach)
    base_cfg, base = first(values)
    keys = outside_keys(values)
    declared = {*LOOP_FIRST_TASK_UNUSED, *SPECS[approach].first_task.unused}
    assert declared <= set(keys), declared - set(keys)
    tried = []
    for key in keys if every_key else sorted(declared):
        other = changed(values, key, str(tmp_path))
        if other is None:
            continue
        cfg, own = first(other)
        assert prefix_key(cfg, 0, ENV) == prefix_key(base_cfg, 0, ENV)
        assert_same(adopt(entry_of(base, "producer"), cfg), own)
        tried.append(key)
    assert declared - {"run.device"} <= set(tried), declared - set(tried)


@pytest.mark.parametrize("approach", APPROACHES)
def test_sampled_keys_inside_the_key_change_it(approach, tmp_path):
    values = tiny(approach)
    cfg = ExperimentConfig.from_dict(values)
    inside = sorted(set(key_config(cfg, 0)) - {"approach"})
    rng = random.Random(approach)
    checked = 0
    for key in rng.sample(inside, len(inside)):
        other = changed(values, key, str(tmp_path))
        if other is None:
            continue
        assert prefix_key(ExperimentConfig.from_dict(other), 0, ENV) != prefix_key(cfg, 0, ENV), key
        checked += 1
        if checked == 6:
            break
    assert checked > 0


@pytest.mark.parametrize("memory", [{}, pytest.param({"memory.num_exemplars": 4}, marks=pytest.mark.slow)])
def test_approaches_with_one_first_task_key_train_it_bit_for_bit_alike(memory):
    groups: dict[str, list[str]] = {}
    for approach in APPROACHES:
        cfg = ExperimentConfig.from_dict(tiny(approach, **memory))
        groups.setdefault(prefix_key(cfg, 0, ENV), []).append(approach)
    shared = [g for g in groups.values() if len(g) > 1]
    family = next(g for g in shared if "finetuning" in g)
    assert {"lwf", "lwf-s", "lwf-sr", "lwf-br", "lwf-bsr"} <= set(family) and "lwf-br2" not in family
    for group in shared:
        _, leader = first(tiny(group[0], **memory))
        for approach in group[1:]:
            cfg, own = first(tiny(approach, **memory))
            assert_same(adopt(entry_of(leader, "producer"), cfg), own)


def test_later_tasks_key_keeps_every_acting_key():
    a = ExperimentConfig.from_dict(tiny("lwf", **{"loss.w_task": 0.5, "run.stop_at_task": 0}))
    b = ExperimentConfig.from_dict(tiny("lwf", **{"loss.w_task": 2.0}))
    assert prefix_key(a, 0, ENV) == prefix_key(b, 0, ENV)
    assert prefix_key(a, 1, ENV) != prefix_key(b, 1, ENV)
    assert all(k not in key_config(a, 1) for k in NEVER_ACTS)
    assert prefix_key(a, 1, ENV) != prefix_key(a, 1, ENV | {"threads_in_effect": ENV["threads_in_effect"] + 1})


def test_a_trial_continuing_a_shared_prefix_ends_as_one_that_trained_it_all(tmp_path):
    store = PrefixStore(str(tmp_path / "prefix"))
    producer = ExperimentConfig.from_dict(tiny("finetuning", **{"run.stop_at_task": 0, "run.threads": 1}))
    made = list(shared_run(producer, None, store, "trial-a", ENV))
    assert [SHARED_COLUMN in r.task_rows[0] for r in made] == [False, False]
    consumer = ExperimentConfig.from_dict(tiny("lwf-s", **{"run.stop_at_task": 0, "run.threads": 1}))
    reused = list(shared_run(consumer, None, store, "trial-b", ENV))
    assert [r.task_rows[0].get(SHARED_COLUMN) for r in reused] == ["trial-a", None]
    alone = list(run(consumer))
    for shared, own in zip(reused, alone, strict=True):
        assert_same(shared, own)
        for table, rows in ((TASK_RESULTS, shared.task_rows), (HEADS, shared.head_rows), (EPOCHS, shared.epoch_rows)):
            to_arrow([{"sweep": "s", "trial_id": "trial-b"} | r for r in rows], table)  # they fit the schema
    again = list(shared_run(consumer, None, store, "trial-c", ENV))  # trial-b published its task 1
    assert [r.task_rows[0].get(SHARED_COLUMN) for r in again] == ["trial-a", "trial-b"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_a_prefix_being_produced_is_waited_for_while_its_claim_lives(tmp_path):
    clock = Clock()
    store = PrefixStore(str(tmp_path), clock=clock)
    assert store.wait("k", "b", 100, sleep=clock.sleep) is None  # nobody produces it: train it yourself
    with store.claim("k", "a"):
        assert store.holder("k", "a") is None and store.holder("k", "b") == "a"

        def publish_later(s: float) -> None:
            clock.sleep(s)
            if clock.now >= 1005:
                store.publish("k", {"trial_id": "a", "x": torch.arange(3)})
        entry = store.wait("k", "b", 100, sleep=publish_later)
        assert entry["trial_id"] == "a" and torch.equal(entry["x"], torch.arange(3)) and clock.now == 1005
    assert store.holder("k", "b") is None  # released


def test_a_dead_producers_claim_or_the_deadline_ends_the_wait(tmp_path):
    clock = Clock()
    store = PrefixStore(str(tmp_path), clock=clock)
    claim = store.claim("k", "a")
    claim._write()  # a producer that died after claiming: its heartbeat stopped
    assert store.wait("k", "b", 10, sleep=clock.sleep) is None and clock.now == 1010  # deadline
    assert store.wait("k", "b", 1000, sleep=clock.sleep) is None and 1060 <= clock.now < 1062  # stale


def test_publishing_twice_leaves_one_whole_entry(tmp_path):
    store = PrefixStore(str(tmp_path))
    for who in ("a", "b"):
        store.publish("k", {"trial_id": who})
    assert store.get("k") == {"trial_id": "b"}
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["entry.pt"]


def test_ewc_trains_task_zero_like_finetuning_but_its_end_of_task_state_is_its_own():
    """Why the shared state is the one after the end-of-task work, and EWC's key is its own: EWC's
    epochs of task 0 are finetuning's, but its Fisher pass runs the model in training mode (as FACIL),
    which moves the BatchNorm statistics, and its state holds the Fisher."""
    ft_cfg, ft = first(tiny("finetuning"))
    ewc_cfg, ewc = first(tiny("ewc"))
    adopted = adopt(entry_of(ft, "producer"), ewc_cfg)
    _same_tree(_without_timing(adopted.epoch_rows), _without_timing(ewc.epoch_rows), "epochs")
    moved = [k for k, v in ft.state["model"].items() if not torch.equal(v, ewc.state["model"][k])]
    assert moved and all(k.rpartition(".")[2] in ("running_mean", "running_var", "num_batches_tracked") for k in moved)
    assert ft.state["approach"] == {} and set(ewc.state["approach"]) == {"anchor", "fisher"}
    assert prefix_key(ft_cfg, 0, ENV) != prefix_key(ewc_cfg, 0, ENV)


def _first_task_key(config: dict[str, Any]) -> str:
    return prefix_key(ExperimentConfig.from_dict(config | {"run.device": "cpu"}), 0, {})


def test_a_grid_starts_the_trials_of_distinct_first_tasks_first():
    """The quickstart's 24 trials have 9 distinct first tasks (per seed: finetuning's, shared by five LwF
    presets; joint's; lwf-br2's): its first 9 trials train them, the 15 that take one from those come after."""
    from tune.prefix import spread
    from tune.spec import load_spec

    configs = load_spec("tune/presets/quickstart.yaml").trial_configs()
    order = spread(configs)
    assert sorted(map(repr, order)) == sorted(map(repr, configs))  # the same trials, reordered
    keys = [_first_task_key(c) for c in order]
    assert len(set(keys[:9])) == 9 and set(keys[9:]) <= set(keys[:9])
    assert [c["approach"] for c in order[:9]] == ["finetuning"] * 3 + ["joint"] * 3 + ["lwf-br2"] * 3


@pytest.mark.slow  # a Ray sweep
@pytest.mark.ray
def test_with_two_slots_a_grid_sweep_starts_two_distinct_first_tasks(tmp_path):
    """In Tune's own grid order finetuning and lwf would start together on 2 slots and lwf would wait for
    finetuning's task 0; the sweep starts finetuning and lwf-br2 (whose BCE acts in task 0), then lwf and
    lwf-s, which take task 0 from finetuning."""
    import pandas as pd
    import ray
    from ray import tune

    from tune import raycompat
    from tune.paths import SweepPaths
    from tune.spec import parse_spec
    from tune.sweep import make_tuner

    started: list[str] = []

    class Starts(tune.Callback):
        def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
            started.append(trial.config["approach"])

    spec = parse_spec({"base": {"data.dataset": "synthetic:classes=6,channels=1,size=8,train=12,test=3",
                                "data.num_tasks": 3, "model.network": "convnet", "train.nepochs": 2,
                                "train.batch_size": 16, "run.seed": 0},
                       "grid": {"approach": ["finetuning", "lwf", "lwf-s", "lwf-br2"]}, "resources": {"cpu": 1}})
    paths = SweepPaths(str(tmp_path), "order")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        tuner = make_tuner(spec, paths, verbose=0)
        raycompat.run_config(tuner).callbacks.append(Starts())
        grid = tuner.fit()
    finally:
        ray.shutdown()
    assert all(r.error is None for r in grid) and len(grid) == 4
    assert set(started[:2]) == {"finetuning", "lwf-br2"} and set(started[2:]) == {"lwf", "lwf-s"}
    rows = pd.read_parquet(f"{paths.results}/task_results").drop_duplicates(["trial_id", "task"])
    source = dict(zip(rows["trial_id"], rows["approach"], strict=False))
    first = rows[rows["task"] == 0].set_index("approach")["shared_from"]
    assert first[["finetuning", "lwf-br2"]].isna().all()
    assert [source[first[a]] for a in ("lwf", "lwf-s")] == ["finetuning", "finetuning"]
