"""The end-of-sweep table's fallback (used when the analysis package is not importable)."""

from __future__ import annotations

from cil.results import write_task
from tune.report import per_trial_table, read_task_results


def rows(trial: str, approach: str, task: int, accs: list[float]) -> list[dict]:
    return [{"sweep": "s", "trial_id": trial, "approach": approach, "seed": 0, "dataset": "digits",
             "num_tasks": 2, "network": "convnet", "task": task, "eval_task": u, "classes_seen": 5 * (task + 1),
             "acc_taw": a, "acc_tag": a, "forg_taw": 0.0, "forg_tag": 0.5 if u < task else 0.0,
             "train_seconds": 1.0, "data.nc_first_task": None if trial == "a" else 5}
            for u, a in enumerate(accs)]


def test_per_trial_table_from_parquet(tmp_path) -> None:
    for trial, approach in (("a", "lwf"), ("b", "lwf-s")):
        write_task(rows(trial, approach, 0, [0.9]), [], str(tmp_path), trial, 0)
        write_task(rows(trial, approach, 1, [0.4, 0.8]), [], str(tmp_path), trial, 1)
    df = read_task_results(str(tmp_path))  # one file's column is all-null, the other's typed
    assert len(df) == 6
    table = per_trial_table(df)
    assert "lwf-s" in table and "0.600" in table and "0.500" in table  # mean TAg acc; old-task forgetting
    assert per_trial_table(read_task_results(str(tmp_path / "none"))) == "(no results)"
