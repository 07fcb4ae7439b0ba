"""Every measured table in the docs names the command, the commit and the numeric environment that
produced it, in a note right above it (docs/reproducibility.md)."""

from __future__ import annotations

import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))) + [os.path.join(ROOT, "README.md")]
#: the note's form: a quote line right above the table (blank lines and markers between are allowed)
NOTE = re.compile(r"^> measured by `[^`]+`.* at commit `[0-9a-f]{7,40}`; environment: .*threads .*cpu_isa ")
#: a cell that holds a measurement: an interval, a decimal number, or a unit of time, speed or memory
MEASURE = re.compile(r"±|\b\d+\.\d+\b|\b\d+(\.\d+)? ?(s|ms|img/s|MiB|GiB)\b")


def tables(text: str) -> list[tuple[int, list[str]]]:
    """(index of the header line, body lines) of every markdown table."""
    lines, found, i = text.split("\n"), [], 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|[-:| ]+\|", lines[i + 1].strip()):
            start = i
            while i < len(lines) and lines[i].startswith("|"):
                i += 1
            found.append((start, lines[start + 2:i]))
        i += 1
    return found


def measured(body: list[str]) -> bool:
    """A table is measured when most of its rows hold measurements (a reference table may hold a
    default value or two)."""
    return bool(body) and 2 * sum(bool(MEASURE.search(row)) for row in body) >= len(body)


def note_above(lines: list[str], start: int) -> bool:
    above = [x for x in lines[max(0, start - 4):start] if x.strip() and not x.startswith("<!--")]
    return bool(above) and bool(NOTE.match(above[-1]))


@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(p, ROOT) for p in PAGES])
def test_every_measured_table_has_its_note(page) -> None:
    text = open(page).read()
    lines = text.split("\n")
    missing = [f"line {start + 1}: {lines[start][:60]}" for start, body in tables(text)
               if measured(body) and not note_above(lines, start)]
    assert not missing, (f"{os.path.relpath(page, ROOT)}: measured tables without a '> measured by `COMMAND` at "
                         f"commit `SHA`; environment: threads ..., cpu_isa ...' note right above: {missing}")


def test_the_check_sees_a_table_without_its_note() -> None:
    text = "text\n\n| run | s |\n|---|---|\n| a | 1.5 |\n| b | 2.0 |\n"
    [(start, body)] = tables(text)
    assert measured(body) and not note_above(text.split("\n"), start)
    noted = text.replace("| run |", "> measured by `python -m x` at commit `abc1234`; environment: threads 1, "
                                      "cpu_isa portable (...)\n\n| run |")
    [(start, _)] = tables(noted)
    assert note_above(noted.split("\n"), start)
    assert not measured(["| `run.seed` | int | 0 |", "| `train.lr` | float | 0.1 |", "| `x` | str | auto |"])


def test_the_quickstart_table_script_renders_the_table_its_note_and_the_blocks(tmp_path) -> None:
    """benchmarks/quickstart_table.py on quickstart-shaped rows: the table, a note of the required form,
    and the marked blocks it rewrites (markers kept, the rest of the text untouched)."""
    import quickstart_results

    import analysis
    from benchmarks import quickstart_table as qt

    rows = analysis.load(quickstart_results.write(str(tmp_path / "results")))
    rows["git_commit"], rows["threads_in_effect"] = "0123456789abcdef0123456789abcdef01234567", 1
    rows["cpu_isa_in_effect"] = "portable (aten AVX2, mkl COMPATIBLE, onednn off)"
    text, s = qt.table(rows)
    assert text.count("\n") == 1 + len(quickstart_results.APPROACHES) and "| lwf | " in text and "baseline" in text
    assert "| **+" in text or "| **-" in text  # the headline approach's deltas in bold
    note = qt.note(qt.environment(rows), "1")
    assert NOTE.match(note) and "commit `0123456`" in note and "threads 1 per trial" in note
    page = "before\n<!-- quickstart-table -->\nold\n<!-- /quickstart-table -->\nafter"
    assert qt.replace_block(page, qt.TABLE_MARK, "new") == page.replace("\nold\n", "\nnew\n")
    inline = "x <!-- quickstart-headline -->old<!-- /quickstart-headline --> y"
    assert qt.replace_block(inline, qt.HEADLINE_MARK, "new") == inline.replace("old", "new")
    assert "reproduces:" in qt.ledger_block(s, "0123456")
