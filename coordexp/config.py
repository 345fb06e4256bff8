"""The config: its schema (structure, types, choices and ranges, declared once as dataclasses in Hydra's
ConfigStore), its composition, and its checks. Values and their comments live in configs/*.yaml; every
error names the key, the bad value and what is allowed, and is raised before any work starts.
"""
from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Optional

import hydra.utils
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf


class ConfigError(ValueError):
    """A user error in the configuration; the message is meant to be shown as it is."""


class Choice(str, Enum):
    """A config choice: a plain string everywhere (comparisons, JSON, f-strings), checked by OmegaConf."""

    __str__ = lambda self: self.value  # noqa: E731
    __format__ = lambda self, spec: format(self.value, spec)  # noqa: E731


def choice(name: str, *values: str) -> type[Choice]:
    return Choice(name, [(v, v) for v in values], module=__name__, qualname=name)


Device = choice("Device", "auto", "cpu", "cuda")  # auto: cuda when it is available, else cpu
Precision = choice("Precision", "bf16", "fp32")
ScheduleName = choice("ScheduleName", "constant", "step", "cosine")
InputCoords = choice("InputCoords", "normalized", "pixels")
RenderLoss = choice("RenderLoss", "bce", "mse", "mse_sigmoid")  # MSE of the logits (the authors'), of the sigmoid
IoUTarget = choice("IoUTarget", "weighted", "binary")  # intersection weighted by the target (the authors') | target > 0
Init = choice("Init", "authors", "torch")  # the authors' he_normal/glorot kernels, zero biases | PyTorch's defaults
L2Scope = choice("L2Scope", "conv", "all")  # weight decay on conv kernels only (the authors') | on every kernel
PainterWidth = choice("PainterWidth", "fixed", "scaled")  # the renderer's painter: 32/32/64/64 (authors) | x mul
UniformSplit = choice("UniformSplit", "fraction", "authors")  # an exact held-out fraction | the authors' draw
Regressor = choice("Regressor", "uniform", "quarter")
CentreMap = choice("CentreMap", "density", "softmax")


# ---- range checks: each returns None when the value is allowed, else what is allowed -------------------

def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

def integer(low: int, high: int | None = None) -> Callable[[Any], str | None]:
    allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
    return lambda v: None if _is_int(v) and v >= low and (high is None or v <= high) else f"must be {allowed}"


def number(low: float, high: float | None = None, low_open: bool = False, high_open: bool = False):
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    allowed = f"a finite number in {left}{low}, {'inf' if high is None else high}{right}"

    def check(v):
        ok = _is_number(v) and (v > low if low_open else v >= low)
        ok = ok and (high is None or (v < high if high_open else v <= high))
        return None if ok else f"must be {allowed}"
    return check


def text(v: Any) -> str | None:
    return None if isinstance(v, str) and v else "must be a directory path"


def power_of_two(v: Any) -> str | None:
    ok = _is_int(v) and 16 <= v <= 256 and v & (v - 1) == 0
    return None if ok else "must be a power of two from 16 to 256"


def betas(v: Any) -> str | None:
    ok = len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v)
    return None if ok else "must be two numbers in [0, 1)"


def key(check: Callable[[Any], str | None] | None = None) -> Any:
    """A schema field: its value comes from the YAML (MISSING here), `check` bounds it beyond its type."""
    return field(default=MISSING, metadata={"check": check} if check else {})


def optional_key(check: Callable[[Any], str | None]) -> Any:
    """A field that may be null; otherwise checked like `key`."""
    return field(default=None, metadata={"check": lambda v: None if v is None else check(v) and check(v) + " or null"})


# ---- the schema ----------------------------------------------------------------------------------------

@dataclass
class Classification:
    name: str = key()
    input_coords: InputCoords = key()


@dataclass
class Regression:
    name: str = key()
    onehot_scale: float = key(number(0, low_open=True))


@dataclass
class Rendering(Classification):
    loss: RenderLoss = key()
    iou: IoUTarget = key()


@dataclass
class Split:
    name: str = key()


@dataclass
class Model:
    """Keys every model family has (with_r and r_center are unused by conv and mlp)."""

    name: str = key()
    with_r: bool = key()
    r_center: float = key(number(-1, 1))
    init: Init = key()
    l2_scope: L2Scope = key()
    fast: bool = key()


