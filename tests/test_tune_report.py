"""The table a sweep prints when it ends: analysis's summary of the Parquet rows (one implementation)."""

from __future__ import annotations

from analysis import final_table
from cil.results import write_task


def rows(trial: str, approach: str, task: int, accs: list[float]) -> list[dict]:
    return [{"sweep": "s", "trial_id": trial, "approach": approach, "seed": 0, "dataset": "digits",
             "num_tasks": 2, "network": "convnet", "task": task, "eval_task": u, "classes_seen": 5 * (task + 1),
             "acc_taw": a, "acc_tag": a, "forg_taw": 0.0, "forg_tag": 0.5 if u < task else 0.0,
             "train_seconds": 1.0, "data.nc_first_task": None if trial == "a" else 5}
            for u, a in enumerate(accs)]


def test_final_table_summarises_mixed_trials(tmp_path) -> None:
    for trial, approach in (("a", "lwf"), ("b", "lwf-s")):  # one trial's config column null, the other's set
        write_task(rows(trial, approach, 0, [0.9]), [], str(tmp_path), trial, 0)
        write_task(rows(trial, approach, 1, [0.4, 0.8]), [], str(tmp_path), trial, 1)
    table = final_table(str(tmp_path))
    row = next(line for line in table.splitlines() if line.startswith("| lwf-s "))
    # TAg and TAw accuracy after the last task, TAg average incremental accuracy, TAg forgetting
    assert [c.strip() for c in row.strip("|").split("|")] == ["lwf-s", "1", "60.0", "60.0", "75.0", "50.0"]
    assert final_table(str(tmp_path / "none")).startswith("(no summary: ")
