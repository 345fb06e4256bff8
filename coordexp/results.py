"""The results layer: runs read into rows (one dict per run), and rows written as CSV and markdown tables into a
template's sections. aggregate, evaluate, reproduce and the sweep's summary read and write through it."""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path
from string import Template

from omegaconf import OmegaConf

from coordexp.data import PARTS
from coordexp.rundir import CONFIG_FILE, HYDRA_DIR, METRICS_FILE, OVERRIDES_FILE, read_metrics

SUMMARY_FILES = ("summary.csv", "summary.md", "summary.png")  # what aggregating a folder of runs writes there
COLUMNS = ["job", "status", "task", "split", "model", "overrides", "params", "seed", "epochs", "wall_seconds",
           "headline"]  # then train_<metric>, valid_<metric> (where the data has a valid set), test_<metric>, error


# --- reading runs into rows -----------------------------------------------------------------------------

def natural_key(path: Path) -> list:
    """Sort key that puts job 10 after job 9."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def find_jobs(root: Path) -> list[Path]:
    """Every run directory under `root`, in job order: those with a metrics.json or a .hydra/ folder."""
    found = {p.parent for p in root.rglob(METRICS_FILE)}
    found |= {p.parent for p in root.rglob(HYDRA_DIR) if p.is_dir()}
    return sorted(found, key=lambda p: natural_key(p.relative_to(root)))


def read_job(job_dir: Path, root: Path, metrics: dict | None = None) -> dict:
    """One row: the job's overrides, identity and status, and its final metrics when it has them (`metrics`: its
    metrics.json, when the caller has read it)."""
    metrics = read_metrics(job_dir) if metrics is None else metrics
    config = read_yaml(job_dir / HYDRA_DIR / CONFIG_FILE, None)
    overrides = read_yaml(job_dir / HYDRA_DIR / OVERRIDES_FILE, [])
    overrides = " ".join(map(str, overrides)) if isinstance(overrides, list) else ""
    row = {"job": job_dir.relative_to(root).as_posix(), "status": metrics["status"], "overrides": overrides}
    for key in ("task", "split", "model"):  # a job that failed early names them only in its config
        group = config.get(key) if isinstance(config, dict) else None
        row[key] = metrics.get(key, group.get("name") if isinstance(group, dict) else None)
    for key in ("params", "seed", "epochs", "wall_seconds", "headline"):
        row[key] = metrics.get(key)
    for part in PARTS:
        values = metrics.get(part)
        row.update({f"{part}_{name}": value for name, value in values.items()} if isinstance(values, dict) else {})
    row["error"] = metrics.get("error")
    return row


def read_rows(root: Path) -> list[dict]:
    """The row of every run under `root`, in job order."""
    return [read_job(job_dir, root) for job_dir in find_jobs(root)]


def read_yaml(path: Path, default):
    """A YAML file of .hydra/ as plain values; `default` when it is missing or damaged."""
    try:
        return OmegaConf.to_container(OmegaConf.load(path)) if path.exists() else default
    except Exception:  # damaged: the row still shows what metrics.json says
        return default


def describe(rows: list[dict]) -> str:
    """'4 jobs: 3 completed, 1 failed', completed first."""
    counts = Counter(row["status"] for row in rows)
    parts = [f"{counts.pop('completed', 0)} completed"] + [f"{n} {status}" for status, n in sorted(counts.items())]
    return f"{len(rows)} job{'s' if len(rows) != 1 else ''}: {', '.join(parts)}"


# --- writing rows -----------------------------------------------------------------------------------------


def cell(value) -> str:
    """A value as a markdown table cell: numbers to 4 significant digits, pipes escaped, blanks for None."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list]) -> str:
    """A markdown table: `header` over `rows`, each value through `cell`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
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
