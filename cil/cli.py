"""``python -m cil``: one experiment without Ray, with the flags a FACIL user already knows.

Every flag of FACIL's ``main_incremental.py`` is understood: most set a config key, a few are accepted
with a note (they have no counterpart here), the rest are refused with what replaces them.
Order of precedence: ``--config`` YAML, then flags, then ``--set``. ``python -m cil verify RESULTS`` re-runs
a recorded trial in its recorded numeric environment and compares its rows bit for bit (cil.verify).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
import typing
from typing import Any

import yaml

from cil.approaches.registry import SPECS, section_flags, section_users
from cil.catalog import DATASETS
from cil.config import SHARED_SECTIONS, ConfigError, ExperimentConfig, _CoreConfig, flatten
from cil.config.coercion import assignments, base_type
from cil.errors import PermanentError
from cil.results import EPOCHS, compact_trial, write_task

# torch (and every module that imports it) is imported when a run starts, not here: ``cil --help`` and
# the parser work in a light install without torch.

def _declared_flags() -> tuple[dict[str, tuple[str, type]], dict[str, tuple[str, bool]]]:
    """The FACIL flags the shared keys declare (their ``flag`` metadata, cil.config.schema): flag ->
    (dotted key, value type) for flags that take a value, flag -> (dotted key, constant) for switches
    (``sets``: FACIL's store_true flags set true, ``--no-cudnn-deterministic`` sets false)."""
    values: dict[str, tuple[str, type]] = {}
    switches: dict[str, tuple[str, bool]] = {}
    sections = {"": _CoreConfig, **SHARED_SECTIONS}
    for section, cls in sections.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            flag = f.metadata.get("flag")
            key = f"{section}.{f.name}" if section else f.name
            if not flag or flag in SPECIAL_FLAGS:
                continue
            if "sets" in f.metadata:
                switches[flag] = (key, f.metadata["sets"])
            else:
                values[flag] = (key, base_type(hints[f.name])[0])
    return values, switches


# Flags with a parser of their own: FACIL's --datasets takes a list (one data set here), --gpu N is a
# second way to set run.device.
SPECIAL_FLAGS = ("--datasets", "--gpu")
# FACIL flag -> (dotted config key, type) and FACIL's switches -> (dotted key, the value they store), from the
# declarations. Flags default to None so only the ones given override the config.
FLAGS, SWITCHES = _declared_flags()

# FACIL flags without a config key. Accepted ones print a note and change nothing; refused ones stop the
# run before any work, saying what replaces them. name -> (argparse keywords, accepted?, message).
FACIL_ONLY_FLAGS: dict[str, tuple[dict[str, Any], bool, str]] = {
    "--num-workers": ({"type": int}, True,
                      "there are no DataLoader workers: a task's images sit on the device as one tensor "
                      "(data.on_device) and batches are augmented there"),
    "--pin-memory": ({"type": str}, True, "there is no DataLoader to pin memory for (data.on_device)"),
    "--last-layer-analysis": ({"action": "store_const", "const": True}, True,
                              "head weight norms and bias means are always recorded (the heads/ Parquet table; "
                              "analysis.plot_head_norms draws them)"),
    "--save-models": ({"action": "store_const", "const": True}, False,
                      "python -m cil does not save models: each task's model is in the state cil.run(cfg) yields "
                      "(TaskResult.state, torch.save-able), and sweeps checkpoint it after every task"),
    "--use-valid-only": ({"action": "store_const", "const": True}, False,
                         "tasks are always tested on the test split; data.val_fraction sets the validation split "
                         "that drives the lr schedule"),
    "--keep-existing-head": ({"action": "store_const", "const": True}, False,
                             "backbones here have no classifier to keep: one head is added per task"),
    "--pretrained": ({"action": "store_const", "const": True}, False,
                     "networks are trained from scratch (model.network); pretrained backbones are not supported"),
}


LOGGERS = ("disk", "tensorboard")
TENSORBOARD_DIR = "tensorboard"


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _default_text(key: str, value: Any) -> str:
    """What a flag's key resolves to when nothing sets it, for --help."""
    if key == "model.network":
        by_net: dict[str, list[str]] = {}
        for dataset in DATASETS.values():
            by_net.setdefault(dataset.network, []).append(dataset.name)
        return "per dataset: " + "; ".join(f"{n} for {', '.join(d)}" for n, d in by_net.items())
    if key.startswith("loss.") and value is None:
        return "the approach's preset"
    if key == "data.nc_first_task" and value is None:
        return "None: classes split evenly"
    return repr(value) if isinstance(value, str) else str(value)


# FACIL flags that approach sections declare (cil.approaches.registry): one flag may set another key per
# approach (``--lamb`` is loss.lamb for LwF, lucir.lamb for LUCIR).
SECTION_FLAGS = section_flags()


def flag_table() -> dict[str, list[str]]:
    """Dotted key -> the flags of ``python -m cil`` that set it (the config reference's FACIL flag column)."""
    out: dict[str, list[str]] = {}
    for flag, (key, _) in FLAGS.items():
        out.setdefault(key, []).append(f"`{flag}`")
    for flag, (key, _) in SWITCHES.items():
        out.setdefault(key, []).append(f"`{flag}`")
    out.setdefault("data.dataset", []).append("`--datasets`")
    out.setdefault("run.device", []).append("`--gpu N`")
    for flag, by_section in SECTION_FLAGS.items():
        for sf in by_section.values():
            stores = "" if sf.sets is None else f" (stores `{str(sf.sets).lower()}`)"
            out.setdefault(sf.key, []).append(f"`{flag}`{stores}")
    return out


def flag_key(flag: str, approach: str) -> str:
    """The dotted key a FACIL flag sets for ``approach``; ConfigError when that approach has no use for it."""
    by_section = SECTION_FLAGS.get(flag, {})
    section = SPECS[approach].section if approach in SPECS else None
    if section in by_section:
        return by_section[section].key
    if flag in FLAGS:
        return FLAGS[flag][0]
    users = [u for s in by_section for u in section_users(s)]
    keys = ", ".join(f.key for f in by_section.values())
    raise ConfigError(f"{flag} is not used by approach {approach!r}: it sets {keys} (approaches {', '.join(users)})")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cil", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    # the resolved defaults, except the keys resolved from other keys (network, the preset's loss weights)
    defaults = ExperimentConfig().to_flat() | {"model.network": None, "loss.lamb": None}
    p.add_argument("--config", help="YAML file with a (nested or dotted) experiment config to start from")
    p.add_argument("--datasets", nargs="+",
                   help=f"dataset name (one; FACIL's flag takes a list) (default: {defaults['data.dataset']})")
    for flag, (key, typ) in FLAGS.items():
        p.add_argument(flag, type=typ, default=None,
                       help=f"sets {key} (default: {_default_text(key, defaults.get(key))})")
    for flag, (key, value) in SWITCHES.items():
        p.add_argument(flag, action="store_const", const=True, default=None,
                       help=f"sets {key} to {str(value).lower()} (default: {defaults[key]})")
    p.add_argument("--gpu", type=int, default=None, metavar="N",
                   help="FACIL's GPU index: sets run.device to cuda:N (the CPU, with a note, when there is no "
                        "CUDA); --device wins over it")
    for flag, by_section in SECTION_FLAGS.items():
        if flag in FLAGS:
            continue
        first = next(iter(by_section.values()))
        keys = ", ".join(f.key for f in by_section.values())
        if first.sets is not None:
            p.add_argument(flag, action="store_const", const=first.sets, default=None,
                           help=f"sets {keys} to {first.sets}")
        else:
            p.add_argument(flag, type=first.type, default=None, help=f"sets {keys}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any dotted config key, e.g. --set loss.w_task=1 (value parsed as YAML)")
    p.add_argument("--results-path", default="results", help="results root, made absolute (default: results)")
    p.add_argument("--exp-name", default=None, help="results sub-folder (default: <dataset>_<approach>)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (every dotted key, as YAML) and exit without training")
    p.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    p.add_argument("--log", nargs="*", choices=LOGGERS, default=["disk"], metavar="LOGGER",
                   help=f"FACIL's loggers: disk = the Parquet tables under --results-path (always written, "
                        f"{EPOCHS}/ holds the per-epoch curves); tensorboard = also TensorBoard event files "
                        f"in <results-path>/<exp-name>/{TENSORBOARD_DIR}/<trial> (needs tensorboardX) "
                        f"(choices: {', '.join(LOGGERS)}; default: disk)")
    facil = p.add_argument_group("FACIL flags without a counterpart here (accepted with a note, or refused "
                                 "with what replaces them)")
    for flag, (kwargs, accepted, message) in FACIL_ONLY_FLAGS.items():
        facil.add_argument(flag, default=None, **kwargs,
                           help=("accepted, no effect: " if accepted else "refused: ") + message)
    return p


def facil_flag_messages(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """Notes for the FACIL-only flags given that are accepted, errors for those that are refused."""
    notes, errors = [], []
    for flag, (_, accepted, message) in FACIL_ONLY_FLAGS.items():
        value = getattr(args, _dest(flag))
        if value is None:
            continue
        if accepted:
            notes.append(f"{flag} has no effect here: {message}")
        else:
            errors.append(f"{flag}: {message}")
    return notes, errors


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """Config file, then FACIL flags, then --set: later wins. Raises ConfigError."""
    values: dict[str, Any] = {}
    if args.config:
        try:
            with open(args.config) as f:
                loaded = yaml.safe_load(f) or {}
        except OSError as err:
            raise ConfigError(f"--config {args.config!r} cannot be read: {err.strerror}") from None
        except yaml.YAMLError as err:
            raise ConfigError(f"--config {args.config!r} is not valid YAML: {err}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"--config {args.config!r} must hold a mapping of config keys")
        values.update(flatten(loaded))
    if args.datasets:
        if len(args.datasets) != 1:
            raise ConfigError(f"--datasets {' '.join(args.datasets)}: give exactly one dataset per run")
        values["data.dataset"] = args.datasets[0]
    if args.gpu is not None and args.device is None:
        values["run.device"] = f"cuda:{args.gpu}" if _cuda_available() else "cpu"
    if args.approach is not None:
        values["approach"] = args.approach
    approach = values.get("approach", ExperimentConfig.__dataclass_fields__["approach"].default)
    for flag in [*FLAGS, *SECTION_FLAGS]:
        value = getattr(args, _dest(flag))
        if value is not None:
            values[flag_key(flag, approach)] = value
    for flag, (key, value) in SWITCHES.items():
        if getattr(args, _dest(flag)) is not None:
            values[key] = value
    values.update(assignments(args.set))
    return ExperimentConfig.from_dict(values)


def _device_text(device: str) -> str:
    """The device a run chose, as the user should see it: ``cuda:0 (NVIDIA H100 80GB HBM3)``."""
    if not device.startswith("cuda"):
        return device
    import torch

    return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _check_writable_dir(path: str) -> None:
    """Fail before training, not after the first task, when the results can never be written."""
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise ConfigError(f"--results-path {path!r} is not usable: {probe!r} is a file, not a folder")
    if not os.access(probe, os.W_OK):
        raise ConfigError(f"--results-path {path!r} is not usable: {probe!r} is not writable")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify"]:  # python -m cil verify RESULTS: re-run a recorded trial, compare its rows
        from cil.verify import main as verify_main

        return verify_main(argv[1:])
    args = build_parser().parse_args(argv)
    notes, errors = facil_flag_messages(args)
    if args.gpu is not None and args.device is None and not _cuda_available():
        notes.append(f"--gpu {args.gpu}: CUDA is not available, running on the CPU (as FACIL does)")
    if errors:
        print("error: " + "\n  ".join(errors), file=sys.stderr)
        return 2
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    try:
        cfg = config_from_args(args)
        if args.print_config:
            print(yaml.safe_dump(cfg.to_flat(), sort_keys=False), end="")
            return 0
        device = cfg.resolved_device()
        if cfg.run.device == "auto" and device == "cpu":
            from cil.device import auto_device_note

            unusable = auto_device_note()
            if unusable:
                print(f"warning: {unusable}", file=sys.stderr)
        if cfg.run.deterministic:
            from cil.device import set_cublas_workspace

            set_cublas_workspace()  # before the run's first CUDA work
        results_root = os.path.abspath(args.results_path)
        _check_writable_dir(results_root)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from cil import metrics
    from cil.data import DataError
    from cil.loop import run

    exp_name = args.exp_name or f"{cfg.data.dataset}_{cfg.approach}"
    results_dir = os.path.join(results_root, exp_name, "results")
    trial_id = f"{cfg.approach}-s{cfg.run.seed}-{cfg.fingerprint(device)}"
    log = None if args.quiet else (lambda msg: print(msg, flush=True))
    print(f"experiment {exp_name} / {trial_id} on {_device_text(device)}", flush=True)
    tensorboard = None
    if "tensorboard" in args.log:
        from cil.extras import MissingExtraError
        from cil.tensorboard_log import TensorBoardLog

        try:
            tensorboard = TensorBoardLog(os.path.join(results_root, exp_name, TENSORBOARD_DIR, trial_id))
        except MissingExtraError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    start = time.perf_counter()
    try:
        for result in run(cfg, log=log):
            t = result.task
            tag = {"sweep": exp_name, "trial_id": trial_id}
            write_task([tag | r for r in result.task_rows], [tag | r for r in result.head_rows],
                       results_dir, trial_id, t, [tag | r for r in result.epoch_rows])
            if tensorboard is not None:
                tensorboard.write_task(t, result.epoch_rows, result.task_rows, result.metrics)
            m = result.metrics
            print(f"task {t}: TAw {100 * m['avg_acc_taw']:.1f}%  TAg {100 * m['avg_acc_tag']:.1f}%  "
                  f"forg TAg {100 * m['forg_tag']:.1f}%  ({m['train_seconds']:.1f}s)", flush=True)
            last = result
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PermanentError as err:  # CUDA out of memory, bf16 missing, a diverging loss
        print(f"error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        if tensorboard is not None:
            tensorboard.close()
    compact_trial(results_dir, trial_id)
    print("=" * 60)
    for name, mat in (("TAw Acc", last.acc_taw), ("TAg Acc", last.acc_tag)):
        print(metrics.format_matrix(name, mat, last.task))
    for name, mat in (("TAw Forg", last.acc_taw), ("TAg Forg", last.acc_tag)):
        forg = metrics.forgetting(mat[: last.task + 1, : last.task + 1])
        print(metrics.format_matrix(name, forg, last.task, forgetting=True))
    print(f"results: {results_dir}  ({time.perf_counter() - start:.1f}s)")
    return 0
