"""``python -m benchmarks.cpu_routes``: which CPU route gives the same bits on other CPUs (docs/reproducibility.md).

Runs one small ``cil.run`` (``lwf-s`` on the quickstart's data, 5 tasks, ``--epochs`` epochs, seed 0) per
route, each in a fresh process whose libraries are set by environment variables as another CPU would set
them (``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``, ``ATEN_CPU_CAPABILITY``), and prints a markdown
table of digests (SHA-256 of the final weights and the accuracy matrices): equal letters, equal bits. The
child sets threads and the oneDNN switch itself and leaves the rest to the environment, so it replaces
``cil.numerics.apply`` (which would set the mode from the config) for its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATASET = "synthetic:classes=50,channels=1,size=8,train=40"
PORTABLE = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "avx2"}
# (route, threads, oneDNN on, environment, what the environment simulates)
ROUTES = [
    ("native (oneDNN on)", 1, True, {}, "nothing"),
    ("native", 2, True, {}, "nothing"),
    ("native", 1, True, {"ONEDNN_MAX_CPU_ISA": "AVX"}, "oneDNN at AVX"),
    ("native", 1, True, {"ATEN_CPU_CAPABILITY": "default"}, "ATen at its scalar default"),
    ("native", 1, True, {"MKL_ENABLE_INSTRUCTIONS": "AVX"}, "MKL at AVX"),
    ("oneDNN off, MKL's defaults", 1, False, {}, "nothing"),
    ("oneDNN off, MKL's defaults", 1, False, {"MKL_ENABLE_INSTRUCTIONS": "AVX"}, "MKL at AVX"),
    ("portable (oneDNN off, MKL `COMPATIBLE`, ATen AVX2)", 1, False, PORTABLE, "nothing"),
    ("portable", 1, False, PORTABLE | {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "ONEDNN_MAX_CPU_ISA": "SSE41"},
     "MKL at SSE4.2, oneDNN at SSE4.1"),
    ("portable", 1, False, PORTABLE | {"MKL_ENABLE_INSTRUCTIONS": "AVX"}, "MKL at AVX"),
    ("portable", 2, False, PORTABLE, "nothing"),
]
CHILD = """
import hashlib, json, sys
import torch
threads, onednn, epochs = int(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3])
from cil import numerics
numerics.apply = lambda *_: torch.set_num_threads(threads)  # the environment decides, not the config
torch.backends.mkldnn.enabled = onednn
from cil.config import ExperimentConfig
from cil.loop import run
cfg = ExperimentConfig.from_dict({"approach": "lwf-s", "data.dataset": sys.argv[4], "data.num_tasks": 5,
                                  "train.nepochs": epochs, "run.seed": 0, "run.device": "cpu"})
for r in run(cfg):
    last = r
h = hashlib.sha256(last.acc_tag.tobytes() + last.acc_taw.tobytes())
for v in last.state["model"].values():
    h.update(v.numpy().tobytes())
print(json.dumps({"digest": h.hexdigest(), "tag": 100 * last.metrics["avg_acc_tag"],
                  "aten": torch.backends.cpu.get_cpu_capability()}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cpu_routes", description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=1, help="epochs per task of each run")
    args = p.parse_args(argv)
    clean = {k: v for k, v in os.environ.items()
             if k not in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")}
    clean["PYTHONPATH"] = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    letters: dict[str, str] = {}
    lines = ["| route | threads | capped as on another CPU | digest | TAg avg % |", "|---|---|---|---|---|"]
    for route, threads, onednn, env, simulated in ROUTES:
        out = subprocess.run([sys.executable, "-c", CHILD, str(threads), "1" if onednn else "0", str(args.epochs),
                              DATASET], env=clean | env, capture_output=True, text=True, timeout=600, check=False)
        if out.returncode != 0:
            lines.append(f"| {route} | {threads} | {simulated} | error: {out.stderr.strip()[-100:]} | - |")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        letter = letters.setdefault(r["digest"], chr(ord("A") + len(letters)))
        lines.append(f"| {route} | {threads} | {simulated} | {letter} | {r['tag']:.1f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
