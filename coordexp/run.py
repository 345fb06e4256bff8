"""One run: build it from its config (task, data, model, optimizer) and train it into its run directory.

`train(cfg, run_dir)` does the work and returns the metrics it wrote; coordexp.train is the command line around it.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from coordexp.config import ConfigError
from coordexp.data import PARTS, Dataset, data_centres
from coordexp.loop import Diverged, Evaluation, check_evaluation, evaluate, fit, training_over
from coordexp.models import build_model, count_params
from coordexp.optim import build_optimizer
from coordexp.precision import resolve_precision
from coordexp.rundir import (CHECKPOINT, METRICS_FILE, Interrupted, StopRequest, TrainState, is_complete,
                             load_checkpoint, read_metrics, restore, save_checkpoint, write_json)
from coordexp.runtime import configure_backends, keep_freed_memory, make_deterministic, resolve_device
from coordexp.tasks import METRICS, Task, build_task
from coordexp.tblog import RunLog

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_dataset(cfg: DictConfig, task, device: torch.device) -> Dataset:
    """The data mode's inputs and targets on `device`, with the split's train, test and (if any) valid indices."""
    centres, parts = data_centres(cfg.split.name, cfg.data)
    centres = centres.to(device)
    inputs, targets = task.build(centres)
    task.check_data(centres, inputs, targets)
    parts = {part: idx.to(device) for part, idx in parts.items()}
    return Dataset(centres, inputs, targets, parts["train"], parts["test"], parts.get("valid"))


def probe_data(cfg: DictConfig) -> None:
    """DegenerateData (a ConfigError) before any work when the data `cfg` would build is degenerate: the task's
    inputs and targets built for a few of its positions, checked as build_dataset checks them all."""
    centres, _ = data_centres(cfg.split.name, cfg.data)
    few = centres[torch.linspace(0, len(centres) - 1, 4).long()]
    task = build_task(cfg.task, cfg.data)
    task.check_data(few, *task.build(few))


def write_plots(task, data: Dataset, model: nn.Module, evaluation: Evaluation, cfg: DictConfig, run_dir: Path,
                runlog: RunLog, step: int) -> list[str]:
    """Write plots/*.png (the results, then the looks inside the model) and log them to TensorBoard; return the
    files written, relative to run_dir."""
    # imported here: matplotlib and the figures load only in a run that draws them (~0.4 s of a process's start)
    from coordexp.inside import inside_figures
    from coordexp.plots import final_figures, render, save_png
    written = []
    figures = final_figures(task, data, evaluation, cfg.trainer.plot_examples)
    figures.update(inside_figures(model, task, data, evaluation, cfg.trainer.plot_examples, runlog.parameter_history()))
    for name, fig in figures.items():
        image = render(fig)
        runlog.image(f"plots/{name}", image, step)
        save_png(image, run_dir / "plots" / f"{name}.png")
        written.append(f"plots/{name}.png")
    return written


def build_run(cfg: DictConfig, device: torch.device) -> tuple[Task, Dataset, nn.Module, torch.optim.Optimizer]:
    """The task, its data set on `device`, the model and its optimizer, as `cfg` configures them."""
    task = build_task(cfg.task, cfg.data)
    data = build_dataset(cfg, task, device)
    model = build_model(cfg.model, cfg.task.name, cfg.data.canvas).to(device)
    return task, data, model, build_optimizer(cfg.optimizer, model, cfg.model.l2_scope)


def train(cfg: DictConfig, run_dir: Path, resume: bool = False, stop: StopRequest | None = None,
          checkpoint: dict | None = None) -> dict:
    """Train one task x split x model as `cfg` says, write its outputs into `run_dir`, return metrics.json.

    With `resume`, continue from run_dir's checkpoint (`checkpoint`, where it was read already); when its training is already over (a run stopped
    after its last checkpoint), only the final outputs are written. Raises Interrupted (checkpoint written)
    on SIGINT/SIGTERM, Diverged on a non-finite loss, weight or evaluation; metrics.json then says so in its
    `status`. A ConfigError (a bad config, or a resume of a run that already completed) writes nothing.
    """
    device = resolve_device(cfg.device)
    if cfg.trainer.keep_freed_memory:
        keep_freed_memory()
    configure_backends(device)
    if cfg.trainer.deterministic:
        make_deterministic()
    seed_everything(cfg.seed)
    precision = resolve_precision(cfg.trainer.precision, device)
    summary = {"task": cfg.task.name, "split": cfg.split.name, "model": cfg.model.name, "seed": cfg.seed,
               "device": str(device), "precision": precision}
    began = time.perf_counter()
    try:
        task, data, model, optimizer = build_run(cfg, device)
    except ConfigError:  # settings refused before any work (DegenerateData): as a bad value, nothing recorded
        raise
    except Exception as error:  # e.g. a value only the optimizer itself rejects: the run still says why
        write_json(run_dir / METRICS_FILE, {**summary, "status": "failed", "error": repr(error)})
        raise
    order = torch.Generator().manual_seed(cfg.seed)  # batch order: its own generator, independent of init
    checkpoint_path = run_dir / CHECKPOINT
    if resume:
        state = restore(checkpoint or load_checkpoint(checkpoint_path), model, optimizer, order, device)
    else:
        state = TrainState()
    over = resume and training_over(task, state, cfg)
    earlier = read_metrics(run_dir) if resume else {}  # the run so far: whether it ended, its precision
    if over and is_complete(run_dir, earlier):
        raise ConfigError(f"trainer.epochs={cfg.trainer.epochs} is invalid with resume: the run in {run_dir} "
                          f"already completed after {state.epoch} epochs; pass a larger trainer.epochs to train on")
    earlier = earlier.get("precision")
    if earlier:  # e.g. started where bf16 is native, continued where it is not: "bf16, then fp32"
        summary["precision"] = earlier
        if earlier.split(", then ")[-1] != precision:
            log.warning("this run trained in %s before; trainer.precision=%s continues it in %s on this machine",
                        earlier, cfg.trainer.precision, precision)
            summary["precision"] = f"{earlier}, then {precision}"
    summary.update(params=count_params(model), headline=task.headline)
    log.info("%s / %s / %s: %d params, %s examples, on %s in %s%s", cfg.task.name, cfg.split.name, cfg.model.name,
             summary["params"], " / ".join(f"{len(idx)} {part}" for part, idx in data.parts().items()), device,
             precision + (f" (trainer.precision={cfg.trainer.precision})" if precision != cfg.trainer.precision else ""),
             f", resuming after epoch {state.epoch} step {state.step}" if resume else "")
    config = OmegaConf.to_container(cfg, resolve=True)
    trained_before = state.train_seconds
    # where this session's wall time went, from the data and model's building to the last write (this process's
    # start-up before it, imports included, is what scripts/wall_time.py adds)
    seconds = {"setup": time.perf_counter() - began}
    kept = [(state.epoch, state.step)] if resume else []  # what checkpoint.pt holds: (epoch, step)

    def save(s: TrainState) -> None:
        save_checkpoint(checkpoint_path, config, model, optimizer, s, order)
        kept[:] = [(s.epoch, s.step)]

    def finish(status: str, **extra) -> dict:
        last = state.history.metrics[-1] if state.history.metrics else {}
        seconds["total"] = time.perf_counter() - began
        return write_json(run_dir / METRICS_FILE, {
            **summary, "epochs": state.epoch, "step": state.step, "wall_seconds": round(state.wall_seconds, 3),
            "train_seconds": round(state.train_seconds, 3), "status": status, **extra, **last,
            "session_seconds": {k: round(v, 3) for k, v in seconds.items()}, "history": asdict(state.history)})

    # valid's columns too, so a sweep over data modes shows the same HParams columns for every run
    runlog = RunLog(run_dir, cfg, [f"{part}/{name}" for part in PARTS for name in ("loss", *METRICS)],
                    resumed_at=state.epoch if resume else None, resolved={"precision_used": precision})
    try:
        with stop or StopRequest() as stop:  # held to the end: a signal during the final outputs waits for them
            if over:
                log.info("training ended at epoch %d: writing the final outputs", state.epoch)
                evaluation = evaluate(model, task, data, cfg.trainer.eval_batch_size)
                check_evaluation(evaluation, state.epoch, state.step)
            else:
                evaluation = fit(model, task, data, optimizer, cfg, runlog, state, order, stop, save, precision)
            seconds["train"] = state.train_seconds - trained_before
            seconds["evaluate_log_checkpoint"] = time.perf_counter() - began - seconds["setup"] - seconds["train"]
            plotting = time.perf_counter()
            outputs = write_plots(task, data, model, evaluation, cfg, run_dir, runlog, state.epoch) if cfg.trainer.plots else []
            seconds["plots"] = time.perf_counter() - plotting
    except Interrupted as error:
        finish("interrupted", step=error.step, error=str(error))
        raise
    except Diverged as error:
        message = f"{error}; " + (f"the last good checkpoint (epoch {kept[0][0]}, step {kept[0][1]}) is kept"
                                  if kept else "no checkpoint was written: it diverged before the first one")
        message += "; try a smaller optimizer.lr"
        finish("diverged", step=error.step, error=message)
        raise Diverged(message, error.epoch, error.step) from None
    except Exception as error:
        finish("failed", error=repr(error))
        raise
    finally:
        runlog.close()
    metrics = finish("completed", outputs=[CHECKPOINT, *outputs])  # written last: completed means all are there
    log.info("done in %.1fs: %s -> %s", metrics["wall_seconds"], "  ".join(
        f"{part} {task.headline} {metrics[part][task.headline]:.4g}" for part in data.parts() if part != "train"),
        run_dir)
    return metrics
