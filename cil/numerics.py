"""The CPU's numeric environment: set from the config before the first kernel runs, read back from the
libraries, and recorded in every row (docs/reproducibility.md).

A CPU result depends on more than the config and the seed: the intra-op thread count (how reductions
and matrix products are split), the instruction set each library dispatches to (AVX2 and AVX-512 kernels
sum in other orders), and the library versions. :func:`apply` sets the first two from ``run.threads`` and
``run.cpu_isa`` instead of inheriting them from the machine, and :func:`environment` records what is in
effect, read from the libraries, not from the config.

``run.cpu_isa`` modes (:data:`CPU_MODES`):

- ``portable``: torch's own vector kernels capped at AVX2 (``ATEN_CPU_CAPABILITY``), oneDNN switched off
  for fp32 (convolutions go through MKL's GEMM), and MKL in its conditional numerical reproducibility
  mode ``COMPATIBLE`` (one code path on every x86-64 CPU). An x86-64 CPU with AVX2 computes the same bits
  as any other, whatever its own instruction sets and cache sizes. On other CPUs (Apple silicon, ARM
  servers) it switches oneDNN off and records the rest as ``mixed (...)``: no claim of portability.
- ``native``: torch's defaults for this CPU (oneDNN on, MKL's and ATen's best code path): faster, and
  the bits may differ between CPU models.

ATen's capability and MKL's code path are fixed per process by the first kernel that uses them; a later
:func:`apply` cannot change them, so it reads them back and refuses a mode it cannot honour instead of
recording a mode that is not in effect. This is the one module that reaches a library's private entry
point: MKL's CNR switch (``mkl_cbwr_set``/``mkl_cbwr_get``, exported by torch's CPU library as
``mkl_serv_cbwr_*``), through ctypes.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cil.config.schema import MACHINE_KEYS
from cil.errors import PermanentError

AUTO = "auto"


@dataclass(frozen=True)
class CpuMode:
    """What one ``run.cpu_isa`` value sets; ``None``: the library's own choice."""

    aten: str | None  # ATEN_CPU_CAPABILITY: torch's vectorised kernels
    onednn: bool  # torch.backends.mkldnn.enabled (fp32 convolutions through oneDNN)
    mkl_cbwr: str | None  # MKL's CNR branch (MKL_CBWR)


CPU_MODES = {
    "portable": CpuMode(aten="avx2", onednn=False, mkl_cbwr="COMPATIBLE"),
    "native": CpuMode(aten=None, onednn=True, mkl_cbwr=None),
}
# MKL's CNR branch codes (mkl_cbwr_get's return values, MKL_CBWR_BRANCH part) by name
_MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2",
                 9: "AVX", 10: "AVX2", 12: "AVX512", 14: "AVX512_E1"}
_MKL_CODES = {name: code for code, name in _MKL_BRANCHES.items()}
_MKL_ALL = -1
#: the portable mode's guarantee is for x86-64; on other CPUs (Apple silicon, ARM servers) it switches oneDNN off
#: and records the rest as it is, so their rows never claim to be portable
X86_64 = platform.machine().lower() in ("x86_64", "amd64")

# Provenance that changes the numbers, hashed into ``numerics_fingerprint`` with the config's fingerprint.
# The CPU model counts unless the portable mode is in effect (the point of that mode); the project's
# commit does not (a change of the docs would split every fingerprint): verify names it when it differs.
NUMERIC_FIELDS = ("device_kind", "device_name", "device_capability", "torch_version", "cuda_version",
                  "cudnn_version", "tf32_in_effect", "amp_in_effect", "deterministic_in_effect",
                  "threads_in_effect", "cpu_isa_in_effect", "cpu_model", "numpy_version", "lock_hash")
# Installer tooling, left out of the lock's hash: it never computes a number.
_NOT_LOCKED = {"pip", "setuptools", "wheel", "cil-sweeps"}


def startup_env(cpu_isa: str) -> dict[str, str]:
    """The environment variables that fix a mode's code paths at a process's start (for a process that
    runs torch operations of its own before a run: a notebook, a test session)."""
    mode = CPU_MODES[cpu_isa]
    return {k: v for k, v in (("ATEN_CPU_CAPABILITY", mode.aten), ("MKL_CBWR", mode.mkl_cbwr)) if v}


