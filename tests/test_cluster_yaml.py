"""cluster.yaml is a valid Ray cluster-launcher config for AWS GPU sweeps, with no credentials in it."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex

import jsonschema
import ray
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLUSTER_YAML = os.path.join(ROOT, "cluster.yaml")
USER_TOKEN = "~/.ray/auth_token"  # where `ray get-auth-token --generate` writes it on the user's machine


def load() -> dict:
    with open(CLUSTER_YAML) as f:
        return yaml.safe_load(f)


def start_env(command: str) -> dict[str, str]:
    """What a start command exports before its ``ray start`` (every Ray process of the node inherits it),
    unexpanded: ``~`` is the node's home, expanded by its shell."""
    env: dict[str, str] = {}
    for part in command.split(";"):
        words = shlex.split(part)
        if words[:1] == ["export"]:
            env |= dict(word.split("=", 1) for word in words[1:])
        if words[:2] == ["ray", "start"]:
            return env
    raise AssertionError(f"no `ray start` in {command!r}")


def node_env(cfg: dict, key: str) -> dict[str, str]:
    """The environment of the ``ray start`` of ``key`` (``head_start_ray_commands`` or
    ``worker_start_ray_commands``)."""
    [start] = [c for c in cfg[key] if "ray start" in c]
    return start_env(start)


def assert_token_auth(cfg: dict, text: str) -> None:
    """Head and workers start Ray with token authentication, reading the token from a file that
    file_mounts copies from the user's machine; the file itself holds no token."""
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        env = node_env(cfg, key)
        assert env.get("RAY_AUTH_MODE") == "token", (key, env)
        assert "RAY_AUTH_TOKEN" not in env, key  # a token in the file would be in the repository
        assert cfg["file_mounts"][env["RAY_AUTH_TOKEN_PATH"]] == USER_TOKEN, (key, env)
    assert not re.search(r"\b[0-9a-f]{64}\b", text)  # the shape of a generated token


def test_validates_against_the_schema_shipped_with_ray() -> None:
    with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as f:
        schema = json.load(f)
    jsonschema.validate(load(), schema)


def test_passes_rays_own_checks_offline() -> None:
    """prepare_config fills defaults from the AWS provider's defaults.yaml inside the ray package (no
    network, no boto3 call); validate_config then checks the merged config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(load()))
    validate_config(prepared)
    head = prepared["head_node_type"]
    assert prepared["available_node_types"][head]["max_workers"] == 0


def test_cpu_head_and_autoscaling_gpu_workers() -> None:
    cfg = load()
    assert cfg["provider"]["type"] == "aws"
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the head never runs a trial
    assert head["node_config"]["InstanceType"].startswith(("m", "c", "r", "t"))
    [worker] = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 1
    assert worker["node_config"]["InstanceType"].startswith(("g", "p"))  # GPU instance families
    assert worker["node_config"]["IamInstanceProfile"] == {"Name": "ray-autoscaler-v1"}  # S3 access


def test_image_setup_and_repository_sync() -> None:
    cfg = load()
    assert cfg["docker"]["image"] == f"rayproject/ray:{ray.__version__}-py311-gpu"
    assert any("requirements.txt" in c for c in cfg["setup_commands"])
    assert cfg["file_mounts"]["~/cil-sweeps"] == "."
    assert ".gitignore" in cfg["rsync_filter"]


def test_every_node_starts_ray_with_token_authentication() -> None:
    with open(CLUSTER_YAML) as f:
        assert_token_auth(load(), f.read())


def test_holds_no_credentials() -> None:
    with open(CLUSTER_YAML) as f:
        text = f.read()
    assert not re.search(r"AKIA[0-9A-Z]{16}|ASIA[0-9A-Z]{16}", text)
    assert not re.search(r"(?im)^\s*(aws_access_key_id|aws_secret_access_key|aws_session_token)\s*[:=]", text)
    cfg = load()
    assert "ssh_private_key" not in cfg["auth"]
    assert "KeyName" not in json.dumps(cfg["available_node_types"])
    assert not re.search(r"arn:aws:iam::\d{12}", text)


def test_gpu_workers_fail_setup_when_torch_cannot_use_cuda_and_the_comment_says_which_driver() -> None:
    """The worker setup runs the project's CUDA check before anything else; the chosen torch build and
    the driver it needs are stated (the lock's torch is the CUDA 13.0 build: driver >= 580)."""
    cfg = load()
    assert cfg["worker_setup_commands"][0] == "cd ~/cil-sweeps && python -m cil.device --require-cuda"
    assert not any("cil.device" in c for c in cfg["head_setup_commands"])  # the head is a CPU node
    with open(CLUSTER_YAML) as f:
        text = f.read()
    assert "CUDA 13.0 build" in text and "driver >= 580" in text


def test_the_cuda_check_fails_on_a_node_without_usable_cuda() -> None:
    """The command the GPU workers run, here on a machine where torch cannot use CUDA: exit 1, naming
    torch's CUDA and the driver."""
    import subprocess
    import sys

    import torch

    out = subprocess.run([sys.executable, "-m", "cil.device", "--require-cuda"], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=False)
    if torch.cuda.is_available():
        assert out.returncode == 0 and "CUDA usable" in out.stdout
    else:
        assert out.returncode == 1 and "CUDA is not usable" in out.stderr and torch.__version__ in out.stderr
        plain = subprocess.run([sys.executable, "-m", "cil.device"], cwd=ROOT, capture_output=True, text=True,
                               timeout=120, check=False)
        assert plain.returncode == (1 if "NVIDIA driver is" in out.stderr else 0)  # no GPU: the CPU is fine
