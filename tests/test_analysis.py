"""analysis: loading, per-trial metrics and summaries, checked against numbers computed by hand.

Every test writes its own Parquet files in the results schema (one file per trial per task, as the
sweep writes them) so the package is tested exactly as it reads real sweeps.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import analysis
from analysis.atomic import write_parquet

T975 = {1: 12.706204736174707, 2: 4.302652729911275, 3: 3.182446305284263}  # t_{0.975, dof}

# A 3-task trial: acc[t][u] for u <= t.
TAG = [[0.9], [0.5, 0.8], [0.3, 0.4, 0.7]]
TAW = [[0.9], [0.85, 0.8], [0.8, 0.75, 0.7]]


def shifted(matrix: list[list[float]], delta: float) -> list[list[float]]:
    return [[round(v + delta, 10) for v in row] for row in matrix]


def forgetting(acc: list[list[float]], t: int, u: int) -> float:
    """docs/design.md: max over t' < t of acc[t'][u] minus acc[t][u] for u < t, else 0."""
    return max(acc[k][u] for k in range(u, t)) - acc[t][u] if u < t else 0.0


def write_trial(results: str, trial_id: str, approach: str, seed: int, tag=TAG, taw=TAW, *,
                sweep: str = "s1", dataset: str = "digits", tasks_done: int | None = None,
                classes_per_task: int = 2, config: dict | None = None, skip: tuple = ()) -> None:
    """One Parquet file per trained task, like the sweep writer; ``skip`` drops (t, u) cells."""
    num_tasks = len(tag)
    for t in range(num_tasks if tasks_done is None else tasks_done):
        rows = [dict(sweep=sweep, trial_id=trial_id, approach=approach, seed=seed, dataset=dataset,
                     num_tasks=num_tasks, network="convnet", task=t, eval_task=u,
                     classes_seen=classes_per_task * (t + 1), acc_taw=taw[t][u], acc_tag=tag[t][u],
                     forg_taw=forgetting(taw, t, u), forg_tag=forgetting(tag, t, u),
                     train_seconds=10.0 + t, **(config or {}))
                for u in range(t + 1) if (t, u) not in skip]
        write_parquet(pa.Table.from_pylist(rows),
                      os.path.join(results, "task_results", f"{trial_id}_t{t:03d}.parquet"))
        heads = [dict(sweep=sweep, trial_id=trial_id, approach=approach, seed=seed, task=t, head=h,
                      weight_norm=1.0 + 0.1 * (t - h) + seed, bias_mean=-0.01 * h) for h in range(t + 1)]
        write_parquet(pa.Table.from_pylist(heads),
                      os.path.join(results, "heads", f"{trial_id}_t{t:03d}.parquet"))


@pytest.fixture
def sweep_dir(tmp_path):
    """<storage>/s1/results with lwf (seeds 0-2), lwf-s (seeds 0-2) and one partial lwf trial."""
    results = str(tmp_path / "storage" / "s1" / "results")
    for seed, d in enumerate((0.0, 0.03, -0.03)):
        write_trial(results, f"lwf-{seed}", "lwf", seed, shifted(TAG, d), shifted(TAW, d / 2))
    for seed, d in enumerate((0.05, 0.09, 0.06)):
        write_trial(results, f"lwfs-{seed}", "lwf-s", seed, shifted(TAG, d), shifted(TAW, d / 2))
    write_trial(results, "lwf-run", "lwf", 7, tasks_done=2)
    return results


# ---------------------------------------------------------------------------------------- metrics

def test_trial_metrics_equal_hand_computation(tmp_path):
    results = str(tmp_path / "results")
    write_trial(results, "a", "lwf", 0)
    m = analysis.trial_metrics(analysis.load(results)).iloc[0]
    # average accuracy after t: 0.9, (0.5+0.8)/2, (0.3+0.4+0.7)/3
    after = [0.9, 0.65, 1.4 / 3]
    assert m["final_acc_tag"] == pytest.approx(1.4 / 3)
    assert m["avg_inc_acc_tag"] == pytest.approx(sum(after) / 3)
    # forg[2,0] = max(0.9, 0.5) - 0.3 = 0.6; forg[2,1] = 0.8 - 0.4 = 0.4
    assert m["final_forg_tag"] == pytest.approx(0.5)
    assert m["final_acc_taw"] == pytest.approx(0.75)
    assert m["avg_inc_acc_taw"] == pytest.approx((0.9 + 0.825 + 0.75) / 3)
    # forg[2,0] = 0.9 - 0.8 = 0.1; forg[2,1] = 0.8 - 0.75 = 0.05
    assert m["final_forg_taw"] == pytest.approx(0.075)
    assert bool(m["complete"]) and m["last_task"] == 2 and m["classes_seen"] == 6
    assert m["train_seconds"] == pytest.approx(10 + 11 + 12)


def test_curves_match_hand_computation(tmp_path):
    results = str(tmp_path / "results")
    write_trial(results, "a", "lwf", 0)
    c = analysis.curves(analysis.load(results))
    assert c["task"].tolist() == [0, 1, 2]
    assert c["classes_seen"].tolist() == [2, 4, 6]
    assert c["acc_tag"].to_numpy() == pytest.approx([0.9, 0.65, 1.4 / 3])
    assert c["acc_taw"].to_numpy() == pytest.approx([0.9, 0.825, 0.75])
    # mean forgetting over earlier tasks: none after t=0; forg[1,0] = 0.9-0.5; then (0.6+0.4)/2
    assert c["forg_tag"].to_numpy() == pytest.approx([0.0, 0.4, 0.5])
    f = analysis.final_forgetting(analysis.load(results))
    assert f["eval_task"].tolist() == [0, 1]
    assert f["forg_tag"].to_numpy() == pytest.approx([0.6, 0.4])


def test_single_task_forgetting_is_zero(tmp_path):
    results = str(tmp_path / "results")
    write_trial(results, "a", "joint", 0, [[0.7]], [[0.7]])
    m = analysis.trial_metrics(analysis.load(results)).iloc[0]
    assert m["final_forg_tag"] == 0.0 and m["final_acc_tag"] == pytest.approx(0.7)


# -------------------------------------------------------------------------------------- summaries

def test_summary_mean_std_ci_equal_hand_computation(sweep_dir):
    s = analysis.summary(analysis.load(sweep_dir))
    assert list(s["approach"]) == ["lwf", "lwf-s"]
    lwf = s.iloc[0]
    assert lwf["n_seeds"] == 3 and lwf["dataset"] == "digits" and lwf["num_tasks"] == 3
    values = [1.4 / 3 + d for d in (0.0, 0.03, -0.03)]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)  # ddof=1: here exactly 0.03
    assert lwf["final_acc_tag_mean"] == pytest.approx(mean)
    assert lwf["final_acc_tag_std"] == pytest.approx(0.03)
    assert lwf["final_acc_tag_std"] == pytest.approx(std)
    assert lwf["final_acc_tag_ci95"] == pytest.approx(T975[2] * 0.03 / math.sqrt(3))
    # A constant shift of every accuracy leaves forgetting unchanged: std 0.
    assert lwf["final_forg_tag_mean"] == pytest.approx(0.5)
    assert lwf["final_forg_tag_std"] == pytest.approx(0.0, abs=1e-12)
    assert lwf["final_acc_taw_std"] == pytest.approx(0.015)
    columns = ["approach", "dataset", "num_tasks", "n_seeds"] + [
        f"{m}_{s}" for m in analysis.METRICS for s in ("mean", "std", "ci95")]
    assert list(s.columns) == columns


def test_paired_baseline_delta_equals_hand_computation(sweep_dir):
    s = analysis.summary(analysis.load(sweep_dir), baseline="lwf")
    lwfs = s.set_index("approach").loc["lwf-s"]
    diffs = [0.05 - 0.0, 0.09 - 0.03, 0.06 - (-0.03)]  # per seed, lwf-s minus lwf
    mean = sum(diffs) / 3
    std = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 2)
    assert lwfs["final_acc_tag_delta"] == pytest.approx(mean)
    assert lwfs["final_acc_tag_delta_ci95"] == pytest.approx(T975[2] * std / math.sqrt(3))
    assert lwfs["avg_inc_acc_tag_delta"] == pytest.approx(mean)
    assert lwfs["final_forg_tag_delta"] == pytest.approx(0.0, abs=1e-12)
    base = s.set_index("approach").loc["lwf"]
    assert base["final_acc_tag_delta"] == pytest.approx(0.0, abs=1e-12)
    assert s.attrs["n_paired"] == [3, 3]
    assert any("paired by seed" in n for n in s.attrs["notes"])
    assert list(s.columns[4:9]) == ["final_acc_tag_mean", "final_acc_tag_std", "final_acc_tag_ci95",
                                    "final_acc_tag_delta", "final_acc_tag_delta_ci95"]


def test_unpaired_baseline_falls_back_to_welch(tmp_path):
    results = str(tmp_path / "results")
    for seed, d in ((0, 0.0), (1, 0.02)):
        write_trial(results, f"b{seed}", "lwf", seed, shifted(TAG, d))
    for seed, d in ((10, 0.05), (11, 0.08), (12, 0.065)):
        write_trial(results, f"n{seed}", "lwf-s", seed, shifted(TAG, d))
    s = analysis.summary(analysis.load(results), baseline="lwf").set_index("approach")
    a, b = [0.05, 0.08, 0.065], [0.0, 0.02]
    ma, mb = sum(a) / 3, sum(b) / 2
    va = sum((x - ma) ** 2 for x in a) / 2 / 3
    vb = sum((x - mb) ** 2 for x in b) / 1 / 2
    dof = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 1)
    from scipy import stats

    assert s.loc["lwf-s", "final_acc_tag_delta"] == pytest.approx(ma - mb)
    assert s.loc["lwf-s", "final_acc_tag_delta_ci95"] == pytest.approx(
        stats.t.ppf(0.975, dof) * math.sqrt(va + vb))
    assert any("Welch" in n for n in s.attrs["notes"])


def test_partial_trials_are_flagged_and_excluded(sweep_dir):
    df = analysis.load(sweep_dir)
    run = df[df["trial_id"] == "lwf-run"]
    assert len(run) == 3 and not run["complete"].any()
    assert df[df["trial_id"] != "lwf-run"]["complete"].all()
    m = analysis.trial_metrics(df).set_index("trial_id").loc["lwf-run"]
    assert not m["complete"] and m["last_task"] == 1
    assert m["final_acc_tag"] == pytest.approx(0.65)  # at its last trained task
    s = analysis.summary(df)
    assert s.set_index("approach").loc["lwf", "n_seeds"] == 3
    assert "1 partial trial excluded" in s.attrs["notes"][0]
    assert "partial trial excluded" in analysis.format_table(s)
    s_all = analysis.summary(df, include_partial=True)
    assert s_all.set_index("approach").loc["lwf", "n_seeds"] == 4
    assert "included" in s_all.attrs["notes"][0]


def test_trial_with_a_missing_cell_is_partial(tmp_path):
    results = str(tmp_path / "results")
    write_trial(results, "gap", "lwf", 0, skip=((1, 0),))
    write_trial(results, "ok", "lwf", 1)
    m = analysis.trial_metrics(analysis.load(results)).set_index("trial_id")
    assert not m.loc["gap", "complete"] and m.loc["ok", "complete"]


def test_duplicate_rows_keep_last_and_warn(tmp_path):
    results = str(tmp_path / "results")
    write_trial(results, "a", "lwf", 0)
    row = dict(sweep="s1", trial_id="a", approach="lwf", seed=0, dataset="digits", num_tasks=3,
               network="convnet", task=2, eval_task=2, classes_seen=6, acc_taw=0.7, acc_tag=0.1,
               forg_taw=0.0, forg_tag=0.0, train_seconds=12.0)
    write_parquet(pa.Table.from_pylist([row]), os.path.join(results, "task_results", "zz_retry.parquet"))
    with pytest.warns(UserWarning, match="duplicate"):
        df = analysis.load(results)
    assert len(df) == 6
    m = analysis.trial_metrics(df).iloc[0]
    assert m["final_acc_tag"] == pytest.approx((0.3 + 0.4 + 0.1) / 3)


def test_groups_never_mix_dataset_or_num_tasks(tmp_path):
    storage = tmp_path / "storage"
    write_trial(str(storage / "a" / "results"), "x", "lwf", 0, sweep="a")
    write_trial(str(storage / "b" / "results"), "x", "lwf", 0, sweep="b", dataset="cifar100")
    write_trial(str(storage / "c" / "results"), "x", "lwf", 0, [[0.9], [0.5, 0.8]], [[0.9], [0.8, 0.8]],
                sweep="c")
    df = analysis.load(str(storage))
    assert df.groupby(["sweep", "trial_id"]).ngroups == 3  # same trial_id, three sweeps
    s = analysis.summary(df)
    assert sorted(zip(s["dataset"], s["num_tasks"], strict=True)) == [
        ("cifar100", 3), ("digits", 2), ("digits", 3)]
    assert (s["n_seeds"] == 1).all() and s["final_acc_tag_ci95"].isna().all()


def test_by_config_columns_and_union_of_columns(tmp_path):
    storage = tmp_path / "storage"
    for lamb in (1, 2):
        for seed in (0, 1):
            write_trial(str(storage / "sweep-a" / "results"), f"a{lamb}{seed}", "lwf", seed, sweep="sweep-a",
                        tag=shifted(TAG, 0.01 * lamb + 0.001 * seed), config={"loss.lamb": lamb})
    write_trial(str(storage / "sweep-b" / "results"), "b0", "lwf", 0, sweep="sweep-b",
                config={"loss.lamb": 0.5, "train.lr": 0.1})
    df = analysis.load(str(storage))
    assert df["loss.lamb"].dtype == np.float64  # int in one sweep, float in the other
    assert df["train.lr"].isna().sum() == 4 * 6
    s = analysis.summary(df, by=["approach", "loss.lamb"], baseline="loss.lamb=1")
    assert list(s["loss.lamb"]) == [0.5, 1.0, 2.0]
    row = s.set_index("loss.lamb").loc[2.0]
    assert row["n_seeds"] == 2 and row["final_acc_tag_delta"] == pytest.approx(0.01)
    # Grouping by approach alone puts several trials with one seed in a group: say so.
    notes = analysis.summary(df[df["sweep"] == "sweep-a"]).attrs["notes"]
    assert any("loss.lamb" in n and "same seed" in n for n in notes)


# ------------------------------------------------------------------------------------------ loading

def test_load_accepts_every_layout_and_skips_temp_files(sweep_dir, tmp_path):
    for junk in (".part.tmp", "_staging.parquet", "x.parquet.tmp"):
        with open(os.path.join(sweep_dir, "task_results", junk), "wb") as f:
            f.write(b"not parquet")
    n = len(analysis.load(sweep_dir))
    assert n == 6 * 6 + 3
    layouts = (os.path.dirname(sweep_dir), str(tmp_path / "storage"), os.path.join(sweep_dir, "task_results"),
               "file://" + sweep_dir)
    for path in layouts:
        assert len(analysis.load(path)) == n
    assert len(analysis.load_heads(sweep_dir)) == 6 * 6 + 3


def test_schema_violation_names_file_and_column(tmp_path):
    results = str(tmp_path / "results")
    write_trial(results, "a", "lwf", 0)
    bad = os.path.join(results, "task_results", "b_t000.parquet")
    pq.write_table(pa.table({"sweep": ["s1"], "trial_id": ["b"], "task": [0]}), bad)
    with pytest.raises(analysis.ResultsError) as err:
        analysis.load(results, strict=True)
    assert bad in str(err.value) and "'approach'" in str(err.value) and "'acc_tag'" in str(err.value)
    # Without strict the foreign file is skipped, named in a warning, and the good trial is read.
    with pytest.warns(analysis.ResultsWarning, match=r"skipped .*b_t000\.parquet: missing required columns"):
        df = analysis.load(results)
    assert set(df["trial_id"]) == {"a"}


def test_unreadable_files_are_skipped_with_a_warning_or_fail_when_strict(tmp_path):
    results = str(tmp_path / "results")
    write_trial(results, "a", "lwf", 0)
    write_trial(results, "b", "lwf", 1)
    good = os.path.join(results, "task_results", "b_t000.parquet")
    with open(good, "rb") as f:
        data = f.read()
    with open(good, "wb") as f:  # truncated, as a copy cut short leaves it
        f.write(data[: len(data) // 2])
    with pytest.warns(analysis.ResultsWarning, match=r"skipped .*b_t000\.parquet: not a readable Parquet file"):
        df = analysis.load(results)
    # b lost its first task's rows with the file: it reads as a partial trial, left out of summaries.
    assert df.groupby("trial_id")["complete"].all().to_dict() == {"a": True, "b": False}
    with pytest.raises(analysis.ResultsError, match=r"b_t000\.parquet: not a readable Parquet file"):
        analysis.load(results, strict=True)
    lone = tmp_path / "lone" / "task_results"
    lone.mkdir(parents=True)
    (lone / "x.parquet").write_bytes(b"not parquet")
    with pytest.warns(analysis.ResultsWarning), \
            pytest.raises(analysis.ResultsError, match=r"no readable task_results file \(1 skipped; the first: "):
        analysis.load(str(lone))


def test_wrong_types_and_values_are_rejected(tmp_path):
    results = str(tmp_path / "results")
    write_trial(results, "a", "lwf", 0, tag=[[90.0]], taw=[[90.0]])
    with pytest.raises(analysis.ResultsError, match=r"'acc_taw' must be a fraction.*a_t000\.parquet|"
                                                     r"a_t000\.parquet.*'acc_taw' must be a fraction"):
        analysis.load(results)
    other = str(tmp_path / "other")
    write_trial(other, "a", "lwf", 0)
    table = pq.read_table(os.path.join(other, "task_results", "a_t000.parquet"))
    table = table.set_column(table.schema.get_field_index("task"), "task", pa.array(["zero"]))
    pq.write_table(table, os.path.join(other, "task_results", "a_t000.parquet"))
    with pytest.raises(analysis.ResultsError, match="'task' must hold integers"):
        analysis.load(other, strict=True)


def test_empty_and_missing_folders_give_clear_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(analysis.ResultsError, match="empty folder"):
        analysis.load(str(tmp_path / "empty"))
    with pytest.raises(analysis.ResultsError, match="no such file or folder"):
        analysis.load(str(tmp_path / "nowhere"))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hello")
    with pytest.raises(analysis.ResultsError, match="no task_results Parquet files"):
        analysis.load(str(tmp_path / "other"))


def test_bad_by_and_baseline_name_the_valid_values(sweep_dir):
    df = analysis.load(sweep_dir)
    with pytest.raises(analysis.ResultsError, match=r"'loss\.lamdb'.*valid columns are: .*approach"):
        analysis.summary(df, by=["approach", "loss.lamdb"])
    with pytest.raises(analysis.ResultsError, match="unknown baseline 'lwf-x'.*lwf, lwf-s"):
        analysis.summary(df, baseline="lwf-x")
    with pytest.raises(analysis.ResultsError, match="not a grouping column"):
        analysis.summary(df, by="network", baseline="lwf")


# ------------------------------------------------------------------------------------------- tables

def test_format_table_shows_percent_with_ci(sweep_dir):
    s = analysis.summary(analysis.load(sweep_dir), baseline="lwf")
    md = analysis.format_table(s)
    setting, blank, header, rule, first, second = md.splitlines()[:6]
    assert setting == "dataset: digits; num_tasks: 3" and blank == ""  # one setting: a header line
    assert "TAg acc" in header and "Δ TAg acc" in header and rule.startswith("|---")
    mean, ci = 100 * (1.4 / 3), 100 * T975[2] * 0.03 / math.sqrt(3)
    assert f"{mean:.1f} ± {ci:.1f}" in first and "baseline" in first
    assert "+6.7 ±" in second  # lwf-s - lwf: mean of 0.05, 0.06, 0.09
    rows = list(pd.read_csv(__import__("io").StringIO(analysis.format_table(s, "csv"))).itertuples())
    assert len(rows) == 2
    tex = analysis.format_table(s, "latex")
    assert r"\begin{tabular}" in tex and r"$\pm$" in tex and tex.startswith("% dataset: digits; num_tasks: 3")
    assert r"num\_tasks" in analysis.format_table(s, "latex", columns="all")
    with pytest.raises(analysis.ResultsError, match="markdown, csv, latex"):
        analysis.format_table(s, "html")


def test_zero_row_files_and_explicit_filesystem(tmp_path):
    import pyarrow.fs as pafs

    results = tmp_path / "results"
    write_trial(str(results), "a", "lwf", 0)
    pq.write_table(pa.Table.from_pylist([]), str(results / "task_results" / "empty.parquet"))
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    assert len(analysis.load("results", filesystem=fs)) == 6
    (tmp_path / "only_empty" / "task_results").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([]), str(tmp_path / "only_empty" / "task_results" / "e.parquet"))
    with pytest.raises(analysis.ResultsError, match="no rows yet"):
        analysis.load(str(tmp_path / "only_empty"))


def test_only_partial_trials_give_an_empty_summary_with_a_note(tmp_path):
    results = str(tmp_path / "results")
    write_trial(results, "a", "lwf", 0, tasks_done=1)
    s = analysis.summary(analysis.load(results), baseline="lwf")
    assert len(s) == 0 and "n_seeds" in s.columns
    assert "1 partial trial excluded" in s.attrs["notes"][0]
    text = analysis.format_table(s)
    assert text.startswith("| approach") and "partial trial excluded" in text
    s = analysis.summary(analysis.load(results), include_partial=True)
    assert s["final_acc_tag_mean"].iloc[0] == pytest.approx(0.9)


def test_paper_averages_match_a_hand_computation(tmp_path):
    """The paper's scripts: mean of the whole lower triangle of acc (diagonal included), and of the
    strictly lower forgetting entries with negative forgetting counted as 0."""
    results = str(tmp_path / "results")
    improving = [[0.5], [0.6, 0.8], [0.55, 0.9, 0.7]]  # task 0 and task 1 improve later: negative forgetting
    write_trial(results, "a", "lwf", 0, tag=TAG, taw=improving)
    write_trial(results, "b", "lwf", 1, tag=shifted(TAG, 0.03), taw=improving)
    write_trial(results, "p", "lwf", 2, tag=TAG, taw=improving, tasks_done=2)  # partial: tasks 0 and 1
    trials = analysis.trial_metrics(analysis.load(results)).set_index("trial_id")
    a = trials.loc["a"]
    assert a["paper_avg_acc_taw"] == pytest.approx((0.5 + 0.6 + 0.8 + 0.55 + 0.9 + 0.7) / 6)
    # forg[1,0] = 0.5 - 0.6 < 0 -> 0; forg[2,0] = 0.6 - 0.55; forg[2,1] = 0.8 - 0.9 < 0 -> 0
    assert a["paper_avg_forg_taw"] == pytest.approx(0.05 / 3)
    assert a["final_forg_taw"] == pytest.approx((0.05 - 0.1) / 2)  # FACIL's keeps the sign, last row only
    assert a["paper_avg_acc_tag"] == pytest.approx((0.9 + 0.5 + 0.8 + 0.3 + 0.4 + 0.7) / 6)
    assert a["paper_avg_forg_tag"] == pytest.approx((0.4 + 0.6 + 0.4) / 3)
    assert trials.loc["b", "paper_avg_acc_tag"] == pytest.approx(0.6 + 0.03)
    p = trials.loc["p"]  # taken at its last trained task, like the other metrics
    assert p["paper_avg_acc_taw"] == pytest.approx((0.5 + 0.6 + 0.8) / 3) and p["paper_avg_forg_taw"] == 0.0
    s = analysis.summary(analysis.load(results)).iloc[0]
    assert s["n_seeds"] == 2 and s["paper_avg_acc_tag_mean"] == pytest.approx(0.615)
    assert s["paper_avg_forg_taw_mean"] == pytest.approx(0.05 / 3) and s["paper_avg_forg_taw_std"] == 0.0


def test_paper_averages_of_a_single_task_trial(tmp_path):
    results = str(tmp_path / "results")
    write_trial(results, "one", "lwf", 0, tag=[[0.4]], taw=[[0.9]])
    t = analysis.trial_metrics(analysis.load(results)).iloc[0]
    assert (t["paper_avg_acc_tag"], t["paper_avg_acc_taw"], t["paper_avg_forg_tag"]) == (0.4, 0.9, 0.0)
