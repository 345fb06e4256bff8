"""Gather the runs under a folder into summary.csv, summary.md and summary.png: one row per job.

`python -m coordexp.aggregate DIR` does it for any folder of runs: a sweep, one cut short, or single
runs. The sweep callback (`coordexp.sweep`) does it for the sweep directory when a multirun ends.
`--x KEY --y METRIC` also plots METRIC against the swept value KEY, mean and min-max over seeds, one line
per combination of the other swept keys, with its table (METRIC-vs-KEY.png, .md, .csv).
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from coordexp.cli import Parser
from coordexp.data import PARTS
from coordexp.config import FAMILIES
from coordexp.plots import save_figure
from coordexp.results import (COLUMNS, SUMMARY_FILES, cell, csv_text, describe, find_jobs, markdown_table,
                              read_rows, read_yaml)
from coordexp.rundir import (HYDRA_DIR, OVERRIDES_FILE, RunDirError, atomic_write, check_output_dir, is_write_fault,
                             write_fault_line)

def summary_csv(rows: list[dict]) -> str:
    """summary.csv: fixed columns, then every metric column that appears, then the error."""
    metric_columns = list(dict.fromkeys(key for row in rows for key in row if key not in COLUMNS + ["error"]))
    return csv_text(rows, COLUMNS + metric_columns + ["error"])


def summary_markdown(rows: list[dict], title: str) -> str:
    """summary.md: the jobs with the final train, valid (where a job has one) and test headline metric, then why the
    others ended."""
    parts = [part for part in PARTS if part != "valid" or any(f"valid_{row['headline']}" in row for row in rows)]
    table = markdown_table(["job", "overrides", "status", "params", "wall (s)", "metric", *parts],
                           [[row["job"], row["overrides"], row["status"], row["params"], row["wall_seconds"],
                             row["headline"], *(row.get(f"{part}_{row['headline']}") for part in parts)]
                            for row in rows])
    lines = [f"# {title}", "", describe(rows) + ".", "", table]
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


# --- a metric against a swept value -------------------------------------------------------------------------

SEED_KEY = "seed"  # the key whose values are the repeats: averaged over, never a line of its own
NOT_METRICS = ("seed",)  # numeric columns that are identities, not results


def job_overrides(job_dir: Path) -> dict[str, str]:
    """A job's overrides as {key: value text} from .hydra/overrides.yaml (a leading + or ++ dropped)."""
    overrides = read_yaml(job_dir / HYDRA_DIR / OVERRIDES_FILE, [])
    pairs = (str(o).split("=", 1) for o in overrides if "=" in str(o)) if isinstance(overrides, list) else ()
    return {key.lstrip("+"): value for key, value in pairs}


def swept_keys(overrides: list[dict[str, str]]) -> list[str]:
    """The override keys that take more than one value over the jobs, in order of first appearance."""
    keys = dict.fromkeys(key for job in overrides for key in job)
    return [key for key in keys if len({job.get(key) for job in overrides}) > 1]


def metric_columns(rows: list[dict]) -> list[str]:
    """The columns with a number in some completed row: params, epochs, wall_seconds, train_*, test_*, ..."""
    done = [row for row in rows if row["status"] == "completed"]
    columns = dict.fromkeys(key for row in done for key, value in row.items()
                            if isinstance(value, (int, float)) and not isinstance(value, bool))
    return [key for key in columns if key not in NOT_METRICS]


def as_number(text: str | None) -> float | str | None:
    """An override's value as a float when it reads as one (1e-4, 0.5, 3), else the text itself."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return text


def value_order(text: str | None) -> tuple:
    """Sort key of swept values: numbers first, by value, then the rest by text."""
    value = as_number(text)
    return (0, value, "") if isinstance(value, float) else (1, 0.0, str(value))


def sweep_choices_error(rows: list[dict], overrides: list[dict[str, str]], x: str, y: str) -> str | None:
    """Why `--x x --y y` cannot be plotted for these jobs (the bad value and the valid choices), or None."""
    keys, metrics = swept_keys(overrides), metric_columns(rows)
    if x not in keys:
        valid = ", ".join(keys) or "none (no override key takes more than one value)"
        return f"--x={x} is not a swept key of these runs; valid choices: {valid}"
    if y not in metrics:
        return f"--y={y} is not a metric of these runs' completed jobs; valid choices: {', '.join(metrics) or 'none'}"
    return None


def sweep_table(rows: list[dict], overrides: list[dict[str, str]], x: str, y: str) -> list[dict]:
    """Metric `y` of the completed jobs, grouped by (the other swept keys, x), over seeds: one dict per point with
    the group's label, x, n, mean, std (sample; 0 for one job), min and max; groups and x in a stable order."""
    others = [key for key in swept_keys(overrides) if key not in (x, SEED_KEY)]
    points: dict[tuple[str, str], list[float]] = {}
    for row, job in zip(rows, overrides):
        value = row.get(y)
        if row["status"] != "completed" or not isinstance(value, (int, float)):
            continue
        group = " ".join(f"{key}={job.get(key)}" for key in others) or "all jobs"
        points.setdefault((group, job.get(x)), []).append(float(value))
    x_values = sorted({x_value for _, x_value in points}, key=value_order)
    groups = list(dict.fromkeys(group for group, _ in points))
    return [{"group": group, x: x_value, "n": len(values), "mean": statistics.fmean(values),
             "std": statistics.stdev(values) if len(values) > 1 else 0.0, "min": min(values), "max": max(values)}
            for group in groups for x_value in x_values if (values := points.get((group, x_value)))]


