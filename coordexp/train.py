"""The entry point: `python -m coordexp.train task=... split=... model=... [key=value ...]`.

`main` is the Hydra wrapper; `train(cfg, run_dir)` does the work and returns the metrics it wrote.
"""
from __future__ import annotations

import logging
import random
import sys
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from torch import nn

from coordexp.checkpoint import CHECKPOINT, TrainState, load_checkpoint, restore, save_checkpoint
from coordexp.compose import compose_config, exit_on_bad_command_line  # noqa: F401 (compose_config: for scripts)
from coordexp.config import CONFIG_DIR, ConfigError, resumed_config
from coordexp.data import Dataset, square_centres, held_out_mask
from coordexp.files import write_json
from coordexp.interrupt import Interrupted, StopRequest
from coordexp.loop import Diverged, Evaluation, fit
from coordexp.models import build_model, count_params
from coordexp.optim import build_optimizer
from coordexp.plots import final_figures, save_figure
from coordexp.runtime import configure_backends, keep_freed_memory, make_deterministic, resolve_device
from coordexp.tasks import METRICS, Task, build_task
from coordexp.tblog import RunLog

log = logging.getLogger(__name__)
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_dataset(cfg: DictConfig, task, device: torch.device) -> Dataset:
    """Every centre's inputs and targets on `device`, with the split's train and test indices."""
    centres = square_centres(cfg.data.canvas, cfg.data.square)
    is_test = held_out_mask(cfg.split.name, centres, cfg.data)
    centres = centres.to(device)
    inputs, targets = task.build(centres)
    train_idx, test_idx = (~is_test).nonzero().squeeze(1), is_test.nonzero().squeeze(1)
    return Dataset(centres, inputs, targets, train_idx.to(device), test_idx.to(device))


def write_plots(task, data: Dataset, evaluation: Evaluation, cfg: DictConfig, run_dir: Path, runlog: RunLog,
                step: int) -> None:
    for name, fig in final_figures(task, data, evaluation, cfg.trainer.plot_examples).items():
        runlog.figure(f"plots/{name}", fig, step)
        save_figure(fig, run_dir / "plots" / f"{name}.png")


def build_run(cfg: DictConfig, device: torch.device) -> tuple[Task, Dataset, nn.Module, torch.optim.Optimizer]:
    """The task, its data set on `device`, the model and its optimizer, as `cfg` configures them."""
    task = build_task(cfg.task, cfg.data)
    data = build_dataset(cfg, task, device)
    model = build_model(cfg.model, cfg.task.name, cfg.data.canvas).to(device)
    return task, data, model, build_optimizer(cfg.optimizer, model, cfg.model.l2_scope)


def train(cfg: DictConfig, run_dir: Path, resume: bool = False, stop: StopRequest | None = None) -> dict:
    """Train one task x split x model as `cfg` says, write its outputs into `run_dir`, return metrics.json.

    With `resume`, continue from run_dir's checkpoint. Raises Interrupted (checkpoint written) on
    SIGINT/SIGTERM, Diverged on a non-finite loss; metrics.json then says so in its `status`.
    """
    device = resolve_device(cfg.device)
    if cfg.trainer.keep_freed_memory:
        keep_freed_memory()
    configure_backends(device)
    if cfg.trainer.deterministic:
        make_deterministic()
    seed_everything(cfg.seed)
    summary = {"task": cfg.task.name, "split": cfg.split.name, "model": cfg.model.name, "seed": cfg.seed,
               "device": str(device)}
    try:
        task, data, model, optimizer = build_run(cfg, device)
    except Exception as error:  # e.g. a value only the optimizer itself rejects: the run still says why
        write_json(run_dir / "metrics.json", {**summary, "status": "failed", "error": repr(error)})
        raise
    order = torch.Generator().manual_seed(cfg.seed)  # batch order: its own generator, independent of init
    checkpoint_path = run_dir / CHECKPOINT
    state = restore(load_checkpoint(checkpoint_path), model, optimizer, order, device) if resume else TrainState()
    if state.epoch >= cfg.trainer.epochs:
        raise ConfigError(f"trainer.epochs={cfg.trainer.epochs} is invalid with resume: the run in {run_dir} "
                          f"already completed {state.epoch} epochs; pass a larger trainer.epochs to train on")
    summary.update(params=count_params(model), headline=task.headline)
    log.info("%s / %s / %s: %d params, %d train / %d test examples, on %s%s", cfg.task.name, cfg.split.name,
             cfg.model.name, summary["params"], len(data.train_idx), len(data.test_idx), device,
             f", resuming after epoch {state.epoch} step {state.step}" if resume else "")
    config = OmegaConf.to_container(cfg, resolve=True)

    def save(s: TrainState) -> None:
        save_checkpoint(checkpoint_path, config, model, optimizer, s, order)

    def finish(status: str, **extra) -> dict:
        last = state.history.metrics[-1] if state.history.metrics else {}
        metrics = {**summary, "epochs": state.epoch, "step": state.step, "wall_seconds": round(state.wall_seconds, 3),
                   "train_seconds": round(state.train_seconds, 3),
                   "status": status, **extra, **last}
        write_json(run_dir / "metrics.json", metrics)
        return metrics

    runlog = RunLog(run_dir, cfg, [f"{part}/{name}" for part in ("train", "test") for name in ("loss", *METRICS)],
                    resumed_at=state.epoch if resume else None)
    try:
        with stop or StopRequest() as stop:
            evaluation = fit(model, task, data, optimizer, cfg, runlog, state, order, stop, save)
        if cfg.trainer.plots:
            write_plots(task, data, evaluation, cfg, run_dir, runlog, state.epoch)
    except Interrupted as error:
        finish("interrupted", step=error.step, error=str(error))
        raise
    except Diverged as error:
        finish("diverged", step=error.step, error=str(error))
        raise
    except Exception as error:
        finish("failed", error=repr(error))
        raise
    finally:
        runlog.close()
    metrics = finish("completed")
    log.info("done in %.1fs: test %s %.4g -> %s", metrics["wall_seconds"], task.headline,
             metrics["test"][task.headline], run_dir)
    return metrics


def fail(error: Exception, code: int, message: str) -> None:
    """End a single run with `message` on stderr and exit status `code`; in a sweep, fail just this job."""
    if HydraConfig.get().mode == RunMode.MULTIRUN:
        raise error
    logging.shutdown()
    print(f"coordexp: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry: returns the test value of the task's headline metric, for sweepers."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    resume = cfg.resume is not None
    try:
        if resume:
            cfg = resumed_config(cfg, list(HydraConfig.get().overrides.task))
        metrics = train(cfg, run_dir, resume=resume)
    except ConfigError as error:
        fail(error, 2, f"error: {error}")
    except Interrupted as error:
        fail(error, error.exit_code, f"{error}; checkpoint saved. Continue with: "
                                     f"python -m coordexp.train resume={run_dir}")
    except Diverged as error:
        fail(error, 3, f"diverged: {error}")
    return metrics["test"][metrics["headline"]]


if __name__ == "__main__":
    exit_on_bad_command_line(sys.argv[1:])  # every job's config checked before Hydra creates anything
    main()
