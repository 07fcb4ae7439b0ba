"""How a trial process uses its device: which device a config's ``run.device`` names here, the loud CUDA
check, the numerics switches, the record of what ran, and CUDA out-of-memory as a permanent error
(docs/gpu.md).

Every trial process (``python -m cil``, a Ray trial, ``cil.run`` called directly) goes through
:func:`apply_numerics` when its experiment is built, so cuDNN's flags, deterministic algorithms and TF32
are set from the config, never left at torch's defaults (which differ per card type).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any

import torch

from cil.errors import ConfigError, PermanentError
from cil.numerics import environment

#: cuBLAS's workspace setting for reproducible matmuls (torch refuses deterministic CUDA matmuls without
#: it); read when cuBLAS starts, so it is set before the process's first CUDA work
CUBLAS_WORKSPACE = ":4096:8"
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
DRIVER_FILE = "/proc/driver/nvidia/version"
# The oldest driver each CUDA major version of torch's wheels runs on (NVIDIA's minor-version
# compatibility: any 12.x build on a 525+ driver, any 13.x build on a 580+ driver).
MIN_DRIVER = {"13": "580", "12": "525"}
# A fractional-GPU trial caps its allocator a little under its share: the CUDA context and allocator
# fragmentation live outside the cap, and trials sharing a card are not isolated from each other.
GPU_SHARE_HEADROOM = 0.9


class CudaUnusableError(PermanentError):
    """A trial that holds a GPU whose CUDA this torch cannot use: another attempt on the same node fails
    the same way."""


class CudaOutOfMemoryError(PermanentError):
    """CUDA ran out of memory under the trial's share: the same attempt hits the same limit."""


class PrecisionError(PermanentError):
    """A precision the device cannot run as asked (bf16 autocast on a GPU without bf16 units)."""


def resolve_device(requested: str) -> str:
    """The device a config's ``run.device`` names on this machine: ``auto`` is CUDA when there is one. A
    CUDA device that this machine does not have is a ConfigError (checked here, at run time: a sweep may
    be validated elsewhere)."""
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(requested.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(f"run.device = {requested!r} is not available: this machine has "
                              f"{count} CUDA device(s); use auto, cpu" + (", cuda:0.." if count else ""))
    return requested


def set_cublas_workspace() -> None:
    """Set ``CUBLAS_WORKSPACE_CONFIG`` unless the user chose a value; call it before CUDA starts."""
    os.environ.setdefault(CUBLAS_ENV, CUBLAS_WORKSPACE)


def driver_version() -> str | None:
    """The NVIDIA kernel driver's version, from the kernel module or ``nvidia-smi``; None without one."""
    try:
        with open(DRIVER_FILE) as f:
            found = re.search(r"\b(\d+\.\d+(?:\.\d+)?)\b", f.read())
        if found:
            return found.group(1)
    except OSError:
        pass
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=20, check=False).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return out[0] if out else None


def cuda_unusable_message(where: str) -> str:
    """Why this torch cannot use the GPU ``where`` says this process holds, and what to change."""
    cuda = torch.version.cuda
    driver = driver_version()
    built = f"torch {torch.__version__} is built for CUDA {cuda}" if cuda else \
        f"torch {torch.__version__} is a CPU-only build (no CUDA)"
    need = MIN_DRIVER.get((cuda or "").partition(".")[0])
    fix = (f"install a torch build this driver supports (CUDA {cuda} needs driver >= {need}; a CUDA 12.x "
           f"build such as the cu126 wheels runs on drivers >= {MIN_DRIVER['12']}), or update the driver"
           if cuda else "install a CUDA build of torch (https://pytorch.org/get-started/locally/)")
    return (f"{where}, but CUDA is not usable: {built}; "
            f"{f'the NVIDIA driver is {driver}' if driver else 'no NVIDIA driver found'}. Fix: {fix}; or set "
            f"resources.gpu: 0 (run.device: cpu) to train on the CPU on purpose")


def cuda_device(index: int, where: str) -> torch.device:
    """``cuda:<index>``, made the current device; :class:`CudaUnusableError` when CUDA cannot run."""
    if not torch.cuda.is_available():
        raise CudaUnusableError(cuda_unusable_message(where))
    count = torch.cuda.device_count()
    if index >= count:
        raise CudaUnusableError(f"{where}: CUDA device {index} does not exist (this process sees {count})")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def auto_device_note() -> str | None:
    """With ``run.device: auto``: a warning when a GPU is on this machine but torch cannot use it."""
    if torch.cuda.is_available() or driver_version() is None:
        return None
    return cuda_unusable_message("this machine has an NVIDIA GPU") + " (run.device: auto runs on the CPU)"


