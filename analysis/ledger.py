"""The reproduction ledger: published numbers as data, each with its source, held against a sweep's
results (``python -m analysis RESULTS --against LEDGER``; docs/reproducibility.md).

A ledger is the ``reproduces:`` list of a sweep preset (the preset that reproduces the numbers) or of a
YAML file of its own. Each entry names where its numbers come from and which metric of
``cil.results_schema.METRICS`` they are, per value of one grouping column::

    reproduces:
      - source: "the paper's repository, github.com/OWNER/REPO at commit ..., FILE"
        where: "legend of the class-IL figure, 100 classes"
        protocol: "CIFAR-100, 10 tasks of 10 classes, ResNet-32, FACIL's defaults, seed 0"
        metric: final_acc_tag          # fractions, as the results hold them
        by: approach
        values: {lwf: 0.165, lwf-s: 0.239}

Each published number is printed beside the run's mean ± 95% CI over seeds of its group, and whether
it lies inside that interval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd
import yaml

from analysis.errors import ResultsError
from analysis.groups import matches
from analysis.summary import summary
from cil.results_schema import METRICS

LEDGER_KEY = "reproduces"
ENTRY_KEYS = ("source", "where", "protocol", "metric", "by", "values")


@dataclass(frozen=True)
class Entry:
    """Published numbers of one metric, one per value of the grouping column ``by``."""

    source: str
    where: str
    protocol: str
    metric: str
    by: str
    values: dict[str, float]


def parse_ledger(raw: Any, where: str = "ledger") -> tuple[list[Entry], list[str]]:
    """The entries of a ``reproduces:`` list, and every problem found (each naming its place)."""
    problems: list[str] = []
    if not isinstance(raw, list) or not raw:
        return [], [f"{where}: {LEDGER_KEY} must be a non-empty list of entries with keys {', '.join(ENTRY_KEYS)}"]
    entries = []
    for i, item in enumerate(raw):
        at = f"{where}: {LEDGER_KEY}[{i}]"
        if not isinstance(item, dict):
            problems.append(f"{at} must be a mapping with keys {', '.join(ENTRY_KEYS)}")
            continue
        missing = [k for k in ENTRY_KEYS if k not in item]
        unknown = [str(k) for k in item if k not in ENTRY_KEYS]
        if missing or unknown:
            problems.append(f"{at}: " + "; ".join(([f"missing {', '.join(missing)}"] if missing else [])
                                                  + ([f"unknown {', '.join(unknown)}"] if unknown else []))
                            + f" (keys: {', '.join(ENTRY_KEYS)})")
            continue
        if item["metric"] not in METRICS:
            problems.append(f"{at}.metric = {item['metric']!r} is not valid: choose one of {', '.join(METRICS)}")
            continue
        values = item["values"]
        if not isinstance(values, dict) or not values or not all(
                isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in values.values()):
            problems.append(f"{at}.values must map each {item['by']} value to a published number (a fraction)")
            continue
        entries.append(Entry(str(item["source"]), str(item["where"]), str(item["protocol"]), item["metric"],
                             str(item["by"]), {str(k): float(v) for k, v in values.items()}))
    return entries, problems


def load_ledger(path: str) -> list[Entry]:
    """The ledger of a YAML file: a preset's ``reproduces:`` section or a ledger file's."""
    try:
        with open(path) as f:
            raw = yaml.safe_load(f)
    except OSError as err:
        raise ResultsError(f"--against {path!r} cannot be read: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise ResultsError(f"--against {path!r} is not valid YAML: {err}") from None
    if not isinstance(raw, dict) or LEDGER_KEY not in raw:
        raise ResultsError(f"--against {path!r} has no {LEDGER_KEY}: section (a preset that reproduces published "
                           f"numbers, or a ledger file; docs/reproducibility.md)")
    entries, problems = parse_ledger(raw[LEDGER_KEY], path)
    if problems:
        raise ResultsError("invalid ledger:\n  " + "\n  ".join(problems))
    return entries


def against(trials: pd.DataFrame, entries: list[Entry], include_partial: bool = False) -> pd.DataFrame:
    """One row per published number: the run's mean ± 95% CI of its group, and whether it lies inside.
    A group the results do not hold is a row with ``n_seeds`` 0."""
    rows = []
    for e in entries:
        table = summary(trials, by=[e.by], include_partial=include_partial)
        for group, published in e.values.items():
            found = table[matches(table[e.by], group)] if e.by in table else table.iloc[:0]
            base = {"source": e.source, "where": e.where, "protocol": e.protocol, "metric": e.metric, e.by: group,
                    "published": published}
            if found.empty:
                rows.append(base | {"n_seeds": 0, "mean": math.nan, "ci95": math.nan, "inside": None})
            for _, r in found.iterrows():
                mean, ci = float(r[f"{e.metric}_mean"]), float(r[f"{e.metric}_ci95"])
                inside = None if math.isnan(ci) else bool(mean - ci <= published <= mean + ci)
                rows.append(base | {"n_seeds": int(r["n_seeds"]), "mean": mean, "ci95": ci, "inside": inside})
    return pd.DataFrame(rows)


def format_against(table: pd.DataFrame, digits: int = 1) -> str:
    """The comparison as a markdown table, in percent; the sources below it."""
    if table.empty:
        return "no published numbers to compare\n"
    group = [c for c in table.columns if c not in ("source", "where", "protocol", "metric", "published", "n_seeds",
                                                   "mean", "ci95", "inside")]
    lines = ["| metric | group | published | run (mean ± 95% CI) | n | inside? |", "|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        name = next((f"{c}={r[c]}" for c in group if isinstance(r[c], str)), "-")
        run = "no trials" if r["n_seeds"] == 0 else (
            f"{100 * r['mean']:.{digits}f}" + ("" if math.isnan(r["ci95"]) else f" ± {100 * r['ci95']:.{digits}f}"))
        verdict = {True: "inside", False: "**outside**"}.get(r["inside"], "no interval (n < 2)"
                                                              if r["n_seeds"] else "-")
        lines.append(f"| {r['metric']} | {name} | {100 * r['published']:.{digits}f} | {run} | {r['n_seeds']} | "
                     f"{verdict} |")
    sources = dict.fromkeys(f"- {r['metric']}: {r['source']}, {r['where']}; protocol: {r['protocol']}"
                            for _, r in table.iterrows())
    return "\n".join(lines + ["", "sources:", *sources]) + "\n"
