"""The entry point: `python -m coordexp.train task=... split=... model=... [key=value ...]`.

`main` is the Hydra wrapper; `start` applies the run directory's rules (coordexp.rundir: train afresh,
continue, or report a run that already ended); `train(cfg, run_dir)` does the work and returns the
metrics it wrote.
"""
from __future__ import annotations

import atexit
import gc
import logging
import math
import random
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch import nn

from coordexp.compose import CONFIG_DIR, compose_config, exit_on_bad_command_line, resumed_config  # noqa: F401
from coordexp.config import ConfigError
from coordexp.data import PARTS, Dataset, data_centres, selection_part
from coordexp.loop import Diverged, Evaluation, check_evaluation, evaluate, fit, training_over
from coordexp.models import build_model, count_params
from coordexp.optim import build_optimizer
from coordexp.precision import resolve_precision
from coordexp.rundir import (CHECKPOINT, METRICS_FILE, Interrupted, RunDirError, StopRequest, TrainState, claim_run_dir,
                             is_complete, job_config, load_checkpoint, read_metrics, restore, save_checkpoint,
                             write_hydra_dir, write_json)
from coordexp.runtime import configure_backends, keep_freed_memory, make_deterministic, resolve_device
from coordexp.sweep import run_sweep_job
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
    parts = {part: idx.to(device) for part, idx in parts.items()}
    return Dataset(centres, inputs, targets, parts["train"], parts["test"], parts.get("valid"))


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


def train(cfg: DictConfig, run_dir: Path, resume: bool = False, stop: StopRequest | None = None) -> dict:
    """Train one task x split x model as `cfg` says, write its outputs into `run_dir`, return metrics.json.

    With `resume`, continue from run_dir's checkpoint; when its training is already over (a run stopped
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
    except Exception as error:  # e.g. a value only the optimizer itself rejects: the run still says why
        write_json(run_dir / METRICS_FILE, {**summary, "status": "failed", "error": repr(error)})
        raise
    order = torch.Generator().manual_seed(cfg.seed)  # batch order: its own generator, independent of init
    checkpoint_path = run_dir / CHECKPOINT
    state = restore(load_checkpoint(checkpoint_path), model, optimizer, order, device) if resume else TrainState()
    over = resume and training_over(task, state, cfg)
    if over and is_complete(run_dir, read_metrics(run_dir)):
        raise ConfigError(f"trainer.epochs={cfg.trainer.epochs} is invalid with resume: the run in {run_dir} "
                          f"already completed after {state.epoch} epochs; pass a larger trainer.epochs to train on")
    earlier = (read_metrics(run_dir) or {}).get("precision") if resume else None
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


def start(cfg: DictConfig, run_dir: Path, resume: bool, stop: StopRequest) -> dict:
    """Run `cfg` in run_dir as the directory's rules say (coordexp.rundir.claim_run_dir): train it afresh,
    continue the run of the same config that is there, or report the one that already ended; return its metrics."""
    claim = claim_run_dir(run_dir, job_config(cfg), resume=resume,
                          key="hydra.run.dir" if HydraConfig.get().mode == RunMode.RUN else "hydra.sweep.subdir")
    try:
        if claim.action == "done":
            metrics = read_metrics(run_dir)
            log.info("%s already holds this run, %s: not run again", run_dir, claim.status)
            if claim.status == "diverged":
                raise Diverged(metrics.get("error", "diverged earlier"), metrics.get("epochs", 0), metrics.get("step", 0))
            return metrics
        if claim.action == "fresh":
            write_hydra_dir(run_dir, cfg, HydraConfig.get())
        return train(cfg, run_dir, resume=claim.action == "resume", stop=stop)
    finally:
        claim.release()


def failed_job_value(cfg: DictConfig) -> float:
    """What a sweep job that did not complete returns to the sweeper: the worst value of the headline metric,
    so that a search counts it as its worst trial (Optuna 2 ends a whole search on a NaN)."""
    return -math.inf if build_task(cfg.task, cfg.data).higher_is_better else math.inf


def exit_with(code: int, message: str) -> None:
    """End a single run with `message` on stderr and exit status `code`."""
    logging.shutdown()
    print(f"coordexp: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry: returns the task's headline metric for sweepers, on valid where the data has it, else test."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        value = run_sweep_job(run_dir, Path(hydra_cfg.sweep.dir), lambda stop: start(cfg, run_dir, False, stop))
        return failed_job_value(cfg) if math.isnan(value) else value
    resume = cfg.resume is not None
    stop = StopRequest()
    try:
        if resume:
            cfg = resumed_config(cfg, list(hydra_cfg.overrides.task))
        metrics = start(cfg, run_dir, resume, stop)
    except (ConfigError, RunDirError) as error:
        exit_with(2, f"error: {error}")
    except Interrupted as error:
        exit_with(error.exit_code, f"{error}; checkpoint saved. Continue with: python -m coordexp.train resume={run_dir}")
    except Diverged as error:
        exit_with(3, f"diverged: {error}")
    if stop.caught:
        log.info("%s arrived after training ended: the run was completed first", signal.Signals(stop.caught).name)
    return metrics[selection_part(metrics)][metrics["headline"]]


if __name__ == "__main__":
    # at exit, the interpreter's last garbage collection walks every object torch and its compiler stack made
    # (~0.5 s a process); frozen objects are skipped, and everything a run writes is closed before then
    atexit.register(gc.freeze)
    exit_on_bad_command_line(sys.argv[1:])  # every job's config checked before Hydra creates anything
    main()
