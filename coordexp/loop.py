"""The one training loop: every task and model goes through `fit`; the task supplies loss and metrics."""
from __future__ import annotations

import logging
import math
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
    """Per-evaluation metrics, as logged: one entry per evaluated epoch."""

    epochs: list[int] = field(default_factory=list)
    metrics: list[dict[str, dict[str, float]]] = field(default_factory=list)


def fit(model: nn.Module, task: Task, data: Dataset, optimizer: torch.optim.Optimizer, cfg: DictConfig,
        runlog: RunLog) -> tuple[Evaluation, History]:
    """Train for cfg.trainer.epochs, evaluating every cfg.trainer.eval_every epochs and after the last."""
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
    step = 0
    model.train()
    for epoch in range(trainer.epochs):
        perm = data.train_idx[torch.randperm(n_train, generator=order).to(data.train_idx.device)]
        loss_sum = torch.zeros((), device=data.inputs.device)
        for b in range(steps_per_epoch):
            idx = perm[b * trainer.batch_size:(b + 1) * trainer.batch_size]
            set_lr(optimizer, base_lr, lr_factor(cfg.schedule, step, steps_per_epoch, total_steps))
            loss = task.loss(model(data.inputs[idx]), data.targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            step += 1
            if progress.enabled and b % refresh == 0:
                progress.update(epoch + b / steps_per_epoch, (loss_sum / (b + 1)).item(), latest)
        train_loss = (loss_sum / steps_per_epoch).item()
        last = epoch == trainer.epochs - 1
        if (epoch + 1) % trainer.eval_every and not last:
            runlog.scalars({"train/running_loss": train_loss, "lr": optimizer.param_groups[0]["lr"]}, epoch + 1)
            continue
        evaluation = evaluate(model, task, data, trainer.eval_batch_size)
        history.epochs.append(epoch + 1)
        history.metrics.append(evaluation.metrics)
        runlog.scalars({"train/running_loss": train_loss, "lr": optimizer.param_groups[0]["lr"]}, epoch + 1)
        runlog.scalars({f"{part}/{name}": value for part, values in evaluation.metrics.items()
                        for name, value in values.items()}, epoch + 1)
        test = evaluation.metrics["test"]
        latest = f"test {task.headline} {test[task.headline]:.4g}"
        progress.clear()
        log.info("epoch %d/%d  train loss %.4g  %s  |  %s", epoch + 1, trainer.epochs, train_loss,
                 "  ".join(f"train {k} {v:.4g}" for k, v in evaluation.metrics["train"].items() if k != "loss"),
                 "  ".join(f"test {k} {v:.4g}" for k, v in test.items() if k != "loss"))
    progress.clear()
    return evaluation, history
