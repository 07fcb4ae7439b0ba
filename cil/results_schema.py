"""The Parquet results schema as data: every table's columns with their types and meanings.

One declaration for the writer (:mod:`cil.results`), the readers (:mod:`analysis`, ``tune``'s final
table) and the page that documents it (docs/results-schema.md renders these tables). Torch- and
Ray-free: analysis imports it. Every file is written with :func:`arrow_schema`, so each column has its
declared type in every file, also where all its values are null (an approach's unused config section,
a trial without the grid search): ``pandas.read_parquet`` on a table folder then reads a running
sweep, errored trials and mixed approaches as one table, instead of failing to cast a typed column to
the null type another file inferred.

A new column is one :class:`Column` in one of the tuples below (the provenance columns are
:data:`PROVENANCE`); the config's columns come from the config declaration itself
(:func:`config_columns`), one per dotted key.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

TASK_RESULTS = "task_results"
HEADS = "heads"
EPOCHS = "epochs"
TABLES = (TASK_RESULTS, HEADS, EPOCHS)
TERM_PREFIX = "term."

#: The column kinds and their Arrow types; ``list[int]`` etc. are lists of them.
KINDS = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}


@dataclass(frozen=True)
class Column:
    """One column: its name, kind (a key of :data:`KINDS`, or ``list[KIND]``) and meaning.

    ``required``: readers refuse a file without it (columns added later are not required of older files).
    ``varies``: it changes from row to row within one trial (every other column of ``task_results``,
    identity and config, is a property of the whole trial)."""

    name: str
    kind: str
    meaning: str
    required: bool = True
    varies: bool = False

    @property
    def arrow_type(self) -> pa.DataType:
        if self.kind.startswith("list[") and self.kind.endswith("]"):
            return pa.list_(KINDS[self.kind[5:-1]])
        return KINDS[self.kind]


@dataclass(frozen=True)
class Family:
    """Columns named by a prefix whose members an approach decides at run time (``term.kd_joint``,
    ``acc_taw_heads``); each member has ``kind``, and is present in the files of the approaches that
    produce it."""

    prefix: str
    kind: str
    meaning: str
    varies: bool = True

    def column(self, name: str) -> Column:
        return Column(name, self.kind, self.meaning, required=False, varies=self.varies)


IDENTITY = (
    Column("sweep", "string", "sweep name (`python -m cil`: the experiment name)"),
    Column("trial_id", "string", "trial id: Ray's (stable across `--resume`; `<ray id>_s<seed>` when seeds run in "
           "lock-step), or `<approach>-s<seed>-<config hash>` from `python -m cil`"),
    Column("approach", "string", "the approach (`lwf`, `lwf-s`, `finetuning`, ...)"),
    Column("seed", "int", "`run.seed`"),
)
TASK = Column("task", "int", "`t`, the task just trained (0-based)", varies=True)

#: The CPU's numeric environment (cil.numerics sets it and reads it back): provenance too.
ENVIRONMENT = (
    Column("threads_in_effect", "int", "intra-op CPU threads the run computed with (`torch.get_num_threads()` "
           "after `run.threads` was applied; [Reproducibility](reproducibility.md))", required=False),
    Column("cpu_isa_in_effect", "string", "the CPU mode in effect, read back from the libraries: `portable (aten "
           "AVX2, mkl COMPATIBLE, onednn off)`, `native (aten AVX512, mkl OFF, onednn on)`", required=False),
    Column("cpu_model", "string", "the CPU's model name (`/proc/cpuinfo`)", required=False),
    Column("numpy_version", "string", "`numpy.__version__`", required=False),
    Column("cil_version", "string", "the project's version", required=False),
    Column("git_commit", "string", "the commit of the clone it ran from (`+dirty` with uncommitted changes), "
           "empty when not run from a clone", required=False),
    Column("lock_hash", "string", "12 hex digits of a SHA-256 over every installed distribution's "
           "`name==version` (pip, setuptools, wheel and this project left out)", required=False),
    Column("numerics_fingerprint", "string", "hash of the config (without where it ran, where it stopped and "
           "`run.threads` as written) and the provenance that changes the numbers: rows with equal fingerprints "
           "must hold equal numbers (`python -m cil verify` checks it)", required=False),
)

#: What ran: a column of every task_results row, read from torch in the trial process (cil.device).
PROVENANCE = (
    Column("device_kind", "string", "`cpu`, `cuda` or `mps`: the kind of device the trial trained on (part of "
           "the trial fingerprint; [GPU path](gpu.md))", required=False),
    Column("device_name", "string", "the GPU's name (`torch.cuda.get_device_name`), or the CPU's platform name",
           required=False),
    Column("device_capability", "string", "the GPU's compute capability (`8.6`, `9.0`); empty on the CPU",
           required=False),
    Column("torch_version", "string", "`torch.__version__`", required=False),
    Column("cuda_version", "string", "the CUDA version torch ran with; empty on the CPU", required=False),
    Column("cudnn_version", "string", "the cuDNN version torch ran with; empty on the CPU", required=False),
    Column("tf32_in_effect", "bool", "whether TF32 matmuls and convolutions were in effect", required=False),
    Column("amp_in_effect", "bool", "whether bf16 autocast was in effect (`train.amp` on the CPU is not)",
           required=False),
    Column("deterministic_in_effect", "bool", "whether torch's deterministic algorithms were in effect",
           required=False),
    *ENVIRONMENT,
)

#: What FACIL's grid search chose for each task (cil.gridsearch); null without it.
GRIDSEARCH = (
    Column("gridsearch_searched", "bool", "whether the task ran the grid search ([grid search](gridsearch.md))",
           False, True),
    Column("gridsearch_lr", "float", "the lr the task trained with", False, True),
    Column("gridsearch_knob", "string", "the stability knob's dotted key (`loss.lamb`); null without a knob",
           False, True),
    Column("gridsearch_knob_value", "float", "the knob's value the task trained with", False, True),
    Column("gridsearch_ft_acc", "float", "finetuning's best validation accuracy", False, True),
    Column("gridsearch_trace", "string", 'JSON: `{"lr": [[lr, val_acc], ...], "knob": [[value, val_acc], ...]}`',
           False, True),
    Column("gridsearch_seconds", "float", "the search's wall time (`train_seconds` is the task's own training)",
           False, True),
)

TASK_COLUMNS_DECLARED = (
    *IDENTITY,
    Column("dataset", "string", "`data.dataset`"),
    Column("num_tasks", "int", "number of tasks of the scenario"),
    Column("network", "string", "`model.network`, as resolved"),
    TASK,
    Column("eval_task", "int", "`u`, the task tested, `0 <= u <= t`", varies=True),
    Column("classes_seen", "int", "classes of tasks `0..t`", varies=True),
    Column("acc_taw", "float", "task-aware accuracy on task `u` after task `t`, in [0, 1]", varies=True),
    Column("acc_tag", "float", "task-agnostic accuracy on task `u` after task `t`, in [0, 1]", varies=True),
    Column("forg_taw", "float", "task-aware forgetting of task `u` after task `t`: max over `t' < t` of "
           "`acc[t', u]` minus `acc[t, u]` for `u < t`, else 0", varies=True),
    Column("forg_tag", "float", "the same, task-agnostic", varies=True),
    Column("train_seconds", "float", "training time of task `t`", varies=True),
    *PROVENANCE,
)
HEAD_COLUMNS_DECLARED = (
    *IDENTITY, TASK,
    Column("head", "int", "a head `h <= task`", varies=True),
    Column("weight_norm", "float", "L2 norm of head `h`'s weight matrix after task `task`", varies=True),
    Column("bias_mean", "float", "mean of head `h`'s bias after task `task`", varies=True),
)
EPOCH_COLUMNS_DECLARED = (
    *IDENTITY, TASK,
    Column("epoch", "int", "the epoch, from 1 (warm-up epochs are not counted)", varies=True),
    Column("train_loss", "float", "mean training loss over the epoch's samples", varies=True),
    Column("val_loss", "float", "validation loss after the epoch (what the lr schedule watches)", varies=True),
    Column("val_acc_taw", "float", "task-aware accuracy on the task's validation split after the epoch, "
           "in [0, 1]", varies=True),
    Column("lr", "float", "the learning rate the epoch trained with", varies=True),
    Column("seconds", "float", "wall time of the epoch, validation included", varies=True),
    Column("train_eval_loss", "float", "with `train.eval_on_train` (FACIL's `--eval-on-train`): the loss on the "
           "task's unaugmented training set after the epoch, model in eval mode; NaN otherwise", False, True),
    Column("train_eval_acc_taw", "float", "with `train.eval_on_train`: task-aware accuracy on the training set "
           "after the epoch; NaN otherwise", False, True),
)
DECLARED = {TASK_RESULTS: TASK_COLUMNS_DECLARED, HEADS: HEAD_COLUMNS_DECLARED, EPOCHS: EPOCH_COLUMNS_DECLARED}
# Columns after the config's in a task_results file (config columns come between the fixed ones and these).
#: Rows of a task that prefix sharing (tune/prefix.py) gave a trial name the trial whose run trained it.
SHARED = Column("shared_from", "string", "the trial whose run trained this task and shared it with this trial "
                "(prefix sharing, [Sweeps](sweeps.md)); null where the trial trained the task itself",
                required=False, varies=True)
TRAILING = {TASK_RESULTS: (*GRIDSEARCH, SHARED), HEADS: (SHARED,), EPOCHS: (SHARED,)}
FAMILIES = {
    TASK_RESULTS: (Family("acc_taw_", "float", "task-aware accuracy of an approach's other score set "
                          "(`acc_taw_heads`: iCaRL's, BiC's and IL2M's plain heads)"),
                   Family("acc_tag_", "float", "task-agnostic accuracy of that score set")),
    HEADS: (),
    EPOCHS: (Family(TERM_PREFIX, "float", "mean of one named term of the approach's loss (`term.ce_pred`, "
                    "`term.kd_joint`, ...); null in the rows of a task without that term (no distillation in "
                    "task 0)"),),
}

# ---- the names readers use, derived from the declarations above ------------------------------------
REQUIRED = {t: tuple(c.name for c in cols if c.required) for t, cols in DECLARED.items()}
TASK_COLUMNS, HEAD_COLUMNS, EPOCH_COLUMNS = REQUIRED[TASK_RESULTS], REQUIRED[HEADS], REQUIRED[EPOCHS]
PROVENANCE_COLUMNS = tuple(c.name for c in PROVENANCE)
ENVIRONMENT_COLUMNS = tuple(c.name for c in ENVIRONMENT)
GRIDSEARCH_COLUMNS = tuple(c.name for c in GRIDSEARCH)
# A row is identified by the trial plus these columns: a reader keeps one row per key.
TRIAL_KEYS = ("sweep", "trial_id")
ROW_KEYS = {TASK_RESULTS: ("task", "eval_task"), HEADS: ("task", "head"), EPOCHS: ("task", "epoch")}
# Columns that must hold integers (the keys, and the count they are checked against), and columns that
# must hold numbers (checked per file).
INTEGER_COLUMNS = {t: (*(("num_tasks",) if t == TASK_RESULTS else ()), *keys) for t, keys in ROW_KEYS.items()}
NUMERIC_COLUMNS = {t: tuple(c.name for c in cols if c.required and c.varies and c.kind in ("int", "float")
                            and c.name not in INTEGER_COLUMNS[t]) for t, cols in DECLARED.items()}
# ``complete`` is added by analysis.load: whether the trial has rows for all its tasks.
ROW_COLUMNS = (*(c.name for c in (*TASK_COLUMNS_DECLARED, *GRIDSEARCH, SHARED) if c.varies), "complete")
SHARED_COLUMN = SHARED.name

# The per-trial metrics summarised over seeds, in the column order of summary.csv. ``paper_*``: the
# aggregates of the paper's own analysis scripts (means over the whole lower triangle; docs/design.md).
METRICS = ("final_acc_tag", "final_acc_taw", "avg_inc_acc_tag", "avg_inc_acc_taw",
           "final_forg_tag", "final_forg_taw", "paper_avg_acc_tag", "paper_avg_acc_taw",
           "paper_avg_forg_tag", "paper_avg_forg_taw")
# Columns every group is split by, whatever ``by`` says: never average across them.
SETTING_COLUMNS = ("dataset", "num_tasks")


class SchemaError(ValueError):
    """Rows with a column the schema does not declare, or a value of the wrong type."""


def varies_per_row(table: str, name: str) -> bool:
    """Whether column ``name`` of ``table`` changes within a trial (else it is identity or config)."""
    if name in ROW_COLUMNS:
        return True
    return any(name.startswith(f.prefix) and f.varies for f in FAMILIES[table])


def _kind_of(tp: Any) -> str:
    """A config leaf's type hint as a column kind (``int | None`` is ``int``: every column may hold nulls)."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        arms = [a for a in args if a is not type(None)]
        if len(arms) > 1:  # ``int | str`` (run.threads: ``auto`` or a count): written as text
            return "string"
        tp = arms[0]
    if typing.get_origin(tp) is list:
        return f"list[{_kind_of(typing.get_args(tp)[0])}]"
    names = {str: "string", int: "int", float: "float", bool: "bool"}
    if tp not in names:
        raise TypeError(f"config leaf type {tp!r} has no results column kind: add it to KINDS")
    return names[tp]


