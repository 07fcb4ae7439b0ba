"""examples/results.ipynb runs top to bottom against a sweep's results (the Parquet schema, written by
analysis.synth: 6 approaches x 3 seeds x 5 tasks, heads included) and is stored without outputs; the
plot functions draw into the caller's axes."""

from __future__ import annotations

import os

import nbformat
import pytest
from matplotlib.figure import Figure

import analysis
from analysis.synth import make_results, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "examples", "results.ipynb")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> str:
    task_results, heads = make_results(18, num_tasks=5, sweep="quickstart", dataset="digits", num_classes=10)
    return write_results(tmp_path_factory.mktemp("storage"), task_results, heads, files=4)


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_notebook_runs_against_a_sweeps_results(results, monkeypatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("CIL_RESULTS", results)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "18 trials" in text and "approaches ['lwf', 'lwf-br'" in text
    assert "| lwf " in text and "baseline" in text  # the summary table
    assert "paired t =" in text and "over 3 seeds" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # four package figures and the custom pair of panels


def test_plot_functions_draw_into_the_callers_axes(results) -> None:
    df = analysis.load(results)
    fig = Figure()
    ax = fig.subplots()
    assert analysis.plot_accuracy(df, ax=ax) is fig
    assert len(ax.lines) == 6 and "TAg" in ax.get_title()  # one line per approach, TAg by default
    fig = Figure()
    axes = fig.subplots(1, 2)
    analysis.plot_forgetting(df, ax=axes)
    assert [len(a.lines) for a in axes] == [6, 6] and "TAw" in axes[1].get_title()
    fig = Figure()
    ax = fig.subplots()
    analysis.plot_accuracy(df, ax=ax, kinds="taw")
    assert "TAw" in ax.get_title()
    fig = Figure()
    ax = fig.subplots()
    analysis.plot_head_norms(analysis.load_heads(results), df, ax=ax, values="bias_mean")
    assert "bias mean" in ax.get_title() and len(ax.lines) == 6
    fig = Figure()
    axes = fig.subplots(2, 3)
    analysis.plot_accuracy_matrix(df, ax=axes)
    assert [len(a.images) for a in axes.flat] == [1] * 6
    with pytest.raises(analysis.ResultsError, match=r"ax holds 6 Axes, .* need 1 or 2"):
        analysis.plot_accuracy(df, ax=axes)
    with pytest.raises(analysis.ResultsError, match=r"one heatmap per group \(6\) but ax holds 1"):
        analysis.plot_accuracy_matrix(df, ax=ax)
    with pytest.raises(analysis.ResultsError, match=r"panels \['tog'\] are not valid: choose from \['tag', 'taw'\]"):
        analysis.plot_accuracy(df, kinds=["tog"])
