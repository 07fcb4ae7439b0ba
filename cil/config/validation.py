"""Checking values: the ``check`` vocabulary of field metadata, the problem collector, and the rules that
relate several keys.

A field's ``check`` metadata (the shared sections in :mod:`cil.config.schema`, the approach sections in
:mod:`cil.approaches.registry`) is one of:

- a range, a key of :data:`RANGES` (``">=0"``, ``">0"``, ``">=1"``, ``">1"``, ``"[0,1]"``, ``"[0,1)"``,
  ``"(0,1)"``, ``"-1|>=0"``);
- a tuple of valid values;
- a function of the value that returns what is wrong with it, or ``None`` when it is valid (its
  docstring's first sentence is what the reference shows as the valid values).

``None`` values are never checked (null means "derived"). Every single-key rule is such a check; the
rules below in :func:`cross_key_problems` are the ones no single key can state.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Callable
from typing import Any

from cil.approaches.registry import SECTIONS, SPECS
from cil.catalog import num_classes
from cil.errors import ConfigError

__all__ = ["RANGES", "ConfigError", "Problems", "check_problem", "cross_key_problems", "field_problems"]

#: range checks: name -> (holds for a value, what it says when it does not, as the reference writes it)
RANGES: dict[str, tuple[Callable[[float], bool], str, str]] = {
    ">=0": (lambda v: v >= 0, "must be >= 0", "≥ 0"),
    ">0": (lambda v: v > 0, "must be > 0", "> 0"),
    ">=1": (lambda v: v >= 1, "must be >= 1", "≥ 1"),
    ">1": (lambda v: v > 1, "must be > 1", "> 1"),
    "[0,1]": (lambda v: 0 <= v <= 1, "must be in [0, 1]", "in [0, 1]"),
    "[0,1)": (lambda v: 0 <= v < 1, "must be in [0, 1)", "in [0, 1)"),
    "(0,1)": (lambda v: 0 < v < 1, "must be in (0, 1)", "in (0, 1)"),
    "-1|>=0": (lambda v: v == -1 or v >= 0, "must be -1 or >= 0", "-1, or ≥ 0"),
}


def choice_problem(value: Any, valid: tuple[Any, ...]) -> str | None:
    """What is wrong with ``value`` as one of ``valid`` (None: it is one)."""
    if value in valid:
        return None
    close = difflib.get_close_matches(str(value), [str(v) for v in valid], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{hint}: choose one of {', '.join(str(v) for v in valid)}"


def check_problem(value: Any, check: Any) -> str | None:
    """What is wrong with ``value`` under a ``check`` of the vocabulary above (None: valid, or no check).
    The text follows "is not valid" (a choice's starts with its hint, the others with ": ")."""
    if value is None or check is None:
        return None
    if isinstance(check, tuple):
        return choice_problem(value, check)
    if callable(check):
        problem = check(value)
        return None if problem is None else f": {problem}"
    if check not in RANGES:
        raise ValueError(f"unknown check {check!r}; valid: {', '.join(RANGES)}, a tuple or a function")
    holds, message, _ = RANGES[check]
    if isinstance(value, float) and not math.isfinite(value) or not holds(value):
        return f": {message}"
    return None


class Problems(list[str]):
    """Every problem of a config or a spec, collected so that all are reported at once, each naming the
    key, the value and what would be valid."""

    def invalid(self, key: str, value: Any, why: str) -> None:
        self.append(f"{key} = {value!r} is not valid: {why}")

    def check(self, key: str, value: Any, check: Any) -> bool:
        """Record ``value``'s problem under ``check``; True when it has none."""
        problem = check_problem(value, check)
        if problem is not None:
            self.append(f"{key} = {value!r} is not valid{problem}")
        return problem is None

    def integer(self, key: str, value: Any, check: str, fallback: int = 1, optional: bool = False) -> Any:
        """``value`` when it is an int satisfying ``check`` (or None, when ``optional``), else ``fallback``
        (the problem recorded)."""
        if value is None and optional:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and check_problem(value, check) is None:
            return value
        self.invalid(key, value, RANGES[check][1].replace("must be", "must be an integer", 1))
        return fallback

    def unknown(self, key: str, valid: tuple[str, ...], what: str) -> None:
        """An unknown name, with the closest valid ones."""
        close = difflib.get_close_matches(key, valid, n=2, cutoff=0.5)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        self.append(f"unknown {what} {key!r}{hint} (valid: {', '.join(valid)})")

    def section(self, raw: Any, name: str, allowed: tuple[str, ...]) -> dict[str, Any]:
        """A mapping with known keys only (each unknown one recorded); ``{}`` when ``raw`` is None or no
        mapping."""
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.append(f"{name} must be a mapping with keys {', '.join(allowed)}")
            return {}
        for key in raw:
            if key not in allowed:
                self.unknown(f"{name}.{key}", tuple(f"{name}.{a}" for a in allowed), "key")
        return {k: v for k, v in raw.items() if k in allowed}


def field_problems(cfg: Any, sections: tuple[str, ...], p: Problems) -> None:
    """Each leaf's own ``check`` metadata, top-level keys and every section of ``sections``."""
    for f in dataclasses.fields(cfg):
        if f.name not in sections:
            p.check(f.name, getattr(cfg, f.name), f.metadata.get("check"))
    for section in sections:
        values = getattr(cfg, section)
        for f in dataclasses.fields(values):
            p.check(f"{section}.{f.name}", getattr(values, f.name), f.metadata.get("check"))


def cross_key_problems(cfg: Any, p: Problems) -> None:
    """The rules that relate several keys (each single key is checked by its own metadata)."""
    d, t, m, g = cfg.data, cfg.train, cfg.memory, cfg.gridsearch
    n_classes = num_classes(d.dataset)
    if n_classes is not None and d.num_tasks > 0:
        if d.num_tasks > n_classes:
            p.invalid("data.num_tasks", d.num_tasks, f"{d.dataset} has {n_classes} classes, so at most "
                      f"{n_classes} tasks")
        elif d.nc_first_task is not None and d.nc_first_task > 0:
            left = n_classes - d.nc_first_task
            if left < d.num_tasks - 1 or (d.num_tasks == 1 and left != 0):
                p.invalid("data.nc_first_task", d.nc_first_task, f"it leaves {left} of {n_classes} classes for "
                          f"the other {d.num_tasks - 1} tasks (each needs at least one; with num_tasks = 1 it "
                          f"must be {n_classes})")
    if t.cudnn_benchmark and cfg.run.deterministic:
        p.append("train.cudnn_benchmark = true is not valid with run.deterministic = true: autotuned kernels "
                 "are not reproducible; set run.deterministic: false (FACIL's --no-cudnn-deterministic) too")
    if m.num_exemplars > 0 and m.num_exemplars_per_class > 0:
        p.append(f"memory.num_exemplars = {m.num_exemplars} and memory.num_exemplars_per_class = "
                 f"{m.num_exemplars_per_class} cannot both be set: choose a total or a per-class budget")
    spec = SPECS.get(cfg.approach)
    if spec is not None and spec.needs_exemplars and m.num_exemplars <= 0 and m.num_exemplars_per_class <= 0:
        p.append(f"approach {cfg.approach!r} needs exemplars: set memory.num_exemplars or "
                 "memory.num_exemplars_per_class (FACIL's --num-exemplars / --num-exemplars-per-class) > 0")
    if not 0 <= cfg.run.stop_at_task <= max(d.num_tasks, 0):
        p.invalid("run.stop_at_task", cfg.run.stop_at_task, f"must be in [0, data.num_tasks = {d.num_tasks}] "
                  "(0: every task; k: stop after the first k tasks)")
    # the grid search's keys are checked whether or not it is on, so that a sweep that switches it on per
    # trial fails before any trial starts
    if g.lr_first and g.lr and min(g.lr) >= min(g.lr_first):
        p.invalid("gridsearch.lr", g.lr, "tasks after the first try the largest values below task 0's choice, "
                  f"so it needs one below min(gridsearch.lr_first) = {min(g.lr_first)}")
    if t.gridsearch_tasks > 0 and d.val_fraction <= 0:
        p.append(f"train.gridsearch_tasks = {t.gridsearch_tasks} needs validation data: "
                 f"data.val_fraction = {d.val_fraction!r} must be > 0")


def validate(cfg: Any, shared: tuple[str, ...]) -> Problems:
    """All problems of a config at once: every key's own check, then the rules relating several keys."""
    p = Problems()
    field_problems(cfg, (*shared, *SECTIONS), p)
    cross_key_problems(cfg, p)
    return p
