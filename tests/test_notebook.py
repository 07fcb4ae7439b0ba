"""examples/results.ipynb runs top to bottom against a sweep's results (the quickstart's shape: 8
approaches x 3 seeds x 5 tasks, heads included, in the real Parquet schema) with no warning in its
outputs, and is stored without outputs; the plot functions draw into the caller's axes. A slow test
runs it the way a new user does: in a fresh virtual environment made by the README's install line,
from a folder outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest
import quickstart_results as qs
from matplotlib.figure import Figure

import analysis
from analysis.synth import make_results, write_results

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(ROOT, "examples", "results.ipynb")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> str:
    task_results, heads = make_results(18, num_tasks=5, sweep="quickstart", dataset="digits", num_classes=10)
    return write_results(tmp_path_factory.mktemp("storage"), task_results, heads, files=4)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> str:
    return qs.write(str(tmp_path_factory.mktemp("storage") / "quickstart" / "results"))


def check_executed(nb: nbformat.NotebookNode) -> None:
    """What a reader of the executed notebook sees: no error, no warning, the table, the paired
    comparison of the best contender (not the upper bound joint) and the figures."""
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    stderr = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stderr")
    assert "Warning" not in stderr, stderr[:2000]  # e.g. pandas' PerformanceWarning
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "24 trials" in text and "approaches ['finetuning', 'joint', 'lwf'" in text
    assert "| lwf " in text and "baseline" in text  # the summary table
    # joint has the best accuracy, but it is an upper bound: the best contender is lwf-bsr
    assert "lwf-bsr - lwf, TAg accuracy" in text and "joint - lwf" not in text
    assert "paired t =" in text and "over 3 seeds" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # four package figures and the custom pair of panels


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, "no code cells"
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, cell.source[:60]


def test_notebook_runs_against_a_sweeps_results(quickstart, monkeypatch) -> None:
    from nbclient import NotebookClient

    monkeypatch.setenv("CIL_RESULTS", quickstart)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}}).execute()
    check_executed(nb)


def readme_install() -> str:
    """The README's install command, after making and activating the environment."""
    with open(os.path.join(ROOT, "README.md")) as f:
        [line] = [line for line in f if line.startswith("python3.11 -m venv .venv && ")]
    command = line.split("#")[0].strip().split(" && ")
    assert command[:2] == ["python3.11 -m venv .venv", ". .venv/bin/activate"], command
    return " && ".join(command[2:])


@pytest.mark.slow
def test_notebook_runs_after_exactly_the_readmes_install(quickstart, tmp_path) -> None:
    """A fresh virtual environment, the README's install line run in the checkout, then the notebook
    executed (jupyter nbconvert, the lock's front end) from a folder outside the repository with no
    PYTHONPATH: `import analysis` must come from the install."""
    venv = tmp_path / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    subprocess.run(["bash", "-c", readme_install()], cwd=ROOT, env=env, check=True, timeout=3000)
    work = tmp_path / "elsewhere"
    work.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.write(nb, str(work / "results.ipynb"))
    env |= {"CIL_RESULTS": quickstart, "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    subprocess.run([str(venv / "bin" / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
                    "--ExecutePreprocessor.timeout=600", "--output", "executed.ipynb", "results.ipynb"],
                   cwd=work, env=env, check=True, timeout=900)
    check_executed(nbformat.read(str(work / "executed.ipynb"), as_version=4))


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