@dataclass
class Conv(Model):
    mul: int = key(integer(1))
    fs: int = key(integer(1))
    regressor: Regressor = key()


@dataclass
class CoordConv(Model):
    mul: int = key(integer(1))
    fs: int = key(integer(1))
    centre_map: CentreMap = key()
    painter_width: PainterWidth = key()


@dataclass
class MLP(Model):
    hidden: int = key(integer(1))
    depth: int = key(integer(1))


@dataclass
class OptimizerArgs:
    """Types and ranges of the optimizer arguments coordexp's configs use. Which keys an optimizer takes is
    its class's own signature (a recipe for Adam sets betas; `~optimizer.betas` drops it for SGD), so this
    node is checked after composition rather than typed during it."""

    _target_: str = key()
    lr: float = key(number(0, low_open=True))
    weight_decay: float = key(number(0))
    betas: Any = key(betas)
    eps: float = key(number(0, low_open=True))
    momentum: float = key(number(0, 1, high_open=True))
    alpha: float = key(number(0, 1))
    nesterov: bool = key()
    fused: bool = key()


@dataclass
class Data:
    canvas: int = key(power_of_two)
    square: int = key(integer(1))
    square_value: float = key(number(0, 1, low_open=True))
    uniform_split: UniformSplit = key()
    test_fraction: float = key(number(0, 1, low_open=True, high_open=True))
    split_seed: int = key(integer(0))


@dataclass
class Schedule:
    name: ScheduleName = key()
    every: int = key(integer(1))
    gamma: float = key(number(0, 1, low_open=True))
    max_decays: Optional[int] = optional_key(integer(0))
    final_factor: float = key(number(0, 1))


@dataclass
class Trainer:
    epochs: int = key(integer(1))
    batch_size: int = key(integer(1))
    max_steps_per_epoch: Optional[int] = optional_key(integer(1))
    eval_every: int = key(integer(1))
    eval_batch_size: int = key(integer(1))
    checkpoint_every: int = key(integer(1))
    deterministic: bool = key()
    precision: Precision = key()
    target: Optional[float] = optional_key(number(0))
    keep_freed_memory: bool = key()
    progress: bool = key()
    plots: bool = key()
    plot_examples: int = key(integer(0, 16))


@dataclass
class Config:
    seed: int = key(integer(0))
    device: Device = key()
    resume: Optional[str] = optional_key(text)
    task: Any = MISSING
    split: Split = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    data: Data = MISSING
    schedule: Schedule = MISSING
    trainer: Trainer = MISSING


# Each group option's YAML binds its schema in its defaults list: `- /schema/<group>/<option>@_here_`.
SCHEMAS = {"task": {"classification": Classification, "regression": Regression, "rendering": Rendering},
           "split": {"uniform": Split, "quarter": Split},
           "model": {"conv": Conv, "coordconv": CoordConv, "mlp": MLP, "coordmlp": MLP}}
TASKS, SPLITS, FAMILIES = (tuple(SCHEMAS[group]) for group in ("task", "split", "model"))
_store = ConfigStore.instance()
_store.store(name="schema", node=Config)
for _group, _options in SCHEMAS.items():
    for _option, _node in _options.items():
        _store.store(group=f"schema/{_group}", name=_option, node=_node)

# Keys that only mean something alongside another setting: (key, setting key, the value it needs).
ONLY_WITH = [
    ("data.test_fraction", "split.name", "uniform"),
    ("data.split_seed", "split.name", "uniform"),
    ("data.uniform_split", "split.name", "uniform"),
    ("data.test_fraction", "data.uniform_split", "fraction"),
    ("data.split_seed", "data.uniform_split", "fraction"),
    ("schedule.every", "schedule.name", "step"),
    ("schedule.gamma", "schedule.name", "step"),
    ("schedule.max_decays", "schedule.name", "step"),
    ("schedule.final_factor", "schedule.name", "cosine"),
    ("model.r_center", "model.with_r", True),
    ("model.centre_map", "task.name", "rendering"),
    ("model.painter_width", "task.name", "rendering"),
]
FAMILIES_WITH_COORDS = ("coordconv", "coordmlp")



# ---- checks --------------------------------------------------------------------------------------------

