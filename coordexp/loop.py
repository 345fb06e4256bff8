"""The one training loop: every task and model goes through `fit`; the task supplies loss and metrics."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from coordexp.data import Dataset
from coordexp.optim import lr_factor, set_lr
from coordexp.progress import ProgressBar
from coordexp.tasks import Task
from coordexp.tblog import RunLog

log = logging.getLogger(__name__)
PRECISIONS = ("bf16", "fp32")


@torch.no_grad()
def predict(model: nn.Module, inputs: Tensor, batch_size: int) -> Tensor:
    """Model outputs for every input, in fp32 and eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    outputs = torch.cat([model(inputs[i:i + batch_size]).float() for i in range(0, len(inputs), batch_size)])
    model.train(was_training)
    return outputs


@dataclass
class Evaluation:
    """Outputs and per-example metrics for every centre, and the mean of each metric on train and test."""

    outputs: Tensor
    per_example: dict[str, Tensor]
    metrics: dict[str, dict[str, float]]


def evaluate(model: nn.Module, task: Task, data: Dataset, batch_size: int) -> Evaluation:
    """Evaluate on the whole data set once; the train/test means are read back to the host in one go."""
    outputs = predict(model, data.inputs, batch_size)
    per_example = task.per_example(outputs, data.targets)
    loss = {part: task.loss(outputs[idx], data.targets[idx]) for part, idx in (("train", data.train_idx), ("test", data.test_idx))}
    names = ["loss", *per_example]
    means = torch.stack([
        torch.stack([loss[part]] + [values[idx].mean() for values in per_example.values()])
        for part, idx in (("train", data.train_idx), ("test", data.test_idx))
    ]).tolist()
    metrics = {part: dict(zip(names, row)) for part, row in zip(("train", "test"), means)}
    return Evaluation(outputs, per_example, metrics)


@dataclass
class History:
    """Per-evaluation metrics, as logged: one entry per evaluated epoch, with the seconds spent training
    (evaluations excluded) up to it."""

    epochs: list[int] = field(default_factory=list)
    metrics: list[dict[str, dict[str, float]]] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)


def train_step(model: nn.Module, task: Task, optimizer: torch.optim.Optimizer, inputs: Tensor, targets: Tensor,
               precision: str) -> Tensor:
    """One optimizer step on a batch; returns the loss as a device tensor (no host sync).

    precision "bf16" runs the forward pass under bf16 autocast (CPU or CUDA); the loss is always fp32.
    """
    with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        outputs = model(inputs)
    loss = task.loss(outputs, targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def reached(task: Task, test_metrics: dict[str, float], target: float | None) -> bool:
    """Whether the test headline metric reached `target`: >= for accuracy and IoU, < for pixel error."""
    if target is None:
        return False
    value = test_metrics[task.headline]
    return value >= target if task.higher_is_better else value < target


def fit(model: nn.Module, task: Task, data: Dataset, optimizer: torch.optim.Optimizer, cfg: DictConfig,
        runlog: RunLog) -> tuple[Evaluation, History]:
    """Train for cfg.trainer.epochs, evaluating every cfg.trainer.eval_every epochs and after the last;
    stop early at the first evaluation whose test headline metric reaches cfg.trainer.target (if set)."""
    trainer = cfg.trainer
    n_train = len(data.train_idx)
    steps_per_epoch = math.ceil(n_train / trainer.batch_size)
    if trainer.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, trainer.max_steps_per_epoch)
    total_steps = trainer.epochs * steps_per_epoch
    base_lr = cfg.optimizer.lr
    order = torch.Generator().manual_seed(cfg.seed)  # batch order: its own generator, independent of init
    progress = ProgressBar(trainer.epochs, trainer.progress)
    history, evaluation, latest = History(), None, ""
    refresh = max(steps_per_epoch // 20, 1)
    step, train_seconds = 0, 0.0
    model.train()
    for epoch in range(trainer.epochs):
        start = time.perf_counter()
        perm = data.train_idx[torch.randperm(n_train, generator=order).to(data.train_idx.device)]
        loss_sum = torch.zeros((), device=data.inputs.device)
        for b in range(steps_per_epoch):
            idx = perm[b * trainer.batch_size:(b + 1) * trainer.batch_size]
            set_lr(optimizer, base_lr, lr_factor(cfg.schedule, step, steps_per_epoch, total_steps))
            loss_sum += train_step(model, task, optimizer, data.inputs[idx], data.targets[idx], trainer.precision)
            step += 1
            if progress.enabled and b % refresh == 0:
                progress.update(epoch + b / steps_per_epoch, (loss_sum / (b + 1)).item(), latest)
        train_loss = (loss_sum / steps_per_epoch).item()  # the epoch's one host sync: the timing below is honest
        train_seconds += time.perf_counter() - start
        last = epoch == trainer.epochs - 1
        if (epoch + 1) % trainer.eval_every and not last:
            runlog.scalars({"train/running_loss": train_loss, "lr": optimizer.param_groups[0]["lr"]}, epoch + 1)
            continue
        evaluation = evaluate(model, task, data, trainer.eval_batch_size)
        history.epochs.append(epoch + 1)
        history.metrics.append(evaluation.metrics)
        history.train_seconds.append(train_seconds)
        runlog.scalars({"train/running_loss": train_loss, "lr": optimizer.param_groups[0]["lr"]}, epoch + 1)
        runlog.scalars({f"{part}/{name}": value for part, values in evaluation.metrics.items()
                        for name, value in values.items()}, epoch + 1)
        test = evaluation.metrics["test"]
        latest = f"test {task.headline} {test[task.headline]:.4g}"
        progress.clear()
        log.info("epoch %d/%d  train loss %.4g  %s  |  %s", epoch + 1, trainer.epochs, train_loss,
                 "  ".join(f"train {k} {v:.4g}" for k, v in evaluation.metrics["train"].items() if k != "loss"),
                 "  ".join(f"test {k} {v:.4g}" for k, v in test.items() if k != "loss"))
        if reached(task, test, trainer.target):
            log.info("test %s reached trainer.target=%g after %.2fs of training: stopping", task.headline,
                     trainer.target, train_seconds)
            break
    progress.clear()
    return evaluation, history
