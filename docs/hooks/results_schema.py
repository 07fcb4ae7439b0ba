"""MkDocs hook: the column tables of docs/results-schema.md, rendered from ``cil.results_schema``.

A page asks for a table with ``<!-- results-schema:TABLE -->`` on a line of its own (``task_results``,
``heads`` or ``epochs``), so the page never restates a column the module declares.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cil import results_schema  # noqa: E402  (the repository root goes on sys.path first)

MARKER = re.compile(r"^<!-- results-schema:(\w+) -->$", re.M)


def render(markdown: str) -> str:
    """Every marker of a page replaced by its table."""
    def table(match: re.Match) -> str:
        name = match.group(1)
        if name not in results_schema.TABLES:
            raise ValueError(f"unknown results table {name!r} in a results-schema marker; "
                             f"known: {', '.join(results_schema.TABLES)}")
        return results_schema.markdown_table(name)

    return MARKER.sub(table, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """MkDocs event: fill the page's column tables."""
    try:
        return render(markdown)
    except ValueError as err:
        from mkdocs.exceptions import PluginError

        raise PluginError(f"{page.file.src_uri}: {err}") from err
