"""``python -m benchmarks.gpu_check``: the one prepared measurement of the CUDA path (docs/gpu.md).

One command, no Ray and no Optuna (a GPU machine may offer only a stock PyTorch image), at most 8
minutes on one H100/H200. On CIFAR-shaped fake data written to a temporary folder it measures:

1. ``cil.bench`` (finetuning and LwF epochs) in fp32, TF32, bf16 autocast and compiled, against the
   FACIL-style loop on the same device, in the same timed window (img/s and the ratio);
2. the aggregate img/s of 1, 2 and 4 concurrent trials of the loop ``python -m cil`` runs, on one GPU,
   each capped at its share of memory as Ray caps fractional trials, with each trial's peak memory;
3. ``pytest -m cuda`` (tests/test_cuda.py and the other CUDA tests);
4. the portable CPU mode on this machine's host CPU: the digest of ``cil.verify.REFERENCE_RUN`` against the
   stored one (docs/reproducibility.md), a CPU model other than the one that stored it.

It prints one JSON line, then a markdown table. Each step runs in its own process (global numerics
switches, torch.compile caches and the memory cap stay apart) under a timeout; a step that fails is
reported with its error and the rest still run. ``--device cpu --quick`` runs a small version of every
step (the CPU test suite does, so this script cannot rot); on the CPU the TF32, bf16 and compiled
variants are skipped (the first two act on CUDA only; compiling takes minutes of C++ on a small CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# the test files that hold CUDA tests (pytest collects only these: the others may import Ray)
CUDA_TESTS = ("tests/test_cuda.py", "tests/test_data_augment.py")
BUDGET_S = 8 * 60
# bench variants: name -> extra cil.bench arguments
VARIANTS = {"fp32": [], "tf32": ["--set", "train.tf32=true"], "bf16": ["--set", "train.amp=true"],
            "compiled": ["--set", "train.compile=true"]}
# One trial of the concurrency step: its memory share, then the loop python -m cil runs; prints JSON.
TRIAL = """
import json, sys, time
import torch
from cil.cli import main
from cil.device import GPU_SHARE_HEADROOM
share, args = float(sys.argv[1]), sys.argv[2:]
cuda = torch.cuda.is_available() and "cpu" not in args
if cuda and share < 1:
    torch.cuda.set_per_process_memory_fraction(share * GPU_SHARE_HEADROOM, 0)
start = time.time()
rc = main(args)
end = time.time()
peak = torch.cuda.max_memory_allocated(0) if cuda else 0
reserved = torch.cuda.max_memory_reserved(0) if cuda else 0
print("TRIAL " + json.dumps({"rc": rc, "start": start, "end": end, "peak_mib": peak / 2**20,
                             "reserved_mib": reserved / 2**20}))
"""


class Clock:
    """The script's time budget: a step gets what is left, at most its own cap."""

    def __init__(self, budget: float) -> None:
        self.end = time.monotonic() + budget

    def left(self, cap: float) -> float:
        return max(0.0, min(cap, self.end - time.monotonic()))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _run(cmd: list[str], timeout: float) -> tuple[int, str]:
    """(exit code, output) of a command from the repository root; 124 on timeout, -1 without time."""
    if timeout <= 1:
        return -1, "skipped: the time budget is spent"
    try:
        out = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        return 124, f"timed out after {timeout:.0f} s: {(err.stderr or '')[-500:]}"
    return out.returncode, out.stdout + out.stderr


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def bench_step(root: str, a: argparse.Namespace, clock: Clock) -> dict[str, Any]:
    window = ["--warmup-batches", str(a.warmup_batches), "--epochs", str(a.epochs)]
    if a.limit:
        window += ["--limit", str(a.limit)]
    out: dict[str, Any] = {}
    rc, text = _run([sys.executable, "-m", "benchmarks.facil_style_loop", root, "--device", a.device, "--batch",
                     str(a.batch), "--workers", str(a.workers), *window], clock.left(180))
    out["facil"] = _last_json(text) if rc == 0 else {"error": text[-800:]}
    for name, extra in VARIANTS.items():
        if name != "fp32" and a.device == "cpu":
            out[name] = {"skipped": "CPU: TF32 and bf16 autocast act on CUDA only; compile is not measured there"}
            continue
        rc, text = _run([sys.executable, "-m", "cil.bench", "--data-root", root, "--device", a.device,
                         "--batch-size", str(a.batch), "--approaches", "lwf", *window, *extra],
                        clock.left(300 if name == "compiled" else 150))
        out[name] = _last_json(text) if rc == 0 else {"error": text[-800:]}
    return out