def apply_numerics(deterministic: bool, tf32: bool, cudnn_benchmark: bool, device: torch.device) -> None:
    """Set cuDNN, deterministic algorithms and TF32 as the config says (process-wide torch state).

    Deterministic: cuDNN's deterministic kernels, no autotuning, and torch's deterministic algorithms
    (an op without one raises on CUDA; on the CPU, where cil's ops are deterministic anyway, it warns).
    ``cudnn_benchmark`` applies only when ``deterministic`` is false (autotuning picks kernels by timing).
    """
    if deterministic:
        set_cublas_workspace()
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = (not deterministic) and cudnn_benchmark
    torch.use_deterministic_algorithms(deterministic, warn_only=device.type != "cuda")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


def check_amp(amp: bool, device: torch.device) -> None:
    """bf16 autocast only where the GPU has bf16 units (elsewhere it is slower than fp32)."""
    if amp and device.type == "cuda" and not _native_bf16():
        raise PrecisionError(f"train.amp: true needs bf16, which {torch.cuda.get_device_name(device)} (compute "
                             f"capability {_capability(device)}) does not support; set train.amp: false (fp32)")


def _native_bf16() -> bool:
    """bf16 in hardware (Ampere and later); torch's default check also counts emulation (a T4)."""
    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # an older torch: no emulation counted
        return torch.cuda.is_bf16_supported()


def _capability(device: torch.device) -> str:
    major, minor = torch.cuda.get_device_capability(device)
    return f"{major}.{minor}"


def provenance(device: torch.device, amp_in_effect: bool, config: dict[str, Any]) -> dict[str, Any]:
    """What ran: the device, the versions, and the numerics in effect (read from torch, not the config):
    the values of cil.results_schema.PROVENANCE."""
    cuda = device.type == "cuda"
    cudnn = torch.backends.cudnn.version() if cuda and torch.backends.cudnn.is_available() else None
    ran = {
        "device_kind": device.type,
        "device_name": torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
        "device_capability": _capability(device) if cuda else "",
        "torch_version": torch.__version__,
        "cuda_version": (torch.version.cuda or "") if cuda else "",
        "cudnn_version": "" if cudnn is None else str(cudnn),
        "tf32_in_effect": bool(cuda and torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32),
        "amp_in_effect": bool(amp_in_effect),
        "deterministic_in_effect": torch.are_deterministic_algorithms_enabled(),
    }
    return ran | environment(config, ran)


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def oom_error(err: BaseException, device: str | torch.device | None = None) -> CudaOutOfMemoryError:
    """A CUDA out-of-memory error as a permanent one: the allocator's figures and the fix."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else "CUDA out of memory"
    figures = "no CUDA device in this process: no allocator figures"
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        dev = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
        if dev.type == "cuda":
            total = torch.cuda.get_device_properties(dev).total_memory
            get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
            fraction = get_fraction(dev) if get_fraction is not None else None
            figures = (f"allocated {_gib(torch.cuda.memory_allocated(dev))}, reserved "
                       f"{_gib(torch.cuda.memory_reserved(dev))}, peak allocated "
                       f"{_gib(torch.cuda.max_memory_allocated(dev))} of {_gib(total)} on {dev}"
                       + (f", per-process memory fraction {fraction:.3g} (cap {_gib(fraction * total)})"
                          if fraction is not None and fraction < 1 else ""))
    return CudaOutOfMemoryError(f"{first.rstrip('.')}; {figures}. Fix: give each trial a larger GPU share "
                                "(resources.gpu, up to 1) or a smaller train.batch_size (train.eval_batch_size "
                                "for evaluation)")


def main(argv: list[str] | None = None) -> int:
    """``python -m cil.device [--require-cuda]``: what this node's torch can use, as one line; exit 1 when
    an NVIDIA GPU is here (or ``--require-cuda``) and torch cannot use CUDA: the cluster files run it in
    their GPU nodes' setup, so a node whose driver the installed torch does not support fails at once."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m cil.device", description=main.__doc__)
    p.add_argument("--require-cuda", action="store_true", help="fail unless CUDA is usable (a GPU node)")
    args = p.parse_args(argv)
    driver = driver_version()
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        print(f"CUDA usable: torch {torch.__version__} (CUDA {torch.version.cuda}), driver {driver}, "
              f"devices: {', '.join(names)}")
        return 0
    if args.require_cuda or driver is not None:
        print("error: " + cuda_unusable_message("this node is a GPU node" if args.require_cuda
                                                else "this machine has an NVIDIA GPU"), file=sys.stderr)
        return 1
    print(f"no GPU here: torch {torch.__version__} runs on the CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
