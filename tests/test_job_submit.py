"""A sweep submitted as the docs tell users to: ``ray job submit --working-dir . -- python -m tune sweep ...``
from a fresh clone, against a Ray head with its job server that this test starts (its own ports, its own
temp dir, its own process session), and the rows read back with ``analysis.load``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

import drivers
import psutil
import pytest
import yaml
from test_faults import FAST

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RAY = os.path.join(os.path.dirname(sys.executable), "ray")


class JobHead:
    """``ray start --head --block`` with the dashboard (and so the job server) on free ports, in a
    session of its own; :meth:`stop` SIGKILLs it and every process under it, and nothing else."""

    def __init__(self, num_cpus: int = 1, autoscaling: dict | None = None) -> None:
        """``autoscaling``: a cluster config for Ray's fake multi-node provider, whose autoscaler then
        starts and stops worker nodes (raylets on this machine) as the head's monitor decides."""
        # A short temp dir: Ray's unix sockets live under it and their paths are limited to ~107 bytes.
        self.temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")
        self.gcs_port, self.dashboard_port = drivers.free_port(), drivers.free_port()
        args, env = [], {}
        if autoscaling is not None:
            from ray._private.services import get_node_ip_address

            self.ip = get_node_ip_address()
            autoscaling["provider"] |= {"gcs_address": f"{self.ip}:{self.gcs_port}"}
            config = os.path.join(self.temp_dir, "autoscaling.yaml")
            with open(config, "w") as f:
                yaml.safe_dump(autoscaling, f)
            args = [f"--autoscaling-config={config}"]
            env = {"RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
        self.log = open(os.path.join(self.temp_dir, "head.log"), "w")
        self.process = subprocess.Popen(
            [RAY, "start", "--head", "--block", f"--port={self.gcs_port}", f"--num-cpus={num_cpus}", "--num-gpus=0",
             "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}",
             f"--dashboard-agent-listen-port={drivers.free_port()}",
             f"--dashboard-agent-grpc-port={drivers.free_port()}",
             f"--runtime-env-agent-port={drivers.free_port()}", f"--metrics-export-port={drivers.free_port()}",
             f"--node-manager-port={drivers.free_port()}", f"--object-manager-port={drivers.free_port()}",
             f"--ray-client-server-port={drivers.free_port()}", "--disable-usage-stats",
             f"--temp-dir={self.temp_dir}", *args],
            env=drivers.env(**env), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def wait_ready(self, timeout: float = 300) -> None:
        """Until the job server answers (the dashboard comes up seconds after the GCS)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process.poll() is None, f"ray start ended (rc {self.process.returncode}):\n{self.output()}"
            try:
                with urllib.request.urlopen(f"{self.url}/api/version", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, f"the job server never answered at {self.url}:\n{self.output()}"
            time.sleep(0.5)

    def output(self) -> str:
        with open(self.log.name) as f:
            return f.read()[-3000:]

    def stop(self) -> None:
        # Job drivers run in sessions of their own, so the process group is not enough: every descendant.
        try:
            drivers.kill_tree(psutil.Process(self.process.pid))
        except psutil.NoSuchProcess:
            pass
        self.process.wait()
        self.log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture
def head():
    h = JobHead()
    try:
        h.wait_ready()
        yield h
    finally:
        h.stop()


def _clone(tmp_path) -> str:
    """The repository as a user has it: a git clone (committed files only), plus a spec of their own."""
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", drivers.ROOT, str(clone)], check=True)
    (clone / "runs").mkdir()  # left out of the upload (.gitignore), so the job never sees it
    (clone / "runs" / "stale.parquet").write_text("not for the cluster")
    (clone / "sweep.yaml").write_text(yaml.safe_dump({
        "base": FAST | {"data.num_tasks": 2, "train.nepochs": 1},
        "grid": {"approach": ["finetuning", "lwf"], "run.seed": [0]},
        "resources": {"cpu": 1}}))
    return str(clone)


def test_a_sweep_submitted_as_a_ray_job_from_a_clone_writes_every_row(head, tmp_path) -> None:
    from analysis import load

    clone, storage = _clone(tmp_path), tmp_path / "storage"
    env = {k: v for k, v in drivers.env().items() if k != "PYTHONPATH"}  # the job finds the code in its upload
    done = subprocess.run(
        [RAY, "job", "submit", "--address", head.url, "--working-dir", ".", "--",
         "python", "-m", "tune", "sweep", "sweep.yaml", "--storage", str(storage), "--name", "job"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=900, start_new_session=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert "succeeded" in done.stdout, done.stdout[-4000:]
    # The driver inside the job joined the head through the RAY_ADDRESS Ray sets, not a Ray of its own.
    assert re.search(rf"^joined the Ray cluster at [\d.]+:{head.gcs_port}$", done.stdout, re.M), done.stdout[-4000:]
    assert "2 trials, 2 finished, 0 errored" in done.stdout, done.stdout[-4000:]
    df = load(storage / "job" / "results")
    assert set(df["approach"]) == {"finetuning", "lwf"}
    assert df["complete"].all() and (df.groupby("trial_id").size() == 3).all()  # tasks 0, 1: 1 + 2 evaluations
