"""`python -m coordexp.reproduce`: rerun what is behind the paper's headline table, report row by row whether it holds.

Every run is a `python -m coordexp.train` job launched by Hydra's launcher: parallel local jobs by default
(joblib, one torch thread each), a SLURM cluster with `--launcher slurm`. Each job runs a named setting of
configs/setting/ (a task x model's CPU setting, its paper setting or a named variant); each phase is a few
multiruns over settings x seeds, one per split (the uniform one on the authors' draw), longest first, each in its
own sweep directory OUT/<phase>-<digest>/<setting>/<split>/seed<k>/. The same reproduction run again continues those sweeps: a
completed job reports its result without training again, an interrupted one resumes from its checkpoint
(coordexp.rundir), so a reproduction cut short continues. The baselines run in the paper's memorising regime
(a budget may give them several points: the one that fits its training set best gets the other seeds, chosen
on train). REPORT.md compares the measurements with the paper's numbers, with a verdict per row on the whole
claim, reproduced or contradicted: the baseline fits its training set and fails its test set, CoordConv
solves it. `--budget paper` adds the paper's own settings at their length; `--full` runs the paper's whole
grids instead. docs/reproduce.md has the rest.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from coordexp import claims
from coordexp.cli import Parser
from coordexp.aggregate import train_test_figure
from coordexp.compose import CONFIG_DIR, compose_config
from coordexp.config import SEED_MAX, SPLITS, TASKS, ConfigError, override_keys
from coordexp.data import PARTS, data_centres
from coordexp.loop import reached, target_part
from coordexp.plots import save_figure
from coordexp.results import markdown_table, read_job, read_yaml, template_sections
from coordexp.rundir import (CONFIG_FILE, HYDRA_DIR, RunDirError, read_metrics, atomic_write, check_output_dir, is_write_fault,
                             watch_owner, write_fault_line)
from coordexp.precision import describe_cpu
from coordexp.tasks import TASK_CLASSES

SETTINGS_DIR = Path(CONFIG_DIR) / "setting"
REPORT_TEMPLATE = Path(__file__).with_name("report.md")  # the report's prose
EXTRAS = ("mlp", "coordmlp")  # beyond the paper: run with the first seed only, to fit the time budget
# Per budget: the baselines' sweep points (variants of the <task>_conv setting), the seeds, and the paper's own
# settings run beside them (setting, splits, seeds): "memorise" is the CPU setting run on until it memorises its
# training set (configs/setting/<task>_conv_memorise.yaml), the regime of the paper's claims.
BUDGETS = {
    "cpu": {"points": ("memorise",), "seeds": [0, 1, 2], "paper_settings": ()},
    "paper": {"points": ("memorise",), "seeds": [0, 1, 2], "paper_settings": (
        ("classification_coordconv_paper", SPLITS, [0, 1, 2, 3, 4]),  # 50 epochs, batch 16, lr 0.005, fp32
        ("classification_conv_paper", ("uniform",), [0]),  # the deconv at the paper's length, 1000 epochs
    )},
}
# The uniform split's override in every reproduction job: the authors' draw, with which the paper's numbers were made
AUTHORS_SPLIT = "data.uniform_split=authors"
LAUNCHERS = ("joblib", "slurm", "submitit_local", "basic")  # Hydra's hydra/launcher choices
FULL_GRIDS = ("classification_conv", "classification_coordconv", "regression_conv", "regression_coordconv",
              "rendering_conv", "rendering_coordconv")  # configs/multirun/<pair>_grid: the paper's whole grids


@dataclass
class Group:
    """The runs of one setting (configs/setting/<task>_<model>[_<variant>]) on one split, one per seed."""

    task: str
    split: str
    model: str
    variant: str = ""
    runs: list[dict] = field(default_factory=list)

    @property
    def setting(self) -> str:
        return "_".join(filter(None, (self.task, self.model, self.variant)))

    @property
    def name(self) -> str:
        return "-".join(filter(None, (self.task, self.split, self.model, self.variant)))

    @property
    def headline(self) -> str:
        return TASK_CLASSES[self.task].headline

    @property
    def higher_is_better(self) -> bool:
        return TASK_CLASSES[self.task].higher_is_better

    def values(self, part: str) -> list[float]:
        return [run[f"{part}_{self.headline}"] for run in self.runs
                if run["status"] == "completed" and f"{part}_{self.headline}" in run]

    def summary(self, part: str) -> str:
        values = self.values(part)
        if not values:
            return "n/a"
        spread = f" +- {statistics.stdev(values):.3g}" if len(values) > 1 else ""
        return f"{statistics.mean(values):.3g}{spread}"

    def mean(self, part: str) -> float:
        values = self.values(part)
        return statistics.mean(values) if values else float("nan")


def read_run(run_dir: Path, out: Path) -> dict:
    """A run's row (coordexp.results') with its per-evaluation history and training seconds from metrics.json, and
    its trainer settings from its saved config."""
    metrics = read_metrics(run_dir)
    row = read_job(run_dir, out, metrics) if run_dir.is_dir() else {"job": run_dir.relative_to(out).as_posix(),
                                                                    "status": metrics["status"], "error": None}
    row["history"], row["train_seconds"] = metrics.get("history"), metrics.get("train_seconds")
    row["precision"] = metrics.get("precision")  # what trainer.precision resolved to on the machine that ran it
    config = read_yaml(run_dir / HYDRA_DIR / CONFIG_FILE, None)
    row["trainer"] = config.get("trainer") if isinstance(config, dict) else None
    return row


def what_it_did(row: dict, task) -> str:
    """How a run of `task` (its class in coordexp.tasks) ended, in words: at its trainer.target, on the part
    trainer.target_part names, or after its whole length (a run stops at the first evaluation that reaches it)."""
    if row["status"] != "completed":
        return row["status"]
    trainer, headline = row.get("trainer") or {}, task.headline
    epochs, target, precision = row.get("epochs"), trainer.get("target"), row.get("precision") or "?"
    part = target_part({p: None for p in PARTS if f"{p}_{headline}" in row}, trainer.get("target_part"))
    value = row.get(f"{part}_{headline}")
    if value is None or not reached(task, {headline: value}, target):
        return f"its whole length ({epochs} epochs, {precision})"
    words = "fit its training set" if part == "train" else "reached the result"
    return (f"{words} ({part} {headline} {'>=' if task.higher_is_better else '<'} {target:g}) after {epochs} of "
            f"{trainer.get('epochs')} epochs, {precision}")


def products(jobs: list[tuple[str, str, int]]) -> list[tuple[list[str], list[str], list[int]]]:
    """(setting, split, seed) jobs as few Cartesian products settings x splits x seeds, in the order the jobs
    come: a setting whose jobs are not a product of its splits and seeds is split per split."""
    pairs: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for setting, split, seed in jobs:
        pairs[setting].append((split, seed))
    grouped: dict[tuple, list[str]] = {}
    for setting, setting_pairs in pairs.items():
        splits = list(dict.fromkeys(s for s, _ in setting_pairs))
        seeds = list(dict.fromkeys(k for _, k in setting_pairs))
        if len(setting_pairs) == len(splits) * len(seeds):
            keys = [(tuple(splits), tuple(seeds))]
        else:
            keys = [((s,), tuple(k for t, k in setting_pairs if t == s)) for s in splits]
        for key in keys:
            grouped.setdefault(key, []).append(setting)
    return [(settings, list(splits), list(seeds)) for (splits, seeds), settings in grouped.items()]


def setting_axes(settings: list[str]) -> list[tuple[list[str], list[str]]]:
    """The sweep axes that run exactly these settings: (the settings, their axes) per multirun. A named setting sets
    its own task and model (`setting=a,b`); a pair's CPU setting is the one the pair picks (`task=... model=...`:
    Hydra cannot let it pick its own pair), so those are swept as products tasks x models."""
    named = [s for s in settings if s.count("_") > 1]
    tasks_of: dict[str, list[str]] = defaultdict(list)  # model -> the tasks of its CPU settings
    for setting in (s for s in settings if s.count("_") == 1):
        task, model = setting.split("_")
        tasks_of[model].append(task)
    models_of: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for model, tasks in tasks_of.items():
        models_of[tuple(tasks)].append(model)
    return ([(named, [f"setting={','.join(named)}"])] if named else []) + [
        ([f"{t}_{m}" for t in tasks for m in models], [f"task={','.join(tasks)}", f"model={','.join(models)}"])
        for tasks, models in models_of.items()]


def launcher_overrides(launcher: str, workers: int) -> list[str]:
    """The Hydra overrides that pick `launcher`: joblib runs `workers` jobs at a time (cores / workers threads each)."""
    if launcher == "joblib":
        return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={workers}"]
    return [f"hydra/launcher={launcher}"]


def job_overrides(axes: list[str], splits: list[str], seeds: list[int], args) -> list[str]:
    """The overrides of a multirun over settings (their axes) x splits x seeds (what makes it the sweep it is). The
    uniform split
    is the authors' draw (2368 train / 768 test), with which the paper's numbers were made, unless the user's
    overrides pick one."""
    users = [o for o in args.overrides if not o.lstrip("+~").startswith("hydra")]
    authors = splits == ["uniform"] and "data.uniform_split" not in override_keys(users)
    return [*axes, f"split={','.join(splits)}", f"seed={','.join(map(str, seeds))}",
            *([AUTHORS_SPLIT] if authors else []), "trainer.progress=false",
            *(["debug=fast"] if args.smoke else []), *users]


def sweep_dir(out: Path, phase: str, overrides: list[str]) -> Path:
    """OUT/<phase>-<digest of the overrides>: the same multirun always gets the same directory, so running the
    reproduction again continues its sweeps (each sweep directory holds one sweep: coordexp.sweep)."""
    return out / f"{phase}-{hashlib.sha1(' '.join(overrides).encode()).hexdigest()[:8]}"


def run_overrides(group: Group) -> tuple[str, ...]:
    """What the reproduction adds to a setting's runs. A CoordConv run (its CPU or its paper setting) ends at its
    first evaluation that reaches the paper's result (coordexp/claims.yaml: the claim is that it gets there;
    the run up to it is unchanged). The paper's deconv is evaluated every 10 epochs, so that a run cut short and
    continued later still draws its curve. The baselines' settings say themselves when they stop (memorise: once
    they memorise their training set, read on train, never on test); the paper-form variants (one-hot 1, the
    softmax map) run their whole length."""
    if group.model == "coordconv" and group.variant in ("", "paper"):
        return (f"trainer.target={claims.solved(group.task)}",)
    if group.model == "conv" and group.variant == "paper":
        return ("trainer.eval_every=10",)
    return ()


class Stopped(Exception):
    """The reproduction was asked to stop (SIGINT or SIGTERM); its multirun in progress stopped with it."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"stopped by {signal.Signals(signum).name}")


