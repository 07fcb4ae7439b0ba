"""deploy/: the sweep image, the KubeRay RayJob and the GCP cluster-launcher file, checked offline as
far as they can be (no docker build, no cluster)."""

from __future__ import annotations

import copy
import json
import os
import re
import shlex

import jsonschema
import pytest
import ray
import yaml
from test_cluster_yaml import assert_token_auth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(ROOT, "deploy")
BASE_IMAGE = f"rayproject/ray:{ray.__version__}-py311-gpu"


def read(name: str) -> str:
    with open(os.path.join(DEPLOY, name)) as f:
        return f.read()


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", read("Dockerfile"))
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def rayjob() -> dict:
    [job] = [d for d in yaml.safe_load_all(read("rayjob.yaml")) if d and d.get("kind") == "RayJob"]
    return job


def network_policy() -> dict:
    [policy] = [d for d in yaml.safe_load_all(read("rayjob.yaml")) if d and d.get("kind") == "NetworkPolicy"]
    return policy


def gcp() -> dict:
    return yaml.safe_load(read("gcp.yaml"))


# ---- Dockerfile -----------------------------------------------------------------------------------

def test_dockerfile_builds_on_rays_gpu_image_of_the_pinned_version() -> None:
    ins = dockerfile_instructions()
    assert [a for i, a in ins if i == "FROM"] == [BASE_IMAGE]
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        assert f"ray=={ray.__version__}" in f.read().split()  # the lock (extras stripped)


def test_dockerfile_installs_the_pinned_requirements_then_the_project() -> None:
    ins = dockerfile_instructions()
    runs = [(n, a) for n, (i, a) in enumerate(ins) if i == "RUN"]
    [req_run] = [n for n, a in runs if re.search(r"pip install .*-r requirements\.txt", a)]
    [project_run] = [n for n, a in runs if re.search(r"pip install .*--no-deps \.(\s|$)", a)]
    copies = {n: shlex.split(a) for n, (i, a) in enumerate(ins) if i == "COPY"}
    sources = {n: [s for s in args[:-1] if not s.startswith("--")] for n, args in copies.items()}
    copied_before = lambda n: {s for m, srcs in sources.items() if m < n for s in srcs}  # noqa: E731
    assert copied_before(req_run) == {"requirements.txt"}  # the dependency layer depends on nothing else
    assert {"pyproject.toml", "cil", "tune", "analysis"} <= copied_before(project_run)
    for srcs in sources.values():  # every COPY source exists in the build context (the repository root)
        for src in srcs:
            assert os.path.exists(os.path.join(ROOT, src)), src


def test_dockerignore_keeps_results_and_data_out_of_the_context() -> None:
    ignored = {line.strip() for line in read("Dockerfile.dockerignore").splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".git", "runs", "data"} <= ignored


# ---- KubeRay RayJob -------------------------------------------------------------------------------

def test_rayjob_has_the_required_fields() -> None:
    job = rayjob()
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["metadata"]["name"]
    spec = job["spec"]
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # the head never runs a trial
    [head_container] = head["template"]["spec"]["containers"]
    [workers] = cluster["workerGroupSpecs"]
    assert workers["groupName"]
    assert workers["minReplicas"] == 0 and workers["maxReplicas"] >= 1
    assert cluster["enableInTreeAutoscaling"] is True
    [worker_container] = workers["template"]["spec"]["containers"]
    assert worker_container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    for container in (head_container, worker_container):
        assert container["name"] and container["image"].endswith("/cil-sweeps:0.1.0")
    assert head_container["image"] == worker_container["image"] == gcp()["docker"]["image"]
    for group in (head, workers):  # rayStartParams values are strings in the CRD
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())


def test_rayjob_runs_a_shipped_preset_with_results_in_a_bucket() -> None:
    entry = shlex.split(rayjob()["spec"]["entrypoint"])
    assert entry[:2] == ["cil-sweep", "sweep"]
    image_root = "/home/ray/cil-sweeps/"  # the Dockerfile's WORKDIR
    assert any(i == "WORKDIR" and a == image_root.rstrip("/") for i, a in dockerfile_instructions())
    preset = entry[2]
    assert preset.startswith(image_root)
    assert os.path.isfile(os.path.join(ROOT, preset[len(image_root):]))
    storage = entry[entry.index("--storage") + 1]
    assert storage.startswith("gs://")
    assert rayjob()["spec"]["shutdownAfterJobFinishes"] is True


def test_rayjob_enables_token_authentication_through_the_operator() -> None:
    """authOptions (KubeRay >= 1.5.1): the operator makes the Secret and sets RAY_AUTH_MODE and
    RAY_AUTH_TOKEN on every Ray container and the submitter; no container sets them by hand (a
    hand-set RAY_AUTH_MODE without the operator's token would break the cluster) and no token is here."""
    cluster = rayjob()["spec"]["rayClusterSpec"]
    assert cluster["authOptions"] == {"mode": "token"}
    assert "KubeRay operator >= 1.5.1" in read("rayjob.yaml")
    major, minor, _ = (int(p) for p in cluster["rayVersion"].split("."))
    assert (major, minor) >= (2, 52)  # the operator refuses authOptions below Ray 2.52
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        spec = group["template"]["spec"]
        for container in spec["containers"] + spec.get("initContainers", []):
            assert not {e["name"] for e in container.get("env", [])} & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}


