"""``ray up`` as far as one machine allows: a head started with cluster.yaml's node types on Ray's fake
multi-node provider (``provider: {type: fake_multinode}``, worker nodes are raylets on this machine),
whose autoscaler adds a worker for a pending sweep and removes it once idle."""

from __future__ import annotations

import os
import time

import drivers
import pytest
import yaml
from test_faults import FAST
from test_job_submit import JobHead

pytestmark = [pytest.mark.ray, pytest.mark.slow]
FAKE_HEAD = "ray.head.default"  # the fake provider's head node type, whatever the config calls it


def fake_cluster_config(idle_timeout_minutes: float = 0.1) -> dict:
    """cluster.yaml's node types on the fake provider: the head keeps CPU 0 (it never runs a trial) and
    each GPU worker becomes a 1-CPU worker (one trial at ``resources: {cpu: 1}``); one at most."""
    with open(os.path.join(drivers.ROOT, "cluster.yaml")) as f:
        real = yaml.safe_load(f)
    head = real["available_node_types"][real["head_node_type"]]
    workers = {name: {"min_workers": t.get("min_workers", 0), "max_workers": 1, "resources": {"CPU": 1},
                      "node_config": {}}
               for name, t in real["available_node_types"].items() if name != real["head_node_type"]}
    return {"cluster_name": "fake", "max_workers": 1, "upscaling_speed": real["upscaling_speed"],
            "idle_timeout_minutes": idle_timeout_minutes,
            # No updater (its ssh setup does not apply to raylets on this machine; the fake provider's
            # nodes refuse the status tags it writes, so every launch would count as failed), and nodes
            # known by their node id (all share this machine's IP, which the provider does not use).
            "provider": {"type": "fake_multinode", "disable_node_updaters": True,
                         "disable_launch_config_check": True, "use_node_id_as_ip": True},
            "auth": {"ssh_user": "ubuntu"}, "head_node_type": FAKE_HEAD,
            "available_node_types": {FAKE_HEAD: {"resources": head["resources"], "node_config": {},
                                                 "max_workers": 0}} | workers,
            "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
            "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
            "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
            "worker_start_ray_commands": []}


def alive_workers(head: JobHead) -> list:
    from ray.util.state import list_nodes

    return [n for n in list_nodes(address=head.url, raise_on_missing_output=False)
            if n.state == "ALIVE" and not n.is_head_node]


def test_the_autoscaler_adds_a_worker_for_a_pending_sweep_and_removes_it_when_idle(tmp_path) -> None:
    head = JobHead(num_cpus=0, autoscaling=fake_cluster_config())
    try:
        head.wait_ready()
        assert alive_workers(head) == []
        spec = tmp_path / "sweep.yaml"
        spec.write_text(yaml.safe_dump({"base": FAST | {"data.num_tasks": 2, "train.nepochs": 1},
                                        "grid": {"approach": ["finetuning"], "run.seed": [0]},
                                        "resources": {"cpu": 1}}))
        log = tmp_path / "driver.log"
        driver = drivers.start(log, str(spec), "--storage", str(tmp_path / "runs"), "--name", "up",
                               "--address", f"{head.ip}:{head.gcs_port}")
        seen = []
        try:
            deadline = time.monotonic() + 900
            while driver.poll() is None:  # the only CPU is on a worker the autoscaler must add
                assert time.monotonic() < deadline, f"the sweep never ended:\n{log.read_text()[-4000:]}"
                seen = seen or alive_workers(head)
                time.sleep(1)
        finally:
            drivers.kill_group(driver)
        assert driver.returncode == 0, log.read_text()[-4000:] + head.output()
        assert "1 trials, 1 finished, 0 errored" in log.read_text()
        assert seen and seen[0].resources_total.get("CPU") == 1, seen
        deadline = time.monotonic() + 300
        while alive_workers(head):  # idle_timeout_minutes 0.1: removed some seconds after the sweep
            assert time.monotonic() < deadline, f"the idle worker was never removed:\n{head.output()}"
            time.sleep(1)
    finally:
        head.stop()