class Multiruns:
    """Runs the multiruns one at a time, each in a session of its own, so that a signal reaches it once: this
    process forwards its own SIGINT / SIGTERM (from a terminal, to its group or to it alone) to the one running.
    Each multirun watches this process too (coordexp.rundir.watch_owner): killed, it is not left running."""

    def __init__(self):
        self.child: subprocess.Popen | None = None
        self.signum = 0
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._forward)

    def _forward(self, signum, frame) -> None:
        self.signum = self.signum or signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)  # a second one makes it exit at once, as a second Ctrl-C does

    def run(self, command: list[str], **kwargs) -> int:
        """The multirun's exit status; Stopped once it ended, if this process was asked to stop."""
        if self.signum:
            raise Stopped(self.signum)
        self.child = subprocess.Popen(command, start_new_session=True, **kwargs)
        code = self.child.wait()
        self.child = None
        if self.signum:
            raise Stopped(self.signum)
        return code


def launch(out: Path, phase: str, jobs: list[tuple[Group, int]], args) -> None:
    """Run the jobs through Hydra's launcher, one multirun per product of settings x splits x seeds, then read every
    job's result into its group. A job whose run directory holds its completed run reports it without training
    again (coordexp.rundir), so a reproduction cut short continues where it stopped."""
    where, by_overrides = {}, defaultdict(list)
    for group, seed in jobs:
        by_overrides[run_overrides(group)].append((group.setting, group.split, seed))
    # one multirun per split: the uniform split's jobs take the authors' draw (job_overrides)
    multiruns = [(swept, axes, [split], seeds, list(extra)) for extra, triples in by_overrides.items()
                 for settings, splits, seeds in products(triples) for split in splits
                 for swept, axes in setting_axes(settings)]
    for settings, axes, splits, seeds, extra in multiruns:  # settings: those this multirun's axes sweep
        overrides = job_overrides(axes, splits, seeds, args) + extra
        directory = sweep_dir(out, phase, overrides)
        where.update({(k, s, seed): directory / k / s / f"seed{seed}"
                      for k in settings for s in splits for seed in seeds})
        command = [sys.executable, "-m", "coordexp.train", "-m", *overrides, f"hydra.sweep.dir={directory}",
                   "hydra.sweep.subdir=${hydra:runtime.choices.setting}/${split.name}/seed${seed}",
                   *launcher_overrides(args.launcher, args.workers),
                   *[o for o in args.overrides if o.lstrip("+~").startswith("hydra")]]
        if args.dry_run:
            print(shlex.join(["python", *command[1:]]))
            continue
        print(f"  multirun: {' '.join(axes)} x {', '.join(splits)} x seeds {', '.join(map(str, seeds))} "
              f"-> {directory}", flush=True)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "reproduce.log", "a") as log:  # the multiruns' own output: Hydra's and every job's log
            code = args.multiruns.run(command, stdout=log, stderr=subprocess.STDOUT)
        if code:  # its jobs that did not complete are listed in the report
            print(f"  the multirun exited with status {code}: see {out / 'reproduce.log'}", flush=True)
    for group, seed in jobs:
        row = read_run(where[group.setting, group.split, seed], out)
        group.runs.append(row)
        if not args.dry_run:
            print(f"  {group.name} seed {seed}: {row['status']}"
                  + (f", train {group.headline} {row['train_' + group.headline]:.4g}, test "
                     f"{row['test_' + group.headline]:.4g} in {row['wall_seconds']:.0f}s"
                     if row["status"] == "completed" else ""), flush=True)