@functools.cache
def config_columns() -> tuple[Column, ...]:
    """One column per dotted config key, typed as the config declares it (imported on first use, so
    readers that never write pay nothing for the config's import)."""
    from cil.config import leaf_types

    fixed = {c.name for c in TASK_COLUMNS_DECLARED}
    return tuple(Column(key, _kind_of(tp), "a config leaf, its resolved value", required=False)
                 for key, tp in leaf_types().items() if key not in fixed)


def config_values(flat: Mapping[str, Any]) -> dict[str, Any]:
    """A config's dotted values as its row columns hold them: a leaf of several types (``run.threads``,
    ``auto`` or a count) as text, so that every trial's files give the column one type."""
    text = {c.name for c in config_columns() if c.kind == "string"}
    return {k: str(v) if k in text and v is not None and not isinstance(v, str) else v for k, v in flat.items()}


def columns(table: str) -> tuple[Column, ...]:
    """Every column ``table``'s files always have, in file order (families not included)."""
    if table not in DECLARED:
        raise ValueError(f"table = {table!r} is not valid: use one of {', '.join(map(repr, TABLES))}")
    config = config_columns() if table == TASK_RESULTS else ()
    return (*DECLARED[table], *config, *TRAILING[table])


def column(table: str, name: str) -> Column | None:
    """The declaration of column ``name`` of ``table`` (a family's member too), or None."""
    found = next((c for c in columns(table) if c.name == name), None)
    if found is None:
        family = next((f for f in FAMILIES[table] if name.startswith(f.prefix)), None)
        found = family.column(name) if family is not None else None
    return found


