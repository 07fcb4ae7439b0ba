"""The atomic Parquet writer and the compaction of a finished trial's files."""

import os
import warnings

import pandas as pd
import pyarrow as pa

import analysis
from cil.results import compact_trial, discard_tasks_from, write_parquet, write_task


def _rows(trial, t, num_tasks=3):
    base = dict(sweep="s", trial_id=trial, approach="lwf", seed=0, dataset="digits", num_tasks=num_tasks,
                network="convnet", task=t, classes_seen=2 * (t + 1), forg_taw=0.0, forg_tag=0.0,
                train_seconds=1.0)
    rows = [base | {"eval_task": u, "acc_taw": 0.9 - 0.1 * u, "acc_tag": 0.5 + 0.01 * t} for u in range(t + 1)]
    heads = [dict(sweep="s", trial_id=trial, approach="lwf", seed=0, task=t, head=h, weight_norm=1.0 + h,
                  bias_mean=0.0) for h in range(t + 1)]
    terms = {"term.ce_pred": 1.0} | ({"term.kd_task": 0.5} if t > 0 else {})  # task 0 has no old model
    epochs = [dict(sweep="s", trial_id=trial, approach="lwf", seed=0, task=t, epoch=e, train_loss=2.0 / e,
                   val_loss=1.0 / e, val_acc_taw=0.5, lr=0.1, seconds=0.2) | terms for e in (1, 2)]
    return rows, heads, epochs


def _write_trial(results, trial, tasks=3):
    for t in range(tasks):
        rows, heads, epochs = _rows(trial, t)
        write_task(rows, heads, results, trial, t, epochs)


def test_compaction_merges_one_trials_files_only(tmp_path):
    results = str(tmp_path / "results")
    _write_trial(results, "a")
    _write_trial(results, "a_1")          # a trial id that starts like the other
    before = pd.read_parquet(os.path.join(results, "task_results"))
    assert compact_trial(results, "a") == 9          # 3 tasks x 3 tables
    names = sorted(os.listdir(os.path.join(results, "task_results")))
    assert names == ["a.parquet", "a_1_t000.parquet", "a_1_t001.parquet", "a_1_t002.parquet"]
    after = pd.read_parquet(os.path.join(results, "task_results"))
    key = ["trial_id", "task", "eval_task"]
    pd.testing.assert_frame_equal(before.sort_values(key).reset_index(drop=True),
                                  after.sort_values(key).reset_index(drop=True))
    assert compact_trial(results, "a") == 0          # idempotent
    assert len(pd.read_parquet(os.path.join(results, "heads"))) == 12
    assert sorted(os.listdir(os.path.join(results, "epochs")))[0] == "a.parquet"
    epochs = analysis.load_epochs(results)
    assert len(epochs) == 12 and not epochs.duplicated(["trial_id", "task", "epoch"]).any()
    assert epochs["term.kd_task"].isna().tolist() == (epochs["task"] == 0).tolist()  # a term a task lacks: null


def test_a_reader_during_compaction_sees_each_row_once_without_warning(tmp_path):
    results = str(tmp_path / "results")
    _write_trial(results, "a")
    # the moment between writing the merged file and deleting the parts
    merged = pd.read_parquet(os.path.join(results, "task_results"))
    write_parquet(pa.Table.from_pandas(merged, preserve_index=False),
                  os.path.join(results, "task_results", "a.parquet"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        df = analysis.load(results)
    assert len(df) == 6 and df["complete"].all()


def test_atomic_writer_leaves_no_temp_files(tmp_path):
    path = str(tmp_path / "x" / "t.parquet")
    write_parquet(pa.Table.from_pylist([{"a": 1}]), path)
    assert os.listdir(tmp_path / "x") == ["t.parquet"]


def test_sweep_compaction_merges_finished_trials_and_leaves_unfinished_ones(tmp_path):
    from cil.results import compact_results

    results = str(tmp_path / "results")
    for trial in ("a", "b"):
        _write_trial(results, trial)
        compact_trial(results, trial)
    _write_trial(results, "c", tasks=2)            # still running: its part files must stay
    before = pd.read_parquet(os.path.join(results, "task_results"))
    assert compact_results(results) == 6           # a and b, in every table
    names = sorted(os.listdir(os.path.join(results, "task_results")))
    assert names[:2] == ["c_t000.parquet", "c_t001.parquet"]
    assert len(names) == 3 and names[2].startswith("merged-")
    after = pd.read_parquet(os.path.join(results, "task_results"))
    key = ["trial_id", "task", "eval_task"]
    pd.testing.assert_frame_equal(before.sort_values(key).reset_index(drop=True),
                                  after.sort_values(key).reset_index(drop=True))
    m = analysis.trial_metrics(analysis.load(results)).set_index("trial_id")
    assert m.loc["a", "complete"] and m.loc["b", "complete"] and not m.loc["c", "complete"]
    assert compact_results(results) == 0


def test_a_resumed_trial_drops_the_epochs_it_redoes(tmp_path):
    """discard_tasks_from treats the epochs table like the others: in part files and in a merged file."""
    results = str(tmp_path / "results")
    _write_trial(results, "a", tasks=2)
    compact_trial(results, "a")
    rows, heads, epochs = _rows("a", 2)
    write_task(rows, heads, results, "a", 2, epochs)       # a part file after the merge
    assert discard_tasks_from(results, "a", 1, 3) == 6     # task 1 out of 3 merged files, task 2's 3 parts
    assert sorted(analysis.load_epochs(results)["task"].unique()) == [0]
    rows, heads, epochs = _rows("a", 1)
    write_task(rows, heads, results, "a", 1, [e | {"lr": 0.01} for e in epochs])
    compact_trial(results, "a")
    df = analysis.load_epochs(results)
    assert df.groupby("task")["lr"].max().to_dict() == {0: 0.1, 1: 0.01}
    assert os.listdir(os.path.join(results, "epochs")) == ["a.parquet"]