def plan(tasks: list[str], splits: list[str], budget: str, renderer_softmax: bool = False, extras: bool = False
         ) -> tuple[list[Group], dict[tuple[str, str], list[Group]]]:
    """The CoordConv settings (every seed), the extras if asked (the first seed), and the baselines' sweep points
    per (task, split)."""
    groups, sweeps = [], {}
    for task in tasks:
        for split in splits:
            groups.append(Group(task, split, "coordconv"))
            if task == "regression":  # the paper's one-hot input, which stalls the max-pool readout
                groups.append(Group(task, split, "coordconv", "onehot1"))
            if renderer_softmax and task == "rendering":  # the paper's unscaled centre map
                groups.append(Group(task, split, "coordconv", "softmax"))
            sweeps[task, split] = [Group(task, split, "conv", point) for point in BUDGETS[budget]["points"]]
    groups += [Group(task, split, model) for task in tasks for split in splits for model in EXTRAS if extras]
    return groups, sweeps


def paper_settings(tasks: list[str], splits: list[str], budget: str) -> list[tuple[Group, int]]:
    """The budget's runs of the paper's own settings (configs/setting/<task>_<model>_paper.yaml) on the asked tasks
    and splits: (group, seed) jobs, one group per setting and split."""
    jobs = []
    for setting, setting_splits, seeds in BUDGETS[budget]["paper_settings"]:
        task, model, variant = setting.split("_")
        for split in (s for s in setting_splits if task in tasks and s in splits):
            group = Group(task, split, model, variant)
            jobs += [(group, seed) for seed in seeds]
    return jobs


