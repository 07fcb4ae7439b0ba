"""Benchmark: time ``load`` + ``summary`` on a generated results set of the paper's scale and more.

``python -m analysis.bench [--trials 100000 --tasks 10]`` writes synthetic results in the schema
(Parquet, in a temp dir unless ``--keep DIR``), then times each stage of the analysis on them.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from collections.abc import Sequence

from analysis import synth
from analysis.load import load
from analysis.summary import summary


def _size(folder: str) -> tuple[int, int]:
    files = [os.path.join(d, f) for d, _, names in os.walk(folder) for f in names]
    return len(files), sum(os.path.getsize(f) for f in files)


def run(trials: int, tasks: int, files: int, partial: int, storage: str, repeat: int = 1) -> dict[str, float]:
    """Generate, write, then time load and summary; return the timings in seconds (the first
    round: a fresh process pays for fresh memory; later rounds are printed as they go)."""
    times: dict[str, float] = {}
    start = time.perf_counter()
    task_results, _ = synth.make_results(trials, tasks, n_partial=partial)
    times["generate"] = time.perf_counter() - start
    start = time.perf_counter()
    results = synth.write_results(storage, task_results, None, files=files)
    times["write"] = time.perf_counter() - start
    n_files, n_bytes = _size(results)
    print(f"results: {task_results.num_rows:,} rows of {trials:,} trials x {tasks} tasks, "
          f"{n_files} Parquet files, {n_bytes / 2**20:.0f} MiB in {results}")
    del task_results

    for round_ in range(repeat):
        start = time.perf_counter()
        df = load(storage)
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        table = summary(df)
        summarised = time.perf_counter() - start
        start = time.perf_counter()
        summary(df, baseline="lwf")
        with_baseline = time.perf_counter() - start
        del df
        if round_ == 0:
            times.update(load=loaded, summary=summarised, summary_baseline=with_baseline)
            print(f"groups: {len(table)}; notes: {'; '.join(table.attrs['notes']) or 'none'}")
        else:
            print(f"round {round_ + 1}: load {loaded:.2f} s, summary {summarised:.2f} s, "
                  f"with baseline {with_baseline:.2f} s")
    return times


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100_000, help="number of trials (default 100000)")
    parser.add_argument("--tasks", type=int, default=10, help="tasks per trial (default 10)")
    parser.add_argument("--files", type=int, default=64,
                        help="Parquet files to split the results into (default 64)")
    parser.add_argument("--partial", type=int, default=0, help="trials left partial (default 0)")
    parser.add_argument("--repeat", type=int, default=1, help="time load + summary this many times")
    parser.add_argument("--keep", metavar="DIR", help="write the results here and keep them")
    args = parser.parse_args(argv)
    if min(args.trials, args.tasks, args.files, args.repeat) < 1:
        parser.error("--trials, --tasks, --files and --repeat must be at least 1")
    if args.keep:
        times = run(args.trials, args.tasks, args.files, args.partial, args.keep, args.repeat)
    else:
        with tempfile.TemporaryDirectory(prefix="analysis-bench-") as storage:
            times = run(args.trials, args.tasks, args.files, args.partial, storage, args.repeat)
    for name, seconds in times.items():
        print(f"{name:>17}: {seconds:7.2f} s")
    total = times["load"] + times["summary"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"{'load + summary':>17}: {total:7.2f} s  (peak memory {peak:,.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
