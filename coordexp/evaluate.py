"""Evaluate finished runs on canvases other than the one they trained on.

`python -m coordexp.evaluate DIR [DIR ...] --canvases 32 48 96 128 [--out OUT]` finds every finished run under
the directories (a run directory, a sweep, any folder of runs), rebuilds each from its saved config and
checkpoint with data.canvas set to each size (the same task, split rule and square, every centre of the new
canvas), evaluates it, and writes canvases.csv (one row per run and canvas), canvases.md (the test headline
metric per model and canvas, mean and spread over seeds) and canvases.png (that metric against canvas size,
one line per model) into OUT (default: the one directory given).

Only a model whose parameters do not depend on the canvas can take another one (fully convolutional ones
such as the CoordConv regressor, painter and renderer, the quarter split's conv regressor, the CoordMLP
painter); asked of another (an MLP, the uniform split's dense conv regressor, the deconv painter) it says
which run, which model and why in one line, exits with status 2 and writes nothing.
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from omegaconf import DictConfig, OmegaConf

from coordexp.cli import Parser
from coordexp.config import CANVAS_MAX, ConfigError, override_keys
from coordexp.loop import evaluate
from coordexp.models import build_model
from coordexp.plots import save_figure
from coordexp.results import cell, csv_text, find_jobs, markdown_table, natural_key, read_yaml
from coordexp.rundir import CHECKPOINT, HYDRA_DIR, OVERRIDES_FILE, RunDirError, atomic_write, check_output_dir, is_complete, \
    is_write_fault, load_checkpoint, read_metrics, write_fault_line
from coordexp.runtime import resolve_device
from coordexp.tasks import build_task
from coordexp.run import build_dataset

OUTPUTS = ("canvases.csv", "canvases.md", "canvases.png")
# overrides that say how a run was run or which seed it drew, not which model it is
NOT_THE_MODEL = ("seed", "task", "split", "model", "device", "resume", "trainer.progress",
                 "trainer.plots", "trainer.plot_examples", "trainer.eval_every", "trainer.eval_batch_size",
                 "trainer.checkpoint_every")


@dataclass
class Run:
    """A finished run: where it is, its name in the table, its saved config and weights."""

    path: Path
    name: str
    config: dict
    weights: dict

    @property
    def label(self) -> str:
        """The model as the table and the figure group it: the family plus the overrides that change the
        model or its training (seeds of one setting share a label)."""
        overrides = read_yaml(self.path / HYDRA_DIR / OVERRIDES_FILE, [])
        kept = [o for o, key in zip(map(str, overrides), override_keys(list(map(str, overrides))))
                if key not in NOT_THE_MODEL and not key.startswith("hydra.")]
        return " ".join([self.config["model"]["name"], *sorted(kept)])


def finished_runs(roots: list[Path]) -> list[Run]:
    """Every completed run under `roots` (completed metrics.json, its outputs and checkpoint there), in order."""
    runs = []
    for root in roots:
        for path in find_jobs(root):
            if not is_complete(path, read_metrics(path)) or not (path / CHECKPOINT).is_file():
                continue
            checkpoint = load_checkpoint(path / CHECKPOINT)
            inside = path.relative_to(root).as_posix()  # a sweep's job, or "." for a run directory given itself
            name = root.name if path == root else f"{root.name}/{inside}" if len(roots) > 1 else inside
            runs.append(Run(path, name, checkpoint["config"], checkpoint["model"]))
    return sorted(runs, key=lambda run: natural_key(Path(run.name)))


def at_canvas(config: dict, canvas: int) -> DictConfig:
    """The run's config with data.canvas set to `canvas`."""
    cfg = OmegaConf.create(config)
    cfg.data.canvas = canvas
    return cfg


def shape_difference(run: Run, canvas: int) -> str | None:
    """Why the run's weights do not fit its model built for `canvas`, in words; None when they do."""
    built = build_model(at_canvas(run.config, canvas).model, run.config["task"]["name"], canvas).state_dict()
    trained = run.config["data"]["canvas"]
    for name in [*built, *(n for n in run.weights if n not in built)]:
        if name not in run.weights or name not in built:
            return f"{name} exists at canvas {canvas if name in built else trained} only"
        if built[name].shape != run.weights[name].shape:
            return (f"{name} is {list(run.weights[name].shape)} at canvas {trained}, "
                    f"{list(built[name].shape)} at {canvas}")
    return None


