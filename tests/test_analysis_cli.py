"""analysis CLI, figures and benchmark, on synthetic results written as Parquet in the schema."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import quickstart_results as qs

import analysis
from analysis import bench, cli, synth

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIGURES = ("accuracy.png", "acc_matrix_tag.png", "acc_matrix_taw.png", "forgetting.png", "head_norms.png")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    """12 trials (3 approaches x 4 seeds) of 4 tasks, 2 of them partial, with heads."""
    root = tmp_path_factory.mktemp("storage")
    task_results, heads = synth.make_results(12, 4, sweep="demo", dataset="digits", num_classes=10,
                                             n_partial=2, n_approaches=3)
    synth.write_results(root, task_results, heads, files=5)
    return str(root)


def check_outputs(out: str, baseline: bool) -> pd.DataFrame:
    table = pd.read_csv(os.path.join(out, "summary.csv"))
    stats = ("mean", "std", "ci95", "delta", "delta_ci95") if baseline else ("mean", "std", "ci95")
    assert list(table.columns) == ["approach", "dataset", "num_tasks", "n_seeds"] + [
        f"{m}_{s}" for m in analysis.METRICS for s in stats]
    assert len(table) == 3
    for name in FIGURES:
        with open(os.path.join(out, name), "rb") as f:
            data = f.read()
        assert data.startswith(PNG) and len(data) > 10_000, name
    trials = pd.read_csv(os.path.join(out, "trials.csv"))
    assert len(trials) == 12 and (~trials["complete"]).sum() == 2
    return table


def test_cli_subprocess_writes_summary_and_figures(storage, tmp_path):
    out = str(tmp_path / "out")
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "analysis", storage, "--baseline", "lwf", "--out", out],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("dataset: digits; num_tasks: 4\n\n| approach |   n |")
    assert "2 partial trials excluded" in proc.stdout
    table = check_outputs(out, baseline=True)
    assert table["n_seeds"].sum() == 10
    assert table.set_index("approach").loc["lwf", "final_acc_tag_delta"] == pytest.approx(0.0)


def test_cli_in_process_matches_api(storage, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli.main([storage, "--out", out, "--format", "latex"]) == 0
    printed = capsys.readouterr()
    assert r"\begin{tabular}" in printed.out and "wrote summary.csv" in printed.err
    with open(os.path.join(out, "summary.tex")) as f:  # the printed table, as a file for \input
        assert f.read() == printed.out
    table = check_outputs(out, baseline=False)
    expected = analysis.summary(analysis.load(storage))
    assert np.allclose(table["final_acc_tag_mean"], expected["final_acc_tag_mean"])
    assert np.allclose(table["avg_inc_acc_taw_ci95"], expected["avg_inc_acc_taw_ci95"])


def test_cli_errors_exit_2_with_a_message(tmp_path, capsys, storage):
    (tmp_path / "empty").mkdir()
    assert cli.main([str(tmp_path / "empty")]) == 2
    assert "error:" in capsys.readouterr().err
    assert cli.main([storage, "--by", "approach", "nope"]) == 2
    assert "valid columns are" in capsys.readouterr().err
    assert cli.main([storage, "--by", "aproach"]) == 2
    assert "not a per-trial column of these results; did you mean 'approach'?" in capsys.readouterr().err


def test_by_names_the_closest_columns_and_counts_config_keys(tmp_path):
    """A real sweep has over a hundred dotted config columns: the error names the closest ones and
    counts the rest per section instead of listing them all."""
    config = {f"{section}.key_{i}": i for section in ("train", "loss", "data") for i in range(40)}
    results = qs.write(str(tmp_path / "results"), approaches=qs.APPROACHES[:2], config=config)
    with pytest.raises(analysis.ResultsError) as err:
        analysis.summary(analysis.load(results), by=["train.key_7x"])
    message = str(err.value)
    assert "did you mean 'train.key_7'" in message and "train.* (" in message and "data.key_39" not in message
    assert len(message) < 400


def test_a_bad_file_loses_only_what_needs_it(tmp_path, capsys):
    """A truncated task_results file, a foreign Parquet file among them and unreadable heads: every table
    and figure that does not need them is written (warnings name the files), exit 0; --strict: exit 2."""
    results = qs.write(str(tmp_path / "sweep" / "results"), approaches=("finetuning", "lwf"))
    truncated = os.path.join(results, "task_results", "lwf-2_t004.parquet")
    with open(truncated, "rb") as f:
        data = f.read()
    with open(truncated, "wb") as f:
        f.write(data[:100])
    foreign = os.path.join(results, "task_results", "notes.parquet")
    pd.DataFrame({"comment": ["not a results file"]}).to_parquet(foreign)
    heads = os.path.join(results, "heads")
    for name in os.listdir(heads):
        with open(os.path.join(heads, name), "wb") as f:
            f.write(b"PAR1 cut short")
    out = str(tmp_path / "report")
    assert cli.main([results, "--baseline", "lwf", "--out", out, "--format", "latex", "--figure-format", "pdf"]) == 0
    err = capsys.readouterr().err
    assert f"warning: skipped {truncated}: not a readable Parquet file" in err
    assert f"warning: skipped {foreign}: missing required columns" in err
    assert "warning: head_norms.pdf skipped: " in err and "no readable heads file" in err
    written = sorted(os.listdir(out))
    assert written == sorted(["summary.csv", "trials.csv", "summary.tex", "accuracy.pdf", "acc_matrix_tag.pdf",
                              "acc_matrix_taw.pdf", "forgetting.pdf", "learning_curves.pdf"])
    with open(os.path.join(out, "learning_curves.pdf"), "rb") as f:
        assert f.read(5) == b"%PDF-"
    trials = pd.read_csv(os.path.join(out, "trials.csv"))
    assert not trials.set_index("trial_id").loc["lwf-2", "complete"]  # its last task's rows were in that file
    with open(os.path.join(out, "summary.tex")) as f:
        tex = f.read()
    assert "$-$" in tex and not re.search(r"(?<![\w.])-\d", tex)  # minus signs, not hyphens
    strict = str(tmp_path / "strict")
    assert cli.main([results, "--out", strict, "--strict"]) == 2
    assert f"error: {truncated}: not a readable Parquet file" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(strict, "summary.csv"))


def test_out_that_is_a_file_exits_2_before_any_work(tmp_path, capsys, monkeypatch, storage):
    taken = tmp_path / "taken.csv"
    taken.write_text("keep me")
    monkeypatch.setattr(cli, "load", lambda *a, **k: pytest.fail("loaded results despite a bad --out"))
    assert cli.main([storage, "--out", str(taken)]) == 2
    captured = capsys.readouterr()
    assert f"error: --out {str(taken)!r} is an existing file, not a folder" in captured.err
    assert captured.out == "" and taken.read_text() == "keep me"
    assert cli.main([storage, "--out", str(taken / "sub")]) == 2
    assert f"{str(taken)!r} is a file, not a folder" in capsys.readouterr().err


def test_cli_csv_format_and_include_partial(storage, capsys):
    assert cli.main([storage, "--format", "csv", "--include-partial"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0].startswith("approach,dataset,num_tasks,n,TAg acc")
    assert sum(int(line.split(",")[3]) for line in lines[1:]) == 12
    assert "partial trials included" in captured.err


def test_figures_draw_one_line_per_group(storage):
    df = analysis.load(storage)
    fig = analysis.plot_accuracy(df, by="approach")
    assert len(fig.axes[0].lines) == 3
    assert len(analysis.plot_forgetting(df).axes[1].lines) == 3
    assert len(analysis.plot_accuracy_matrix(df, metric="acc_taw").axes[0].images) == 1
    heads = analysis.load_heads(storage)
    assert len(analysis.plot_head_norms(heads, df).axes[0].lines) == 3
    assert len(analysis.plot_head_norms(heads).axes[0].lines) == 3  # heads alone: partial dropped too
    with pytest.raises(analysis.ResultsError, match="acc_tag"):
        analysis.plot_accuracy_matrix(df, metric="forg_tag")


def test_bench_runs_small(capsys):
    assert bench.main(["--trials", "60", "--tasks", "3", "--files", "3"]) == 0
    out = capsys.readouterr().out
    assert "load + summary" in out and "360 rows" in out
