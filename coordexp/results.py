"""The results layer: rows (one dict per run, or per run and canvas) written as CSV and markdown tables, and a
template's sections filled in. aggregate, evaluate and reproduce write their tables through it."""
from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from string import Template


def cell(value) -> str:
    """A value as a markdown table cell: numbers to 4 significant digits, pipes escaped, blanks for None."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table: `header` over `rows`, each value through `cell` unless it is already text."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(v if isinstance(v, str) else cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """The rows as CSV with `columns` (default: every key, in the order they first appear); a missing value is
    blank."""
    columns = columns or list(dict.fromkeys(key for row in rows for key in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, restval="", extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def template_sections(path: Path) -> dict[str, Template]:
    """A markdown template's sections: each starts with a line `<!-- section NAME -->` (what comes before the first
    is a note to the reader of the template); `$name` places are filled in with string.Template."""
    parts = re.split(r"^<!-- section (\w+) -->\n", path.read_text(), flags=re.M)
    return {name: Template(body) for name, body in zip(parts[1::2], parts[2::2])}