def longest_first(job: tuple[Group, int]) -> int:
    """A job's rank by its expected length here (measured): the deconv painters, then the renderer, the rest."""
    group = job[0]
    return 0 if group.model == "conv" and group.task != "regression" else 1 if group.task == "rendering" else 2


def best(points: list[Group]) -> Group:
    """The sweep point that does best on valid where its runs have a valid set (data=sampled), else the one that
    fits its training set best (mean headline metric; the first on a tie); never chosen on test."""
    sign = 1 if points[0].higher_is_better else -1
    part = "valid" if any(f"valid_{g.headline}" in run for g in points for run in g.runs) else "train"
    return max(points, key=lambda g: sign * g.mean(part) if g.values(part) else float("-inf"))


def verdict(task: str, split: str, conv: Group, coord: Group) -> tuple[bool, str]:
    """Whether the paper's row holds here, and why: the baseline fits its training set and fails its test
    set (means over seeds), and CoordConv solves the test set on every seed."""
    ct, cc, kt = conv.mean("train"), conv.mean("test"), coord.values("test")
    # CoordConv solves the test set, on every seed: the paper's result (coordexp/claims.yaml)
    fit, fail, solve = claims.fits(task), claims.row(task, split).fails, claims.solved(task)
    if conv.higher_is_better:
        fits, fails = ct >= fit, cc <= fail
        fit_text, fail_text = f"train {ct:.3g} >= {fit:g}", f"test {cc:.3g} <= {fail:g}"
        solves = bool(kt) and min(kt) >= solve
        coord_text = f"CoordConv test {coord.summary('test')} (every seed >= {solve:g}: {solves})"
    else:
        fits, fails = ct <= cc / fit, cc >= fail
        fit_text, fail_text = f"train {ct:.3g} <= test {cc:.3g} / {fit:g}", f"test {cc:.3g} >= {fail:g}"
        solves = bool(kt) and max(kt) < solve
        coord_text = f"CoordConv test {coord.summary('test')} (every seed < {solve:g}: {solves})"
    if not conv.values("train"):
        reasons = ["the baseline has no completed run"]
    else:
        unfit = ("the baseline did not fit its training set" if conv.higher_is_better
                 else "the baseline's train error is not well below its test error")
        reasons = [f"{unfit}: {fit_text} is false"] if not fits else []
        if not fails:
            reasons.append(f"the baseline did not fail its test set as the paper says: {fail_text} is false")
    reasons += [f"CoordConv did not solve its test set on every seed: {coord.summary('test')}"] if not solves else []
    claim = f"baseline fits ({fit_text}: {fits}) and fails ({fail_text}: {fails}); {coord_text}"
    return not reasons, claim if not reasons else f"{'; '.join(reasons)} ({claim})"


def first_reaching(run: dict, headline: str, task) -> int | None:
    """The epoch of a run's first evaluation whose test value reaches the paper's result (coordexp/claims.yaml)."""
    history = run.get("history") or {"epochs": [], "metrics": []}
    return next((epoch for epoch, metrics in zip(history["epochs"], history["metrics"])
                 if reached(task, {headline: metrics["test"][headline]}, claims.solved(task.name))), None)


