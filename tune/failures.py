"""Retries that tell a preemption from an error: ``failure.max_failures`` and ``failure.max_preemptions``.

Ray 2.60 Tune counts every failure of a trial against ``FailureConfig.max_failures`` except a
``RayActorError`` whose ``preempted`` flag is set, which Ray sets only when the autoscaler drained the
node for a preemption. A spot instance that simply disappears (the raylet and its workers gone at once,
as with SIGKILL) reaches the driver as ``ActorUnavailableError`` ("Socket closed"), then the GCS marks the
node dead ("health check failed due to missing too many heartbeats") and the actor dead with reason
``NODE_DIED``. Tune would count that as an error of the trial.

So Tune is told to retry every failure (``max_failures=-1``) and :class:`FailurePolicy`, a Tune callback,
decides: a failure whose actor died with its node (or that Ray marked preempted) is a *preemption*,
counted against ``max_preemptions``; anything else, including an exception the trial raised, is an
*error*, counted against ``max_failures``. A :class:`~cil.errors.PermanentError` stops at once. When a
trial is over its limit the policy records the reason as the trial's permanent failure
(``results/_failed/<trial>.txt``) and sets the trial's own ``max_failures`` to 0: Tune has already
requeued it, and that start ends at once with the recorded message, which makes Tune mark it ERROR.
The counts live in the driver: ``--resume`` gives every trial a fresh budget.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import ray
from ray import tune
from ray.exceptions import ActorDiedError, RayActorError, RayTaskError

from cil.errors import PermanentError
from tune import raycompat
from tune.trainable import record_failure

# How long the driver waits for the GCS to mark a node dead after losing the connection to a trial's
# actor there: it does so after missed heartbeats (about 12 s on one loaded machine). The first report
# of an actor on a vanished node can say WORKER_DIED, so only NODE_DIED or a dead node decide early.
NODE_VERDICT_S = 60.0
PREEMPTION, ERROR, PERMANENT = "preemption", "error", "permanent"


def actor_lost_with_node(exc: RayActorError, timeout: float = NODE_VERDICT_S,
                         clock: Callable[[], float] = time.monotonic) -> bool:
    """Whether the trial's actor was lost with its node: the GCS records its death as ``NODE_DIED`` or
    marks its node dead. An ``ActorDiedError`` that its (living) raylet reported for another reason is
    not; an ``ActorUnavailableError`` (the connection to the node closed) waits up to ``timeout``
    seconds for the GCS to mark the node dead (False when it stays alive)."""
    if exc.actor_id is None:
        return False
    deadline = clock() + timeout
    while True:
        node, node_died = raycompat.actor_death(exc.actor_id)
        if node_died:
            return True
        if node and not any(n["NodeID"] == node and n["Alive"] for n in ray.nodes()):
            return True
        if isinstance(exc, ActorDiedError) and "its node has died" not in str(exc):
            return False
        if clock() >= deadline:
            return False
        time.sleep(0.5)


def classify(exc: BaseException | None, lost_with_node: Callable[[RayActorError], bool] = actor_lost_with_node) -> str:
    """``preemption`` (the trial's actor was lost with its node), ``permanent`` (a PermanentError the
    trial raised) or ``error`` (anything else)."""
    if isinstance(exc, RayTaskError):
        return PERMANENT if isinstance(exc.as_instanceof_cause(), PermanentError) else ERROR
    if isinstance(exc, RayActorError) and (exc.preempted or lost_with_node(exc)):
        return PREEMPTION
    return ERROR


class FailurePolicy(tune.Callback):
    """Counts each trial's failures by kind and ends a trial once a kind is over its limit (-1: no limit)."""

    def __init__(self, results_dir: str, max_failures: int, max_preemptions: int,
                 classify: Callable[[BaseException | None], str] = classify) -> None:
        self.results_dir, self.classify = results_dir, classify
        self.limits = {ERROR: max_failures, PREEMPTION: max_preemptions}
        self.counts: dict[str, Counter] = {}
        self.ended: set[str] = set()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        # New trials already retry forever; trials restored from a state saved by an older driver (or
        # ended by this policy before a --resume) get that back, unless this driver is ending them.
        if trial.trial_id not in self.ended:
            raycompat.set_max_failures(trial, -1)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        kind = self.classify(raycompat.last_error(trial))
        counts = self.counts.setdefault(trial.trial_id, Counter())
        counts[kind] += 1
        reason = self.over_limit(kind, counts)
        if reason is None:
            return
        self.ended.add(trial.trial_id)
        raycompat.set_max_failures(trial, 0)  # the start Tune has queued ends with the recorded message: ERROR
        if kind != PERMANENT:  # a PermanentError recorded itself
            record_failure(self.results_dir, trial.trial_id, RuntimeError(reason))

    def over_limit(self, kind: str, counts: Counter) -> str | None:
        """Why the trial must stop now, or None to retry it."""
        if kind == PERMANENT:
            return "permanent error"
        limit = self.limits[kind]
        if limit < 0 or counts[kind] <= limit:
            return None
        key = "failure.max_failures" if kind == ERROR else "failure.max_preemptions"
        what = "failed" if kind == ERROR else "was lost with its node (preempted)"
        return f"the trial {what} {counts[kind]} times, more than {key} = {limit}"

