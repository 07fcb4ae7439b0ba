"""``python -m cil verify RESULTS`` (and ``python -m tune verify SWEEP``): re-run a recorded trial in its
recorded numeric environment and compare its rows bit for bit (docs/reproducibility.md).

The trial's config comes back from its rows (every row carries its dotted config keys); ``run.threads``
becomes the count the rows record as in effect, so a sweep trial is re-run here, without Ray, with the
threads it computed with. Every number of the ``task_results``, ``heads`` and ``epochs`` rows of the tasks
re-run is compared as bits (the head norms and the epoch losses see a change that leaves accuracies
alone); timings are not compared. When they differ, the provenance fields whose values here differ from
the recorded ones are named, with the config key that sets each.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import struct
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from cil.config import MACHINE_KEYS, ConfigError, ExperimentConfig, valid_keys
from cil.config.coercion import assignments
from cil.results import EPOCHS, HEADS, TABLES, TASK_RESULTS, join, resolve

# The rows' identity per table (besides the trial), and columns never compared: timings, and the
# provenance (compared as the environment instead).
ROW_KEYS = {TASK_RESULTS: ("task", "eval_task"), HEADS: ("task", "head"), EPOCHS: ("task", "epoch")}
_NOT_COMPARED = ("sweep", "trial_id", "complete")
# The config key that sets each provenance field, where one does.
SET_BY = {"threads_in_effect": "run.threads", "cpu_isa_in_effect": "run.cpu_isa", "amp_in_effect": "train.amp",
          "tf32_in_effect": "train.tf32", "deterministic_in_effect": "run.deterministic",
          "device_kind": "run.device"}


#: A small run in the portable mode whose rows' digest is stored: every x86-64 CPU with AVX2 must compute it
#: (tests/test_reproducibility.py on this machine, benchmarks/gpu_check.py on the GPU machine's host CPU).
REFERENCE_RUN = {"approach": "lwf", "data.dataset": "synthetic:classes=4,channels=1,size=8,train=10,test=5",
                 "data.num_tasks": 2, "train.nepochs": 2, "run.threads": 1, "run.cpu_isa": "portable",
                 "run.device": "cpu", "run.seed": 0}
#: its digest (cil.verify.rows_digest), and the versions that computed it: another torch or numpy may
#: compute other bits, which is not a failure of the portable mode
REFERENCE_DIGEST = {"digest": "34b72cfb7ea6ddf378be9fd795a21f606c74b6e9a22114d901a3d2639d738808",
                    "torch": "2.14.1+cu130", "numpy": "2.4.6"}


class VerifyError(ValueError):
    """Results that cannot be verified: no such trial, no rows, a config that no longer validates."""


@dataclass
class Outcome:
    """What a verification found: the rows compared, the values that differ, the environment fields that
    differ from the recorded ones (field -> (recorded, here))."""

    trial_id: str
    tasks: int
    first: int = 0
    compared: int = 0
    differences: list[str] = field(default_factory=list)
    environment: dict[str, tuple[Any, Any]] = field(default_factory=dict)

    @property
    def identical(self) -> bool:
        return self.compared > 0 and not self.differences

    def report(self) -> str:
        lines = [f"trial {self.trial_id}, tasks {self.first}..{self.tasks - 1}"
                 f"{' (from its checkpoint)' if self.first else ''}: {self.compared} values compared"]
        if self.identical:
            lines.append("identical bit for bit")
        else:
            lines.append(f"{len(self.differences)} values differ, e.g.:")
            lines.extend(f"  {d}" for d in self.differences[:5])
        if self.environment:
            lines.append("provenance fields that differ from the recorded ones (recorded -> here):")
            lines.extend(f"  {name}{f' ({SET_BY[name]})' if name in SET_BY else ''}: {old!r} -> {new!r}"
                         for name, (old, new) in self.environment.items())
        elif not self.identical:
            lines.append("no provenance field differs: the rows should have been identical (a bug, or a "
                         "part of the environment the rows do not record)")
        return "\n".join(lines)


def read_rows(results_dir: str, table: str, trial_id: str | None = None) -> list[dict[str, Any]]:
    """Every row of ``table`` under a results folder (or one trial's), as dicts."""
    fs, base = resolve(results_dir)
    folder = join(base, table)
    infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
    rows: list[dict[str, Any]] = []
    for info in sorted(infos, key=lambda i: i.path):
        if info.type != pafs.FileType.File or not info.base_name.endswith(".parquet") \
                or info.base_name.startswith((".", "_")):
            continue
        part = pq.read_table(info.path, filesystem=fs)
        if trial_id is not None:
            part = part.filter(pc.equal(part.column("trial_id"), trial_id))
        rows.extend(part.to_pylist())
    return rows


def results_folder(path: str) -> str:
    """A results folder from a sweep's folder (``<storage>/<name>``) or the results folder itself."""
    fs, base = resolve(path)
    if fs.get_file_info(join(base, TASK_RESULTS)).type == pafs.FileType.NotFound \
            and fs.get_file_info(join(base, "results", TASK_RESULTS)).type != pafs.FileType.NotFound:
        return join(path.partition("?")[0], "results") + ("?" + path.partition("?")[2] if "?" in path else "")
    return path


def recorded_config(row: dict[str, Any], overrides: dict[str, Any]) -> ExperimentConfig:
    """The trial's config from one of its rows, with the threads it ran with and ``overrides`` on top."""
    keys = set(valid_keys()) - set(MACHINE_KEYS) | {"data.data_root", "run.device"}
    values = {k: row[k] for k in keys if k in row and row[k] is not None}
    if isinstance(values.get("run.threads"), str):
        values["run.threads"] = yaml.safe_load(values["run.threads"])  # rows hold it as text
    if row.get("threads_in_effect") is not None:
        values["run.threads"] = int(row["threads_in_effect"])
    values["run.device"] = "cpu" if row.get("device_kind", "cpu") == "cpu" else values.get("run.device", "cuda")
    values["run.stop_at_task"] = 0
    try:
        return ExperimentConfig.from_dict(values | overrides)
    except ConfigError as err:
        raise VerifyError(f"the trial's recorded config does not validate here: {err}") from None


def verify(results_dir: str, trial_id: str | None = None, tasks: int = 0,
           overrides: dict[str, Any] | None = None, task: int | None = None) -> Outcome:
    """Re-run ``trial_id`` (default: the first recorded) for its first ``tasks`` tasks (0: all it recorded),
    or only ``task`` from a sweep's checkpoint of the state before it, and compare every number of its
    rows bit for bit."""
    results_dir = results_folder(results_dir)
    recorded = {t: read_rows(results_dir, t, trial_id) for t in TABLES}
    rows = recorded[TASK_RESULTS]
    if not rows:
        raise VerifyError(f"no task_results rows{f' of trial {trial_id!r}' if trial_id else ''} under {results_dir}")
    if trial_id is None:
        trial_id = sorted({r["trial_id"] for r in rows})[0]
        recorded = {t: [r for r in v if r["trial_id"] == trial_id] for t, v in recorded.items()}
        rows = recorded[TASK_RESULTS]
    done = max(r["task"] for r in rows) + 1
    tasks = min(tasks or done, done)
    first = 0
    if task is not None:  # one task, from the checkpoint that holds the state after the task before it
        if not 0 < task < done:
            raise VerifyError(f"--task {task} is not valid: the trial recorded tasks 0..{done - 1}; a task "
                              f"after the first is re-run from the checkpoint before it")
        first, tasks = task, task + 1
    cfg = recorded_config(rows[0], dict(overrides or {}) | {"run.stop_at_task": tasks})
    state = None if task is None else checkpoint_state(results_dir, trial_id, task)
    here = _rerun(cfg, trial_id, state)
    outcome = Outcome(trial_id, tasks, first)
    for table in TABLES:
        old = {_key(table, r): r for r in recorded[table] if first <= r["task"] < tasks}
        new = {_key(table, r): r for r in here[table]}
        for key in sorted(old.keys() | new.keys()):
            outcome.compared += _compare(table, key, old.get(key), new.get(key), outcome.differences)
    from cil.results_schema import PROVENANCE_COLUMNS

    first_new = here[TASK_RESULTS][0]
    outcome.environment = {c: (rows[0].get(c), first_new.get(c)) for c in PROVENANCE_COLUMNS
                           if rows[0].get(c) != first_new.get(c)}
    return outcome


def checkpoint_state(results_dir: str, trial_id: str, task: int) -> dict[str, Any]:
    """The state after task ``task - 1`` of a sweep trial, from the checkpoints Tune kept beside the
    results (``<sweep>/<trainable>_<ray id>/checkpoint_*/cil_state.pt``; search mode: one state per seed)."""
    import torch

    ray_id, _, seed = trial_id.partition("_s")
    fs, base = resolve(results_dir)
    sweep = base.rstrip("/").rpartition("/")[0]
    found = []
    for info in fs.get_file_info(pafs.FileSelector(sweep, recursive=True, allow_not_found=True)):
        parts = info.path.split("/")
        if info.base_name == "cil_state.pt" and len(parts) >= 3 and parts[-3].endswith("_" + ray_id):
            with fs.open_input_file(info.path) as f:
                states = torch.load(io.BytesIO(f.read()), weights_only=True)["states"]
            found.append(states[[s["config"]["run.seed"] for s in states].index(int(seed))] if seed else states[0])
    for state in found:
        if state["next_task"] == task:
            return state
    kept = sorted(s["next_task"] - 1 for s in found)
    raise VerifyError(f"no checkpoint of trial {trial_id} holds the state after task {task - 1} (it kept the states "
                      f"after tasks {kept or 'none'}: checkpoint.num_to_keep); re-run from the start with --tasks")


def _rerun(cfg: ExperimentConfig, trial_id: str, state: dict[str, Any] | None = None
           ) -> dict[str, list[dict[str, Any]]]:
    """The rows a run of ``cfg`` (from ``state``, when given) writes, read back through Parquet (as the
    recorded ones were)."""
    from cil import numerics
    from cil.loop import run
    from cil.results import write_task

    share = None
    if state is not None and state["config"].get("run.threads", "auto") == "auto":
        share = cfg.run.threads  # the state's "auto", resolved to the count the rows record
        cfg = cfg.replace(**{"run.threads": "auto"})
    numerics.claim_cpu_share(share)
    try:
        with tempfile.TemporaryDirectory(prefix="cil-verify-") as d:
            for r in run(cfg, state):
                tag = {"trial_id": trial_id}
                write_task([tag | x for x in r.task_rows], [tag | x for x in r.head_rows], d, trial_id, r.task,
                           [tag | x for x in r.epoch_rows])
            return {t: read_rows(d, t) for t in TABLES}
    except ValueError as err:  # a checkpoint of another config (a key changed with --set)
        raise VerifyError(str(err)) from None
    finally:
        numerics.claim_cpu_share(None)


def _key(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in ROW_KEYS[table])


def _compare(table: str, key: tuple[Any, ...], old: dict[str, Any] | None, new: dict[str, Any] | None,
             differences: list[str]) -> int:
    """Compare one row's numbers as bits; append what differs; return how many values were compared."""
    where = f"{table} " + " ".join(f"{k}={v}" for k, v in zip(ROW_KEYS[table], key, strict=True))
    if old is None or new is None:
        differences.append(f"{where}: {'only here' if old is None else 'not produced here'}")
        return 1
    values = compared_values(old)
    for column, value in values.items():
        if _bits(value) != _bits(new.get(column)):
            differences.append(f"{where} {column}: {value!r} recorded, {new.get(column)!r} here")
    return len(values)


def compared_values(row: dict[str, Any]) -> dict[str, Any]:
    """The numbers of a row that a run computes: not its identity, config, provenance or timings."""
    from cil.results_schema import PROVENANCE_COLUMNS

    return {c: v for c, v in row.items()
            if c not in _NOT_COMPARED and c not in PROVENANCE_COLUMNS and not c.endswith("_seconds")
            and c != "seconds" and ("." not in c or c.startswith("term."))
            and isinstance(v, int | float) and not isinstance(v, bool)}


def rows_digest(tables: dict[str, list[dict[str, Any]]]) -> str:
    """SHA-256 of every compared number's bits, in row-key order: equal digests, equal rows."""
    h = hashlib.sha256()
    for table in TABLES:
        for row in sorted(tables[table], key=lambda r: _key(table, r)):
            for column, value in sorted(compared_values(row).items()):
                h.update(f"{table}/{_key(table, row)}/{column}=".encode() + repr(_bits(value)).encode())
    return h.hexdigest()


def reference_check() -> dict[str, Any]:
    """Run :data:`REFERENCE_RUN` here and compare its digest with the stored one (:data:`REFERENCE_DIGEST`):
    whether this CPU computes the portable mode's bits."""
    import numpy as np
    import torch

    from cil.numerics import cpu_isa_in_effect, cpu_model, lock_hash

    cfg = ExperimentConfig.from_dict(REFERENCE_RUN)
    digest = rows_digest(_rerun(cfg, "reference"))
    same_versions = (torch.__version__, np.__version__) == (REFERENCE_DIGEST["torch"], REFERENCE_DIGEST["numpy"])
    return {"digest": digest, "expected": REFERENCE_DIGEST["digest"], "match": digest == REFERENCE_DIGEST["digest"],
            "same_versions": same_versions, "cpu_model": cpu_model(), "cpu_isa_in_effect": cpu_isa_in_effect(),
            "torch": torch.__version__, "numpy": np.__version__, "lock_hash": lock_hash()}


def _bits(value: Any) -> Any:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else struct.pack("<d", value)
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags both verify commands share."""
    p.add_argument("--trial", default=None, help="the trial_id to re-run (default: the first recorded)")
    p.add_argument("--tasks", type=int, default=0, help="re-run and compare the first N tasks (0: all recorded)")
    p.add_argument("--task", type=int, default=None, metavar="K",
                   help="a sweep trial: re-run task K alone, from the checkpoint of the state after task K-1")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a config key of the re-run (e.g. --set run.threads=2 to see what a thread "
                        "count changes); the data root of this machine: --set data.data_root=PATH")


def run_verify(results_dir: str, args: argparse.Namespace) -> int:
    """Verify, print the report; exit code 0 identical, 1 different, 2 cannot verify."""
    try:
        overrides = assignments(args.set)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.tasks < 0:
        print(f"error: --tasks {args.tasks} is not valid: use 0 (all) or a count >= 1", file=sys.stderr)
        return 2
    try:
        outcome = verify(results_dir, args.trial, args.tasks, overrides, args.task)
    except VerifyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(outcome.report())
    return 0 if outcome.identical else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cil verify RESULTS``: RESULTS is a ``results/`` folder of ``python -m cil`` (or a sweep's)."""
    p = argparse.ArgumentParser(prog="python -m cil verify", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", help="a results folder: <results-path>/<exp-name>/results, or a URI")
    add_arguments(p)
    args = p.parse_args(argv)
    return run_verify(args.results, args)