def memorise_figure(baselines: dict) -> Figure:
    """Test against train headline metric at every evaluation of each baseline run, a panel per (task, split), one
    line per seed with its last evaluation ringed; the paper's bound on test dashed."""
    keys = list(baselines)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4), squeeze=False, layout="constrained")
    for ax, key in zip(axes[0], keys):
        group = baselines[key]
        for colour, run in enumerate(r for r in group.runs if r.get("history")):
            points = [(m["train"][group.headline], m["test"][group.headline]) for m in run["history"]["metrics"]]
            ax.plot(*zip(*points), ".-", color=f"C{colour}", label=f"seed {run.get('seed', colour)}")
            ax.plot(*points[-1], "o", markersize=10, fillstyle="none", color=f"C{colour}")
        bound = claims.row(*key).fails
        ax.axhline(bound, linestyle="--", color="gray", label=f"paper's bound {bound:g}")
        ax.set(title=f"{key[0]} / {key[1]} ({group.variant or 'CPU setting'})", xlabel=f"train {group.headline}",
               ylabel=f"test {group.headline}")
        if not group.higher_is_better:
            ax.set(xscale="log", yscale="log")
        ax.legend(loc="best", fontsize=8)
    return fig


def paper_figure(paper: list[Group]) -> Figure:
    """Train (dashed) and test (solid) headline metric against epoch of every run of the paper's own settings,
    a panel per setting and split, a colour per seed."""
    fig, axes = plt.subplots(1, len(paper), figsize=(5 * len(paper), 4), squeeze=False, layout="constrained")
    for ax, group in zip(axes[0], paper):
        for colour, run in enumerate(r for r in group.runs if r.get("history")):
            history = run["history"]
            for part, style in (("train", "--"), ("test", "-")):
                ax.plot(history["epochs"], [m[part][group.headline] for m in history["metrics"]], style,
                        color=f"C{colour}", label=f"seed {run.get('seed', colour)} {part}")
        ax.set(title=f"{group.setting} / {group.split}", xlabel="epoch", ylabel=group.headline)
        ax.legend(loc="best", fontsize=7, ncol=2)
    return fig


def curves_figure(task: str, groups: list[Group]) -> Figure:
    """Train and test headline metric against epoch, the baseline beside CoordConv, one panel per split:
    the mean over seeds as a line, their range as a band. Epochs on a log axis: the baselines run longer."""
    splits = [s for s in SPLITS if any(g.split == s for g in groups)]
    fig, axes = plt.subplots(1, len(splits), figsize=(6 * len(splits), 4.4), squeeze=False, layout="constrained")
    for ax, split in zip(axes[0], splits):
        headline = ""
        for colour, group in enumerate(g for g in groups if g.split == split):
            histories = [r["history"] for r in group.runs if r["status"] == "completed" and r.get("history")]
            headline = group.headline
            for part, style in (("train", "--"), ("test", "-")):
                by_epoch = defaultdict(list)
                for history in histories:
                    for epoch, metrics in zip(history["epochs"], history["metrics"]):
                        by_epoch[epoch].append(metrics[part][headline])
                epochs = sorted(by_epoch)
                if not epochs:
                    continue
                seeds = f"{len(histories)} seed{'s' if len(histories) != 1 else ''}"
                label = f"{group.model}{f' ({group.variant})' if group.variant else ''} {part} ({seeds})"
                ax.plot(epochs, [statistics.mean(by_epoch[e]) for e in epochs], style, marker=".",
                        color=f"C{colour}", label=label)
                ax.fill_between(epochs, [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs],
                                color=f"C{colour}", alpha=0.2, linewidth=0)
        ax.set(title=f"{task} / {split}", xlabel="epoch", ylabel=headline, xscale="log")
        # epochs as plain numbers at 1, 2, 5, 10, ...: log-axis minor labels overlap ("3x10^0")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        if headline and not TASK_CLASSES[task].higher_is_better:
            ax.set_yscale("log")
        ax.legend(loc="best", fontsize=8)
    return fig


def split_sizes(split: str, overrides: tuple[str, ...] = ()) -> tuple[int, int]:
    """(train, test) examples of `split` as the reproduction draws it (job_overrides: the authors' uniform draw)."""
    extra = (AUTHORS_SPLIT,) if split == "uniform" else ()
    cfg = compose_config(f"split={split}", *extra, *overrides)
    _, parts = data_centres(split, cfg.data)
    return len(parts["train"]), len(parts["test"])


