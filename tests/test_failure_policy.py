"""The failure policy without a cluster: preemptions counted apart from errors (tune/failures.py), and
the pending-resources watch with an injected clock (tune/pending.py)."""

from __future__ import annotations

import pytest

from tune.failures import ERROR, PERMANENT, PREEMPTION, FailurePolicy
from tune.pending import PendingWatch, diagnose
from tune.spec import SpecError, parse_spec
from tune.trainable import read_failure


class Trial:
    def __init__(self, trial_id: str, status: str = "PENDING") -> None:
        self.trial_id, self.status, self.max_failures, self.pickled_error_file = trial_id, status, -1, None


def _policy(tmp_path, kinds: list[str], max_failures: int = 1, max_preemptions: int = 20) -> FailurePolicy:
    it = iter(kinds)
    return FailurePolicy(str(tmp_path), max_failures, max_preemptions, classify=lambda exc: next(it))


def test_preemptions_are_retried_past_max_failures_errors_stop_at_it(tmp_path) -> None:
    policy = _policy(tmp_path, [PREEMPTION] * 5 + [ERROR, ERROR], max_failures=1)
    trial = Trial("a")
    for _ in range(5):  # five preemptions with max_failures 1: each retried
        policy.on_trial_recover(0, [trial], trial)
        assert trial.max_failures == -1 and read_failure(str(tmp_path), "a") is None
    policy.on_trial_recover(0, [trial], trial)  # the first error of its own: within max_failures
    assert trial.max_failures == -1
    policy.on_trial_recover(0, [trial], trial)  # the second: over it, the queued start ends the trial
    assert trial.max_failures == 0
    assert read_failure(str(tmp_path), "a") == ("RuntimeError: the trial failed 2 times, more than "
                                               "failure.max_failures = 1")
    policy.on_trial_start(0, [trial], trial)
    assert trial.max_failures == 0  # a trial being ended stays ended in this driver


def test_preemptions_have_their_own_limit_and_permanent_errors_stop_at_once(tmp_path) -> None:
    policy = _policy(tmp_path, [PREEMPTION, PREEMPTION, PERMANENT], max_failures=3, max_preemptions=1)
    a, b = Trial("a"), Trial("b")
    policy.on_trial_recover(0, [a], a)
    assert a.max_failures == -1
    policy.on_trial_recover(0, [a], a)
    assert a.max_failures == 0 and "lost with its node (preempted) 2 times, more than failure.max_preemptions = 1" \
        in read_failure(str(tmp_path), "a")
    policy.on_trial_recover(0, [b], b)
    assert b.max_failures == 0 and read_failure(str(tmp_path), "b") is None  # it recorded its own error


def test_a_restored_trial_retries_under_the_policy(tmp_path) -> None:
    trial = Trial("a")
    trial.max_failures = 3  # saved by a driver before the policy, or ended before a --resume
    _policy(tmp_path, []).on_trial_start(0, [trial], trial)
    assert trial.max_failures == -1


def test_the_spec_takes_max_preemptions_with_a_generous_default() -> None:
    base = {"base": {"data.dataset": "digits"}}
    assert parse_spec(base).max_preemptions == 20
    assert parse_spec(base | {"failure": {"max_preemptions": -1, "max_failures": 0}}).max_preemptions == -1
    with pytest.raises(SpecError, match=r"failure.max_preemptions = 'x' is not valid: must be an integer -1 or >= 0"):
        parse_spec(base | {"failure": {"max_preemptions": "x"}})


NODES = [{"Alive": True, "Resources": {"CPU": 0.0}}, {"Alive": True, "Resources": {"CPU": 1.0}},
         {"Alive": True, "Resources": {"CPU": 1.0}}, {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1.0}}]


def test_the_diagnosis_names_the_missing_resource_what_the_cluster_has_and_what_to_change() -> None:
    text = diagnose({"CPU": 1.0, "GPU": 1.0}, NODES, 300)
    assert "each asks for CPU 1, GPU 1" in text
    assert "GPU: no node has 1 (the 3 alive nodes have 0, 0, 0; cluster total 0)" in text
    assert "CPU: no node" not in text and "lower resources.cpu or resources.gpu" in text
    busy = diagnose({"CPU": 1.0, "GPU": 0.0}, NODES, 300)
    assert "in use by other work" in busy


@pytest.mark.parametrize("action", ["wait", "exit"])
def test_the_pending_watch_speaks_after_the_timeout_with_nothing_running(action, capsys) -> None:
    now, stops = [0.0], []
    watch = PendingWatch({"CPU": 4.0, "GPU": 0.0}, timeout=300, action=action, clock=lambda: now[0],
                         nodes=lambda: NODES, stop=lambda: stops.append(True))
    pending, running = Trial("a"), Trial("b", "RUNNING")
    watch.on_step_begin(0, [pending, running])  # a queue behind a running trial is not a problem
    now[0] = 1000.0
    watch.on_step_begin(1, [pending, running])
    watch.on_step_begin(2, [pending])  # nothing runs from t = 1000 on
    now[0] = 1299.0
    watch.on_step_begin(3, [pending])
    assert capsys.readouterr().err == "" and not stops
    now[0] = 1300.0
    watch.on_step_begin(4, [pending])
    err = capsys.readouterr().err
    assert "trials have waited 300 s" in err and "CPU: no node has 4" in err
    assert stops == ([True] if action == "exit" else []) and (watch.gave_up is not None) == (action == "exit")
    now[0] = 5000.0
    watch.on_step_begin(5, [pending])
    assert capsys.readouterr().err == ""  # said once


def test_a_bad_pending_action_is_refused() -> None:
    with pytest.raises(ValueError, match="pending action 'later' is not valid: choose wait or exit"):
        PendingWatch({"CPU": 1.0}, action="later")
