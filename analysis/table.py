"""The summary as text for people: mean ± 95% CI in percent, as markdown, CSV or LaTeX.

summary.csv keeps raw fractions for machines; this module is only for reading and pasting.
Markdown and LaTeX show the compact columns by default (the ones a reader compares, so that a
quickstart's table fits a 120-column terminal): the grouping keys, n, TAg and TAw accuracy after
the last task, TAg average incremental accuracy and TAg forgetting, with the paired deltas of the
two TAg accuracies when there is a baseline; the setting (dataset, num_tasks) moves into a header
line: markdown prints one table per setting, LaTeX lifts the settings that hold one value.
``columns="all"`` shows every metric and every column, and CSV always does.
Written by hand because pandas' ``to_markdown`` needs ``tabulate``.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import textwrap
from collections.abc import Sequence

import pandas as pd

from analysis.errors import ResultsError
from analysis.groups import format_value, matches
from analysis.load import load
from analysis.summary import summary
from cil.results_schema import METRICS, SETTING_COLUMNS

LABELS = {
    "final_acc_tag": "TAg acc", "final_acc_taw": "TAw acc",
    "avg_inc_acc_tag": "TAg avg inc acc", "avg_inc_acc_taw": "TAw avg inc acc",
    "final_forg_tag": "TAg forg", "final_forg_taw": "TAw forg",
    "paper_avg_acc_tag": "TAg paper avg acc", "paper_avg_acc_taw": "TAw paper avg acc",
    "paper_avg_forg_tag": "TAg paper avg forg", "paper_avg_forg_taw": "TAw paper avg forg",
}
FORMATS = ("markdown", "csv", "latex")
COLUMNS = ("compact", "all")
# What a reader compares; the deltas of the two headline accuracies (the paper's point is on TAg).
COMPACT_METRICS = ("final_acc_tag", "final_acc_taw", "avg_inc_acc_tag", "final_forg_tag")
COMPACT_DELTAS = ("final_acc_tag", "avg_inc_acc_tag")
NOTE_WIDTH = 120  # notes are wrapped to the width the compact table is made to fit
_LEGEND = "values: mean ± 95% CI over seeds, in %"


def final_table(path: str | os.PathLike, by: Sequence[str] = ("approach",)) -> str:
    """The table a sweep prints when it ends (``python -m tune sweep``): ``path``'s results summarised
    by ``by``, or why there is nothing to summarise yet."""
    try:
        return format_table(summary(load(path), by=list(by)))
    except ResultsError as err:
        return f"(no summary: {err})"


def format_table(summary: pd.DataFrame, fmt: str = "markdown", digits: int = 1, notes: bool = True,
                 columns: str = "compact") -> str:
    """Render ``summary()`` output; markdown and LaTeX end with its notes (partial trials left out...).

    ``columns``: ``"compact"`` (markdown and LaTeX: the compared metrics, the setting in a header
    line) or ``"all"`` (every metric and column); CSV always has every column.
    """
    if fmt not in FORMATS:
        raise ResultsError(f"unknown table format {fmt!r}: use one of {', '.join(FORMATS)}")
    if columns not in COLUMNS:
        raise ResultsError(f"unknown columns {columns!r}: use one of {', '.join(COLUMNS)}")
    if "n_seeds" not in summary.columns:
        raise ResultsError("format_table needs the output of summary() (no 'n_seeds' column)")
    compact = columns == "compact" and fmt != "csv"
    keys = list(summary.columns[: list(summary.columns).index("n_seeds")])
    metrics = [m for m in METRICS if f"{m}_mean" in summary.columns and (not compact or m in COMPACT_METRICS)]
    deltas = [m for m in metrics if f"{m}_delta" in summary.columns and (not compact or m in COMPACT_DELTAS)]
    # Compact: settings leave the columns for header lines (markdown: one table per setting; LaTeX,
    # one tabular: the constant ones only).
    lifted = _lifted_settings(summary, keys, every=fmt == "markdown") if compact else []
    keys = [k for k in keys if k not in lifted]
    header = [*keys, "n"]
    for m in metrics:
        header.append(LABELS[m])
        if m in deltas:
            header.append(f"Δ {LABELS[m]}")
    baseline = summary.attrs.get("baseline")
    is_base = matches(summary[baseline[0]], baseline[1]) if baseline and baseline[0] in keys else None
    rows = []
    for i, (_, row) in enumerate(summary.iterrows()):
        cells = [format_value(row[k]) for k in keys] + [str(int(row["n_seeds"]))]
        for m in metrics:
            cells.append(_cell(row[f"{m}_mean"], row[f"{m}_ci95"], digits, signed=False))
            if m in deltas:
                reference = is_base is not None and is_base[i]
                cells.append("baseline" if reference else
                             _cell(row[f"{m}_delta"], row[f"{m}_delta_ci95"], digits, signed=True))
        rows.append(cells)
    lines = summary.attrs.get("notes", []) if notes else []
    if fmt == "csv":
        return _csv(header, rows)
    numeric = [False] * len(keys) + [True] * (len(header) - len(keys))
    settings = ["; ".join(f"{k}: {format_value(row[k])}" for k in lifted) for _, row in summary.iterrows()]
    if fmt == "latex":
        return _latex(header, rows, numeric, lines, settings[0] if settings else "")
    return _markdown(header, rows, numeric, lines, settings if lifted else [""] * len(rows))


def _lifted_settings(summary: pd.DataFrame, keys: list[str], every: bool) -> list[str]:
    """The setting columns (dataset, num_tasks) shown in header lines instead of columns: all of them
    (``every``), or those holding one value on every row."""
    if len(summary) == 0:
        return []
    return [k for k in keys if k in SETTING_COLUMNS and (every or summary[k].nunique(dropna=False) == 1)]


def _cell(value: float, half: float, digits: int, signed: bool) -> str:
    if value is None or math.isnan(value):
        return "-"
    shown = round(100 * value, digits) + 0.0  # + 0.0 turns -0.0 into 0.0
    text = f"{shown:+.{digits}f}" if signed else f"{shown:.{digits}f}"
    if half is None or math.isnan(half):
        return text
    return f"{text} ± {100 * half:.{digits}f}"


def _markdown(header: list[str], rows: list[list[str]], numeric: list[bool], notes: list[str],
              settings: list[str]) -> str:
    """One table per setting (rows sharing a ``settings`` text, headed by it), columns aligned across
    them; then the legend and the notes."""
    def clean(text: str) -> str:
        return text.replace("|", "\\|")

    table = [[clean(c) for c in header], *[[clean(c) for c in r] for r in rows]]
    widths = [max(3, *(len(r[i]) for r in table)) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric, strict=True)) + "|"
    out: list[str] = []
    for setting in sorted(set(settings)) or [""]:
        out += [setting, ""] if setting else []
        out += [line(table[0]), rule, *(line(r) for r, s in zip(table[1:], settings, strict=True) if s == setting)]
        out.append("")
    out.append(_LEGEND + ".")
    for n in notes:
        out.extend(textwrap.wrap(f"Note: {n}" if n.endswith(".") else f"Note: {n}.", NOTE_WIDTH,
                                 subsequent_indent="  ", break_on_hyphens=False))
    return "\n".join(out) + "\n"


def _csv(header: list[str], rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


_NUMBER_MINUS = re.compile(r"(?<![\w.])-(?=\.?\d)")  # the sign of a number, not a hyphen inside a name
_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex(header: list[str], rows: list[list[str]], numeric: list[bool], notes: list[str],
           setting: str) -> str:
    def tex(text: str) -> str:
        if text == "-":  # a missing value: a dash, not a hyphen
            return "--"
        escaped = "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)
        escaped = _NUMBER_MINUS.sub(r"$-$", escaped)  # a minus sign, not a hyphen (lwf-s keeps its hyphen)
        return escaped.replace("±", r"$\pm$").replace("Δ", r"$\Delta$")

    spec = "".join("r" if num else "l" for num in numeric)
    out = [*([f"% {setting}"] if setting else []), f"% {_LEGEND}; needs \\usepackage{{booktabs}}",
           *(f"% note: {n}" for n in notes),
           f"\\begin{{tabular}}{{{spec}}}", r"\toprule", " & ".join(tex(h) for h in header) + r" \\",
           r"\midrule", *(" & ".join(tex(c) for c in r) + r" \\" for r in rows), r"\bottomrule",
           r"\end{tabular}"]
    return "\n".join(out) + "\n"