def sweep_figure(table: list[dict], x: str, y: str) -> Figure:
    """Mean of `y` against `x`, one line per group, the band (numeric x) or bars (other x) from min to max."""
    fig, ax = plt.subplots(figsize=(6.8, 4.6), layout="constrained")
    labels = list(dict.fromkeys(str(point[x]) for point in table))
    numeric = all(isinstance(as_number(label), float) for label in labels)
    position = {label: (as_number(label) if numeric else i) for i, label in enumerate(labels)}
    for i, group in enumerate(dict.fromkeys(point["group"] for point in table)):
        here = [point for point in table if point["group"] == group]
        xs = np.array([position[str(point[x])] for point in here], dtype=float)
        mean, low, high = (np.array([point[k] for point in here]) for k in ("mean", "min", "max"))
        n = "/".join(sorted({str(point["n"]) for point in here}))
        ax.plot(xs, mean, "o-", color=f"C{i}", label=f"{group} (n={n})")
        if numeric:
            ax.fill_between(xs, low, high, color=f"C{i}", alpha=0.2, linewidth=0)
        else:
            ax.errorbar(xs, mean, yerr=[mean - low, high - mean], fmt="none", color=f"C{i}", capsize=4)
    if numeric:
        values = np.array([position[label] for label in labels])
        if values.min() >= 0 and values.max() > 0 and values.max() / values[values > 0].min() >= 100:
            # a decades-wide sweep (weight decay, lr): log scale, linear near zero when 0 is one of the values
            ax.set_xscale("symlog", linthresh=values[values > 0].min()) if values.min() == 0 else ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(labels)), labels)
    ax.set(xlabel=x, ylabel=y, title=f"{y} against {x}\nline: mean over seeds; shaded or bars: min to max")
    ax.legend(loc="best", fontsize=8)
    return fig


def sweep_markdown(table: list[dict], x: str, y: str, rows: list[dict]) -> str:
    """The table of `sweep_table` in markdown, after a line saying what it holds."""
    columns = ["group", x, "n", "mean", "std", "min", "max"]
    return "\n".join([f"# {y} against {x}", "", f"{describe(rows)}; completed jobs with a value of {y} are averaged "
                      "over seeds (std: sample standard deviation).", "",
                      markdown_table(columns, [[point[k] for k in columns] for point in table])]) + "\n"


def plot_against_swept(root: Path, rows: list[dict], x: str, y: str) -> list[str]:
    """Write root/Y-vs-X.png, .md and .csv: metric `y` against swept key `x`; return the file names.
    The caller checks the choices first (`sweep_choices_error`)."""
    overrides = [job_overrides(root / row["job"]) for row in rows]
    table = sweep_table(rows, overrides, x, y)
    stem = f"{y}-vs-{x}"
    csv_data = csv_text(table, ["group", x, "n", "mean", "std", "min", "max"]).encode()
    md_data = sweep_markdown(table, x, y, rows).encode()
    atomic_write(root / f"{stem}.csv", lambda f: f.write(csv_data))
    atomic_write(root / f"{stem}.md", lambda f: f.write(md_data))
    save_figure(sweep_figure(table, x, y), root / f"{stem}.png")
    return [f"{stem}.png", f"{stem}.md", f"{stem}.csv"]


def aggregate(root: str | Path) -> list[dict]:
    """Read every run under `root` and write root/summary.csv, summary.md and summary.png; return the rows."""
    root = Path(root)
    rows = read_rows(root)
    texts = summary_csv(rows), summary_markdown(rows, f"Summary of {root.resolve().name}")
    for name, text in zip(SUMMARY_FILES, texts):
        atomic_write(root / name, lambda f, text=text: f.write(text.encode()))
    save_figure(train_test_figure(rows), root / SUMMARY_FILES[2])
    return rows


def main(argv: list[str] | None = None) -> int:
    """CLI: aggregate DIR [--x KEY --y METRIC]; exit status 2, nothing written, when DIR holds no runs or
    KEY / METRIC is not one of its swept keys / metrics, or DIR cannot take them (coordexp.rundir.check_output_dir);
    exit status 1, with one line naming the file and the cause, when the disk refuses a write."""
    parser = Parser(prog="python -m coordexp.aggregate", description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a sweep directory or any folder of runs (searched recursively)")
    parser.add_argument("--x", metavar="KEY", help="a swept override key (e.g. optimizer.weight_decay): the x axis")
    parser.add_argument("--y", metavar="METRIC", help="a metric column (e.g. epochs, test_pixel_error): the y axis")
    args = parser.parse_args(argv)
    if (args.x is None) != (args.y is None):
        parser.error("--x and --y go together")  # exit status 2
    if not args.dir.is_dir() or not find_jobs(args.dir):
        print(f"coordexp.aggregate: error: no runs under {args.dir} (no metrics.json or .hydra/ found)",
              file=sys.stderr)
        return 2
    if args.x is not None:
        rows = read_rows(args.dir)
        error = sweep_choices_error(rows, [job_overrides(args.dir / row["job"]) for row in rows], args.x, args.y)
        if error:
            print(f"coordexp.aggregate: error: {error}", file=sys.stderr)
            return 2
    try:
        check_output_dir(args.dir, "DIR")  # summary.* go there
    except RunDirError as error:
        print(f"coordexp.aggregate: error: {error}", file=sys.stderr)
        return 2
    try:
        rows = aggregate(args.dir)
        written = list(SUMMARY_FILES)
        if args.x is not None:
            written += plot_against_swept(args.dir, rows, args.x, args.y)
    except OSError as error:  # the disk filled or turned read-only while writing: each file is whole or absent
        if not is_write_fault(error):
            raise
        print(f"coordexp.aggregate: error: {write_fault_line(error, args.dir)}", file=sys.stderr)
        return 1
    print(f"{describe(rows)}; wrote {', '.join(written)} in {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