class NumericsError(PermanentError):
    """The process cannot compute in the numeric mode the config asks for."""


_cpu_share: int | None = None


def claim_cpu_share(cpus: float | None) -> None:
    """The CPUs a sweep trial holds: what ``run.threads: auto`` means in this process from now on
    (None: every core again)."""
    global _cpu_share
    _cpu_share = None if cpus is None else max(1, int(cpus))


def resolve_threads(threads: int | str) -> int:
    """``run.threads`` as a count: ``auto`` is the trial's CPU share in a sweep (:func:`claim_cpu_share`),
    else every core this process may use."""
    if threads != AUTO:
        return int(threads)
    if _cpu_share is not None:
        return _cpu_share
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def apply(threads: int | str, cpu_isa: str) -> None:
    """Set the intra-op threads and the CPU mode for this process, before its first kernel where it can.

    Raises :class:`NumericsError` when a kernel has already fixed ATen's or MKL's code path to another
    one (the message gives the environment variables that set them at start-up instead).
    """
    torch.set_num_threads(resolve_threads(threads))
    mode = CPU_MODES[cpu_isa]
    torch.backends.mkldnn.enabled = mode.onednn
    if mode.aten is None:  # the library's own choice, where no kernel has fixed another one yet
        os.environ.pop("ATEN_CPU_CAPABILITY", None)
    if mode.mkl_cbwr is None and (set_branch := _mkl_function("mkl_serv_cbwr_set")) is not None:
        set_branch(_MKL_CODES["OFF"])  # fails (and changes nothing) once MKL has started on another path
    if mode.aten is not None and X86_64:  # elsewhere ATen has no AVX2: recorded as it is (not "portable")
        os.environ["ATEN_CPU_CAPABILITY"] = mode.aten  # read at the first vectorised kernel
        if torch.backends.cpu.get_cpu_capability().lower() != mode.aten:
            raise NumericsError(_fixed_message(cpu_isa, f"torch's CPU kernels dispatch to "
                                               f"{torch.backends.cpu.get_cpu_capability()}", mode))
    if mode.mkl_cbwr is not None:
        os.environ["MKL_CBWR"] = mode.mkl_cbwr  # for child processes, and where the switch is unreachable
        set_branch = _mkl_function("mkl_serv_cbwr_set")
        if set_branch is not None and set_branch(_MKL_CODES[mode.mkl_cbwr]) != 0 \
                and mkl_branch() != mode.mkl_cbwr:
            raise NumericsError(_fixed_message(cpu_isa, f"MKL runs its {mkl_branch()} code path", mode))


def _fixed_message(cpu_isa: str, state: str, mode: CpuMode) -> str:
    env = " ".join(f"{k}={v}" for k, v in startup_env(cpu_isa).items())
    return (f"run.cpu_isa = {cpu_isa!r} cannot take effect in this process: {state}, fixed by a torch operation "
            f"that ran before the run started (or this CPU lacks {mode.aten.upper() if mode.aten else 'it'}; "
            f"{platform.machine()}). Start the run in a fresh process (python -m cil, a sweep trial), or start "
            f"this one with {env}; or use run.cpu_isa: native")


@functools.cache
def _mkl_library() -> ctypes.CDLL | None:
    """torch's CPU library, which carries MKL (Linux and Windows x86-64 wheels); None elsewhere."""
    if not torch.backends.mkl.is_available():
        return None
    lib_dir = Path(torch.__file__).parent / "lib"
    for name in ("libtorch_cpu.so", "libtorch_cpu.dylib", "torch_cpu.dll"):
        if (lib_dir / name).exists():
            try:
                return ctypes.CDLL(str(lib_dir / name))
            except OSError:
                return None
    return None


def _mkl_function(name: str) -> Any:
    lib = _mkl_library()
    fn = getattr(lib, name, None) if lib is not None else None
    if fn is not None:
        fn.restype, fn.argtypes = ctypes.c_int, [ctypes.c_int]
    return fn