def report(groups: list[Group], baselines: dict, sweeps: dict, paper: list[Group], seconds: float, args) -> str:
    """REPORT.md: the paper's table beside the measurements, a verdict per row, the curves, the paper's own
    settings, the extra models; the prose is coordexp/report.md's, the tables are filled in here."""
    sections = template_sections(REPORT_TEMPLATE)
    by_name = {g.name: g for g in groups}
    tasks = list(dict.fromkeys(t for t, _ in baselines))
    sizes = {split: split_sizes(split) for split in dict.fromkeys(s for _, s in baselines)}
    rows, held = [], 0
    for (task, split), conv in baselines.items():
        coord = by_name[f"{task}-{split}-coordconv"]
        ok, why = verdict(task, split, conv, coord)
        held += ok
        times = [statistics.median([r["wall_seconds"] for r in g.runs if r.get("wall_seconds") is not None] or [0])
                 for g in (conv, coord)]
        params = [next((r["params"] for r in g.runs if r.get("params")), "?") for g in (conv, coord)]
        said = claims.row(task, split)
        rows.append([task, split, said.conv, f"{conv.summary('train')} / {conv.summary('test')} (`{conv.setting}`)",
                     said.coordconv, f"{coord.summary('train')} / {coord.summary('test')}",
                     f"{params[0]} / {params[1]}", f"{times[0]:.0f} / {times[1]:.0f}",
                     f"**{'reproduced' if ok else 'contradicted'}**: {why}"])
    text = sections["head"].substitute(
        command=" ".join(["python -m coordexp.reproduce", *args.argv]),
        machine=f"{os.cpu_count()} CPU cores ({describe_cpu()}), torch {torch.__version__}, launcher {args.launcher}"
                + (f" ({args.workers} jobs at a time)" if args.launcher == "joblib" else "")
                + f", budget `{args.budget}`, seeds {', '.join(map(str, args.seeds))}"
                + (" (MLP and CoordMLP: the first)" if args.extras else ""),
        minutes=f"{seconds / 60:.1f}",
        splits="; ".join(f"{split} {train} train / {test} test" for split, (train, test) in sizes.items())
               + (" (the uniform split is the authors' own random draw, with which the paper's numbers were made)"
                  if "uniform" in sizes else ""),
        solved=", ".join(f"{task} {claims.solved(task):g}" for task in tasks),
        table=markdown_table(["task", "split", "paper: conv", "measured conv (train / test)", "paper: CoordConv",
                              "measured CoordConv (train / test)", "params conv / CoordConv",
                              "median time conv / CoordConv (s)", "verdict"], rows),
        held=held, rows=len(baselines), contradicted=len(baselines) - held,
        bounds=bounds_table(baselines),
        curves="\n".join(f"![{task} curves](curves-{task}.png)" for task in tasks))
    if any(len(points) > 1 for points in sweeps.values()):  # a budget with several baseline points
        text += sections["sweeps"].substitute(table=markdown_table(
            ["task", "split", "point", "seeds", "train", "test"],
            [[task, split, f"{g.variant or 'CPU setting'}{' (chosen)' if g is baselines[task, split] else ''}",
              len(g.values("test")), g.summary("train"), g.summary("test")]
             for (task, split), points in sweeps.items() for g in points]))
    if paper:
        text += sections["paper"].substitute(table=paper_table(paper))
    extras = [g for g in groups if g.model in EXTRAS]
    if extras:
        text += sections["extras"].substitute(table=markdown_table(
            ["task", "split", "model", "params", "train", "test"],
            [[g.task, g.split, g.model, g.runs[0].get("params") or "?", g.summary("train"), g.summary("test")]
             for g in extras]))
    regression = [g for g in groups if g.task == "regression" and g.model == "coordconv"]
    if regression:
        text += sections["regression"].substitute(table=markdown_table(
            ["split", "one-hot value", "test pixel error per seed", "mean train / test"],
            [[g.split, 1 if g.variant == "onehot1" else 8, ", ".join(f"{v:.3g}" for v in g.values("test")),
              f"{g.summary('train')} / {g.summary('test')}"] for g in regression]))
    renderer = [g for g in groups if g.task == "rendering" and g.model == "coordconv"]
    if any(g.variant == "softmax" for g in renderer):
        text += sections["renderer"].substitute(table=markdown_table(
            ["split", "centre map", "test IoU per seed", "mean train / test"],
            [[g.split, g.variant or "density", ", ".join(f"{v:.4g}" for v in g.values("test")),
              f"{g.summary('train')} / {g.summary('test')}"] for g in renderer]))
    everything = [*[p for ps in sweeps.values() for p in ps], *groups, *paper]
    text += sections["every_run"].substitute(table=markdown_table(
        ["run", "ended", "train s", "loop s", "train", "test"],
        [[f"`{r['job']}`", what_it_did(r, TASK_CLASSES[g.task]),
          *(f"{r[k]:.1f}" if r.get(k) is not None else "n/a" for k in ("train_seconds", "wall_seconds")),
          *(f"{r[f'{part}_{g.headline}']:.4g}" if f"{part}_{g.headline}" in r else "n/a" for part in ("train", "test"))]
         for g in everything for r in g.runs]))
    failed = [r for g in everything for r in g.runs if r["status"] != "completed"]
    if failed:
        text += sections["failed"].substitute(items="\n".join(f"- `{r['job']}`: {r['status']} {r.get('error') or ''}"
                                                               for r in failed))
    return text


def bounds_table(baselines: dict) -> str:
    """Each reported row's bounds from coordexp/claims.yaml, in the direction of its task's headline metric."""
    rows = []
    for task, split in baselines:
        higher, fit, fail, solve = (TASK_CLASSES[task].higher_is_better, claims.fits(task), claims.row(task, split).fails,
                                    claims.solved(task))
        metric = TASK_CLASSES[task].headline
        rows.append([task, split, claims.row(task, split).conv,
                     f"train {metric} >= {fit:g}" if higher else f"train {metric} <= test / {fit:g}",
                     f"test {metric} {'<=' if higher else '>='} {fail:g}",
                     f"test {metric} {'>=' if higher else '<'} {solve:g}"])
    return markdown_table(["task", "split", "the paper: conv", "the baseline fits", "the baseline fails",
                           "CoordConv solves (every seed)"], rows)


