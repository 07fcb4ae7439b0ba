"""The atomic Parquet writer and the compaction of a finished trial's files."""

import os
import warnings

import pandas as pd
import pyarrow as pa
import pytest

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


def _approach_rows(approach: str, trial: str, t: int) -> tuple[list[dict], list[dict], list[dict]]:
    """Task t's rows of one trial of ``approach``, its config columns as a real run writes them."""
    from cil.config import ExperimentConfig

    flat = ExperimentConfig.from_dict({"approach": approach, "data.dataset": "digits", "data.num_tasks": 2}).to_flat()
    ident = dict(sweep="mix", trial_id=trial, approach=approach, seed=0)
    rows = [ident | dict(dataset="digits", num_tasks=2, network="convnet", task=t, eval_task=u,
                         classes_seen=5 * (t + 1), acc_taw=0.8, acc_tag=0.6, forg_taw=0.0, forg_tag=0.1 * u,
                         train_seconds=1.0) | flat | ({"acc_taw_heads": 0.7, "acc_tag_heads": 0.5}
                                                       if approach == "icarl" else {})
            for u in range(t + 1)]
    heads = [ident | dict(task=t, head=h, weight_norm=1.0, bias_mean=0.0) for h in range(t + 1)]
    terms = {"term.ce_pred": 1.0} | ({f"term.{approach}_only": 0.5} if t > 0 else {})
    epochs = [ident | dict(task=t, epoch=1, train_loss=1.0, val_loss=1.0, val_acc_taw=0.5, lr=0.1, seconds=0.1)
              | terms]
    return rows, heads, epochs


def test_plain_pandas_reads_a_mixed_approach_sweep_mid_run_and_after_an_errored_trial(tmp_path):
    """Each approach leaves other approaches' sections null: the writer types every column anyway, so the
    per-task files of a running sweep, an errored trial's (never merged) and merged ones read as one table
    (before the declared schema: ArrowNotImplementedError: Unsupported cast from double to null)."""
    import pyarrow.dataset as ds

    results = str(tmp_path / "results")
    approaches = ("lwf", "lucir", "finetuning", "ewc", "icarl")
    for i, approach in enumerate(approaches):  # mid-run: task 0 of every trial written, nothing merged
        rows, heads, epochs = _approach_rows(approach, f"t{i}", 0)
        write_task(rows, heads, results, f"t{i}", 0, epochs)
    for table in ("task_results", "heads", "epochs"):
        frame = pd.read_parquet(os.path.join(results, table))
        assert sorted(frame["approach"].unique()) == sorted(approaches), table
    task = pd.read_parquet(os.path.join(results, "task_results"))
    assert task.loc[task["approach"] == "lucir", "lucir.lamb_mr"].notna().all()
    assert task.loc[task["approach"] != "lucir", "lucir.lamb_mr"].isna().all()
    for i, approach in enumerate(approaches[1:], start=1):  # every trial but t0 finishes and is merged
        rows, heads, epochs = _approach_rows(approach, f"t{i}", 1)
        write_task(rows, heads, results, f"t{i}", 1, epochs)
        compact_trial(results, f"t{i}")
    # t0 errored after task 0: its per-task files stay beside the merged ones
    assert "t0_t000.parquet" in os.listdir(os.path.join(results, "task_results"))
    task = pd.read_parquet(os.path.join(results, "task_results"))
    assert len(task) == 1 + 4 * 3 and set(task["trial_id"]) == {f"t{i}" for i in range(5)}
    assert task["train.lr"].dtype == "float64" and task["seed"].dtype == "int64"
    dataset = ds.dataset(os.path.join(results, "task_results"), format="parquet")
    assert dataset.to_table().num_rows == len(task)
    assert len(pd.read_parquet(os.path.join(results, "epochs"))) == 5 + 4
    loaded = analysis.load(results)  # the checked reader agrees
    assert len(loaded) == len(task) and loaded.groupby("trial_id")["complete"].first().sum() == 4
    trials = analysis.trial_metrics(loaded)  # an other score set's accuracy varies per row: not a trial column
    assert "lucir.lamb_mr" in trials.columns and "acc_taw_heads" not in trials.columns


def test_a_column_the_schema_does_not_declare_is_refused_by_name(tmp_path):
    from cil.results_schema import SchemaError

    rows, heads, epochs = _rows("a", 0)
    with pytest.raises(SchemaError, match=r"column 'typo_column' of table 'task_results' is not declared"):
        write_task([r | {"typo_column": 1} for r in rows], heads, str(tmp_path), "a", 0, epochs)
    with pytest.raises(SchemaError, match=r"do not fit its declared schema"):
        write_task([r | {"task": "zero"} for r in rows], heads, str(tmp_path), "a", 0, epochs)


def test_a_merge_gives_files_of_older_writers_the_declared_types(tmp_path):
    """A part written before the schema was declared (its all-null column typed null, a column since
    removed) merges with a new one into a file with every declared type; the old column is kept."""
    import pyarrow.parquet as pq

    results = tmp_path / "results"
    rows, heads, epochs = _rows("a", 0, num_tasks=2)
    old = [r | {"loss.lamb": None, "retired_column": "x"} for r in rows]
    (results / "task_results").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(old), results / "task_results" / "a_t000.parquet")  # inferred: null
    rows, heads, epochs = _rows("a", 1, num_tasks=2)
    write_task([r | {"loss.lamb": 2.0} for r in rows], heads, str(results), "a", 1, epochs)
    compact_trial(str(results), "a")
    merged = pq.read_table(results / "task_results" / "a.parquet")
    assert merged.schema.field("loss.lamb").type == pa.float64() and merged.num_rows == 3
    assert merged.schema.field("lucir.lamb_mr").type == pa.float64()  # declared, all null
    assert merged.column_names[-1] == "retired_column"
    assert merged.column("loss.lamb").to_pylist() == [None, 2.0, 2.0]


def test_every_config_key_is_a_typed_column_of_task_results():
    from cil.config import leaf_types
    from cil.results_schema import TASK_RESULTS, arrow_schema

    schema = arrow_schema(TASK_RESULTS)
    assert set(leaf_types()) <= set(schema.names)
    assert not [f.name for f in schema if pa.types.is_null(f.type)]
    assert schema.field("train.lr").type == pa.float64() and schema.field("run.seed").type == pa.int64()
    assert schema.field("data.nc_first_task").type == pa.int64()  # int | None: nullable, still typed
    lists = {k for k, tp in leaf_types().items() if "list" in str(tp)}
    assert lists and all(pa.types.is_list(schema.field(k).type) for k in lists)
