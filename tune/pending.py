"""Trials that wait for resources that never come: after ``--pending-timeout`` the driver says which
resource is missing, how much the cluster has and what to change, then keeps waiting or stops.

The watch is a Tune callback run by the driver's loop. It starts its clock when trials are PENDING and
none is RUNNING (nothing that runs could free resources for them), and resets it whenever a trial runs.
Stopping interrupts the main thread, as Ctrl-C does: Tune saves the sweep's state with the trials still
PENDING, so the same command with ``--resume`` continues it once the cluster can run them.
"""

from __future__ import annotations

import _thread
import sys
import time
from collections.abc import Callable
from typing import Any

import ray
from ray import tune

from tune.spec import DEFAULT_PENDING_TIMEOUT_S, PENDING_ACTIONS

RESOURCE_KEYS = {"CPU": "resources.cpu", "GPU": "resources.gpu"}


def diagnose(request: dict[str, float], nodes: list[dict[str, Any]], waited: float) -> str:
    """What a pending trial asks for against what the alive nodes have (``ray.nodes()`` entries)."""
    alive = [n.get("Resources", {}) for n in nodes if n.get("Alive")]
    ask = {k: v for k, v in request.items() if v > 0}
    lines = [f"trials have waited {waited:.0f} s for resources: each asks for "
             + ", ".join(f"{k} {v:g}" for k, v in ask.items())]
    for key, value in ask.items():
        per_node = [n.get(key, 0.0) for n in alive]
        fits = [v for v in per_node if v >= value]
        have = ", ".join(f"{v:g}" for v in per_node) or "none"
        if not fits:
            lines.append(f"  {key}: no node has {value:g} (the {len(alive)} alive nodes have {have}; "
                         f"cluster total {sum(per_node):g})")
    if not any(k in line for line in lines[1:] for k in ask):
        lines.append("  some node could hold a trial, but the cluster's resources are in use by other work")
    keys = " or ".join(RESOURCE_KEYS.get(k, k) for k in ask)
    lines.append(f"  change: lower {keys} in the spec, or add nodes that have it (the cluster's node types, "
                 f"e.g. cluster.yaml's gpu_worker, or its max_workers); or pass --pending-timeout 0 to "
                 f"wait without this message")
    return "\n".join(lines)


class PendingWatch(tune.Callback):
    """Prints :func:`diagnose` once trials have waited ``timeout`` seconds with none running; with
    ``action='exit'`` it then stops the sweep (``gave_up`` is set and the CLI exits with code 2)."""

    def __init__(self, request: dict[str, float], timeout: float = DEFAULT_PENDING_TIMEOUT_S, action: str = "wait",
                 clock: Callable[[], float] = time.monotonic,
                 nodes: Callable[[], list[dict[str, Any]]] = lambda: ray.nodes(),
                 stop: Callable[[], None] = _thread.interrupt_main) -> None:
        if action not in PENDING_ACTIONS:
            raise ValueError(f"pending action {action!r} is not valid: choose {' or '.join(PENDING_ACTIONS)}")
        self.request, self.timeout, self.action = request, timeout, action
        self.clock, self.nodes, self.stop = clock, nodes, stop
        self.since: float | None = None
        self.reported = False
        self.gave_up: str | None = None

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if self.timeout <= 0 or self.gave_up is not None:
            return
        statuses = {t.status for t in trials}
        if "RUNNING" in statuses or "PENDING" not in statuses:
            self.since, self.reported = None, False
            return
        now = self.clock()
        if self.since is None:
            self.since = now
        waited = now - self.since
        if waited < self.timeout or self.reported:
            return
        self.reported = True
        message = diagnose(self.request, self.nodes(), waited)
        if self.action == "exit":
            self.gave_up = message
            print(f"error: {message}\n  stopping (--pending-action exit)", file=sys.stderr, flush=True)
            self.stop()
        else:
            print(f"warning: {message}\n  still waiting (--pending-action wait)", file=sys.stderr, flush=True)