def mkl_branch() -> str:
    """MKL's CNR code path in effect (``OFF``: MKL picks per call; ``COMPATIBLE``: the portable one);
    ``none`` without MKL, ``env:<value>`` where only the environment variable can be seen."""
    get = _mkl_function("mkl_serv_cbwr_get")
    if get is None:
        return "none" if not torch.backends.mkl.is_available() else f"env:{os.environ.get('MKL_CBWR', '')}"
    value = get(_MKL_ALL)
    name = _MKL_BRANCHES.get(value & 0xFFFF, str(value & 0xFFFF))
    return name + (",STRICT" if value & 0x10000 else "")


def cpu_isa_in_effect() -> str:
    """The mode whose settings are all in effect, then what each library runs, read back from it:
    ``portable (aten AVX2, mkl COMPATIBLE, onednn off)``."""
    aten, mkl, onednn = torch.backends.cpu.get_cpu_capability(), mkl_branch(), torch.backends.mkldnn.enabled
    name = "mixed"
    for mode_name, mode in CPU_MODES.items():
        if (mode.onednn == onednn and (mode.aten is None or mode.aten == aten.lower())
                and (mode.mkl_cbwr is None or mode.mkl_cbwr == mkl)):
            name = mode_name
            break
    return f"{name} (aten {aten}, mkl {mkl}, onednn {'on' if onednn else 'off'})"


@functools.cache
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``, else what the platform module says)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("model name", "Model", "Hardware")):
                    return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.cache
def lock_hash() -> str:
    """A short hash of every installed distribution's ``name==version`` (installer tooling and this project
    left out): what is installed, whether from the lock or not, so two environments that could compute
    differently never share it."""
    pins = sorted({f"{_normal(d.metadata['Name'])}=={d.version}" for d in importlib.metadata.distributions()
                   if d.metadata["Name"] and _normal(d.metadata["Name"]) not in _NOT_LOCKED})
    return hashlib.sha256("\n".join(pins).encode()).hexdigest()[:12]


def _normal(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


@functools.cache
def project_version() -> tuple[str, str]:
    """(version, git commit) of this code: the installed distribution's version, or the clone's
    pyproject.toml; the commit of the clone it runs from (``+dirty`` with uncommitted changes), else ``""``."""
    root = Path(__file__).resolve().parents[1]
    version = ""
    pyproject = root / "pyproject.toml"
    if pyproject.exists():
        import tomllib

        with open(pyproject, "rb") as f:
            version = tomllib.load(f).get("project", {}).get("version", "")
    if not version:
        try:
            version = importlib.metadata.version("cil-sweeps")
        except importlib.metadata.PackageNotFoundError:
            version = ""
    commit = ""
    if (root / ".git").exists():
        try:
            head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                  timeout=20, check=True).stdout.strip()
            dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                   capture_output=True, text=True, timeout=20, check=True).stdout.strip()
            commit = head + ("+dirty" if dirty else "")
        except (OSError, subprocess.SubprocessError):
            commit = ""
    return version, commit


def environment(config: dict[str, Any], device_provenance: dict[str, Any]) -> dict[str, Any]:
    """The environment columns (:data:`cil.results_schema.ENVIRONMENT`) of a run of ``config`` (its dotted keys), read
    now (after :func:`apply`)."""
    version, commit = project_version()
    out = {"threads_in_effect": torch.get_num_threads(), "cpu_isa_in_effect": cpu_isa_in_effect(),
           "cpu_model": cpu_model(), "numpy_version": np.__version__, "cil_version": version,
           "git_commit": commit, "lock_hash": lock_hash()}
    out["numerics_fingerprint"] = fingerprint(config, device_provenance | out)
    return out


def fingerprint(config: dict[str, Any], provenance: dict[str, Any]) -> str:
    """Hash of the config and every provenance field that changes the numbers: rows with equal
    fingerprints must hold equal numbers (``verify`` checks it). Left out: where the run happens, where it
    stops (earlier tasks do not change), and ``run.threads`` as written (its count in effect counts)."""
    config = {k: v for k, v in config.items() if k not in (*MACHINE_KEYS, "run.stop_at_task", "run.threads")}
    fields = {k: provenance.get(k) for k in NUMERIC_FIELDS}
    if fields["device_kind"] == "cpu":
        fields["device_name"] = None  # the CPU is cpu_model's
        if str(fields["cpu_isa_in_effect"]).startswith("portable"):
            fields["cpu_model"] = None
    blob = json.dumps([config, fields], sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:12]