def trials_step(root: str, a: argparse.Namespace, clock: Clock) -> dict[str, Any]:
    """1, 2, 4 concurrent trials on one device: aggregate training img/s over the span of the group."""
    from cil.data import load_dataset, make_scenario

    tasks, stop, epochs = 10, a.trial_tasks, a.trial_epochs
    scenario = make_scenario(load_dataset("cifar100", root), tasks, None, 0, val_fraction=0.1)
    images = epochs * sum(len(scenario.task_split(t, "train")[1]) for t in range(stop))
    out: dict[str, Any] = {"images_per_trial": images}
    for k in a.concurrency:
        with tempfile.TemporaryDirectory() as results:
            procs = []
            for i in range(k):
                args = ["--datasets", "cifar100", "--data-root", root, "--num-tasks", str(tasks), "--stop-at-task",
                        str(stop), "--nepochs", str(epochs), "--lr-patience", "1000", "--batch-size", str(a.batch),
                        "--network", "resnet32", "--seed", str(i), "--device",
                        "cuda:0" if a.device.startswith("cuda") else a.device, "--results-path", results, "--quiet"]
                procs.append(subprocess.Popen([sys.executable, "-c", TRIAL, str(1 / k), *args], cwd=ROOT, env=_env(),
                                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
            reports, errors = [], []
            deadline = clock.left(240)
            for p in procs:
                try:
                    text, _ = p.communicate(timeout=max(deadline, 1))
                except subprocess.TimeoutExpired:
                    p.kill()
                    text, _ = p.communicate()
                    errors.append("timed out")
                    continue
                line = next((x for x in text.splitlines() if x.startswith("TRIAL ")), None)
                if p.returncode != 0 or line is None:
                    errors.append(text[-600:])
                else:
                    reports.append(json.loads(line[6:]))
            if errors or not reports:
                out[str(k)] = {"error": errors[:1]}
                continue
            span = max(r["end"] for r in reports) - min(r["start"] for r in reports)
            out[str(k)] = {"aggregate_img_s": round(k * images / span, 1), "seconds": round(span, 1),
                           "peak_mib": [round(r["peak_mib"]) for r in reports],
                           "reserved_mib": [round(r["reserved_mib"]) for r in reports]}
    return out


def pytest_step(clock: Clock) -> dict[str, Any]:
    rc, text = _run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *CUDA_TESTS],
                    clock.left(240))
    summary = next((x.strip("= ") for x in reversed(text.splitlines())
                    if re.search(r"\d+ (passed|failed|skipped|deselected|error)", x)), text[-300:])
    failed = [x for x in text.splitlines() if x.startswith(("FAILED", "ERROR"))]
    return {"rc": rc, "summary": summary, "failed": failed[:20]}


def portable_step(clock: Clock) -> dict[str, Any]:
    """The reference run's digest on the host CPU, in a fresh process (its CPU mode is set before any kernel)."""
    code = "import json\nfrom cil.verify import reference_check\nprint(json.dumps(reference_check()))"
    rc, text = _run([sys.executable, "-c", code], clock.left(120))
    return (_last_json(text) or {"error": text[-800:]}) if rc == 0 else {"error": text[-800:]}


