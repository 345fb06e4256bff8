"""Checks on a composed config before any work starts: each error names the key, the value and what is allowed."""
from __future__ import annotations

import inspect
import tempfile
from pathlib import Path
from typing import Any, Callable

import hydra.utils
import torch
from omegaconf import DictConfig, OmegaConf

from coordexp.rundir import CHECKPOINT, load_checkpoint
from coordexp.data import SPLITS
from coordexp.loop import PRECISIONS
from coordexp.models import CENTRE_MAPS, FAMILIES, REGRESSORS
from coordexp.optim import SCHEDULES
from coordexp.tasks import INPUT_COORDS, RENDER_LOSSES, TASKS

DEVICES = ("auto", "cpu", "cuda")
FAMILIES_WITH_COORDS = ("coordconv", "coordmlp")
# What a resumed run may change: how it runs, never what it computes (trainer.epochs extends it).
RESUMABLE = ("trainer.epochs", "trainer.eval_every", "trainer.eval_batch_size", "trainer.checkpoint_every",
             "trainer.progress", "trainer.plots", "trainer.plot_examples", "trainer.keep_freed_memory", "device")
# Keys that only mean something alongside another setting: (key, setting key, the value it needs).
ONLY_WITH = [
    ("data.test_fraction", "split.name", "uniform"),
    ("data.split_seed", "split.name", "uniform"),
    ("schedule.every", "schedule.name", "step"),
    ("schedule.gamma", "schedule.name", "step"),
    ("schedule.final_factor", "schedule.name", "cosine"),
    ("model.r_center", "model.with_r", True),
    ("model.centre_map", "task.name", "rendering"),
]
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


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "must be a directory path"


def power_of_two(v: Any) -> str | None:
    ok = _is_int(v) and 16 <= v <= 256 and v & (v - 1) == 0
    return None if ok else "must be a power of two from 16 to 256"


# (key, check): keys absent from the composed config (e.g. task.loss outside rendering) are skipped
RULES: list[tuple[str, Callable[[Any], str | None]]] = [
    ("seed", integer(0)),
    ("device", choice(DEVICES)),
    ("resume", optional(text)),
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
    ("model.centre_map", choice(CENTRE_MAPS)),
    ("data.canvas", power_of_two),
    ("data.square", integer(1)),
    ("data.square_value", number(0, 1, low_open=True)),
    ("data.test_fraction", number(0, 1, low_open=True, high_open=True)),
    ("data.split_seed", integer(0)),
    ("optimizer.lr", number(0, low_open=True)),
    ("optimizer.weight_decay", number(0)),
    ("optimizer.momentum", number(0, 1, high_open=True)),
    ("optimizer.nesterov", boolean),
    ("optimizer.fused", boolean),
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
    ("trainer.checkpoint_every", integer(1)),
    ("trainer.deterministic", boolean),
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
    _check_optimizer_arguments(cfg.optimizer)
    if cfg.data.square % 2 == 0 or cfg.data.square >= cfg.data.canvas:
        raise ConfigError(f"data.square={cfg.data.square!r} is invalid: must be odd and smaller than "
                          f"data.canvas={cfg.data.canvas}")
    if OmegaConf.select(cfg, "optimizer.nesterov", default=False) and not cfg.optimizer.momentum > 0:
        raise ConfigError(f"optimizer.nesterov=true is invalid with optimizer.momentum={cfg.optimizer.momentum}: "
                          "Nesterov momentum needs optimizer.momentum > 0")
    if cfg.model.with_r and cfg.model.name not in FAMILIES_WITH_COORDS:
        raise ConfigError(f"model.with_r=true is invalid with model={cfg.model.name}: it has no coordinate "
                          f"channels; valid with model={' or model='.join(FAMILIES_WITH_COORDS)}")
    if cfg.trainer.batch_size > _train_size_bound(cfg):
        raise ConfigError(f"trainer.batch_size={cfg.trainer.batch_size} is invalid: larger than the training set")


def _check_optimizer_arguments(optimizer: DictConfig) -> None:
    """Every optimizer key must be an argument of its class (a recipe tuned for Adam sets betas, say)."""
    target = optimizer.get("_target_")
    try:
        accepted = set(inspect.signature(hydra.utils.get_class(target)).parameters) - {"self", "params"}
    except Exception as error:  # an unimportable or misspelt class: say so instead of failing later
        raise ConfigError(f"optimizer._target_={target!r} is invalid: {error}") from None
    for key in optimizer:
        if key != "_target_" and key not in accepted:
            raise ConfigError(f"optimizer.{key} is invalid with optimizer._target_={target}: it takes "
                              f"{', '.join(sorted(accepted))}; drop it with ~optimizer.{key}")


def override_keys(overrides: list[str]) -> list[str]:
    """The keys of command-line overrides ("+a.b=1" -> "a.b"; group choices "model=conv" -> "model")."""
    return [o.lstrip("+~").split("=", 1)[0] for o in overrides]


def check_overrides(cfg: DictConfig, overrides: list[str]) -> None:
    """Refuse overrides that would have no effect with the rest of the config."""
    keys = override_keys(overrides)
    for key, setting, needed in ONLY_WITH:
        if key in keys and OmegaConf.select(cfg, setting) != needed:
            value = "true" if needed is True else needed
            raise ConfigError(f"{key}={OmegaConf.select(cfg, key)!r} has no effect with "
                              f"{setting}={OmegaConf.select(cfg, setting)!r}: it applies only with {setting}={value}")


def resumed_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The config saved in the checkpoint of run directory `cfg.resume`, with the allowed overrides applied.

    Overrides that would change the experiment (task, split, model, data, optimizer, ...) are refused.
    """
    run_dir = Path(cfg.resume)
    if not (run_dir / CHECKPOINT).is_file():
        raise ConfigError(f"resume={cfg.resume!r} is invalid: no {CHECKPOINT} there; valid: the run "
                          "directory of an earlier coordexp.train run (it holds metrics.json and a checkpoint)")
    saved = OmegaConf.create(load_checkpoint(run_dir / CHECKPOINT)["config"])
    for override, key in zip(overrides, override_keys(overrides)):
        if key == "resume" or key.startswith("hydra."):
            if key == "hydra.run.dir":
                raise ConfigError(f"{override!r} is invalid with resume: a resumed run continues in its own "
                                  f"directory {cfg.resume}")
            continue
        if key not in RESUMABLE:
            raise ConfigError(f"{override!r} is refused with resume={cfg.resume}: it would change the experiment; "
                              f"a resumed run may change only {', '.join(RESUMABLE)}")
        OmegaConf.update(saved, key, OmegaConf.select(cfg, key))
    saved.resume = cfg.resume
    return saved


def check_writable(path: str | Path, key: str = "hydra.run.dir") -> None:
    """Raise ConfigError unless a directory can be made at `path`, set by `key` (nothing is created)."""
    parent = Path(path).absolute()
    while not parent.exists():
        parent = parent.parent
    try:
        if not parent.is_dir():
            raise NotADirectoryError(f"{parent} is not a directory")
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as error:
        raise ConfigError(f"{key}={str(path)!r} is invalid: cannot write there ({error}); "
                          f"choose another with {key}=DIR") from None


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