def _check_node(node: DictConfig, prefix: str, schema: type | None, typed: dict) -> None:
    """Every key of `node` is a field of its schema (a `+key=` append gets past Hydra) and passes its check."""
    fields = {f.name: f for f in dataclasses.fields(schema or OmegaConf.get_type(node))}
    for name in node:
        if name not in fields:
            raise ConfigError(f"{prefix}{name} is not a config key (not in struct {prefix.rstrip('.') or 'config'}); "
                              f"valid keys: {', '.join(fields)}")
        if OmegaConf.is_missing(node, name):
            raise ConfigError(f"{prefix}{name} is not set: give it a value ({prefix}{name}=...)")
        value = node[name]
        if isinstance(value, DictConfig):
            _check_node(value, f"{prefix}{name}.", OptimizerArgs if name == "optimizer" and not prefix else None, typed)
            continue
        value = list(value) if isinstance(value, ListConfig) else value
        problem = fields[name].metadata.get("check", lambda v: None)(value)
        if problem:
            raise ConfigError(f"{prefix}{name}={typed.get(prefix + name, value)!r} is invalid: {problem}")


def check(cfg: DictConfig, overrides: list[str] = ()) -> None:
    """Raise ConfigError for the first bad value in a composed run config (ranges, then the rules between keys).

    `overrides` are the command line's; an override of a key that has no effect with the rest is refused.
    """
    for group, options in SCHEMAS.items():  # a group's name is its option's: `task.name=foo` is no task
        if options.get(cfg[group].name) is not OmegaConf.get_type(cfg[group]):
            raise ConfigError(f"{group}.name={cfg[group].name!r} is invalid: valid choices: {', '.join(options)}")
    typed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(list(overrides))
             if not o.is_delete()}  # a bad value is shown as the command line wrote it (-1, not -1.0)
    _check_node(cfg, "", Config, typed)
    target = cfg.optimizer._target_  # which keys an optimizer takes is its class's own signature
    try:
        accepted = set(inspect.signature(hydra.utils.get_class(target)).parameters) - {"self", "params"}
    except Exception as error:  # an unimportable or misspelt class: say so instead of failing later
        raise ConfigError(f"optimizer._target_={target!r} is invalid: {error}") from None
    for name in cfg.optimizer:
        if name != "_target_" and name not in accepted:
            raise ConfigError(f"optimizer.{name} is invalid with optimizer._target_={target}: it takes "
                              f"{', '.join(sorted(accepted))}; drop it with ~optimizer.{name}")
    _check_rules(cfg, overrides)


def _check_rules(cfg: DictConfig, overrides: list[str]) -> None:
    """The rules between keys, in one place."""
    if cfg.data.square % 2 == 0 or cfg.data.square >= cfg.data.canvas:
        raise ConfigError(f"data.square={cfg.data.square!r} is invalid: must be odd and smaller than "
                          f"data.canvas={cfg.data.canvas}")
    if cfg.optimizer.get("nesterov", False) and not cfg.optimizer.momentum > 0:
        raise ConfigError(f"optimizer.nesterov=true is invalid with optimizer.momentum={cfg.optimizer.momentum}: "
                          "Nesterov momentum needs optimizer.momentum > 0")
    if cfg.model.with_r and cfg.model.name not in FAMILIES_WITH_COORDS:
        raise ConfigError(f"model.with_r=true is invalid with model={cfg.model.name}: it has no coordinate "
                          f"channels; valid with model={' or model='.join(FAMILIES_WITH_COORDS)}")
    side = cfg.data.canvas - cfg.data.square + 1  # every centre on the canvas bounds the training set
    if cfg.trainer.batch_size > side * side:
        raise ConfigError(f"trainer.batch_size={cfg.trainer.batch_size} is invalid: larger than the training set")
    keys = override_keys(overrides)
    for name, setting, needed in ONLY_WITH:
        if name in keys and OmegaConf.select(cfg, setting) != needed:
            value = "true" if needed is True else needed
            raise ConfigError(f"{name}={_shown(OmegaConf.select(cfg, name))!r} has no effect with "
                              f"{setting}={_shown(OmegaConf.select(cfg, setting))!r}: it applies only with "
                              f"{setting}={value}")


def _shown(value: Any) -> Any:
    """A config value as the user wrote it (a choice as its plain string)."""
    return str(value) if isinstance(value, Choice) else value


def override_keys(overrides: list[str]) -> list[str]:
    """The keys of command-line overrides ("+a.b=1" -> "a.b"; group choices "model=conv" -> "model")."""
    return [o.lstrip("+~").split("=", 1)[0] for o in overrides]
