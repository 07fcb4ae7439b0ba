"""A real sweep on one node: its trials share the decoded-image cache, so each class is decoded once."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from test_data_cache import read_log

from benchmarks.fake_imagenet import write_fake_imagenet
from tune.paths import SweepPaths
from tune.spec import parse_spec
from tune.sweep import run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TESTS = os.path.dirname(os.path.abspath(__file__))
CLASSES = 4


def test_the_trials_of_a_sweep_on_one_node_decode_each_class_once(tmp_path, monkeypatch):
    tree = write_fake_imagenet(tmp_path / "tree", classes=CLASSES, train=8, test=3, width=40, height=30)
    cache = tmp_path / "cache"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([os.path.dirname(TESTS), os.environ.get("PYTHONPATH", "")]))
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        # 4 trials, 2 at a time; seeds give different class orders, so different tasks, the same classes
        spec = parse_spec({"base": {"approach": "finetuning", "data.dataset": "folder", "data.data_root": str(tree),
                                    "data.image_size": 16, "data.num_tasks": 2, "data.cache_dir": str(cache),
                                    "model.network": "convnet", "train.nepochs": 1},
                           "grid": {"run.seed": [0, 1, 2, 3]}, "resources": {"cpu": 1}})
        paths = SweepPaths(str(tmp_path / "storage"), "one-cache")
        results = run_sweep(spec, paths, verbose=0).grid
    finally:
        ray.shutdown()
    assert len(results) == 4 and all(r.error is None for r in results)
    rows = pd.read_parquet(f"{paths.results}/task_results")
    assert len(rows) == 4 * 3
    log = read_log(cache)
    keys = [r["key"] for r in log]
    assert len(keys) == len(set(keys)) == 2 * CLASSES  # every class's train and test chunk, decoded once
    assert sum(r["images"] for r in log) == CLASSES * (8 + 3)
