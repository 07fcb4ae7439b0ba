"""Sweeps on a real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``): a head with
no CPUs, as in cluster.yaml, and two 1-CPU worker nodes; drivers join it with ``--address``.

A spot preemption is a SIGKILL of a worker node's raylet and every process under it. The rows of every
case equal, bit for bit, those of the same spec on one local node (all columns but timings). Storage is
a local folder that every node sees, and once the S3 of the moto server, as on a real cluster: the
nodes have the credentials in their environment (an instance role's stand-in), the endpoint travels in
the storage URI."""

from __future__ import annotations

import os
import time

import drivers
import pandas as pd
import psutil
import pyarrow.fs as pafs
import pytest
import yaml
from drivers import BUCKET, CREDENTIALS, s3_fs
from test_faults import FAST, KEY, assert_complete

pytestmark = pytest.mark.ray
TRIALS = {"approach": ["lwf", "lwf-sr"], "run.seed": [0]}


class LocalCluster:
    """A head (CPU 0) and worker nodes, each a raylet this test starts and kills by its own pids."""

    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 0, "gcs_server_port": drivers.free_port(), "include_dashboard": False,
            "dashboard_port": drivers.free_port(), "dashboard_agent_listen_port": drivers.free_port()})
        self.workers = [self.add() for _ in range(2)]

    @property
    def address(self) -> str:
        return self.cluster.address

    def add(self):
        node = self.cluster.add_node(num_cpus=1)
        return node

    def alive_cpus(self) -> float:
        return sum(n["Resources"].get("CPU", 0.0) for n in self.cluster.global_state.node_table() if n["Alive"])

    def preempt(self, node) -> None:
        """SIGKILL the node's raylet and all its processes (workers, agents) at once, as a spot
        instance vanishes; then wait until the GCS has marked it dead."""
        drivers.kill_tree(psutil.Process(node.all_processes["raylet"][0].process.pid))
        self.cluster.worker_nodes.discard(node)
        self.workers.remove(node)
        deadline = time.monotonic() + 120
        while any(n["NodeID"] == node.node_id and n["Alive"] for n in self.cluster.global_state.node_table()):
            assert time.monotonic() < deadline, "the GCS never marked the killed node dead"
            time.sleep(0.2)

    def heal(self) -> None:
        """Back to two workers (after a test that killed one)."""
        while len(self.workers) < 2:
            self.workers.append(self.add())

    def shutdown(self) -> None:
        self.cluster.shutdown()


@pytest.fixture(scope="module")
def cluster():
    with pytest.MonkeyPatch.context() as mp:
        for key, value in drivers.env(**CREDENTIALS).items():
            mp.setenv(key, value)
        mp.delenv("RAY_ADDRESS", raising=False)
        c = LocalCluster()
        try:
            yield c
        finally:
            c.shutdown()


def _spec(tmp_path, name: str = "sweep.yaml", **sections) -> str:
    spec = tmp_path / name
    spec.write_text(yaml.safe_dump({"base": FAST | {"train.nepochs": 6}, "grid": TRIALS, "resources": {"cpu": 1}}
                                   | sections))
    return str(spec)