def check_runs(runs: list[Run], canvases: list[int]) -> None:
    """Raise ConfigError for the first run that cannot be evaluated on one of `canvases`."""
    for run in runs:
        square, model = run.config["data"]["square"], run.config["model"]["name"]
        for canvas in canvases:
            if canvas <= square:
                raise ConfigError(f"--canvases {canvas} is invalid for {run.name}: a canvas must be larger than "
                                  f"the run's square (data.square={square})")
            why = shape_difference(run, canvas)
            if why:
                raise ConfigError(f"{run.name}: model={model} cannot be evaluated on a {canvas}-pixel canvas: its "
                                  f"parameters' shapes depend on the canvas ({why}); only fully convolutional "
                                  "models can (e.g. model=coordconv)")


def evaluate_on(run: Run, canvas: int, device: torch.device, built: dict) -> dict:
    """One table row: the run's train and test metrics on a `canvas`-pixel canvas. `built` keeps the task and
    data set of each data config, shared by the runs that have it (seeds of a sweep)."""
    cfg = at_canvas(run.config, canvas)
    same_data = repr([run.config[key] for key in ("task", "split", "data")]) + str(canvas)
    if same_data not in built:
        built.clear()  # one data set in memory at a time: at 128 pixels it is a GB
        task = build_task(cfg.task, cfg.data)
        built[same_data] = task, build_dataset(cfg, task, device)
    task, data = built[same_data]
    model = build_model(cfg.model, cfg.task.name, canvas).to(device)
    model.load_state_dict(run.weights)
    metrics = evaluate(model, task, data, cfg.trainer.eval_batch_size).metrics
    row = {"run": run.name, "label": run.label, "task": cfg.task.name, "split": cfg.split.name,
           "model": cfg.model.name, "seed": cfg.seed, "trained_canvas": run.config["data"]["canvas"],
           "canvas": canvas, "headline": task.headline}
    for part, values in metrics.items():
        row.update({f"{part}_{name}": value for name, value in values.items()})
    return row


def by_model(rows: list[dict]) -> dict[tuple[str, str, str], dict[int, list[float]]]:
    """{(task, split, label): {canvas: the test headline metric of each run}}."""
    grouped: dict[tuple[str, str, str], dict[int, list[float]]] = {}
    for row in rows:
        values = grouped.setdefault((row["task"], row["split"], row["label"]), {})
        values.setdefault(row["canvas"], []).append(row[f"test_{row['headline']}"])
    return grouped


def mean_spread(values: list[float]) -> str:
    """'mean' for one run, 'mean ± std' over several."""
    return cell(statistics.fmean(values)) + (f" ± {cell(statistics.stdev(values))}" if len(values) > 1 else "")


def markdown_text(rows: list[dict], canvases: list[int]) -> str:
    """A table per (task, split): the test headline metric of each model on each canvas, over its runs."""
    lines = ["# Evaluation on other canvases", "",
             f"{len({row['run'] for row in rows})} runs; each cell: the test metric, mean ± std over the runs "
             "(seeds) of that model; trained at " + ", ".join(sorted({str(row['trained_canvas']) for row in rows}))
             + " pixels. Per run: canvases.csv.", ""]
    grouped = by_model(rows)
    for task, split in sorted({(t, s) for t, s, _ in grouped}):
        metric = next(row["headline"] for row in rows if (row["task"], row["split"]) == (task, split))
        lines += [f"## {task} / {split}: test {metric}", "", markdown_table(
            ["model", "runs", *map(str, canvases)],
            [[label, len(values[canvases[0]]), *(mean_spread(values[c]) for c in canvases)]
             for (t, s, label), values in grouped.items() if (t, s) == (task, split)])]
        lines.append("")
    return "\n".join(lines)


