"""Estimates: which tasks a sweep trains (sharing accounted for), priced from earlier rows."""

from __future__ import annotations

import pandas as pd
import pytest

from cil.config import ExperimentConfig
from tune.estimate import History, estimate, work
from tune.spec import load_spec, parse_spec


def test_sharing_saves_the_first_task_of_the_lwf_family_in_the_quickstart():
    spec = load_spec("tune/presets/quickstart.yaml")
    shared = [(cfg.approach, cfg.run.seed, t) for _, cfg, t, s in work(spec, share=True) if s]
    assert len(work(spec, share=True)) == 24 * 5
    # finetuning trains task 0 of each seed; lwf, lwf-s, lwf-sr, lwf-br and lwf-bsr take it
    assert sorted(shared) == sorted((a, s, 0) for a in ("lwf", "lwf-s", "lwf-sr", "lwf-br", "lwf-bsr")
                                    for s in (0, 1, 2))
    assert not any(s for *_, s in work(spec, share=False))


def test_a_loss_weight_grid_shares_task_zero_of_each_seed():
    spec = load_spec("benchmarks/sharing/lwf_s_w_task.yaml")
    shared = [(cfg.run.seed, t) for _, cfg, t, s in work(spec, share=True) if s]
    assert sorted(shared) == sorted((s, 0) for s in (0, 1, 2) for _ in range(3))


def test_history_prices_tasks_from_rows_the_trials_trained_themselves(tmp_path):
    rows = pd.DataFrame({
        "trial_id": ["a", "a", "b", "c"], "task": [0, 1, 0, 0], "approach": ["lwf", "lwf", "lwf-s", "lwf"],
        "dataset": "digits", "network": "convnet", "train.batch_size": 64, "train.nepochs": 2, "num_tasks": 2,
        "device_kind": "cpu", "train_seconds": [10.0, 20.0, 30.0, 1000.0],
        "shared_from": [None, None, None, "a"]})
    (tmp_path / "task_results").mkdir()
    rows.to_parquet(tmp_path / "task_results" / "x.parquet")
    spec = parse_spec({"base": {"data.dataset": "digits", "data.num_tasks": 2, "model.network": "convnet",
                                "train.nepochs": 2, "train.batch_size": 64},
                       "grid": {"approach": ["lwf", "lwf-s"]}})
    history = History(str(tmp_path), "cpu")
    [(_, lwf, _, _), (_, lwf1, _, _), (_, lwf_s, _, _), _] = work(spec, share=False)
    assert history.seconds(lwf, 0) == 10.0 and history.seconds(lwf1, 1) == 20.0  # c's row was shared: left out
    assert history.seconds(lwf_s, 0) == 30.0
    assert history.seconds(lwf_s, 1) == 20.0  # no lwf-s row of task 1: any approach with the rest equal
    est = estimate(spec, history=str(tmp_path), price=3.0, group_keys=["approach"])
    lines = "\n".join(est.lines())
    # lwf trains tasks 0 and 1 (10 + 20 s), lwf-s takes task 0 from lwf and trains task 1 (20 s)
    assert est.device_hours == (10 + 20 + 20) / 3600
    assert "approach=lwf-s: 1 trials, 2 tasks trained (1 shared)" in lines and f"rows of {tmp_path}" in lines
    assert f"{est.device_hours * 3:.2f} at 3 per device-hour" in lines


def test_later_tasks_scale_each_measured_part_by_what_it_grows_with():
    from tune.estimate import Calibration, TaskTiming, cost_group, train_images

    data = {"data.dataset": "synthetic:classes=6,channels=1,size=8,train=10,test=3", "data.num_tasks": 3,
            "data.val_fraction": 0.0}
    joint = ExperimentConfig.from_dict(data | {"approach": "joint"})
    images, classes = train_images(joint)
    assert classes == [2, 2, 2] and images == [20, 40, 60]  # joint trains on every task seen
    memory = ExperimentConfig.from_dict(data | {"approach": "finetuning", "memory.num_exemplars_per_class": 3})
    assert train_images(memory)[0] == [20, 20 + 6, 20 + 12]  # plus 3 exemplars of each class seen before
    calibration = Calibration()
    calibration.fits[cost_group(joint)] = [TaskTiming(epoch_per_image=0.01, eval_per_class=0.5, io=0.25, fixed=1.0),
                                           TaskTiming(epoch_per_image=0.02, eval_per_class=1.0, io=0.5, fixed=2.0)]
    calibration.sizes[cost_group(joint)] = (images, classes)
    nepochs = joint.train.nepochs
    assert calibration.seconds(joint, 0) == pytest.approx(1.0 + 0.25 + 0.5 * 2 + nepochs * 0.01 * 20)
    assert calibration.seconds(joint, 2) == pytest.approx(2.0 + 0.5 + 1.0 * 6 + nepochs * 0.02 * 60)


def test_the_wall_time_places_trials_on_the_first_free_slot_in_start_order():
    from tune.estimate import makespan, start_order

    assert makespan([4, 1, 1], 2) == 4 and makespan([1, 1, 4], 2) == 5 and makespan([3], 4) == 3
    spec = load_spec("tune/presets/quickstart.yaml")
    assert start_order(spec, share=False) == list(range(24))
    assert sorted(start_order(spec, share=True)) == list(range(24)) != start_order(spec, share=True)


@pytest.mark.slow  # a calibration and a Ray sweep in a driver process
@pytest.mark.ray
def test_a_sweep_launched_with_an_estimate_reports_estimate_vs_actual(tmp_path):
    import re

    import drivers
    import yaml

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump({
        "base": {"data.dataset": "synthetic:classes=4,channels=1,size=8,train=12,test=3", "data.num_tasks": 2,
                 "model.network": "convnet", "train.nepochs": 2, "train.batch_size": 16, "run.seed": 0},
        "grid": {"approach": ["finetuning", "lwf"]}, "resources": {"cpu": 1}}))
    done = drivers.run(str(spec), "--storage", str(tmp_path / "runs"), "--calibrate", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = re.search(r"estimate vs actual: ([\d.e-]+) vs ([\d.e-]+) device-hours, wall (\d+) s vs (\d+) s",
                     done.stdout)
    assert line, done.stdout[-3000:]
    estimated, spent, _, wall = map(float, line.groups())
    assert estimated > 0 and spent > 0 and wall > 0
