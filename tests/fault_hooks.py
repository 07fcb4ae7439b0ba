"""Faults the tests inject into Ray's worker processes; nothing of this lives in production modules.

A driver started with ``ray.init(runtime_env={"worker_process_setup_hook": "fault_hooks.install"})``
(and this folder on ``PYTHONPATH``) runs :func:`install` in every worker as it starts. It reads the
faults to inject from ``$CIL_TEST_FAULTS`` (JSON) and patches the functions the trainable calls
(``"sweep": NAME`` limits the faults to that sweep's trials):

- ``{"fail_after_task": T, "markers": DIR}``: a trial raises once right after reporting task T.
- ``{"hang_after_merge": DIR}``: a trial that has merged its files writes ``DIR/<trial>.merged`` and
  then hangs, so that the test can kill the driver at exactly that moment.
- ``{"storage_full_at_task": T, "markers": DIR}``: writing the rows of task T fails once with
  ENOSPC, as on a disk that is full until someone frees space.
- ``{"cuda_oom_at_task": T}``: training task T raises ``torch.OutOfMemoryError`` (as CUDA's caching
  allocator does when a trial's share is full), from inside the trainer's epoch.
- ``{"probe_numerics": DIR}``: each trial writes ``DIR/<trial>.json`` with the numerics switches and
  ``CUBLAS_WORKSPACE_CONFIG`` as its process has them when it reports.
"""

from __future__ import annotations

import errno
import json
import os
import time

ENV = "CIL_TEST_FAULTS"
HOOK = "fault_hooks.install"


def install() -> None:
    faults = json.loads(os.environ.get(ENV) or "{}")
    if not faults:
        return
    from ray import tune

    import cil.results

    def targeted() -> bool:
        return faults.get("sweep") in (None, tune.get_context().get_experiment_name())

    if "fail_after_task" in faults:
        report, task, markers = tune.report, faults["fail_after_task"], faults["markers"]

        def report_then_fail(metrics, *args, **kwargs):
            report(metrics, *args, **kwargs)
            if not targeted():
                return
            marker = os.path.join(markers, f"{tune.get_context().get_trial_id()}_failed_after_t{task}")
            if metrics.get("task") == task and not os.path.exists(marker):
                os.makedirs(markers, exist_ok=True)
                open(marker, "w").close()
                raise RuntimeError(f"injected failure after task {task}")

        tune.report = report_then_fail

    if "cuda_oom_at_task" in faults:
        import torch

        import cil.training

        run_epoch, oom_task = cil.training.Trainer.run_epoch, faults["cuda_oom_at_task"]

        def run_epoch_out_of_memory(self, approach, ctx, *args, **kwargs):
            if targeted() and ctx.t == oom_task:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has a total "
                                             "capacity of 22.05 GiB of which 1.20 GiB is free.")
            return run_epoch(self, approach, ctx, *args, **kwargs)

        cil.training.Trainer.run_epoch = run_epoch_out_of_memory

    if "probe_numerics" in faults:
        import torch

        probe_report, probe_dir = tune.report, faults["probe_numerics"]

        def report_with_probe(metrics, *args, **kwargs):
            os.makedirs(probe_dir, exist_ok=True)
            with open(os.path.join(probe_dir, f"{tune.get_context().get_trial_id()}.json"), "w") as f:
                json.dump({"cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
                           "cudnn_deterministic": torch.backends.cudnn.deterministic,
                           "cudnn_benchmark": torch.backends.cudnn.benchmark,
                           "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
                           "tf32": torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32}, f)
            probe_report(metrics, *args, **kwargs)

        tune.report = report_with_probe

    if "hang_after_merge" in faults:
        compact, folder = cil.results.compact_trial, faults["hang_after_merge"]

        def compact_then_hang(results_dir, trial_id):
            replaced = compact(results_dir, trial_id)
            os.makedirs(folder, exist_ok=True)
            open(os.path.join(folder, f"{trial_id}.merged"), "w").close()
            time.sleep(3600)  # the test kills the driver and every Ray process now
            return replaced

        cil.results.compact_trial = compact_then_hang

    if "storage_full_at_task" in faults:
        write_task, full_at, markers = cil.results.write_task, faults["storage_full_at_task"], faults["markers"]

        def write_or_enospc(task_rows, head_rows, results_dir, trial_id, task):
            marker = os.path.join(markers, f"{trial_id}_full_at_t{task}")
            if task == full_at and targeted() and not os.path.exists(marker):
                os.makedirs(markers, exist_ok=True)
                open(marker, "w").close()
                raise OSError(errno.ENOSPC, "No space left on device (injected)")
            return write_task(task_rows, head_rows, results_dir, trial_id, task)

        cil.results.write_task = write_or_enospc