def paper_table(paper: list[Group]) -> str:
    """The paper's own settings: runs, how far each got, how many reached the paper's result and when."""
    rows = []
    for g in paper:
        task = TASK_CLASSES[g.task]
        ran = ", ".join(f"{r.get('epochs', '?')} ({(r.get('trainer') or {}).get('epochs', '?')})" for r in g.runs)
        if g.model == "conv":  # a baseline: where it got is the result
            reach = first = "(a baseline)"
        else:
            firsts = [first_reaching(r, g.headline, task) for r in g.runs]
            reach = f"{sum(e is not None for e in firsts)} of {len(g.runs)}"
            first = ", ".join(str(e) for e in firsts if e is not None) or "none"
        last = [r["history"]["metrics"][-1] for r in g.runs if (r.get("history") or {}).get("metrics")]
        values = [", ".join(f"{m[part][g.headline]:.4g}" for m in last) or "n/a" for part in ("train", "test")]
        rows.append([g.setting, g.split, len(g.runs), ran, reach, first, *values])
    return markdown_table(["setting", "split", "seeds", "epochs run (of)", "reach the paper's result",
                           "first evaluation there (epoch)", "train per seed (last evaluation)", "test per seed"], rows)


def write_report(out: Path, groups: list[Group], baselines: dict, sweeps: dict, paper: list[Group], seconds: float,
                 args) -> None:
    """Write REPORT.md and its figures into `out`: every figure is drawn before the first file is written."""
    text = report(groups, baselines, sweeps, paper, seconds, args)
    # the figures show the CPU settings and the chosen baselines: the paper-form variants (one-hot 1, softmax map) are in the tables
    rows = [r for g in groups if not g.variant for r in g.runs] + [r for g in baselines.values() for r in g.runs]
    figures = {"REPORT.png": train_test_figure(rows), "memorise.png": memorise_figure(baselines)}
    if paper:
        figures["paper.png"] = paper_figure(paper)
    for task in dict.fromkeys(t for t, _ in baselines):
        shown = [g for key, g in baselines.items() if key[0] == task]
        shown += [g for g in groups if g.task == task and g.model == "coordconv" and not g.variant]
        figures[f"curves-{task}.png"] = curves_figure(task, shown)
    atomic_write(out / "REPORT.md", lambda f: f.write(text.encode()))
    for name, figure in figures.items():
        save_figure(figure, out / name)


def full_grids(out: Path, args) -> int:
    """Run (or with --dry-run print) the paper's whole grids, one multirun per sweep over both splits; the exit
    status is the first non-zero one of a multirun."""
    failed = 0
    for pair in FULL_GRIDS:
        command = [sys.executable, "-m", "coordexp.train", f"setting={pair}_paper", f"multirun={pair}_grid",
                   "split=uniform,quarter", f"hydra.sweep.dir={out / 'full' / pair}", "trainer.progress=false",
                   *launcher_overrides(args.launcher, args.workers), *args.overrides]
        if args.dry_run:
            print(shlex.join(["python", *command[1:]]))
            continue
        print(f"  {pair}: {out / 'full' / pair}", flush=True)
        code = args.multiruns.run(command)
        failed = failed or code
    return failed


def check_settings(groups: list[Group], sweeps: dict) -> str | None:
    """The first planned setting without a config in configs/setting/, or None."""
    for g in [*groups, *[p for ps in sweeps.values() for p in ps]]:
        if not (SETTINGS_DIR / f"{g.setting}.yaml").is_file():
            return g.setting
    return None