def table(result: dict[str, Any]) -> str:
    """The markdown table of one result."""
    b = result["bench"]
    facil = b.get("facil") or {}
    lines = [f"device: {result['device_name']} · torch {result['torch']} · CUDA {result['cuda']} · "
             f"{result['date']}", "", "| measurement | finetuning img/s | LwF img/s | x FACIL-style (ft / LwF) |",
             "|---|---|---|---|"]
    fr = (facil.get("finetuning_img_s"), facil.get("lwf_img_s"))
    lines.append(f"| FACIL-style loop (fp32) | {fr[0]} | {fr[1]} | 1 / 1 |")
    for name in VARIANTS:
        r = b.get(name) or {}
        if "finetuning_img_s" not in r:
            lines.append(f"| cil.bench {name} | - | - | {next(iter(r.values()), '')!s:.80} |")
            continue
        ratio = [round(r[k] / f, 2) if f else "-" for k, f in (("finetuning_img_s", fr[0]), ("lwf_img_s", fr[1]))]
        lines.append(f"| cil.bench {name} | {r['finetuning_img_s']} | {r['lwf_img_s']} | {ratio[0]} / {ratio[1]} |")
    lines += ["", "| concurrent trials | aggregate img/s | x one trial | seconds | peak MiB per trial |",
              "|---|---|---|---|---|"]
    trials = result["trials"]
    one = (trials.get("1") or {}).get("aggregate_img_s")
    for k, r in trials.items():
        if k == "images_per_trial":
            continue
        if "aggregate_img_s" not in r:
            lines.append(f"| {k} | error | - | - | {str(r.get('error'))[:80]} |")
            continue
        x = round(r["aggregate_img_s"] / one, 2) if one else "-"
        lines.append(f"| {k} | {r['aggregate_img_s']} | {x} | {r['seconds']} | {r['peak_mib']} |")
    portable = result.get("portable") or {}
    lines += ["", f"portable CPU digest on {portable.get('cpu_model')}: "
              + ("matches the stored one" if portable.get("match") else
                 f"skipped ({portable['skipped']})" if "skipped" in portable else
                 f"DIFFERS ({portable.get('digest', portable.get('error'))!s:.80}; same torch and numpy as "
                 f"stored: {portable.get('same_versions')})")]
    lines += ["", f"pytest -m cuda: {result['pytest']['summary']}"]
    lines += [f"- {x}" for x in result["pytest"]["failed"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="a small version of every step (the CPU test suite)")
    p.add_argument("--out", type=Path, help="also write the JSON result here")
    a = p.parse_args(argv)
    import torch

    from benchmarks.fake_cifar100 import write_fake_cifar100

    if a.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but torch cannot use CUDA here; use --device cpu --quick", file=sys.stderr)
        return 2
    quick = a.quick
    a.batch, a.workers = (16, 0) if quick else (64, 4)
    a.warmup_batches, a.epochs, a.limit = (1, 1, 48) if quick else (5, 3, 0)
    a.trial_tasks, a.trial_epochs, a.concurrency = (1, 1, [1, 2]) if quick else (2, 2, [1, 2, 4])
    clock = Clock(BUDGET_S)
    cuda = a.device.startswith("cuda")
    result: dict[str, Any] = {
        "device": a.device, "device_name": torch.cuda.get_device_name(0) if cuda else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda if cuda else "", "quick": quick,
        "date": time.strftime("%Y-%m-%d", time.gmtime())}
    with tempfile.TemporaryDirectory() as root:
        write_fake_cifar100(root, n_train=1000 if quick else 50000, n_test=200 if quick else 10000)
        result["bench"] = bench_step(root, a, clock)
        result["trials"] = trials_step(root, a, clock)
    result["portable"] = {"skipped": "--quick (the slow test tests/test_reproducibility.py checks the digest)"} \
        if quick else portable_step(clock)
    result["pytest"] = pytest_step(clock)
    result["seconds"] = round(BUDGET_S - clock.left(BUDGET_S), 1)
    line = json.dumps(result)
    print(line)
    print(table(result))
    if a.out:
        a.out.write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
