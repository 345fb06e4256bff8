"""The entry point: `python -m coordexp.train task=... split=... model=... [key=value ...]`.

`main` is the Hydra wrapper; `train(cfg, run_dir)` does the work and returns the metrics it wrote.
"""
from __future__ import annotations

import logging
import random
import shutil
import sys
import time
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from coordexp.config import ConfigError, resolve_device, validate
from coordexp.data import Dataset, square_centres, held_out_mask
from coordexp.files import write_json
from coordexp.loop import Evaluation, fit
from coordexp.models import build_model, count_params
from coordexp.optim import build_optimizer
from coordexp.plots import final_figures, save_figure
from coordexp.runtime import configure_backends, keep_freed_memory
from coordexp.tasks import build_task
from coordexp.tblog import RunLog

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parent.parent / "configs")


def compose_config(*overrides: str) -> DictConfig:
    """The config `python -m coordexp.train OVERRIDES` would run (without the hydra node), for tests and scripts."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_dataset(cfg: DictConfig, task, device: torch.device) -> Dataset:
    """Every centre's inputs and targets on `device`, with the split's train and test indices."""
    centres = square_centres(cfg.data.canvas, cfg.data.square)
    is_test = held_out_mask(cfg.split.name, centres, cfg.data.canvas, cfg.data.test_fraction, cfg.data.split_seed)
    centres = centres.to(device)
    inputs, targets = task.build(centres)
    train_idx, test_idx = (~is_test).nonzero().squeeze(1), is_test.nonzero().squeeze(1)
    return Dataset(centres, inputs, targets, train_idx.to(device), test_idx.to(device))


def write_plots(task, data: Dataset, evaluation: Evaluation, cfg: DictConfig, run_dir: Path, runlog: RunLog,
                step: int) -> None:
    for name, fig in final_figures(task, data, evaluation, cfg.trainer.plot_examples).items():
        runlog.figure(f"plots/{name}", fig, step)
        save_figure(fig, run_dir / "plots" / f"{name}.png")


def train(cfg: DictConfig, run_dir: Path) -> dict:
    """Train one task x split x model as `cfg` says, write its outputs into `run_dir`, return metrics.json."""
    validate(cfg)
    device = resolve_device(cfg.device)
    if cfg.trainer.keep_freed_memory:
        keep_freed_memory()
    configure_backends(device)
    seed_everything(cfg.seed)
    task = build_task(cfg.task, cfg.data)
    data = build_dataset(cfg, task, device)
    model = build_model(cfg.model, cfg.task.name, cfg.data.canvas).to(device)
    optimizer = build_optimizer(cfg.optimizer, model)
    params = count_params(model)
    log.info("%s / %s / %s: %d params, %d train / %d test examples, on %s", cfg.task.name, cfg.split.name,
             cfg.model.name, params, len(data.train_idx), len(data.test_idx), device)
    summary = {"task": cfg.task.name, "split": cfg.split.name, "model": cfg.model.name, "params": params,
               "seed": cfg.seed, "device": str(device), "headline": task.headline}
    metric_names = [f"{part}/{name}" for part in ("train", "test") for name in ("loss", task.headline)]
    runlog = RunLog(run_dir, cfg, metric_names)
    start = time.perf_counter()
    try:
        evaluation, history = fit(model, task, data, optimizer, cfg, runlog)
        if cfg.trainer.plots:
            write_plots(task, data, evaluation, cfg, run_dir, runlog, history.epochs[-1])
    except Exception as error:
        write_json(run_dir / "metrics.json", {**summary, "status": "failed", "error": repr(error),
                                              "wall_seconds": time.perf_counter() - start})
        raise
    finally:
        runlog.close()
    metrics = {**summary, "epochs": history.epochs[-1], "wall_seconds": round(time.perf_counter() - start, 3),
               "train_seconds": round(history.train_seconds[-1], 3), "status": "completed", **evaluation.metrics}
    write_json(run_dir / "metrics.json", metrics)
    log.info("done in %.1fs: test %s %.4g -> %s", metrics["wall_seconds"], task.headline,
             metrics["test"][task.headline], run_dir)
    return metrics


def remove_if_only_hydra_files(run_dir: Path) -> None:
    """After a user error, leave no half-made run directory behind (but never touch one with results in it)."""
    if run_dir.is_dir() and all(p.name == ".hydra" or p.suffix == ".log" for p in run_dir.iterdir()):
        shutil.rmtree(run_dir)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry: returns the test value of the task's headline metric, for sweepers."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = train(cfg, run_dir)
    except ConfigError as error:
        logging.shutdown()
        remove_if_only_hydra_files(run_dir)
        print(f"coordexp: error: {error}", file=sys.stderr)
        sys.exit(2)
    return metrics["test"][metrics["headline"]]


if __name__ == "__main__":
    main()