def check_overrides(group: Group, overrides: list[str]) -> str | None:
    """What is wrong with the user's overrides on a planned job, or None; hydra.* keys are the launcher's to check."""
    try:
        compose_config(*setting_axes([group.setting])[0][1], f"split={group.split}",
                       *[o for o in overrides if not o.lstrip("+~").startswith("hydra")])
    except ConfigError as error:
        return str(error)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m coordexp.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*",
                        help="Hydra overrides for every job, e.g. hydra.launcher.partition=NAME")
    parser.add_argument("--out", type=Path, default=Path("outputs/reproduce"), help="where the runs and REPORT.md go")
    parser.add_argument("--budget", choices=list(BUDGETS), default="cpu",
                        help="cpu: the CPU settings, 3 seeds (about 80 min on 2 cores); paper: those, then the paper's own "
                             "settings at their length (CoordConv classification, 5 seeds; the deconv, 1000 epochs)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds of every setting (default: the budget's)")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="joblib",
                        help="Hydra's launcher for the jobs (default joblib: --workers local jobs at a time)")
    parser.add_argument("--workers", type=int, default=max((os.cpu_count() or 1), 1),
                        help="joblib: jobs at a time, cores / workers torch threads each (default: one per core)")
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--splits", nargs="+", choices=SPLITS, default=list(SPLITS))
    parser.add_argument("--renderer-softmax", action="store_true",
                        help="also run the CoordConv renderer with the paper's unscaled centre map (6 more runs)")
    parser.add_argument("--extras", action="store_true",
                        help="also run MLP and CoordMLP (beyond the paper) on the first seed (12 more runs)")
    parser.add_argument("--smoke", action="store_true",
                        help="every run shrunk to a few steps (debug=fast): checks the plumbing")
    parser.add_argument("--full", action="store_true", help="run the paper's whole grids (a cluster's work) instead")
    parser.add_argument("--dry-run", action="store_true", help="print the multirun commands instead of running them")
    args = parser.parse_args(argv)
    args.argv = argv if argv is not None else sys.argv[1:]
    args.seeds = args.seeds if args.seeds is not None else BUDGETS[args.budget]["seeds"]
    if not 1 <= args.workers <= 1024:
        parser.error(f"--workers={args.workers} is invalid: must be an integer in [1, 1024]")
    bad_seed = next((s for s in args.seeds if not 0 <= s <= SEED_MAX), None)
    if bad_seed is not None:
        parser.error(f"--seeds {bad_seed} is invalid: a seed is an integer in [0, {SEED_MAX}]")
    if not args.dry_run:
        try:
            check_output_dir(args.out, "--out")  # before any work: a directory, writable, with space
        except RunDirError as error:
            parser.error(str(error))
    args.multiruns = Multiruns()
    watch_owner()  # this process owns its multiruns: killed, they stop too
    try:
        return full_grids(args.out, args) if args.full else reproduce(args, parser)
    except OSError as error:
        if not is_write_fault(error):
            raise
        print(f"coordexp.reproduce: error: {write_fault_line(error, args.out)}", file=sys.stderr)
        return 1
    except Stopped as stopped:
        print(f"coordexp: the reproduction was {stopped}; its finished jobs are kept, and the same command "
              "continues it", file=sys.stderr)
        return 128 + stopped.signum


def reproduce(args, parser: argparse.ArgumentParser) -> int:
    """Plan, run and report the reproduction (main's arguments)."""
    start = time.perf_counter()
    groups, sweeps = plan(args.tasks, args.splits, args.budget, args.renderer_softmax, args.extras)
    missing = check_settings(groups, sweeps)
    if missing:
        parser.error(f"no setting {missing!r} in {SETTINGS_DIR}")
    problem = check_overrides(groups[0], args.overrides)
    if problem:
        parser.error(problem)
    first, rest = args.seeds[:1], args.seeds[1:]
    # phase 1: the baselines' sweep points on the first seed (a sweep of one point: every seed); the longest runs
    points = [(p, seed) for ps in sweeps.values() for p in ps for seed in (args.seeds if len(ps) == 1 else first)]
    print(f"coordexp.reproduce: phase 1, the baselines' sweeps, into {args.out}", flush=True)
    launch(args.out, "phase1", sorted(points, key=longest_first), args)
    # phase 2: the point of each sweep that fits its training set best with the other seeds, then every other setting
    baselines = {key: best(ps) for key, ps in sweeps.items()}
    again = [(g, seed) for key, g in baselines.items() if len(sweeps[key]) > 1 for seed in rest]
    again += [(g, seed) for g in groups for seed in (first if g.model in EXTRAS else args.seeds)]
    print("coordexp.reproduce: phase 2, the chosen baselines' other seeds and every other setting", flush=True)
    launch(args.out, "phase2", sorted(again, key=longest_first), args)
    # phase 3 (--budget paper): the paper's own settings at their own length
    paper = paper_settings(args.tasks, args.splits, args.budget)
    if paper:
        print("coordexp.reproduce: phase 3, the paper's own settings at their length", flush=True)
        launch(args.out, "phase3", paper, args)
    if args.dry_run:
        return 0
    seconds = time.perf_counter() - start
    paper_groups = [g for i, (g, _) in enumerate(paper) if all(g is not h for h, _ in paper[:i])]
    write_report(args.out, groups, baselines, sweeps, paper_groups, seconds, args)
    print(f"wrote {args.out / 'REPORT.md'} in {seconds / 60:.1f} min", flush=True)
    runs = [r for g in [*[p for ps in sweeps.values() for p in ps], *groups, *paper_groups] for r in g.runs]
    unfinished = [r["job"] for r in runs if r["status"] != "completed"]
    if unfinished:  # the report lists them; the same command again completes them
        print(f"coordexp.reproduce: {len(unfinished)} of {len(runs)} runs did not complete ({', '.join(unfinished)}); "
              "see REPORT.md, and run the same command again to complete them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
