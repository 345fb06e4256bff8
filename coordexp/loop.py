"""The one training loop: every task and model goes through `fit`; the task supplies loss and metrics."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from coordexp.data import Dataset, selection_part
from coordexp.optim import lr_factor, set_lr
from coordexp.progress import ProgressBar
from coordexp.rundir import Interrupted, StopRequest, TrainState
from coordexp.tasks import Task
from coordexp.tblog import RunLog

log = logging.getLogger(__name__)


class Diverged(Exception):
    """Training produced a non-finite number: in the loss, the weights, the optimizer state or an evaluation."""

    def __init__(self, message: str, epoch: int, step: int):
        self.epoch, self.step = epoch, step
        super().__init__(message)


def nonfinite_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Whether any parameter, floating-point buffer or optimizer state tensor holds a NaN or an infinity."""
    tensors = [*model.parameters(), *(b for b in model.buffers() if b.is_floating_point())]
    tensors += [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v) and v.is_floating_point()]
    return not bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())  # one host sync


def nonfinite_metrics(metrics: dict[str, dict[str, float]]) -> list[str]:
    """The 'part.metric' names of an evaluation's non-finite values."""
    return [f"{part}.{name}" for part, values in metrics.items() for name, v in values.items() if not math.isfinite(v)]


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
    """Outputs and per-example metrics for every example, and the mean of each metric on train, valid (where the
    data has one) and test."""

    outputs: Tensor
    per_example: dict[str, Tensor]
    metrics: dict[str, dict[str, float]]


def evaluate(model: nn.Module, task: Task, data: Dataset, batch_size: int) -> Evaluation:
    """Evaluate on the whole data set once; each part's means are read back to the host in one go."""
    outputs = predict(model, data.inputs, batch_size)
    per_example = task.per_example(outputs, data.targets)
    parts = data.parts().items()
    names = ["loss", *per_example]
    means = torch.stack([
        torch.stack([task.loss(outputs[idx], data.targets[idx])] + [v[idx].mean() for v in per_example.values()])
        for _, idx in parts
    ]).tolist()
    return Evaluation(outputs, per_example, {part: dict(zip(names, row)) for (part, _), row in zip(parts, means)})


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


def reached(task: Task, metrics: dict[str, float], target: float | None) -> bool:
    """Whether the headline metric of one part's `metrics` reached `target`: >= for accuracy and IoU, < for pixel
    error. The loop passes the part trainer.target_part names (target_part)."""
    if target is None:
        return False
    value = metrics[task.headline]
    return value >= target if task.higher_is_better else value < target


def check_evaluation(evaluation: Evaluation, epoch: int, step: int) -> None:
    """Raise Diverged if the evaluation after `epoch` gave a non-finite metric (outputs that overflow)."""
    bad = nonfinite_metrics(evaluation.metrics)
    if bad:
        raise Diverged(f"the evaluation after epoch {epoch}, step {step} gave non-finite {', '.join(bad)}", epoch, step)


def target_part(metrics: dict, on: str) -> str:
    """The part of an evaluation's `metrics` that trainer.target is read on: the training set for `on` "train",
    else the held-out part that selects (data.selection_part: valid where there is one, else test)."""
    return "train" if on == "train" else selection_part(metrics)


def training_over(task: Task, state: TrainState, cfg: DictConfig) -> bool:
    """Whether `state` has nothing left to train: every epoch done, or trainer.target reached at its last one."""
    history = state.history
    return state.epoch >= cfg.trainer.epochs or (
        bool(history.epochs) and history.epochs[-1] == state.epoch and state.perm is None
        and reached(task, history.metrics[-1][target_part(history.metrics[-1], cfg.trainer.target_part)],
                    cfg.trainer.target))


