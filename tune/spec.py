"""The sweep spec (YAML): parsed and validated completely before Ray starts.

Every trial config is checked with ``ExperimentConfig.from_dict`` (the one place config errors are
caught), so a typo, an unknown approach or a negative weight stops the sweep with a message that
names the key. This module never imports Ray, so ``--dry-run`` stays fast.

About 590 lines on purpose: each top-level section's parser is short, but they check each other (the
grid against the base, the scheduler against the search, the resources against the trials), so they are
read together; the generic parts (types, ranges, unknown names) are the config's problem collector.
"""

from __future__ import annotations

import importlib.util
import itertools
import math
import os
import re
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from cil.config import _LEAVES, ConfigError, ExperimentConfig, Problems, flatten, valid_keys
from cil.extras import install_hint
from tune.budget import Budget, parse_stop

RESOURCES_PREFIX = "resources."  # --set resources.cpu=2 sets the spec's resources section, not the config
TOP_KEYS = ("description", "base", "grid", "search", "scheduler", "resources", "max_concurrent", "failure",
            "checkpoint", "tracking", "reproduces", "stop")  # reproduces: the published numbers (analysis.ledger)
DESCRIPTION_MAX = 90  # a spec's description is one line of `python -m tune presets`
# What the driver does once trials have waited --pending-timeout seconds for resources (tune/pending.py,
# which imports Ray; declared here, Ray-free, for the CLI and the watch alike).
PENDING_ACTIONS = ("wait", "exit")
DEFAULT_PENDING_TIMEOUT_S = 300.0
SEEDS_KEY = "_seeds"  # search mode: every trial runs all the spec's seeds (see trainable.py)
# Metrics reported after every task, and which direction is better.
METRICS = {"avg_acc_tag": "max", "avg_acc_taw": "max", "avg_inc_acc_tag": "max", "avg_inc_acc_taw": "max",
           "forg_tag": "min", "forg_taw": "min"}
TIME_ATTR = "tasks_done"  # ASHA's clock: tasks trained so far (task index + 1)
_DIST_TYPES = ("float", "int", "categorical")
# Experiment trackers of the ``tracking`` section and their keys (all strings).
TRACKERS = {"mlflow": ("tracking_uri", "experiment_name"), "wandb": ("project", "group")}
# Optuna RDB storages (SQLAlchemy URLs, optionally with a driver: postgresql+psycopg2://...).
_RDB_URL = re.compile(r"^(sqlite|postgresql|mysql)(\+\w+)?://")


class SpecError(ValueError):
    """A bad sweep spec; the message lists every problem, each naming its key."""

    def __init__(self, problems: list[str], source: str = "sweep spec") -> None:
        self.problems = problems
        super().__init__(f"invalid {source}:\n  " + "\n  ".join(problems))


@dataclass(frozen=True)
class Resources:
    """What one trial asks Ray for; fractional GPUs let several small trials share a card."""

    cpu: float = 1.0
    gpu: float = 0.0

    def as_ray(self) -> dict[str, float]:
        return {"cpu": self.cpu, "gpu": self.gpu}