def deterministic(results, filesystem=None, ids: tuple[str, ...] = ("sweep", "trial_id")) -> pd.DataFrame:
    """Every column but timings and ``ids``, in a fixed order: what must be equal bit for bit."""
    df = pd.read_parquet(os.path.join(results, "task_results"), filesystem=filesystem)
    df = df.drop(columns=[c for c in df.columns if c.endswith("seconds") or c in ids])
    return df.sort_values(["approach", "seed", "task", "eval_task"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same spec in a local Ray on one node."""
    tmp = tmp_path_factory.mktemp("reference")
    done = drivers.run(_spec(tmp), "--storage", str(tmp / "runs"), "--name", "ref", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return deterministic(tmp / "runs" / "ref" / "results")


def test_a_trial_asking_for_what_no_node_has_is_diagnosed_and_stops(cluster, tmp_path) -> None:
    spec = _spec(tmp_path, resources={"cpu": 1, "gpu": 1})
    done = drivers.run(spec, "--storage", str(tmp_path / "runs"), "--address", cluster.address,
                       "--pending-timeout", "2", "--pending-action", "exit", timeout=300)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-3000:]
    assert "each asks for CPU 1, GPU 1" in done.stderr
    assert "GPU: no node has 1 (the 3 alive nodes have 0, 0, 0; cluster total 0)" in done.stderr
    assert "lower resources.cpu or resources.gpu" in done.stderr
    assert f"--address {cluster.address} --resume" in done.stderr


@pytest.mark.slow
def test_a_sweep_on_the_cluster_equals_one_local_node(cluster, reference, tmp_path) -> None:
    """(a) completes with the rows of a local run."""
    done = drivers.run(_spec(tmp_path), "--storage", str(tmp_path / "runs"), "--name", "a",
                       "--address", cluster.address, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = tmp_path / "runs" / "a" / "results"
    assert_complete(results, trials=2)
    pd.testing.assert_frame_equal(deterministic(results), reference)


def _preempt_mid_sweep(cluster, reference, tmp_path, storage: str, results: str, fs: pafs.FileSystem,
                       replacement: bool, ids: tuple[str, ...] = ("sweep", "trial_id"), **env: str) -> None:
    """A sweep with failure.max_failures 0 on ``storage``; once both trials wrote task 0 (seen in
    ``results`` through ``fs``), a worker node SIGKILLed and, with ``replacement``, a new one added.
    The preempted trial must not count it: exit 0, every row once, the rows of one local node."""
    cluster.heal()
    log = tmp_path / "driver.log"
    driver = drivers.start(log, _spec(tmp_path, failure={"max_failures": 0}), "--storage", storage,
                           "--name", "b", "--address", cluster.address, **env)

    def first_tasks() -> int:
        listing = fs.get_file_info(pafs.FileSelector(f"{results}/task_results", allow_not_found=True))
        return sum(i.base_name.endswith("_t000.parquet") for i in listing)

    try:
        drivers.wait_for(lambda: first_tasks() == 2, driver, log, timeout=400)
        cluster.preempt(cluster.workers[0])
        if replacement:
            cluster.heal()
        assert driver.wait(timeout=900) == 0, log.read_text()[-4000:]
    finally:
        drivers.kill_group(driver)
    assert "2 trials, 2 finished, 0 errored" in log.read_text()
    df = assert_complete(results, trials=2, filesystem=fs)
    assert not df.duplicated(KEY).any()
    pd.testing.assert_frame_equal(deterministic(results, fs, ids), reference)
    cluster.heal()


@pytest.mark.slow
@pytest.mark.parametrize("replacement", [True, False], ids=["replaced", "not-replaced"])
def test_a_preempted_worker_node_loses_nothing(cluster, reference, tmp_path, replacement) -> None:
    """(b) a worker node SIGKILLed mid-sweep, a new node joining later; (c) none joining: the remaining
    node finishes every trial."""
    storage = tmp_path / "runs"
    _preempt_mid_sweep(cluster, reference, tmp_path, str(storage), str(storage / "b" / "results"),
                       pafs.LocalFileSystem(), replacement)


@pytest.mark.slow
def test_a_preempted_worker_node_with_sharing_gives_the_rows_of_a_sweep_without(cluster, tmp_path) -> None:
    """(b) with prefix sharing (lwf-sr takes task 0 from lwf), against the same spec on one local node
    with --no-share: every row bit for bit, ids, timings and ``shared_from`` aside."""
    ids = ("sweep", "trial_id", "shared_from")
    alone = drivers.run(_spec(tmp_path, "alone.yaml"), "--storage", str(tmp_path / "alone"), "--name", "ref",
                        "--no-share", timeout=600)
    assert alone.returncode == 0, alone.stderr[-3000:]
    reference = deterministic(tmp_path / "alone" / "ref" / "results", ids=ids)
    storage = tmp_path / "runs"
    _preempt_mid_sweep(cluster, reference, tmp_path, str(storage), str(storage / "b" / "results"),
                       pafs.LocalFileSystem(), True, ids)
    shared = pd.read_parquet(storage / "b" / "results" / "task_results")
    assert shared["shared_from"].notna().any()  # sharing was on: a task 0 was taken, not trained


@pytest.mark.slow
def test_a_preempted_worker_node_loses_nothing_on_s3(cluster, reference, s3, tmp_path) -> None:
    """(b) with the sweep's storage on S3: rows, checkpoints and Tune's state go to the bucket from
    every node; the preempted trial restores its checkpoint from S3 on the replacement node."""
    _preempt_mid_sweep(cluster, reference, tmp_path, f"s3://{BUCKET}/cluster?endpoint_override={s3}&scheme=http",
                       f"{BUCKET}/cluster/b/results", s3_fs(s3), True, **CREDENTIALS)


@pytest.mark.slow
def test_the_driver_killed_while_trials_run_on_remote_nodes_resumes(cluster, reference, tmp_path) -> None:
    """(d) SIGKILL of the driver (trials on the workers die with its job), then --resume."""
    cluster.heal()
    storage, log = tmp_path / "runs", tmp_path / "driver.log"
    args = (_spec(tmp_path), "--storage", str(storage), "--name", "d", "--address", cluster.address)
    driver = drivers.start(log, *args)
    results = storage / "d" / "results"
    try:
        drivers.wait_for(lambda: list((results / "task_results").glob("*_t000.parquet")), driver, log, timeout=400)
    finally:
        drivers.kill_group(driver)
    done = drivers.run(*args, "--resume", timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_complete(results, trials=2)
    pd.testing.assert_frame_equal(deterministic(results), reference)
