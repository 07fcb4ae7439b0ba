"""Every use of Ray's non-public API, behind one fence, with the Ray versions it was tested with.

Ray keeps no promise about these across releases, so each is one small function here and
tests/test_raycompat.py runs each against the installed Ray: an upgrade that breaks one fails that test,
not a sweep. :func:`check_version` warns when the installed Ray is outside :data:`TESTED` (a warning,
not an error: the lock pins the tested Ray, and a cluster image a minor release away usually keeps
these internals; a sweep should not be refused for a version it may well run on, but the user must
know which release the tests vouch for).

- An actor's death cause: ``ray._private.state.actors`` (the GCS's actor table) and the
  ``NODE_DIED`` reason of ``ray.core.generated.common_pb2``. The public ``ray.util.state.get_actor``
  gives the same record, but only through the dashboard's API server, which a local sweep does not
  start (``include_dashboard=False``): it fails there with ``ServerUnavailable``.
- A trial's retry budget (``Trial.max_failures``, written by the failure policy while Tune runs) and
  its last error (``Trial.pickled_error_file``): Tune's callbacks get the ``Trial`` objects but no
  public way to change one's budget or read its exception.
- The ``RunConfig`` of a restored ``Tuner`` (``tuner._local_tuner.get_run_config()``):
  ``Tuner.restore`` takes no new callbacks, so the driver swaps them into the saved config.
"""

from __future__ import annotations

import warnings
from typing import Any

import cloudpickle
import ray

#: The Ray releases this module was tested with: [first, last] by (major, minor).
TESTED = ((2, 60), (2, 60))


class RayVersionWarning(UserWarning):
    """The installed Ray is outside the range the fenced internals were tested with."""


def _major_minor(version: str) -> tuple[int, int]:
    parts = (version.split(".") + ["0", "0"])[:2]
    return tuple(int("".join(ch for ch in p if ch.isdigit()) or 0) for p in parts)  # type: ignore[return-value]


def check_version(version: str | None = None) -> bool:
    """Whether ``version`` (default: the installed Ray's) is in :data:`TESTED`; warns when it is not."""
    version = ray.__version__ if version is None else version
    first, last = TESTED
    if first <= _major_minor(version) <= last:
        return True
    tested = ".".join(map(str, first)) + ("" if first == last else " to " + ".".join(map(str, last)))
    warnings.warn(f"Ray {version} is installed, but tune/raycompat.py was tested with Ray {tested}: the Ray "
                  "internals it uses (actor death causes, trial retry budgets, a restored Tuner's RunConfig) "
                  "may have changed; run tests/test_raycompat.py, or install the Ray of requirements.txt",
                  RayVersionWarning, stacklevel=2)
    return False


def actor_death(actor_id: Any) -> tuple[str | None, bool]:
    """The node an actor ran on (hex id, or None if unknown) and whether the GCS recorded its death as
    ``NODE_DIED`` (its node was lost, not the actor's own fault)."""
    from ray.core.generated.common_pb2 import ActorDiedErrorContext

    key = actor_id if isinstance(actor_id, str) else actor_id.hex()
    info = ray._private.state.actors(actor_id=key) or {}
    node = (info.get("Address") or {}).get("NodeID") or None
    cause = info.get("DeathCause")
    context = getattr(cause, "actor_died_error_context", None) if cause is not None else None
    return node, context is not None and context.reason == ActorDiedErrorContext.NODE_DIED


def set_max_failures(trial: Any, value: int) -> None:
    """Change a running sweep's retry budget of one trial (-1: retry forever, 0: the next failure ends it)."""
    trial.max_failures = value


def last_error(trial: Any) -> BaseException | None:
    """The exception Tune just recorded for ``trial`` (its pickled copy in the driver's staging folder)."""
    path = trial.pickled_error_file
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return cloudpickle.load(f)
    except (OSError, EOFError, cloudpickle.pickle.UnpicklingError):
        return None


def run_config(tuner: Any) -> Any:
    """The ``RunConfig`` a ``Tuner`` (a restored one too) will run with, to be changed in place."""
    local = getattr(tuner, "_local_tuner", None)
    if local is None:
        raise RuntimeError("this Tuner has no local driver (Ray Client mode?): its RunConfig cannot be changed; "
                           "run the sweep driver on the cluster (python -m tune sweep ... --address)")
    return local.get_run_config()