def fit(model: nn.Module, task: Task, data: Dataset, optimizer: torch.optim.Optimizer, cfg: DictConfig,
        runlog: RunLog, state: TrainState, order: torch.Generator, stop: StopRequest,
        save: Callable[[TrainState], None], precision: str) -> Evaluation:
    """Train from `state` to cfg.trainer.epochs in `precision` (trainer.precision resolved: bf16 or fp32),
    evaluating every eval_every epochs and after the last;
    stop early at the first evaluation whose headline metric reaches cfg.trainer.target (if set) on
    cfg.trainer.target_part: the training set, or the held-out part (valid where the data has one, else test).

    Calls `save(state)` every checkpoint_every epochs and at the end. Raises Interrupted (after saving)
    when `stop` has caught a signal, and Diverged (without saving) when the loss, a weight, the optimizer
    state or an evaluation becomes non-finite: a checkpoint never holds a non-finite model.
    """
    trainer = cfg.trainer
    n_train = len(data.train_idx)
    steps_per_epoch = math.ceil(n_train / trainer.batch_size)
    if trainer.max_steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, trainer.max_steps_per_epoch)
    total_steps = trainer.epochs * steps_per_epoch
    device = data.inputs.device
    progress = ProgressBar(trainer.epochs, trainer.progress)
    refresh = max(steps_per_epoch // 20, 1)
    # the first non-finite step, tracked on the device so the step needs no host sync to check it
    bad_step = torch.full((), -1, dtype=torch.long, device=device)
    step_count = torch.full((), state.step, dtype=torch.long, device=device)
    latest, evaluation = "", None
    session_start = time.perf_counter()

    def check_finite(with_state: bool = False) -> None:
        bad = int(bad_step)
        if bad >= 0:
            epoch = (bad - 1) // steps_per_epoch + 1
            raise Diverged(f"the training loss became non-finite at epoch {epoch}, step {bad}", epoch, bad)
        if with_state and nonfinite_state(model, optimizer):  # a finite loss can come with a non-finite update
            epoch = (state.step - 1) // steps_per_epoch + 1
            raise Diverged(f"the weights or optimizer state became non-finite by epoch {epoch}, step {state.step} "
                           "(the training loss was still finite)", epoch, state.step)

    def elapsed() -> float:
        return state.wall_seconds + time.perf_counter() - session_start

    # read once: a config lookup costs microseconds, a step of a small model not many more
    base_lr, batch_size = cfg.optimizer.lr, trainer.batch_size
    schedule = SimpleNamespace(**OmegaConf.to_container(cfg.schedule, resolve=True))
    model.train()
    if trainer.plots and state.step == 0:  # the parameters as initialised: where their histograms start
        runlog.parameter_histograms(model, 0)
    for epoch in range(state.epoch, trainer.epochs):
        epoch_start = time.perf_counter()
        if state.perm is None:
            state.perm = data.train_idx[torch.randperm(n_train, generator=order).to(device)]
            state.batch, state.loss_sum = 0, torch.zeros((), device=device)
        for b in range(state.batch, steps_per_epoch):
            idx = state.perm[b * batch_size:(b + 1) * batch_size]
            set_lr(optimizer, base_lr, lr_factor(schedule, state.step, steps_per_epoch, total_steps))
            loss = train_step(model, task, optimizer, data.inputs[idx], data.targets[idx], precision)
            state.loss_sum += loss
            state.batch, state.step = b + 1, state.step + 1
            step_count += 1
            bad_step = torch.where((bad_step < 0) & ~torch.isfinite(loss), step_count, bad_step)
            signum = stop.poll()
            if signum:
                check_finite(with_state=True)
                save(TrainState(**{**state.__dict__, "wall_seconds": elapsed()}))
                raise Interrupted(signum, epoch=state.epoch, step=state.step)
            if b % refresh == 0:
                check_finite()
                progress.update(epoch + b / steps_per_epoch, (state.loss_sum / (b + 1)).item(), latest)
        check_finite(with_state=True)
        train_loss = (state.loss_sum / steps_per_epoch).item()  # the epoch's one host sync: the timing is honest
        state.train_seconds += time.perf_counter() - epoch_start
        state.epoch, state.perm, state.loss_sum, state.batch = epoch + 1, None, None, 0
        runlog.scalars({"train/running_loss": train_loss, "lr": optimizer.param_groups[0]["lr"]}, state.epoch)
        last = state.epoch == trainer.epochs
        if state.epoch % trainer.eval_every == 0 or last:
            evaluation = evaluate(model, task, data, trainer.eval_batch_size)
            check_evaluation(evaluation, state.epoch, state.step)
            state.history.epochs.append(state.epoch)
            state.history.metrics.append(evaluation.metrics)
            runlog.scalars({f"{part}/{name}": value for part, values in evaluation.metrics.items()
                            for name, value in values.items()}, state.epoch)
            if trainer.plots:
                runlog.parameter_histograms(model, state.epoch)
            chosen = selection_part(evaluation.metrics)
            latest = f"{chosen} {task.headline} {evaluation.metrics[chosen][task.headline]:.4g}"
            progress.clear()
            log.info("epoch %d/%d  train loss %.4g  %s", state.epoch, trainer.epochs, train_loss, "  |  ".join(
                "  ".join(f"{part} {k} {v:.4g}" for k, v in values.items() if k != "loss")
                for part, values in evaluation.metrics.items()))
            stop_on = target_part(evaluation.metrics, trainer.target_part)
            if reached(task, evaluation.metrics[stop_on], trainer.target):
                log.info("%s %s reached trainer.target=%g after %.2fs of training: stopping", stop_on, task.headline,
                         trainer.target, state.train_seconds)
                last = True
        if state.epoch % trainer.checkpoint_every == 0 or last:
            state.wall_seconds, session_start = elapsed(), time.perf_counter()
            save(state)
        if last:
            break
    progress.clear()
    return evaluation
