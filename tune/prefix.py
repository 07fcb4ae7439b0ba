"""Prefix sharing: trials whose runs are identical up to the end of task t train tasks 0..t once.

**The prefix key** of (trial, t) hashes what the state after task t and the rows of tasks 0..t depend
on: the trial's resolved config less the keys that cannot act by then (:func:`key_config`), the data's
identity, the numeric environment (:func:`numeric_environment`) and the code (:func:`code_version`).
The keys that act are *declared*, not recorded as the run reads them: per approach in
``cil.approaches.registry`` (:class:`~cil.approaches.registry.FirstTask`: the approach it trains task 0
like, the keys with no effect in task 0, and neutral values such as a loss weight of 0), plus the few
facts of the shared loop below. A declaration is a claim that tests/test_prefix.py checks bit for bit
for every approach of the registry; a key left out of a declaration only costs sharing.

**What is shared** is the state after task t *after* the approach's end-of-task work (its memory update,
EWC's Fisher, iCaRL's class means), exactly what a checkpoint holds, so a trial continues from it as
from its own checkpoint. An approach whose end-of-task work differs (EWC) therefore shares task 0 with
its own configs only (every ``ewc.lamb``), never with finetuning, whose training of task 0 it repeats.

**The store** is a folder of the sweep's storage (local, S3, GCS through pyarrow): one
``<key>/entry.pt`` per (key, t), holding the state after task t and that task's rows as the trial that
trained it wrote them. A producer writes the entry under a temporary name and moves it into place (an
object store's single PUT is atomic too), so two trials that produce the same entry at once leave one
whole copy; both copies are the same bits anyway. While a trial trains task t it holds
``<key>/claim.json`` (heartbeat every :data:`HEARTBEAT_S`); a trial that needs that prefix waits for
the entry while the claim is alive (at most ``wait_s``), else trains it itself.

**Shared rows** are written under the trial's own id with its own config columns, plus the column
:data:`cil.results_schema.SHARED_COLUMN` naming the trial whose run trained that task.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import platform
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cil.approaches.registry import SPECS
from cil.config import MACHINE_KEYS, ExperimentConfig
from cil.device import provenance
from cil.loop import AfterEpoch, TaskResult, run
from cil.numerics import NUMERIC_FIELDS, fingerprint
from cil.results import join, resolve
from cil.results_schema import SHARED_COLUMN, config_values

#: keys that never change what a run computes: where it runs, and where it stops (``last_task`` is
#: recomputed for each trial)
NEVER_ACTS = (*MACHINE_KEYS, "run.stop_at_task")
#: keys of the shared loop with no effect up to the end of task 0: the warm-up and ``train.fix_bn``
#: act from task 1 on (cil.training)
LOOP_FIRST_TASK_UNUSED = ("train.warmup_nepochs", "train.warmup_lr_factor", "train.fix_bn")
#: data sets read from files under ``data.data_root``: their identity includes that folder
FILE_DATASETS = ("folder", "imagenet100")
ENTRY = "entry.pt"
CLAIM = "claim.json"
HEARTBEAT_S = 10.0
STALE_S = 60.0  # a claim this old is a dead producer's
ENTRY_VERSION = 1


def key_config(cfg: ExperimentConfig, t: int) -> dict[str, Any]:
    """The config values the state after task ``t`` depends on (see the module doc). ``approach`` is
    the approach the trial trains like up to then."""
    flat = cfg.to_flat()
    drop = set(NEVER_ACTS)
    if cfg.train.gridsearch_tasks == 0:
        drop |= {k for k in flat if k.startswith("gridsearch.")}
    approach = cfg.approach
    if t == 0 and cfg.train.gridsearch_tasks == 0:  # a grid search in task 0 compares the approach's own losses
        first = SPECS[cfg.approach].first_task
        drop |= {*LOOP_FIRST_TASK_UNUSED, *first.unused}
        drop |= {k for k, neutral in first.neutral.items() if flat[k] == neutral}
        approach = first.like or cfg.approach
    out = {k: v for k, v in flat.items() if k not in drop} | {"approach": approach}
    if cfg.data.dataset.partition(":")[0] in FILE_DATASETS:
        out["data.data_root"] = cfg.data.data_root
    return out


@functools.cache
def code_version() -> str:
    """A hash of the ``cil`` package's source: the code that computes a run (wherever it is installed,
    with or without git)."""
    root = Path(__file__).resolve().parent.parent / "cil"
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def numeric_environment(device: str) -> dict[str, Any]:
    """What besides the config decides a run's bits on ``device``, read after :func:`cil.numerics.apply`:
    the provenance fields that change numbers (:data:`cil.numerics.NUMERIC_FIELDS`: device, library
    versions, threads and CPU mode in effect, CPU model, the lock), the Python version and the code. The
    numerics switches (tf32, amp, deterministic) follow from config keys, which the key holds."""
    prov = provenance(torch.device(device), amp_in_effect=False, config={})
    switches = ("tf32_in_effect", "amp_in_effect", "deterministic_in_effect")  # set by the run from its config
    env = {k: prov[k] for k in NUMERIC_FIELDS if k not in switches}  # threads and CPU mode in effect included
    return env | {"python": platform.python_version(), "code": code_version()}


def prefix_key(cfg: ExperimentConfig, t: int, env: dict[str, Any]) -> str:
    """The prefix key of (the trial with config ``cfg``, task ``t``)."""
    blob = json.dumps({"task": t, "config": key_config(cfg, t), "env": env}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def spread(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trial configs (flat, as Tune gives them) in the order a grid sweep starts them: a round robin over
    the groups of equal task-0 prefix key, in order of first appearance. The first trials to start then
    train distinct first tasks, and a trial that can take its first task from another starts after that
    one (on k slots: once k trials have ended), so it waits for the prefix only when nothing else is
    left to run. The key's configuration part is enough: one sweep has one numeric environment."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for config in configs:
        flat = {k: v for k, v in config.items() if not k.startswith("_")} | {"run.device": "cpu"}
        groups.setdefault(prefix_key(ExperimentConfig.from_dict(flat), 0, {}), []).append(config)
    return [g[rank] for rank in range(max(map(len, groups.values()), default=0))
            for g in groups.values() if rank < len(g)]


# ---- the store ---------------------------------------------------------------------------------------

class PrefixStore:
    """Entries and claims under one folder or URI (``<storage>/<sweep>/prefix``)."""

    def __init__(self, uri: str, clock: Callable[[], float] = time.time) -> None:
        self.uri = uri
        self.fs, self.base = resolve(uri)
        self.clock = clock

    def get(self, key: str) -> dict[str, Any] | None:
        """The published entry of ``key``, or None."""
        try:
            with self.fs.open_input_stream(join(self.base, key, ENTRY)) as f:
                data = f.read()
        except (FileNotFoundError, OSError):
            return None
        return torch.load(io.BytesIO(data), weights_only=True)

    def publish(self, key: str, entry: dict[str, Any]) -> None:
        """Write ``entry`` atomically: a temporary name, then moved into place."""
        buf = io.BytesIO()
        torch.save(entry, buf)
        folder = join(self.base, key)
        self.fs.create_dir(folder, recursive=True)
        tmp = join(folder, f".{ENTRY}.{uuid.uuid4().hex}.tmp")
        with self.fs.open_output_stream(tmp) as out:
            out.write(buf.getvalue())
        self.fs.move(tmp, join(folder, ENTRY))

    def holder(self, key: str, owner: str) -> str | None:
        """The trial other than ``owner`` that is producing ``key`` now (its claim is fresh), or None."""
        try:
            with self.fs.open_input_stream(join(self.base, key, CLAIM)) as f:
                claim = json.loads(f.read().decode())
        except (FileNotFoundError, OSError, ValueError):
            return None
        fresh = self.clock() - float(claim.get("time", 0)) < STALE_S
        return claim.get("owner") if fresh and claim.get("owner") != owner else None

    def wait(self, key: str, owner: str, wait_s: float, sleep: Callable[[float], None] = time.sleep,
             poll_s: float = 1.0) -> dict[str, Any] | None:
        """The entry of ``key`` once published, while another trial's claim on it stays alive, for at
        most ``wait_s`` seconds; None when nobody produces it (the caller trains it itself)."""
        deadline = self.clock() + wait_s
        while True:
            entry = self.get(key)
            if entry is not None or self.holder(key, owner) is None or self.clock() >= deadline:
                return entry
            sleep(poll_s)

    def claim(self, key: str, owner: str) -> _Claim:
        return _Claim(self, key, owner)


class _Claim:
    """``<key>/claim.json`` kept fresh by a heartbeat thread while the owner trains that task."""

    def __init__(self, store: PrefixStore, key: str, owner: str) -> None:
        self.store, self.path, self.owner = store, join(store.base, key, CLAIM), owner
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        try:
            self.store.fs.create_dir(self.path.rpartition("/")[0], recursive=True)
            with self.store.fs.open_output_stream(self.path) as out:
                out.write(json.dumps({"owner": self.owner, "time": self.store.clock(), "pid": os.getpid(),
                                      "host": platform.node()}).encode())
        except OSError:
            pass  # a claim only saves others work: never fail a trial for it

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self._write()

    def __enter__(self) -> _Claim:
        self._write()
        self._thread = threading.Thread(target=self._beat, daemon=True, name="prefix-claim")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.store.fs.delete_file(self.path)
        except OSError:
            pass


# ---- a trial's run with sharing --------------------------------------------------------------------

def entry_of(result: TaskResult, trial_id: str) -> dict[str, Any]:
    """What a trial publishes after training a task itself (rows before the sweep's tags)."""
    def plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:  # weights_only loads no str subclass
        return [{k: str(v) if isinstance(v, str) else v for k, v in row.items()} for row in rows]
    return {"version": ENTRY_VERSION, "trial_id": trial_id, "task": result.task, "state": result.state,
            "task_rows": plain(result.task_rows), "head_rows": plain(result.head_rows),
            "epoch_rows": plain(result.epoch_rows), "metrics": result.metrics}


def adopt(entry: dict[str, Any], cfg: ExperimentConfig) -> TaskResult:
    """An entry as this trial's own result: its identity and config columns, the state's config, its
    ``last_task``, and :data:`~cil.results_schema.SHARED_COLUMN` naming the trial that trained the task."""
    raw = cfg.to_flat()
    flat = config_values(raw)  # as cil.loop writes them
    ident = {"approach": cfg.approach, "seed": cfg.run.seed}
    source = {SHARED_COLUMN: entry["trial_id"]}
    if entry["task_rows"]:  # the fingerprint hashes the config: this trial's, over the same provenance
        flat = flat | {"numerics_fingerprint": fingerprint(raw, entry["task_rows"][0])}
    metrics = dict(entry["metrics"])
    metrics["last_task"] = (cfg.run.stop_at_task or int(metrics["num_tasks"])) - 1
    state = dict(entry["state"]) | {"config": raw}
    T = int(metrics["num_tasks"])
    acc = {name: np.zeros((T, T)) for name in ("acc_taw", "acc_tag")}
    for name, mat in acc.items():
        rows = np.asarray(state[name], dtype=float)
        mat[: len(rows)] = rows
    return TaskResult(task=int(entry["task"]),
                      task_rows=[row | ident | flat | source for row in entry["task_rows"]],
                      head_rows=[row | ident | source for row in entry["head_rows"]],
                      epoch_rows=[row | ident | source for row in entry["epoch_rows"]],
                      metrics=metrics, state=state, acc_taw=acc["acc_taw"], acc_tag=acc["acc_tag"])


def shared_run(cfg: ExperimentConfig, state: dict[str, Any] | None, store: PrefixStore | None, trial_id: str,
               env: dict[str, Any], *, after_epoch: AfterEpoch | None = None,
               wait_s: float = 6 * 3600.0) -> Iterator[TaskResult]:
    """``cil.run`` with sharing: a trial without a checkpoint first takes the longest prefix the store
    has (or that a live trial is producing), then trains the rest, publishing each task it trains.
    ``store`` None: ``cil.run`` as it is."""
    if store is None:
        yield from run(cfg, state, after_epoch=after_epoch)
        return
    t = 0 if state is None else int(state["next_task"])
    stop = cfg.run.stop_at_task or cfg.data.num_tasks
    if state is None:
        while t < stop:
            key = prefix_key(cfg, t, env)
            entry = store.get(key) or store.wait(key, trial_id, wait_s)
            if entry is None:
                break
            result = adopt(entry, cfg)
            state = result.state
            yield result
            t += 1
    runs = run(cfg, state, after_epoch=after_epoch)
    while t < stop:
        key = prefix_key(cfg, t, env)
        with store.claim(key, trial_id):
            result = next(runs)
            store.publish(key, entry_of(result, trial_id))
        yield result
        t += 1
