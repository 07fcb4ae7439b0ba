"""Each Ray internal that tune/raycompat.py fences, run against the installed Ray: an upgrade that changes
one fails here. Real Ray objects (a Trial with its storage, a Tuner, the GCS's actor table), no fakes."""

from __future__ import annotations

import os

import pytest
import ray
from ray import tune
from ray.exceptions import RayTaskError
from ray.train._internal.storage import StorageContext
from ray.tune.experiment import Trial

from tune import raycompat


def test_the_installed_ray_is_the_tested_one_and_others_are_warned_about() -> None:
    assert raycompat.check_version()  # the lock's Ray: what the fence was tested with
    for other in ("2.59.1", "3.0.0", "2.61.0rc1"):
        expected = rf"Ray {other} is installed, but .* tested with Ray 2\.60"
        with pytest.warns(raycompat.RayVersionWarning, match=expected):
            assert not raycompat.check_version(other)
    assert raycompat.check_version("2.60.7")


def test_a_trials_retry_budget_on_a_real_trial() -> None:
    trial = Trial("__fake", stub=True, max_failures=3)
    trial.run_metadata.num_failures = 1
    assert trial.should_recover()
    raycompat.set_max_failures(trial, 0)
    assert trial.max_failures == 0 and not trial.should_recover()  # the budget written is the one Tune reads
    raycompat.set_max_failures(trial, -1)
    assert trial.should_recover()


def test_the_run_config_of_a_tuner_is_the_one_it_runs_with(tmp_path) -> None:
    tuner = tune.Tuner(lambda config: None, run_config=tune.RunConfig(name="fenced", storage_path=str(tmp_path)))
    config = raycompat.run_config(tuner)
    assert config.name == "fenced"
    config.callbacks = [tune.Callback()]
    assert len(raycompat.run_config(tuner).callbacks) == 1  # changed in place, as restore_tuner needs


@pytest.mark.slow
def test_an_actors_death_cause_and_a_trials_last_error_in_a_ray_session(tmp_path) -> None:
    """A killed actor died, but not with its node (NODE_DIED is left for a lost node: tests/test_faults*);
    a trial's last error is the exception Tune pickled when the trainable raised."""
    ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="exp", trial_dir_name="t0")
        trial = Trial("__fake", stub=True, storage=storage)
        os.makedirs(trial.local_path, exist_ok=True)
        assert raycompat.last_error(trial) is None  # nothing failed yet
        try:
            raise ValueError("boom in the trainable")
        except ValueError as err:
            failure = RayTaskError("train", "traceback text", err)
        trial.handle_error(failure)  # what Tune does when the trainable raises
        got = raycompat.last_error(trial)
        assert isinstance(got, RayTaskError) and str(got.cause) == "boom in the trainable"

        @ray.remote(num_cpus=0)
        class Probe:
            def ping(self) -> int:
                return 1

        probe = Probe.remote()
        ray.get(probe.ping.remote())
        actor_id = probe._actor_id
        node, node_died = raycompat.actor_death(actor_id)
        assert node == ray.get_runtime_context().get_node_id() and not node_died
        ray.kill(probe)
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(probe.ping.remote())
        assert raycompat.actor_death(actor_id) == (node, False)
    finally:
        ray.shutdown()
