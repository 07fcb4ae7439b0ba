"""Accuracy and forgetting comparisons from sweep results: tables, figures and a notebook API.

Reads only the Parquet results schema of docs/results-schema.md (never torch or ray)::

    import analysis
    df = analysis.load("results/my-sweep")          # or s3://bucket/storage/my-sweep
    table = analysis.summary(df, by=["approach"], baseline="lwf")
    print(analysis.format_table(table))
"""

from analysis.errors import ResultsError, ResultsWarning
from analysis.groups import UPPER_BOUNDS
from analysis.load import load, load_epochs, load_heads
from analysis.metrics import curves, final_forgetting, trial_metrics
from analysis.summary import summary
from analysis.table import final_table, format_table
from cil.results_schema import METRICS

_FIGURES = ("plot_accuracy", "plot_accuracy_matrix", "plot_forgetting", "plot_head_norms", "plot_learning_curves")


def __getattr__(name: str):
    """Plot functions load matplotlib on first use, so ``import analysis`` stays light for the
    sweep driver, which only needs load/summary/format_table."""
    if name in _FIGURES:
        from analysis import figures

        return getattr(figures, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")

__all__ = [
    "METRICS",
    "ResultsError",
    "ResultsWarning",
    "UPPER_BOUNDS",
    "curves",
    "final_forgetting",
    "final_table",
    "format_table",
    "load",
    "load_epochs",
    "load_heads",
    "plot_accuracy",
    "plot_accuracy_matrix",
    "plot_forgetting",
    "plot_head_norms",
    "plot_learning_curves",
    "summary",
    "trial_metrics",
]
