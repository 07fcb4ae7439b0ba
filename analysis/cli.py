"""``python -m analysis RESULTS``: print the comparison table, and with ``--out`` write summary.csv,
trials.csv and the figures as PNG."""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence

import pandas as pd

from analysis.atomic import write_bytes
from analysis.errors import ResultsError
from analysis.ledger import against, format_against, load_ledger
from analysis.load import find_files, load, load_epochs, load_heads
from analysis.metrics import trial_metrics
from analysis.summary import summary
from analysis.table import COLUMNS, FORMATS, format_table
from cil.results_schema import EPOCHS, HEADS

EPILOG = """\
RESULTS is a sweep's results/ folder, the sweep folder, a folder of several sweeps, a task_results/
folder, or a URI (s3://bucket/storage/sweep). Groups are always split by dataset and num_tasks.
Partial trials (running or errored) are left out unless --include-partial; trials.csv lists all.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m analysis", description="Accuracy and forgetting comparisons from sweep results.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", metavar="RESULTS", help="results folder or URI")
    parser.add_argument("--by", nargs="+", default=["approach"], metavar="COLUMN",
                        help="grouping columns, e.g. --by approach loss.lamb (default: approach)")
    parser.add_argument("--baseline", metavar="NAME",
                        help="approach to compare with (or COLUMN=VALUE): adds deltas paired by seed")
    parser.add_argument("--out", metavar="DIR", help="write summary.csv, trials.csv and PNG figures here")
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="printed table format")
    parser.add_argument("--include-partial", action="store_true",
                        help="include running/errored trials, at their last trained task")
    parser.add_argument("--columns", choices=COLUMNS, default="compact",
                        help="printed columns: compact (grouping keys, n, TAg/TAw accuracy, TAg average "
                             "incremental accuracy and forgetting, TAg deltas; a single dataset/num_tasks "
                             "in a header line) or all (every metric); --format csv and summary.csv always "
                             "have all")
    parser.add_argument("--digits", type=int, default=1, help="decimals of the printed percentages")
    parser.add_argument("--no-figures", action="store_true", help="with --out, write the CSV files only")
    parser.add_argument("--against", metavar="LEDGER", help="a preset with a reproduces: section, or a ledger "
                                                            "file: print each published number beside the run's "
                                                            "mean ± 95%% CI, inside or outside (analysis.ledger)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except ResultsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def run(args: argparse.Namespace) -> None:
    if args.out:
        check_out(args.out)  # before loading anything, so a bad --out costs no work
    ledger = load_ledger(args.against) if args.against else None  # before loading too
    df = load(args.results)
    trials = trial_metrics(df)
    table = summary(trials, by=args.by, baseline=args.baseline, include_partial=args.include_partial)
    print(format_table(table, args.format, digits=args.digits, columns=args.columns), end="")
    if args.format == "csv":
        for note in table.attrs.get("notes", []):
            print(f"note: {note}", file=sys.stderr)
    if ledger is not None:
        print("\n" + format_against(against(trials, ledger, args.include_partial), args.digits), end="")
    if args.out:
        write_outputs(args, df, trials, table)


def check_out(out: str) -> None:
    """``--out`` must be a folder, or a path where one can be made: not an existing file, and not
    under one."""
    path = os.path.abspath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ResultsError(f"--out {out!r} is an existing file, not a folder: give a folder for summary.csv, "
                           f"trials.csv and the figures (it is created if missing)")
    parent = os.path.dirname(path)
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ResultsError(f"--out {out!r} cannot be made: {parent!r} is a file, not a folder")


def write_outputs(args: argparse.Namespace, df: pd.DataFrame, trials: pd.DataFrame, table: pd.DataFrame
                  ) -> None:
    """summary.csv (raw fractions), trials.csv (every trial, ``complete`` flag) and the figures."""
    out = args.out
    write_bytes(os.path.join(out, "summary.csv"), table.to_csv(index=False).encode())
    write_bytes(os.path.join(out, "trials.csv"), trials.to_csv(index=False).encode())
    written = ["summary.csv", "trials.csv"]
    if not args.no_figures:
        written += write_figures(args, df, out)
    print(f"wrote {', '.join(written)} to {out}", file=sys.stderr)


def write_figures(args: argparse.Namespace, df: pd.DataFrame, out: str) -> list[str]:
    from analysis import figures

    by, partial = args.by, args.include_partial
    if not (partial or df["complete"].any()):
        print("note: no complete trial yet, figures skipped (use --include-partial)", file=sys.stderr)
        return []
    df = figures.prepare(df)
    plots = {
        "accuracy.png": lambda: figures.plot_accuracy(df, by, partial),
        "acc_matrix_tag.png": lambda: figures.plot_accuracy_matrix(df, by, "acc_tag", partial),
        "acc_matrix_taw.png": lambda: figures.plot_accuracy_matrix(df, by, "acc_taw", partial),
        "forgetting.png": lambda: figures.plot_forgetting(df, by, partial),
    }
    try:
        find_files(args.results, HEADS)
    except ResultsError as exc:
        print(f"note: head_norms.png skipped: {exc}", file=sys.stderr)
    else:
        plots["head_norms.png"] = lambda: figures.plot_head_norms(load_heads(args.results), df, by, partial)
    try:
        find_files(args.results, EPOCHS)
    except ResultsError as exc:
        print(f"note: learning_curves.png skipped: {exc}", file=sys.stderr)
    else:
        plots["learning_curves.png"] = lambda: figures.plot_learning_curves(load_epochs(args.results), df, by,
                                                                            partial)
    for name, make in plots.items():
        buffer = io.BytesIO()
        make().savefig(buffer, format="png", dpi=100)
        write_bytes(os.path.join(out, name), buffer.getvalue())
    return list(plots)
