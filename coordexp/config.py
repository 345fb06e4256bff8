"""Checks on a composed config before any work starts: each error names the key, the value and what is allowed."""
from __future__ import annotations

from typing import Any, Callable

import torch
from omegaconf import DictConfig, OmegaConf

from coordexp.data import SPLITS
from coordexp.loop import PRECISIONS
from coordexp.models import FAMILIES, REGRESSORS
from coordexp.optim import SCHEDULES
from coordexp.tasks import INPUT_COORDS, RENDER_LOSSES, TASKS

DEVICES = ("auto", "cpu", "cuda")
_ABSENT = object()


class ConfigError(ValueError):
    """A user error in the configuration; the message is meant to be shown as it is."""


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def choice(options: tuple[str, ...]) -> Callable[[Any], str | None]:
    return lambda v: None if v in options else f"valid choices: {', '.join(options)}"


def integer(low: int, high: int | None = None) -> Callable[[Any], str | None]:
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return lambda v: None if _is_int(v) and v >= low and (high is None or v <= high) else f"must be {allowed}"


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False):
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    allowed = f"a number in {left}{low}, {'inf' if high is None else high}{right}"

    def check(v):
        ok = _is_number(v) and (v > low if low_open else v >= low)
        ok = ok and (high is None or (v < high if high_open else v <= high))
        return None if ok else f"must be {allowed}"
    return check


def optional(check: Callable[[Any], str | None]) -> Callable[[Any], str | None]:
    return lambda v: None if v is None else (check(v) and check(v) + " or null")


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def power_of_two(v: Any) -> str | None:
    ok = _is_int(v) and 16 <= v <= 256 and v & (v - 1) == 0
    return None if ok else "must be a power of two from 16 to 256"


# (key, check): keys absent from the composed config (e.g. task.loss outside rendering) are skipped
RULES: list[tuple[str, Callable[[Any], str | None]]] = [
    ("seed", integer(0)),
    ("device", choice(DEVICES)),
    ("task.name", choice(TASKS)),
    ("task.input_coords", choice(INPUT_COORDS)),
    ("task.loss", choice(RENDER_LOSSES)),
    ("task.onehot_scale", number(0, low_open=True)),
    ("split.name", choice(SPLITS)),
    ("model.name", choice(FAMILIES)),
    ("model.mul", integer(1)),
    ("model.fs", integer(1)),
    ("model.hidden", integer(1)),
    ("model.depth", integer(1)),
    ("model.regressor", choice(REGRESSORS)),
    ("model.with_r", boolean),
    ("model.r_center", number(-1, 1)),
    ("model.fast", boolean),
    ("data.canvas", power_of_two),
    ("data.square", integer(1)),
    ("data.square_value", number(0, 1, low_open=True)),
    ("data.test_fraction", number(0, 1, low_open=True, high_open=True)),
    ("data.split_seed", integer(0)),
    ("optimizer.lr", number(0, low_open=True)),
    ("optimizer.weight_decay", number(0)),
    ("optimizer.momentum", number(0, 1, high_open=True)),
    ("optimizer.eps", number(0, low_open=True)),
    ("optimizer.alpha", number(0, 1)),
    ("schedule.name", choice(SCHEDULES)),
    ("schedule.every", integer(1)),
    ("schedule.gamma", number(0, 1, low_open=True)),
    ("schedule.final_factor", number(0, 1)),
    ("trainer.epochs", integer(1)),
    ("trainer.batch_size", integer(1)),
    ("trainer.max_steps_per_epoch", optional(integer(1))),
    ("trainer.eval_every", integer(1)),
    ("trainer.eval_batch_size", integer(1)),
    ("trainer.precision", choice(PRECISIONS)),
    ("trainer.target", optional(number(0))),
    ("trainer.keep_freed_memory", boolean),
    ("trainer.progress", boolean),
    ("trainer.plots", boolean),
    ("trainer.plot_examples", integer(0, 16)),
]


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first bad value in `cfg`, naming the key, the value and what is allowed."""
    for key, check in RULES:
        value = OmegaConf.select(cfg, key, default=_ABSENT)
        if value is _ABSENT:
            continue
        problem = check(value)
        if problem:
            raise ConfigError(f"{key}={value!r} is invalid: {problem}")
    betas = OmegaConf.select(cfg, "optimizer.betas", default=None)
    if betas is not None and not (len(betas) == 2 and all(_is_number(b) and 0 <= b < 1 for b in betas)):
        raise ConfigError(f"optimizer.betas={list(betas)!r} is invalid: must be two numbers in [0, 1)")
    if cfg.data.square % 2 == 0 or cfg.data.square >= cfg.data.canvas:
        raise ConfigError(f"data.square={cfg.data.square!r} is invalid: must be odd and smaller than "
                          f"data.canvas={cfg.data.canvas}")
    if cfg.trainer.batch_size > _train_size_bound(cfg):
        raise ConfigError(f"trainer.batch_size={cfg.trainer.batch_size} is invalid: larger than the training set")


def _train_size_bound(cfg: DictConfig) -> int:
    """An upper bound on the number of training examples: every centre on the canvas."""
    side = cfg.data.canvas - cfg.data.square + 1
    return side * side


def resolve_device(name: str) -> torch.device:
    """`auto` picks cuda when it is available, else cpu; `cuda` without CUDA is a ConfigError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is invalid: CUDA is not available on this machine; "
                          f"valid choices: {', '.join(DEVICES)} (auto falls back to cpu)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
