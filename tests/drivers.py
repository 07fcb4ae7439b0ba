"""Sweep drivers as separate processes, for the tests that kill, interrupt or race them.

``python tests/drivers.py SPEC ARGS...`` runs ``python -m tune sweep SPEC ARGS...`` in a local Ray
whose workers run :func:`fault_hooks.install` (the faults named in ``$CIL_TEST_FAULTS``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)


def env(**extra: str) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return e | {"RAY_AUTH_MODE": "disabled", "RAY_DEDUP_LOGS": "1",
                "PYTHONPATH": os.pathsep.join([ROOT, TESTS])} | extra


def command(*args: str, hooks: bool = False) -> list[str]:
    entry = [os.path.join(TESTS, "drivers.py")] if hooks else ["-m", "tune", "sweep"]
    return [sys.executable, *entry, *args, "--quiet"]


def start(log: Path, *args: str, hooks: bool = False, **extra: str) -> subprocess.Popen:
    """A driver in its own session (so that it and every Ray process it starts can be killed), its
    output in ``log`` (a file, not a pipe: a full pipe would stall it)."""
    out = open(log, "w")
    try:
        return subprocess.Popen(command(*args, hooks=hooks), cwd=ROOT, env=env(**extra), stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        out.close()


def run(*args: str, timeout: float = 300, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(command(*args), cwd=ROOT, env=env(**extra), capture_output=True, text=True,
                          timeout=timeout, start_new_session=True)


def wait_for(condition, driver: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert driver.poll() is None, f"the driver ended (rc {driver.returncode}):\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out:\n{log.read_text()[-3000:]}"
        time.sleep(0.1)


def kill_group(driver: subprocess.Popen) -> None:
    """SIGKILL the driver and every process of its session (the Ray it started)."""
    try:
        os.killpg(driver.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    driver.wait()


BUCKET = "sweeps"  # the bucket of the tests' moto server (conftest.py's ``s3`` fixture)
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def s3_fs(endpoint: str):
    """The moto server's S3 as the tests' own client sees it (not through the sweep's code)."""
    import pyarrow.fs as pafs

    return pafs.S3FileSystem(endpoint_override=endpoint, scheme="http", access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                             secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region=CREDENTIALS["AWS_DEFAULT_REGION"])


def free_port() -> int:
    """A port nobody on this machine listens on now (other Rays run here: never rely on defaults)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_tree(root) -> None:
    """SIGKILL a process (a ``psutil.Process``) and every descendant at once, and wait for them: a Ray
    node or a job driver runs processes in sessions of their own, which a process group misses."""
    import psutil

    try:
        victims = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        victims = []
    for p in victims:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=30)

if __name__ == "__main__":
    import fault_hooks
    import ray

    from tune.cli import main

    ray.init(address="local", runtime_env={"worker_process_setup_hook": fault_hooks.HOOK}, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    sys.exit(main(["sweep", *sys.argv[1:]]))
