"""``python -m tune sweep SPEC``: validate, then run (or resume) a sweep and print its table;
``python -m tune status SWEEP``: its table from the storage; ``python -m tune presets``: the presets;
``python -m tune verify SWEEP``: re-run one of its trials and compare the rows bit for bit."""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cil.config.coercion import assignments
from cil.errors import ConfigError
from tune.paths import SweepError, SweepPaths, absolute_storage
from tune.spec import (
    DEFAULT_PENDING_TIMEOUT_S,
    PENDING_ACTIONS,
    SpecError,
    SweepSpec,
    check_capacity,
    group_by,
    load_spec,
    oversubscription,
    preset_descriptions,
)

if TYPE_CHECKING:
    from tune.sweep import SweepOutcome

DRY_RUN_SAMPLES = 5


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tune", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sweep", help="run a sweep spec with Ray Tune",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    s.add_argument("spec", help="sweep spec: a YAML file, or a preset's name (python -m tune presets)")
    s.add_argument("--name", help="sweep name: folder under --storage and the Parquet 'sweep' column "
                                  "(default: the spec file's name)")
    s.add_argument("--storage", default="runs", help="local folder (made absolute) or s3://bucket/prefix")
    s.add_argument("--address", help="Ray cluster to join: auto, ray://host:10001 or host:port (default: "
                                     "$RAY_ADDRESS if set, else start a local Ray inside this process)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="fix a config key of every trial, as in the spec's base (e.g. --set run.threads=2), or "
                        "a resource (--set resources.cpu=2); value parsed as YAML; repeatable")
    s.add_argument("--resume", action="store_true", help="continue the interrupted sweep of this name; "
                                                          "errored trials are retried")
    s.add_argument("--takeover", action="store_true", help="take the sweep from the driver that holds its "
                                                            "lease (only when that driver is really dead)")
    s.add_argument("--dry-run", action="store_true", help="print trials, sample configs and resources; "
                                                           "do not start Ray")
    out = s.add_mutually_exclusive_group()
    out.add_argument("--quiet", action="store_true", help="progress as one line (trials done, ETA), no table")
    out.add_argument("--verbose", action="store_true", help="also Tune's own trial tables and Ray's log lines "
                                                             "(the trials' output included)")
    e = s.add_argument_group("estimates (tune/estimate.py)")
    e.add_argument("--calibrate", action="store_true", help="estimate device-hours and wall time from short "
                   "timed runs of each kind of trial on this machine (with --dry-run, or before a sweep)")
    e.add_argument("--history", metavar="RESULTS", help="estimate from the rows of an earlier results folder "
                   "(same network, data set, batch size, epochs, device kind), calibrating what it lacks")
    e.add_argument("--nodes", type=int, default=1, help="nodes like this machine the estimate spreads trials over")
    e.add_argument("--price-per-gpu-hour", type=float, metavar="PRICE",
                   help="also print the estimate's cost: device-hours (GPU-hours; CPU-hours on the CPU) x PRICE")
    s.add_argument("--no-share", action="store_true", help="every trial trains every task itself, also the "
                                                            "task prefixes it has in common with other trials")
    s.add_argument("--pending-timeout", type=float, default=DEFAULT_PENDING_TIMEOUT_S, metavar="SECONDS",
                   help="after trials have waited this long for resources with none running, say which "
                        "resource is missing and what to change (0: never)")
    s.add_argument("--pending-action", choices=PENDING_ACTIONS, default="wait",
                   help="after --pending-timeout: keep waiting, or stop (exit code 2; --resume continues)")
    v = sub.add_parser("verify", help="re-run one trial of a finished sweep in its recorded environment and "
                                      "compare its rows bit for bit (cil.verify)")
    v.add_argument("sweep", help="the sweep's folder (<storage>/<name>) or its results/ folder, or a URI")
    from cil.verify import add_arguments

    add_arguments(v)
    st = sub.add_parser("status", help="the table of a sweep (running or not), from its storage")
    st.add_argument("sweep", help="the sweep's folder (runs/NAME, s3://bucket/prefix/NAME), or its name under "
                                  "--storage")
    st.add_argument("--storage", default="runs", help="where a sweep given by name lives")
    sub.add_parser("presets", help="the sweep specs shipped in tune/presets/, one line each")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "verify":
        from cil.verify import run_verify

        return run_verify(args.sweep, args)
    if args.command == "presets":
        presets = preset_descriptions()
        width = max(map(len, presets))
        for name, description in presets.items():
            print(f"{name:<{width}}  {description}")
        return 0
    if args.command == "status":
        return status(args.sweep, args.storage)
    try:
        spec = load_spec(args.spec, assignments(args.set))
    except (SpecError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for warning in oversubscription(spec):
        print(f"warning: {warning}", file=sys.stderr)
    name = args.name or os.path.splitext(os.path.basename(args.spec))[0]  # a preset's name: itself
    paths = SweepPaths(absolute_storage(args.storage), name)
    # Inside `ray job submit` Ray sets RAY_ADDRESS: the sweep joins that cluster, whose autoscaler may
    # add the nodes a request needs, so only a local sweep is checked against this machine.
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    capacity = [] if address else check_capacity(spec.resources)
    wants_estimate = args.calibrate or args.history is not None
    if args.dry_run:
        print(describe(spec, paths, capacity))
        if wants_estimate:
            print("\n".join(_estimate(spec, args).lines()))
        else:
            print("estimate: add --calibrate (short timed runs here) or --history RESULTS (earlier rows)")
        return 0
    if capacity:
        print(f"error: invalid {spec.source}:\n  " + "\n  ".join(capacity), file=sys.stderr)
        return 2
    if not address:  # a cluster's data lives on its worker nodes, which this machine cannot see
        from tune.checks import check_data

        problems = check_data(spec)
        if problems:
            print("error: data that the trials could not use:\n  " + "\n  ".join(problems), file=sys.stderr)
            return 2
    from analysis import final_table
    from cil.results import refusing_storage
    from tune.pending import PendingWatch
    from tune.sweep import run_sweep

    estimated = None
    if wants_estimate:
        estimated = _estimate(spec, args)
        print("\n".join(estimated.lines()))
    pending = PendingWatch(_ray_request(spec), args.pending_timeout, args.pending_action)
    try:
        outcome = run_sweep(spec, paths, address=address, resume=args.resume,
                            verbose=0 if args.quiet else 2 if args.verbose else 1, takeover=args.takeover,
                            pending=pending, share=not args.no_share)
    except KeyboardInterrupt:  # a second Ctrl-C: Tune's last save was skipped, the last saved state stands
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print(f"\nsweep {name} was interrupted. Continue it with:\n  {resume_command(args, name)}", file=sys.stderr)
        return 130
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if not refusing_storage(err):
            raise
        print(f"error: the sweep storage {paths.experiment} refuses writes: {err}. Free space or fix its "
              f"permissions, then run: {resume_command(args, name)}", file=sys.stderr)
        return 1
    if pending.gave_up is not None:
        print(f"sweep {name} stopped: its trials wait for resources the cluster does not have (above). "
              f"Continue it with:\n  {resume_command(args, name)}", file=sys.stderr)
        return 2
    if estimated is not None and outcome.spent is not None:
        print(f"estimate vs actual: {estimated.device_hours:.3g} vs {outcome.spent.device_seconds / 3600:.3g} "
              f"device-hours, wall {estimated.wall_seconds:.0f} s vs {outcome.wall_seconds:.0f} s (this driver)")
    return report(outcome, spec, paths, args, name, final_table)


def status(sweep: str, storage: str) -> int:
    """Print a sweep's table as its driver last saved it (or as Tune's state has it), and whether a
    driver is running it; 2 when there is no sweep there."""
    from cil.results import resolve
    from tune.console import read_snapshot, status_lines
    from tune.lease import SweepLease

    if "://" in sweep or os.sep in sweep or os.path.isdir(sweep):
        experiment, name = absolute_storage(sweep), sweep.partition("?")[0].rstrip("/").rpartition("/")[2]
    else:
        experiment, name = SweepPaths(absolute_storage(storage), sweep).experiment, sweep
    try:
        snapshot = read_snapshot(experiment)
        from_tune = snapshot is None
        if from_tune:
            from tune.progress import saved_snapshot

            snapshot = saved_snapshot(experiment, name)
        fs, folder = resolve(experiment)
        holder = SweepLease(fs, folder, name).read()
    except (OSError, ValueError, SweepError) as err:
        print(f"error: cannot read the sweep at {experiment}: {err}", file=sys.stderr)
        return 2
    if snapshot is None:
        print(f"error: no sweep at {experiment} (no saved table and no Tune experiment state); give the sweep's "
              f"folder, or its name and --storage", file=sys.stderr)
        return 2
    driver = holder.describe() if holder is not None and not holder.stale() else None
    print("\n".join(status_lines(snapshot, driver, from_tune=from_tune)))
    return 0


def _estimate(spec: SweepSpec, args: argparse.Namespace) -> Any:
    from tune.estimate import estimate

    return estimate(spec, share=not args.no_share, nodes=args.nodes, history=args.history,
                    price=args.price_per_gpu_hour, group_keys=group_by(spec))


def _ray_request(spec: SweepSpec) -> dict[str, float]:
    """A trial's request under Ray's resource names."""
    return {"CPU": spec.resources.cpu, "GPU": spec.resources.gpu}


def report(outcome: SweepOutcome, spec: SweepSpec, paths: SweepPaths, args: argparse.Namespace, name: str,
           final_table: Callable[..., str]) -> int:
    """Print how the sweep ended; the exit code: 0 all finished, 1 some errored, 130 interrupted,
    3 taken over by another driver, tune.budget.BUDGET_EXIT stopped by the spec's budget."""
    n, errored, unfinished = len(outcome.statuses), outcome.errored, outcome.unfinished
    if outcome.lost_to is not None:
        print(f"error: sweep {name} was taken over by another driver ({outcome.lost_to}); this driver "
              "stopped", file=sys.stderr)
        return 3
    print(f"\nsweep {name}: {n} trials, {n - len(errored) - len(unfinished)} finished, {len(errored)} errored, "
          f"{len(unfinished)} unfinished; results: {paths.results}")
    for trial_id, message in outcome.failures.items():
        print(f"  trial {trial_id} failed (not retried): {message}", file=sys.stderr)
    print(final_table(paths.results, by=group_by(spec)))
    if unfinished and outcome.budget_reached:
        from tune.budget import BUDGET_EXIT

        print(f"\nsweep {name} stopped: {outcome.budget_reached}; {len(unfinished)} of {n} trials unfinished, "
              f"each resumable from its last finished task. Raise the spec's stop: budget, then continue with:\n"
              f"  {resume_command(args, name)}", file=sys.stderr)
        return BUDGET_EXIT
    if unfinished:
        print(f"\nsweep {name} was interrupted: {len(unfinished)} of {n} trials unfinished. Continue it with:\n"
              f"  {resume_command(args, name)}", file=sys.stderr)
        return 130
    return 1 if errored else 0


def resume_command(args: argparse.Namespace, name: str) -> str:
    """The exact command that continues this sweep."""
    parts = ["python", "-m", "tune", "sweep", args.spec, "--name", name, "--storage",
             absolute_storage(args.storage)]
    for item in getattr(args, "set", []):
        parts += ["--set", item]
    if args.address:
        parts += ["--address", args.address]
    if getattr(args, "no_share", False):
        parts.append("--no-share")
    return shlex.join([*parts, "--resume"])


def describe(spec: SweepSpec, paths: SweepPaths, capacity: list[str]) -> str:
    """The dry run: how many trials, what they ask for, and a few of their configs."""
    r = spec.resources
    lines = [f"sweep {paths.name!r} from {spec.source}"]
    if spec.search:
        s = spec.search
        lines.append(f"{spec.num_trials} trials (Optuna samples), each running {spec.runs_per_trial} seeds "
                     f"{spec.seeds} in lock-step: {spec.num_trials * spec.runs_per_trial} cil runs")
        lines.append(f"objective: {s.mode} {s.metric} after the final task, mean over seeds")
        lines.extend(f"  search.space.{k}: {_dist_text(d)}" for k, d in s.space.items())
    else:
        shape = " x ".join(f"{k} ({len(v)})" for k, v in spec.grid.items()) or "no grid"
        lines.append(f"{spec.num_trials} trials: {shape}")
    lines.append(f"resources per trial: cpu={r.cpu:g} gpu={r.gpu:g}; max_concurrent: "
                 f"{spec.max_concurrent or 'as resources allow'}; failure.max_failures: {spec.max_failures}, "
                 f"max_preemptions: {spec.max_preemptions}; "
                 f"checkpoint.num_to_keep: {spec.num_to_keep}")
    if spec.scheduler:
        sc = spec.scheduler
        lines.append(f"scheduler: ASHA on {sc.metric} ({sc.mode}), time = tasks done, max_t {sc.max_t}, "
                     f"grace {sc.grace_period}, reduction factor {sc.reduction_factor:g}")
    else:
        lines.append("scheduler: none (every trial trains all its tasks)")
    if spec.stop.any:
        b = spec.stop
        parts = [f"max_device_hours {b.max_device_hours:g}" if b.max_device_hours else "",
                 f"max_wall_hours {b.max_wall_hours:g}" if b.max_wall_hours else "",
                 f"deadline {datetime.fromtimestamp(b.deadline).astimezone().isoformat(timespec='minutes')}"
                 if b.deadline else ""]
        lines.append("stop (then --resume continues): " + ", ".join(p for p in parts if p))
    for problem in capacity:
        lines.append(f"warning: {problem}")
    lines.append(f"results: {paths.results}")
    lines.append("base: " + _kv(spec.base))
    samples = spec.trial_configs(limit=DRY_RUN_SAMPLES)
    lines.append(f"sample trial configs ({len(samples)} of {spec.num_trials}; base keys left out):")
    lines.extend(f"  {_kv({k: v for k, v in c.items() if k not in spec.base})}" for c in samples)
    return "\n".join(lines)


def _kv(values: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items()) or "-"


def _dist_text(d: dict[str, Any]) -> str:
    if d["type"] == "categorical":
        return f"categorical {d['choices']}"
    log = " log" if d.get("log") else ""
    return f"{d['type']}{log} [{d['low']}, {d['high']}]"