@dataclass(frozen=True)
class Search:
    """Optuna over some config keys; each sampled point runs every seed and is judged on their mean
    of a metric after the final task."""

    metric: str
    mode: str
    num_samples: int
    space: dict[str, dict[str, Any]]
    seed: int | None = None
    storage: str | None = None  # an Optuna RDB URL: the study outlives the sweep (optuna-dashboard)
    study_name: str | None = None  # default with a storage: the sweep's name

    def distributions(self) -> dict[str, Any]:
        """The space as Optuna distributions (bounds inclusive)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        out: dict[str, Any] = {}
        for key, d in self.space.items():
            if d["type"] == "float":
                out[key] = FloatDistribution(d["low"], d["high"], log=d.get("log", False))
            elif d["type"] == "int":
                out[key] = IntDistribution(d["low"], d["high"], log=d.get("log", False), step=d.get("step", 1))
            else:
                out[key] = CategoricalDistribution(d["choices"])
        return out


@dataclass(frozen=True)
class Scheduler:
    """ASHA on the task index: trials that trail after ``grace_period`` tasks are stopped early."""

    metric: str
    mode: str
    max_t: int
    grace_period: int = 1
    reduction_factor: float = 2.0


@dataclass(frozen=True)
class Tracking:
    """Experiment trackers fed by Tune's logger callbacks (tune.tracking): each trial is one run, with
    its config as parameters and the metrics of every task. None: that tracker is off."""

    mlflow: dict[str, str] | None = None  # tracking_uri, experiment_name (default: the sweep's name)
    wandb: dict[str, str] | None = None  # project, group (default: the sweep's name)


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: flat dotted config keys throughout, as in Tune's trial config and Parquet."""

    base: dict[str, Any]
    grid: dict[str, list[Any]] = field(default_factory=dict)
    search: Search | None = None
    scheduler: Scheduler | None = None
    resources: Resources = Resources()
    max_concurrent: int | None = None
    max_failures: int = 3
    """Retries of a trial after errors of its own (an exception, a crashed worker); -1: no limit."""
    max_preemptions: int = 20
    """Retries of a trial after losing it with its node (a spot preemption); these never count against
    ``max_failures`` (tune/failures.py); -1: no limit."""
    num_to_keep: int = 2
    tracking: Tracking = Tracking()
    description: str = ""
    """One line that says what the sweep is for (``python -m tune presets`` lists it)."""
    stop: Budget = Budget()
    """When the sweep stops, resumable (tune/budget.py)."""
    source: str = "sweep spec"

    @property
    def seeds(self) -> list[int]:
        return list(self.grid.get("run.seed", [self.base.get("run.seed", 0)]))

    @property
    def num_trials(self) -> int:
        return self.search.num_samples if self.search else math.prod(len(v) for v in self.grid.values())

    @property
    def runs_per_trial(self) -> int:
        """cil runs per Tune trial: all seeds in search mode, one otherwise."""
        return len(self.seeds) if self.search else 1

    def search_constants(self) -> dict[str, Any]:
        """Search mode's fixed part of every trial config: base without the seed, plus the seeds."""
        return {k: v for k, v in self.base.items() if k != "run.seed"} | {SEEDS_KEY: self.seeds}

    def trial_configs(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Flat trial configs as Tune will see them (search mode: random draws from the space)."""
        if self.search is None:
            return [self.base | p for p in itertools.islice(_cross(self.grid), limit)]
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=self.search.seed or 0))
        dists = self.search.distributions()
        n = min(limit or self.search.num_samples, self.search.num_samples)
        return [self.search_constants() | study.ask(dists).params for _ in range(n)]


PRESETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")


def preset_names() -> list[str]:
    """The specs shipped in tune/presets/, by name (the file name without ``.yaml``)."""
    return sorted(f.removesuffix(".yaml") for f in os.listdir(PRESETS) if f.endswith(".yaml"))


def spec_file(spec: str) -> str:
    """``spec`` as a file: a path that exists, else the preset of that name (``quickstart``). A bare
    name that is neither is a SpecError with the closest presets."""
    if os.path.exists(spec) or "/" in spec or os.sep in spec or spec.endswith((".yaml", ".yml")):
        return spec
    if spec in preset_names():
        return os.path.join(PRESETS, f"{spec}.yaml")
    p = Problems()
    p.unknown(spec, tuple(preset_names()), "spec file or preset")
    raise SpecError(p)


def load_spec(path: str, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """Read and validate a YAML spec, given as a path or a preset's name; raises SpecError. ``overrides``
    (``--set KEY=VALUE``) fix keys in its ``base`` before validation, so they are checked like the file."""
    path = spec_file(path)
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except OSError as err:
        raise SpecError([f"cannot read {path!r}: {err.strerror}"]) from None
    except yaml.YAMLError as err:
        raise SpecError([f"{path!r} is not valid YAML: {err}"]) from None
    if overrides:
        raw = with_overrides(raw, overrides, f"sweep spec {path}")
    return parse_spec(raw, source=f"sweep spec {path}")


def with_overrides(raw: Any, overrides: dict[str, Any], source: str = "sweep spec") -> Any:
    """The spec with ``overrides`` in its ``base`` (``resources.*`` in its resources). A key the spec
    sweeps (its ``grid`` or ``search.space``) cannot be fixed from the command line: the spec's points
    would silently collapse to one."""
    if not isinstance(raw, dict):
        return raw  # parse_spec names what is wrong with it
    grid, search = raw.get("grid") or {}, raw.get("search") or {}
    space = search.get("space") or {} if isinstance(search, dict) else {}
    swept = {*(grid if isinstance(grid, dict) else ()), *(space if isinstance(space, dict) else ())}
    clash = [k for k in overrides if k in swept]
    if clash:
        raise SpecError([f"--set {k}: the spec sweeps {k} (its grid or search space); --set fixes keys "
                         f"of base only, so edit the spec or copy it" for k in clash], source)
    section = {k: v for k, v in overrides.items() if k.startswith(RESOURCES_PREFIX)}
    config = {k: v for k, v in overrides.items() if k not in section}
    base, resources = raw.get("base"), raw.get("resources")
    out = {**raw, "base": {**(base if isinstance(base, dict) else {}), **config}}
    if section:  # resources.cpu=2: checked by the resources section's own rules
        out["resources"] = {**(resources if isinstance(resources, dict) else {}),
                            **{k.removeprefix(RESOURCES_PREFIX): v for k, v in section.items()}}
    return out


def oversubscription(spec: SweepSpec) -> list[str]:
    """Warnings for CPU trials told to compute with more threads than their CPU share: the trials then
    share cores (slower, often several times), though their rows are the same bits."""
    if spec.resources.gpu:
        return []
    values = [spec.base.get("run.threads"), *spec.grid.get("run.threads", [])]
    over = sorted({v for v in values if isinstance(v, int) and not isinstance(v, bool) and v > spec.resources.cpu})
    return [f"run.threads = {v} is more than a trial's resources.cpu = {spec.resources.cpu:g}: trials will share "
            f"cores and run slower (the same bits); add --set resources.cpu={v} to give each trial its threads"
            for v in over]


def parse_spec(raw: Any, source: str = "sweep spec") -> SweepSpec:
    """Validate a spec given as a dict; every problem is reported at once, each naming its key."""
    p = Problems()
    if not isinstance(raw, dict):
        raise SpecError(["the spec must be a mapping with at least a 'base' section"], source)
    for key in raw:
        if key not in TOP_KEYS:
            p.unknown(str(key), TOP_KEYS, "spec key")
    base = _parse_base(raw.get("base"), p)
    grid = _parse_grid(raw.get("grid"), base, p)
    search = _parse_search(raw.get("search"), base, grid, p)
    resources = _parse_resources(raw.get("resources"), p)
    max_concurrent = p.integer("max_concurrent", raw.get("max_concurrent"), ">=1", optional=True)
    failure = p.section(raw.get("failure"), "failure", ("max_failures", "max_preemptions"))
    max_failures = p.integer("failure.max_failures", failure.get("max_failures", 3), "-1|>=0")
    max_preemptions = p.integer("failure.max_preemptions", failure.get("max_preemptions", 20), "-1|>=0")
    checkpoint = p.section(raw.get("checkpoint"), "checkpoint", ("num_to_keep",))
    num_to_keep = p.integer("checkpoint.num_to_keep", checkpoint.get("num_to_keep", 2), ">=1")
    _check_trial_configs(base, grid, search, p)
    scheduler = _parse_scheduler(raw.get("scheduler"), base, grid, search, p)
    tracking = _parse_tracking(raw.get("tracking"), p)
    if "reproduces" in raw:  # not used by the sweep: checked here so that --against never meets a bad ledger
        from analysis.ledger import parse_ledger

        p.extend(parse_ledger(raw["reproduces"], "spec")[1])
    description = _parse_description(raw.get("description", ""), p)
    stop = parse_stop(raw.get("stop"), p)
    if p:
        raise SpecError(p, source)
    return SweepSpec(base=base, grid=grid, search=search, scheduler=scheduler, resources=resources,
                     max_concurrent=max_concurrent, max_failures=max_failures,
                     max_preemptions=max_preemptions, num_to_keep=num_to_keep,
                     tracking=tracking, description=description, stop=stop, source=source)


def _parse_description(raw: Any, p: list[str]) -> str:
    if not isinstance(raw, str) or "\n" in raw.strip() or len(raw.strip()) > DESCRIPTION_MAX:
        p.append(f"description = {raw!r} is not valid: must be one line of text, at most {DESCRIPTION_MAX} "
                 "characters")
        return ""
    return raw.strip()


def preset_descriptions() -> dict[str, str]:
    """Each preset's name and ``description`` (read without validating the rest of the spec)."""
    out = {}
    for name in preset_names():
        with open(os.path.join(PRESETS, f"{name}.yaml")) as f:
            raw = yaml.safe_load(f)
        out[name] = str(raw.get("description", "")) if isinstance(raw, dict) else ""
    return out


def group_by(spec: SweepSpec) -> list[str]:
    """Table groups: the approach and every swept key except the seed (seeds are what is averaged)."""
    swept = list(spec.search.space) if spec.search else [k for k in spec.grid if k != "run.seed"]
    return list(dict.fromkeys(["approach", *swept]))


def check_capacity(resources: Resources, cpus: int | None = None, gpus: int | None = None) -> list[str]:
    """Problems with a per-trial request that this machine can never satisfy (local sweeps only: on a
    cluster the autoscaler may add nodes, so Ray is left to judge)."""
    cpus = (os.cpu_count() or 1) if cpus is None else cpus
    p = []
    if resources.cpu > cpus:
        p.append(f"resources.cpu = {resources.cpu:g} is more than this machine has ({cpus} CPUs): no trial "
                 f"could start; lower it, or run on a cluster with --address")
    if resources.gpu > 0:
        if gpus is None:
            import torch

            gpus = torch.cuda.device_count()
        if resources.gpu > gpus:
            p.append(f"resources.gpu = {resources.gpu:g} is more than this machine has ({gpus} GPUs): no "
                     f"trial could start; set resources.gpu: 0, or run on a cluster with --address")
    return p


# ---- sections -----------------------------------------------------------------------------------

def _flat_section(raw: Any, section: str, expected: str, p: Problems) -> dict[str, Any]:
    """A spec section as dotted keys; a problem (recorded in ``p``) gives an empty mapping."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        p.append(f"{section} must be a mapping of {expected}")
        return {}
    try:
        return flatten(raw)
    except ConfigError as err:
        p.append(f"{section}: {err}")
        return {}


def _parse_base(raw: Any, p: Problems) -> dict[str, Any]:
    flat = _flat_section(raw, "base", "config keys to values", p)
    if "run.device" in flat:
        p.append("base.run.device cannot be set in a sweep: each trial runs on the GPU Ray assigns it "
                 "(resources.gpu > 0) or else on the CPU")
    for key in ("data.data_root", "data.cache_dir"):
        root = flat.get(key)
        if isinstance(root, str) and "://" not in root:  # trials run in their own working directories
            flat[key] = os.path.abspath(os.path.expanduser(root))
    return flat


def _parse_grid(raw: Any, base: dict[str, Any], p: Problems) -> dict[str, list[Any]]:
    flat = _flat_section(raw, "grid", "config keys to lists of values", p)
    grid: dict[str, list[Any]] = {}
    for key, values in flat.items():
        if key in base:
            p.append(f"grid.{key} is also set in base: give each key in one place")
        elif key == "run.device" or key.startswith("_"):
            p.append(f"grid.{key} cannot be swept")
        elif key == "run.cpu_isa":  # ATen's and MKL's code paths are fixed per (reused) worker process
            p.append("grid.run.cpu_isa cannot be swept: a worker process keeps the CPU mode of its first trial; "
                     "set it in base and run one sweep per mode")
        elif not isinstance(values, list) or not values:
            p.append(f"grid.{key} = {values!r} is not valid: must be a non-empty list of values")
        elif len({repr(v) for v in values}) != len(values):
            p.append(f"grid.{key} = {values!r} repeats a value: each would run the same trial twice")
        else:
            grid[key] = values
    return grid


def _parse_search(raw: Any, base: dict[str, Any], grid: dict[str, list[Any]], p: Problems) -> Search | None:
    if raw is None:
        return None
    s = p.section(raw, "search", ("metric", "mode", "num_samples", "seed", "space", "storage", "study_name"))
    if not s:
        p.append("search must give at least metric and space")
        return None
    metric = s.get("metric")
    if metric not in METRICS:
        p.unknown(str(metric), tuple(METRICS), "search.metric value")
        metric = "avg_acc_tag"
    mode = s.get("mode", METRICS[metric])
    if mode not in ("max", "min"):
        p.append(f"search.mode = {mode!r} is not valid: choose max or min")
    num_samples = p.integer("search.num_samples", s.get("num_samples", 10), ">=1")
    seed = p.integer("search.seed", s.get("seed"), ">=0", optional=True)
    storage = _parse_storage(s.get("storage"), p)
    study_name = s.get("study_name")
    if study_name is not None:
        if not isinstance(study_name, str) or not study_name.strip():
            p.append(f"search.study_name = {study_name!r} is not valid: must be a non-empty string")
        elif "storage" not in s:
            p.append("search.study_name has no effect without search.storage (the study is kept in memory): "
                     "add e.g. storage: sqlite:///runs/studies.db")
    for key in grid:
        if key != "run.seed":
            p.append(f"grid.{key} cannot be combined with search (Tune's grid search does not mix with "
                     f"Optuna): move it into search.space as a categorical, or run one sweep per value")
    space_raw = s.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        p.append("search.space must map config keys to distributions, e.g. "
                 "loss.lamb: {type: float, low: 0.1, high: 10, log: true}")
        return None
    space: dict[str, dict[str, Any]] = {}
    for key, dist in flatten(space_raw).items():
        where = f"search.space.{key}"
        if key == "run.seed":
            p.append(f"{where}: seeds are never optimised; list them under grid.run.seed and every sampled "
                     f"point runs all of them")
        elif key in base:
            p.append(f"{where} is also set in base: give each key in one place")
        elif key == "run.device" or key.startswith("_"):
            p.append(f"{where} cannot be searched")
        else:
            parsed = _parse_distribution(dist, where, p)
            if parsed is not None and _check_leaf_type(key, parsed, where, p):
                space[key] = parsed
    return Search(metric=metric, mode=mode, num_samples=num_samples, space=space, seed=seed, storage=storage,
                  study_name=study_name if isinstance(study_name, str) else None)


def _parse_storage(url: Any, p: Problems) -> str | None:
    """An Optuna RDB URL; a relative SQLite path is made absolute (the sweep may run elsewhere)."""
    if url is None:
        return None
    if not isinstance(url, str) or not _RDB_URL.match(url):
        p.append(f"search.storage = {url!r} is not valid: use an Optuna RDB URL such as "
                 f"sqlite:///runs/studies.db, postgresql://user@host/db or mysql://user@host/db")
        return None
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path in ("", ":memory:"):
            p.append(f"search.storage = {url!r} is not valid: an in-memory database does not persist the "
                     f"study; give a file, e.g. sqlite:///runs/studies.db")
            return None
        return "sqlite:///" + os.path.abspath(os.path.expanduser(path))
    return url


def _parse_tracking(raw: Any, p: Problems) -> Tracking:
    """The ``tracking`` section: which trackers, their string settings, and that each one's package
    is installed (an optional extra), all checked before Ray starts."""
    t = p.section(raw, "tracking", tuple(TRACKERS))
    trackers: dict[str, dict[str, str]] = {}
    for name, keys in TRACKERS.items():
        if name not in t:
            continue
        settings = p.section(t[name], f"tracking.{name}", keys)
        for key, value in settings.items():
            if not isinstance(value, str) or not value.strip():
                p.append(f"tracking.{name}.{key} = {value!r} is not valid: must be a non-empty string")
        uri = settings.get("tracking_uri")
        if isinstance(uri, str) and uri.strip() and "://" not in uri:  # a local folder: absolute file URI
            settings["tracking_uri"] = "file://" + os.path.abspath(os.path.expanduser(uri))
        if importlib.util.find_spec(name) is None:
            p.append(install_hint(name, f"tracking.{name}"))
        trackers[name] = settings
    return Tracking(**trackers)


def _parse_distribution(d: Any, where: str, p: Problems) -> dict[str, Any] | None:
    if not isinstance(d, dict) or d.get("type") not in _DIST_TYPES:
        p.append(f"{where} = {d!r} is not valid: use {{type: float|int, low, high[, log: true][, step]}} "
                 f"or {{type: categorical, choices: [...]}}")
        return None
    allowed = {"float": ("type", "low", "high", "log"), "int": ("type", "low", "high", "log", "step"),
               "categorical": ("type", "choices")}[d["type"]]
    ok = True
    for key in d:
        if key not in allowed:
            p.unknown(f"{where}.{key}", tuple(f"{where}.{a}" for a in allowed), "key")
            ok = False
    if d["type"] == "categorical":
        if not isinstance(d.get("choices"), list) or not d["choices"]:
            p.append(f"{where}.choices must be a non-empty list")
            return None
        return dict(d) if ok else None
    num = (int,) if d["type"] == "int" else (int, float)
    low, high = d.get("low"), d.get("high")
    for name, v in (("low", low), ("high", high)):
        if not isinstance(v, num) or isinstance(v, bool):
            p.append(f"{where}.{name} = {v!r} is not valid: must be {'an int' if d['type'] == 'int' else 'a number'}")
            ok = False
    if not ok:
        return None
    if low > high:
        p.append(f"{where}: low = {low} is greater than high = {high}")
        return None
    if d.get("log") and low <= 0:
        p.append(f"{where}: low = {low} is not valid with log: true (must be > 0)")
        return None
    if "step" in d and (not isinstance(d["step"], int) or d["step"] < 1 or d.get("log")):
        p.append(f"{where}.step = {d['step']!r} is not valid: an int >= 1, and not with log: true")
        return None
    out = dict(d)
    if d["type"] == "float":
        out["low"], out["high"] = float(low), float(high)
    return out


def _leaf_type(key: str) -> Any:
    """The cil config leaf's type without ``| None`` (``int | None`` -> int); None for unknown keys."""
    tp = _LEAVES.get(key)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if len(args) == 1 else tp


def _check_leaf_type(key: str, d: dict[str, Any], where: str, p: Problems) -> bool:
    """A numeric distribution must sample values of the key's type: float over an int key would give
    non-integer trials (the corner check cannot see it: integral bounds pass as ints). Categorical
    choices are each checked as a trial config, and unknown keys are reported there too."""
    leaf = _leaf_type(key)
    if d["type"] == "categorical" or leaf is None:
        return True
    if d["type"] == "float" and leaf is int:
        p.append(f"{where}: type: float is not valid for {key}, an int: its samples would not be whole "
                 f"numbers; use type: int (optionally with step), or type: categorical")
        return False
    if leaf not in (int, float):
        name = getattr(leaf, "__name__", str(leaf))
        p.append(f"{where}: type: {d['type']} is not valid for {key}, a {name}: use type: categorical with "
                 f"choices")
        return False
    return True


def _parse_resources(raw: Any, p: Problems) -> Resources:
    r = p.section(raw, "resources", ("cpu", "gpu"))
    values = {}
    for name, default in (("cpu", 1.0), ("gpu", 0.0)):
        v = r.get(name, default)
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            p.append(f"resources.{name} = {v!r} is not valid: must be a number >= 0")
            v = default
        values[name] = float(v)
    if values["cpu"] == 0 and values["gpu"] == 0:
        p.append("resources: a trial must ask for some cpu or gpu")
    if values["gpu"] > 1:
        p.append(f"resources.gpu = {values['gpu']:g} is not valid: a trial trains on one GPU, so the others "
                 "would idle; use 1 (a whole GPU per trial) or a fraction such as 0.25 (4 trials per GPU)")
    return Resources(**values)


def _parse_scheduler(raw: Any, base: dict[str, Any], grid: dict[str, list[Any]], search: Search | None,
                     p: Problems) -> Scheduler | None:
    if raw is None or raw == "none":
        return None
    if raw == "asha":
        raw = {"type": "asha"}
    s = p.section(raw, "scheduler", ("type", "metric", "mode", "grace_period", "reduction_factor"))
    if s.get("type") == "none":
        return None
    if s.get("type") != "asha":
        p.append(f"scheduler.type = {s.get('type')!r} is not valid: choose none or asha")
        return None
    metric = s.get("metric", search.metric if search else None)
    if metric not in METRICS:
        p.unknown(str(metric), tuple(METRICS), "scheduler.metric value")
        return None
    mode = s.get("mode", search.mode if search and metric == search.metric else METRICS[metric])
    if mode not in ("max", "min"):
        p.append(f"scheduler.mode = {mode!r} is not valid: choose max or min")
    grace = p.integer("scheduler.grace_period", s.get("grace_period", 1), ">=1")
    factor = s.get("reduction_factor", 2)
    if not isinstance(factor, int | float) or isinstance(factor, bool) or factor <= 1:
        p.append(f"scheduler.reduction_factor = {factor!r} is not valid: must be a number > 1")
        factor = 2
    max_t, valid = 1, False  # ASHA's horizon: the most tasks any trial trains
    for point in _points(grid, search):
        try:
            cfg = ExperimentConfig.from_dict({k: v for k, v in (base | point).items() if not k.startswith("_")})
        except ConfigError:
            continue  # already reported by _check_trial_configs
        max_t, valid = max(max_t, cfg.data.num_tasks), True
    if valid and grace > max_t:
        p.append(f"scheduler.grace_period = {grace} is not valid: must be <= {max_t}, the most tasks any trial "
                 f"trains (ASHA's max_t, from data.num_tasks)")
    return Scheduler(metric=metric, mode=mode, max_t=max_t, grace_period=grace,
                     reduction_factor=float(factor))


# ---- the one place config errors are caught --------------------------------------------------------

def _points(grid: dict[str, list[Any]], search: Search | None) -> Iterator[dict[str, Any]]:
    """Grid points, or in search mode the corners of the space (each bound, each choice)."""
    if search is None:
        yield from _cross(grid)
        return
    seeds = grid.get("run.seed", [None])
    first = {k: (d["choices"][0] if d["type"] == "categorical" else d["low"]) for k, d in search.space.items()}
    for key, d in search.space.items():
        for v in d["choices"] if d["type"] == "categorical" else (d["low"], d["high"]):
            point = first | {key: v}
            yield point if seeds[0] is None else point | {"run.seed": seeds[0]}


def _cross(grid: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


def _check_trial_configs(base: dict[str, Any], grid: dict[str, list[Any]], search: Search | None,
                         p: Problems) -> None:
    """Build every trial's ExperimentConfig; report each distinct problem once, with where it comes from."""
    known = set(valid_keys())
    seen: dict[str, None] = {}

    def check(values: dict[str, Any]) -> None:
        try:
            ExperimentConfig.from_dict(values)
        except ConfigError as err:
            seen.update(dict.fromkeys(line.strip() for line in str(err).splitlines()[1:]))

    # Unknown keys first, one by one (cil stops at them), then the values of every trial config.
    keys = [*base, *grid, *(search.space if search else ())]
    for key in dict.fromkeys(k for k in keys if k not in known):
        check({key: None})
    for point in _points(grid, search):
        check({k: v for k, v in (base | point).items() if k in known})
    for line in seen:
        p.append(f"{_origin(line, base, grid, search)}: {line}")


def _origin(line: str, base: dict[str, Any], grid: dict[str, list[Any]], search: Search | None) -> str:
    """Which section of the spec supplies the key a config error is about."""
    m = re.match(r"(?:unknown config key )?'?([\w.\-]+)", line)
    key = m.group(1) if m else ""
    if key in grid:
        return f"grid.{key}"
    if search and key in search.space:
        return f"search.space.{key}"
    if key in base:
        return f"base.{key}"
    return "trial config"
