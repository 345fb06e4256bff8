"""Gather the runs under a folder into summary.csv, summary.md and summary.png: one row per job.

`python -m coordexp.aggregate DIR` does it for any folder of runs: a sweep, one cut short, or single
runs. The sweep callback (`coordexp.sweep`) does it for the sweep directory when a multirun ends.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import re
import sys
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from coordexp.data import PARTS
from coordexp.models import FAMILIES
from coordexp.plots import save_figure
from coordexp.rundir import atomic_write

MISSING = "missing"  # a job directory (it has .hydra/) without metrics.json: still running, killed or cut short
UNREADABLE = "unreadable"  # a metrics.json that is not a JSON object with a status: damaged or truncated
COLUMNS = ["job", "status", "task", "split", "model", "overrides", "params", "seed", "epochs", "wall_seconds",
           "headline"]  # then train_<metric>, valid_<metric> (where the data has a valid set), test_<metric>, error


def natural_key(path: Path) -> list:
    """Sort key that puts job 10 after job 9."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.as_posix())]


def find_jobs(root: Path) -> list[Path]:
    """Every run directory under `root`, in job order: those with a metrics.json or a .hydra/ folder."""
    found = {p.parent for p in root.rglob("metrics.json")}
    found |= {p.parent for p in root.rglob(".hydra") if p.is_dir()}
    return sorted(found, key=lambda p: natural_key(p.relative_to(root)))


def read_job(job_dir: Path, root: Path) -> dict:
    """One summary row: the job's overrides, identity and status, and its final metrics when it has them."""
    hydra_dir = job_dir / ".hydra"
    metrics = job_metrics(job_dir / "metrics.json")
    config = read_yaml(hydra_dir / "config.yaml", None)
    overrides = read_yaml(hydra_dir / "overrides.yaml", [])
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


def job_metrics(path: Path) -> dict:
    """A job's metrics.json; {"status": "missing"} when there is none, {"status": "unreadable", "error": why} when
    it is not a JSON object with a status (truncated by a full disk, edited, another program's)."""
    if not path.exists():
        return {"status": MISSING}
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return {"status": UNREADABLE, "error": f"{path.name}: {type(error).__name__}: {error}"}
    if not isinstance(metrics, dict) or not isinstance(metrics.get("status"), str):
        what = "has no status" if isinstance(metrics, dict) else f"is a JSON {type(metrics).__name__}, not an object"
        return {"status": UNREADABLE, "error": f"{path.name} {what}"}
    return metrics


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


def csv_text(rows: list[dict]) -> str:
    """The rows as CSV: fixed columns, then every metric column that appears, then the error."""
    metric_columns = list(dict.fromkeys(key for row in rows for key in row if key not in COLUMNS + ["error"]))
    out = io.StringIO()
    writer = csv.DictWriter(out, COLUMNS + metric_columns + ["error"], restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def cell(value) -> str:
    """A value as a markdown table cell: numbers to 4 significant digits, pipes escaped, blanks for None."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|")


def markdown_text(rows: list[dict], title: str) -> str:
    """A markdown table of the jobs with the final train, valid (where a job has one) and test headline metric, then
    why the others ended."""
    parts = [part for part in PARTS if part != "valid" or any(f"valid_{row['headline']}" in row for row in rows)]
    lines = [f"# {title}", "", describe(rows) + ".", "",
             "| job | overrides | status | params | wall (s) | metric | " + " | ".join(parts) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(parts)]
    for row in rows:
        metric = row["headline"]
        lines.append("| " + " | ".join(cell(v) for v in (
            row["job"], row["overrides"], row["status"], row["params"], row["wall_seconds"], metric,
            *(row.get(f"{part}_{metric}") for part in parts))) + " |")
    unfinished = [row for row in rows if row["status"] != "completed"]
    if unfinished:
        lines += ["", "## Not completed", ""]
        lines += [f"- `{row['job']}`: {row['status']}" + (f": {cell(row['error'])}" if row["error"] else "")
                  for row in unfinished]
    return "\n".join(lines) + "\n"


def plottable(row: dict) -> bool:
    """Whether the row has a number for its train and test headline metric (a damaged file may not)."""
    return all(isinstance(row.get(f"{part}_{row['headline']}"), (int, float)) for part in ("train", "test"))


def train_test_figure(rows: list[dict]) -> Figure:
    """Final train against test headline metric, one point per completed job, coloured by model, one panel per
    (task, split): the paper's Figure 2a / 4a. The dashed diagonal is test = train: distance from it is the
    generalisation gap."""
    done = [row for row in rows if row["status"] == "completed" and plottable(row)]
    panels = sorted({(row["task"], row["split"]) for row in done})
    fig, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 4.6), squeeze=False)
    if not panels:
        axes[0, 0].text(0.5, 0.5, "no completed jobs", ha="center", va="center")
        axes[0, 0].set_axis_off()
    for ax, (task, split) in zip(axes[0], panels):
        here = [row for row in done if (row["task"], row["split"]) == (task, split)]
        metric = here[0]["headline"]
        for model in sorted({row["model"] for row in here}, key=FAMILIES.index):
            points = [(row[f"train_{metric}"], row[f"test_{metric}"]) for row in here if row["model"] == model]
            colour = f"C{FAMILIES.index(model)}"  # a model keeps its colour across panels and sweeps
            ax.scatter(*zip(*points), s=30, alpha=0.8, color=colour, label=f"{model} ({len(points)})")
        top = max([1.0] + [row[f"{part}_{metric}"] for row in here for part in ("train", "test")])
        ax.plot([0, top], [0, top], ls="--", lw=1, color="grey", label="test = train")
        ax.set(title=f"{task} / {split}", xlabel=f"train {metric}", ylabel=f"test {metric}",
               xlim=(-0.03 * top, 1.03 * top), ylim=(-0.03 * top, 1.03 * top))
        ax.legend(loc="best", fontsize=8)
    fig.suptitle(describe(rows))
    fig.tight_layout()
    return fig


def aggregate(root: str | Path) -> list[dict]:
    """Read every run under `root` and write root/summary.csv, summary.md and summary.png; return the rows."""
    root = Path(root)
    rows = [read_job(job_dir, root) for job_dir in find_jobs(root)]
    csv_data, md_data = csv_text(rows).encode(), markdown_text(rows, f"Summary of {root.resolve().name}").encode()
    atomic_write(root / "summary.csv", lambda f: f.write(csv_data))
    atomic_write(root / "summary.md", lambda f: f.write(md_data))
    save_figure(train_test_figure(rows), root / "summary.png")
    return rows


def main(argv: list[str] | None = None) -> int:
    """CLI: aggregate DIR; exit status 2 when DIR holds no runs."""
    parser = argparse.ArgumentParser(prog="python -m coordexp.aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a sweep directory or any folder of runs (searched recursively)")
    args = parser.parse_args(argv)
    if not args.dir.is_dir() or not find_jobs(args.dir):
        print(f"coordexp.aggregate: error: no runs under {args.dir} (no metrics.json or .hydra/ found)",
              file=sys.stderr)
        return 2
    rows = aggregate(args.dir)
    print(f"{describe(rows)}; wrote summary.csv, summary.md, summary.png in {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
