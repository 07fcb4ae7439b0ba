"""The Parquet results schema of docs/results-schema.md, as data: required columns and which ones vary per row.

Kept in one place so the loader, the metrics and the synthetic writer cannot drift apart.
"""

from __future__ import annotations

# The epochs table's names are cil's own (cil.results is torch-free): one definition for writer and reader.
from cil.results import EPOCH_COLUMNS, EPOCHS, SHARED_COLUMN, TERM_PREFIX  # noqa: F401 - TERM_PREFIX: for readers

TASK_RESULTS = "task_results"
HEADS = "heads"
TABLES = (TASK_RESULTS, HEADS, EPOCHS)

TASK_COLUMNS = ("sweep", "trial_id", "approach", "seed", "dataset", "num_tasks", "network", "task",
                "eval_task", "classes_seen", "acc_taw", "acc_tag", "forg_taw", "forg_tag", "train_seconds")
HEAD_COLUMNS = ("sweep", "trial_id", "approach", "seed", "task", "head", "weight_norm", "bias_mean")
REQUIRED = {TASK_RESULTS: TASK_COLUMNS, HEADS: HEAD_COLUMNS, EPOCHS: EPOCH_COLUMNS}

# Columns that must hold integers, and columns that must hold numbers (checked per file).
INTEGER_COLUMNS = {TASK_RESULTS: ("num_tasks", "task", "eval_task"), HEADS: ("task", "head"),
                   EPOCHS: ("task", "epoch")}
NUMERIC_COLUMNS = {
    TASK_RESULTS: ("classes_seen", "acc_taw", "acc_tag", "forg_taw", "forg_tag", "train_seconds"),
    HEADS: ("weight_norm", "bias_mean"),
    EPOCHS: ("train_loss", "val_loss", "val_acc_taw", "lr", "seconds"),
}
# A row is identified by the trial plus these columns: a reader keeps one row per key.
ROW_KEYS = {TASK_RESULTS: ("task", "eval_task"), HEADS: ("task", "head"), EPOCHS: ("task", "epoch")}
TRIAL_KEYS = ("sweep", "trial_id")

# Columns of task_results that change from row to row inside one trial; every other column
# (identity and config, e.g. ``loss.lamb``) is a property of the whole trial.
ROW_COLUMNS = ("task", "eval_task", "classes_seen", "acc_taw", "acc_tag", "forg_taw", "forg_tag",
               "train_seconds", "complete",
               # what FACIL's grid search chose for each task (cil.gridsearch.COLUMNS; absent without it)
               "gridsearch_searched", "gridsearch_lr", "gridsearch_knob", "gridsearch_knob_value",
               "gridsearch_ft_acc", "gridsearch_trace", "gridsearch_seconds",
               SHARED_COLUMN)  # the trial that trained a task shared with this one (absent: none)
ACCURACY_COLUMNS = ("acc_taw", "acc_tag", "forg_taw", "forg_tag")

# The per-trial metrics summarised over seeds, in the column order of summary.csv. ``paper_*``: the
# aggregates of the paper's own analysis scripts (means over the whole lower triangle; docs/design.md).
METRICS = ("final_acc_tag", "final_acc_taw", "avg_inc_acc_tag", "avg_inc_acc_taw",
           "final_forg_tag", "final_forg_taw", "paper_avg_acc_tag", "paper_avg_acc_taw",
           "paper_avg_forg_tag", "paper_avg_forg_taw")
# Columns every group is split by, whatever ``by`` says: never average across them.
SETTING_COLUMNS = ("dataset", "num_tasks")