def canvas_figure(rows: list[dict]) -> Figure:
    """The test headline metric against canvas size, one line per model (mean over its runs, the band from the
    lowest to the highest), one panel per (task, split); dotted: the training canvas."""
    grouped = by_model(rows)
    panels = sorted({(t, s) for t, s, _ in grouped})
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (task, split) in zip(axes[0], panels):
        here = [row for row in rows if (row["task"], row["split"]) == (task, split)]
        for i, ((t, s, label), values) in enumerate(item for item in grouped.items() if item[0][:2] == (task, split)):
            sizes = sorted(values)
            mean = [statistics.fmean(values[c]) for c in sizes]
            ax.plot(sizes, mean, marker="o", color=f"C{i}", label=f"{label} ({len(values[sizes[0]])})")
            ax.fill_between(sizes, [min(values[c]) for c in sizes], [max(values[c]) for c in sizes], color=f"C{i}",
                            alpha=0.2)
        for trained in sorted({row["trained_canvas"] for row in here}):
            ax.axvline(trained, ls=":", color="grey")
        ax.set(title=f"{task} / {split}", xlabel="canvas (pixels)", ylabel=f"test {here[0]['headline']}")
        ax.set_xticks(sorted({row["canvas"] for row in here}))
        ax.legend(loc="best", fontsize=8, title="model (runs)")
    fig.tight_layout()
    return fig


def evaluate_canvases(roots: list[Path], canvases: list[int], out: Path, device: str = "auto") -> list[dict]:
    """Evaluate every finished run under `roots` on `canvases`; write canvases.csv, .md and .png into `out`;
    return the rows. ConfigError (nothing written) when there is no finished run or one cannot take a canvas."""
    runs = finished_runs(roots)
    if not runs:
        raise ConfigError(f"no finished run under {', '.join(map(str, roots))} (a completed metrics.json and its "
                          "checkpoint.pt)")
    check_runs(runs, canvases)
    target = resolve_device(device)
    built: dict = {}
    rows = [evaluate_on(run, canvas, target, built) for canvas in canvases for run in runs]
    rows.sort(key=lambda row: runs.index(next(run for run in runs if run.name == row["run"])))  # run by run
    texts = csv_text(rows).encode(), markdown_text(rows, canvases).encode()
    figure = canvas_figure(rows)  # everything computed before the first file is written
    for name, text in zip(OUTPUTS, texts):
        atomic_write(out / name, lambda f, text=text: f.write(text))
    save_figure(figure, out / OUTPUTS[2])
    return rows


def main(argv: list[str] | None = None) -> int:
    """CLI; exit status 2 on bad input or an --out that cannot take the outputs (nothing computed or written), 1 with
    one line naming the file and the cause when the disk refuses a write."""
    parser = Parser(prog="python -m coordexp.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories (searched recursively)")
    parser.add_argument("--canvases", nargs="+", type=int, required=True, help="canvas sizes in pixels")
    parser.add_argument("--out", type=Path, help="where to write canvases.* (default: the one directory given)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="default: auto")
    args = parser.parse_args(argv)
    try:
        missing = [str(d) for d in args.dirs if not d.is_dir()]
        if missing:
            raise ConfigError(f"{missing[0]} is not a directory; give run or sweep directories")
        too_big = [c for c in args.canvases if not 1 <= c <= CANVAS_MAX]
        if too_big:
            raise ConfigError(f"--canvases {too_big[0]} is invalid: a canvas is an integer in [1, {CANVAS_MAX}]")
        if args.out is None and len(args.dirs) > 1:
            raise ConfigError("--out is needed with several directories: where should canvases.* go?")
        check_output_dir(args.out or args.dirs[0], "--out")
        rows = evaluate_canvases(args.dirs, list(dict.fromkeys(args.canvases)), args.out or args.dirs[0],
                                 args.device)
    except (ConfigError, RunDirError) as error:
        print(f"coordexp.evaluate: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the disk filled or turned read-only while writing: each file is whole or absent
        if not is_write_fault(error):
            raise
        print(f"coordexp.evaluate: error: {write_fault_line(error, args.out or args.dirs[0])}", file=sys.stderr)
        return 1
    print(f"{len({row['run'] for row in rows})} runs x {len(args.canvases)} canvases; wrote "
          f"{', '.join(OUTPUTS)} in {args.out or args.dirs[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
