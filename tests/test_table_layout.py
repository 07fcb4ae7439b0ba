"""The printed comparison tables fit a 120-column terminal on the quickstart's results: the compact
columns by default, a single dataset and num_tasks in a header line, everything with --columns all."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import quickstart_results as qs

import analysis
from analysis import cli
from analysis.table import LABELS, final_table

WIDTH = 120
COMPACT = ["approach", "n", "TAg acc", "Δ TAg acc", "TAw acc", "TAg avg inc acc", "Δ TAg avg inc acc", "TAg forg"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return qs.write(str(tmp_path_factory.mktemp("storage") / "quickstart" / "results"))


def header_cells(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("| "))
    return [c.strip() for c in line.strip("|").split("|")]


def check_width(text: str) -> None:
    wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not wide, f"{len(wide)} lines wider than {WIDTH}: {wide[0]!r} ({len(wide[0])})"


def test_quickstart_table_with_a_baseline_fits_120_columns(results, capsys):
    assert cli.main([results, "--baseline", "lwf"]) == 0
    text = capsys.readouterr().out
    check_width(text)
    assert text.splitlines()[0] == f"dataset: {qs.DATASET}; num_tasks: {qs.NUM_TASKS}"
    assert header_cells(text) == COMPACT
    rows = [line for line in text.splitlines() if line.startswith("| ")][1:]  # after the header
    assert [r.split("|")[1].strip() for r in rows] == list(qs.APPROACHES)  # the registry's order
    lwf = next(r for r in rows if r.startswith("| lwf "))
    assert lwf.count("baseline") == 2  # both deltas of the baseline's own row


def test_the_end_of_sweep_table_fits_too(results):
    text = final_table(results, by=["approach"])
    check_width(text)
    assert text.startswith(f"dataset: {qs.DATASET}; num_tasks: {qs.NUM_TASKS}\n")
    assert header_cells(text) == [c for c in COMPACT if not c.startswith("Δ")]


def test_columns_all_keeps_every_column(results, capsys, tmp_path):
    assert cli.main([results, "--baseline", "lwf", "--columns", "all", "--out", str(tmp_path),
                     "--no-figures"]) == 0
    text = capsys.readouterr().out
    expected = ["approach", "dataset", "num_tasks", "n"]
    for m in analysis.METRICS:
        expected += [LABELS[m], f"Δ {LABELS[m]}"]
    assert header_cells(text) == expected
    assert not text.startswith("dataset:")  # the setting is in its columns, not a header line
    csv = pd.read_csv(tmp_path / "summary.csv")  # the CSV keeps every column whatever --columns says
    assert list(csv.columns[:4]) == ["approach", "dataset", "num_tasks", "n_seeds"]
    assert len(csv.columns) == 4 + 5 * len(analysis.METRICS)
    assert cli.main([results, "--format", "csv"]) == 0  # printed CSV too: for machines, all columns
    printed = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(printed.columns) == ["approach", "dataset", "num_tasks", "n", *(LABELS[m] for m in analysis.METRICS)]


def test_each_setting_gets_its_own_table_under_a_header_line(results, tmp_path):
    qs.write(str(tmp_path / "digits" / "results"), dataset="digits", sweep="digits", approaches=("lwf", "lwf-s"))
    df = pd.concat([analysis.load(results), analysis.load(str(tmp_path / "digits" / "results"))])
    text = analysis.format_table(analysis.summary(df, baseline="lwf"))
    check_width(text)
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("dataset: ")]
    assert [lines[i] for i in heads] == [f"dataset: digits; num_tasks: {qs.NUM_TASKS}",
                                         f"dataset: {qs.DATASET}; num_tasks: {qs.NUM_TASKS}"]
    digits = [line.split("|")[1].strip() for line in lines[heads[0]:heads[1]] if line.startswith("| ")]
    assert digits == ["approach", "lwf", "lwf-s"] and header_cells(text) == COMPACT
    # LaTeX keeps one tabular: the constant num_tasks in its comment, the two datasets in a column
    tex = analysis.format_table(analysis.summary(df), "latex")
    assert tex.startswith(f"% num_tasks: {qs.NUM_TASKS}\n") and "approach & dataset & n &" in tex
    with pytest.raises(analysis.ResultsError, match="unknown columns 'some': use one of compact, all"):
        analysis.format_table(analysis.summary(df), columns="some")