def test_rayjob_network_policy_admits_only_the_clusters_own_pods() -> None:
    """Every pod of the cluster carries the label the policy selects; the policy admits those pods on any
    port, and only the submitter and the KubeRay operator besides them, on the dashboard port alone."""
    job, policy = rayjob(), network_policy()
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["spec"]["policyTypes"] == ["Ingress"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    cluster = job["spec"]["rayClusterSpec"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        assert selector.items() <= group["template"]["metadata"]["labels"].items()
    own, *others = policy["spec"]["ingress"]
    assert own == {"from": [{"podSelector": {"matchLabels": selector}}]}  # all ports, cluster pods only
    dashboard = next(p["containerPort"] for p in cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["ports"]
                     if p["name"] == "dashboard")
    [rest] = others
    assert rest["ports"] == [{"port": dashboard, "protocol": "TCP"}]
    sources = [peer["podSelector"]["matchLabels"] for peer in rest["from"]]
    assert sources == [{"batch.kubernetes.io/job-name": job["metadata"]["name"]},  # the submitter Job's pod
                       {"app.kubernetes.io/name": "kuberay-operator"}]
    assert all(set(peer) <= {"podSelector", "namespaceSelector"} and "ipBlock" not in peer for peer in rest["from"])


# ---- GCP cluster launcher -------------------------------------------------------------------------

def test_gcp_file_validates_against_the_schema_shipped_with_ray() -> None:
    with open(os.path.join(os.path.dirname(ray.__file__), "autoscaler", "ray-schema.json")) as f:
        schema = json.load(f)
    jsonschema.validate(gcp(), schema)


def test_gcp_file_passes_rays_own_checks_offline() -> None:
    """prepare_config merges the GCP provider's defaults.yaml from the ray package (no network);
    validate_config checks the result."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(gcp()))
    validate_config(prepared)
    assert prepared["provider"]["type"] == "gcp"
    assert prepared["available_node_types"][prepared["head_node_type"]]["max_workers"] == 0


def test_gcp_cpu_head_and_preemptible_gpu_workers() -> None:
    cfg = gcp()
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}
    assert "guestAccelerators" not in head["node_config"]
    [worker] = [t for name, t in types.items() if name != cfg["head_node_type"]]
    assert worker["min_workers"] == 0 and worker["max_workers"] >= 1
    assert worker["resources"]["GPU"] >= 1  # GCP machine types do not tell Ray their GPUs
    node = worker["node_config"]
    assert node["guestAccelerators"][0]["acceleratorCount"] == worker["resources"]["GPU"]
    assert node["scheduling"]["preemptible"] is True
    assert node["scheduling"]["onHostMaintenance"] == "TERMINATE"  # required with GPUs
    scopes = node["serviceAccounts"][0]["scopes"]
    assert "https://www.googleapis.com/auth/cloud-platform" in scopes  # gs:// for checkpoints and rows


def test_gcp_every_node_starts_ray_with_token_authentication() -> None:
    assert_token_auth(gcp(), read("gcp.yaml"))


def test_gcp_usage_stores_results_in_gcs_and_installs_nothing_on_workers() -> None:
    text = read("gcp.yaml")
    assert re.search(r"--storage gs://\S+", text)
    cfg = gcp()
    assert not any("pip install" in c for c in cfg["setup_commands"] + cfg["worker_setup_commands"])


@pytest.mark.parametrize("name", ["gcp.yaml", "rayjob.yaml", "Dockerfile"])
def test_holds_no_credentials(name) -> None:
    text = read(name)
    assert '"private_key"' not in text and "BEGIN PRIVATE KEY" not in text
    assert not re.search(r"AKIA[0-9A-Z]{16}|AIza[0-9A-Za-z_\-]{35}", text)
    assert not re.search(r"(?im)^\s*(ssh_private_key|api_key|password)\s*:", text)


# ---- the torch build and the CUDA check ---------------------------------------------------------

def test_dockerfile_stops_on_a_cpu_only_torch_and_says_which_build_and_driver() -> None:
    ins = dockerfile_instructions()
    [req_run] = [a for i, a in ins if i == "RUN" and "requirements.txt" in a]
    assert "torch.version.cuda" in req_run  # the build fails if the lock resolved to a CPU-only torch
    text = read("Dockerfile")
    assert "CUDA 13.0 build" in text and ">= 580" in text


def test_gcp_gpu_workers_check_cuda_and_use_an_image_with_a_580_driver() -> None:
    cfg = gcp()
    assert cfg["worker_setup_commands"] == ["python -m cil.device --require-cuda"]
    worker = cfg["available_node_types"]["gpu_worker"]["node_config"]
    image = worker["disks"][0]["initializeParams"]["sourceImage"]
    driver = int(re.search(r"nvidia-(\d+)$", image).group(1))
    assert driver >= 580  # torch 2.14.1's CUDA 13.0 build needs it


def test_rayjob_gpu_pods_check_cuda_on_their_gpu_before_joining() -> None:
    [group] = rayjob()["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    spec = group["template"]["spec"]
    [check] = spec["initContainers"]
    assert check["command"] == ["python", "-m", "cil.device", "--require-cuda"]
    assert check["image"] == spec["containers"][0]["image"]  # the same torch as the trials
    assert check["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "gpu-driver-version=latest" in read("rayjob.yaml")