def arrow_schema(table: str, names: Iterable[str] = ()) -> pa.Schema:
    """The Arrow schema of a ``table`` file: every declared column, then the family members among
    ``names`` (sorted); a name that is neither is a :class:`SchemaError` naming where to declare it."""
    fixed = columns(table)
    known = {c.name for c in fixed}
    extra = []
    for name in dict.fromkeys(names):
        if name in known:
            continue
        found = column(table, name)
        if found is None:
            prefixes = ", ".join(f"{f.prefix}*" for f in FAMILIES[table]) or "none"
            raise SchemaError(f"column {name!r} of table {table!r} is not declared: add a Column to "
                              f"cil/results_schema.py (families of this table: {prefixes})")
        extra.append(found)
    return pa.schema([pa.field(c.name, c.arrow_type) for c in (*fixed, *sorted(extra, key=lambda c: c.name))])


def to_arrow(rows: list[Mapping[str, Any]], table: str) -> pa.Table:
    """``rows`` as an Arrow table with the declared schema: absent columns are typed nulls."""
    names = dict.fromkeys(k for row in rows for k in row)
    schema = arrow_schema(table, names)
    try:
        return pa.Table.from_pylist(list(rows), schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise SchemaError(f"rows of table {table!r} do not fit its declared schema: {err}") from err


def conform(data: pa.Table, table: str) -> pa.Table:
    """``data`` with the declared schema: declared columns cast to their type and added (as nulls)
    where missing; family members typed; columns of older writers that are no longer declared kept
    as they are, last."""
    declared = arrow_schema(table, [n for n in data.column_names if column(table, n) is not None])
    arrays = []
    for field in declared:
        if field.name in data.column_names:
            arrays.append(data.column(field.name).cast(field.type))
        else:
            arrays.append(pa.nulls(data.num_rows, field.type))
    undeclared = [n for n in data.column_names if n not in declared.names]
    fields = [*declared, *(data.schema.field(n) for n in undeclared)]
    return pa.Table.from_arrays([*arrays, *(data.column(n) for n in undeclared)], schema=pa.schema(fields),
                                ).replace_schema_metadata(data.schema.metadata)


def markdown_table(table: str) -> str:
    """The page's table of ``table``'s columns (docs/results-schema.md renders it)."""
    lines = ["| column | type | meaning |", "|--------|------|---------|"]
    for c in DECLARED[table]:
        lines.append(f"| `{c.name}` | {c.kind} | {c.meaning} |")
    for f in FAMILIES[table]:
        lines.append(f"| `{f.prefix}<name>` | {f.kind} | {f.meaning}; only in the files of approaches that have it |")
    if table == TASK_RESULTS:
        lines.append("| every config leaf | as declared | one column per dotted key of `ExperimentConfig` "
                     "(`loss.lamb`, `train.lr`, ...), holding the resolved value, typed as the config declares "
                     "it (null where an approach leaves a section unset) |")
    for c in TRAILING[table]:
        lines.append(f"| `{c.name}` | {c.kind} | {c.meaning} |")
    return "\n".join(lines)
