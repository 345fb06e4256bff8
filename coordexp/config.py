"""The config's schema: the structure, type, choices and range of every key, declared once as dataclasses in Hydra's
ConfigStore (the values and their comments live in configs/*.yaml), and its checks, the rules between keys included."""
from __future__ import annotations

import dataclasses
import inspect
import math
import typing
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
Precision = choice("Precision", "auto", "bf16", "fp32")  # auto: bf16 where the device runs it natively
TargetPart = choice("TargetPart", "held_out", "train")  # trainer.target on valid (else test) | on the training set
ScheduleName = choice("ScheduleName", "constant", "step", "cosine")
InputCoords = choice("InputCoords", "normalized", "pixels")
RenderLoss = choice("RenderLoss", "bce", "mse", "mse_sigmoid")  # MSE of the logits (the authors'), of the sigmoid
IoUTarget = choice("IoUTarget", "weighted", "binary")  # intersection weighted by the target (the authors') | target > 0
Init = choice("Init", "authors", "torch")  # the authors' he_normal/glorot kernels, zero biases | PyTorch's defaults
L2Scope = choice("L2Scope", "conv", "all")  # weight decay on conv kernels only (the authors') | on every kernel
PainterWidth = choice("PainterWidth", "fixed", "scaled")  # the renderer's painter: 32/32/64/64 (authors) | x mul
UniformSplit = choice("UniformSplit", "fraction", "authors")  # an exact held-out fraction | the authors' draw
Regressor = choice("Regressor", "uniform", "quarter")
Padding = choice("Padding", "tf", "symmetric")  # strided 'same' convs: TF's (the authors') | both sides alike
CentreMap = choice("CentreMap", "density", "softmax")
RegressionTarget = choice("RegressionTarget", "normalized", "pixels")  # centres / canvas | raw pixel coordinates
RegressionLoss = choice("RegressionLoss", "mse", "l1")
RegressionOutput = choice("RegressionOutput", "canvas", "raw")  # output x canvas | the output as it is (pixels)
CoordLayers = choice("CoordLayers", "first", "last", "all")  # which convs take the coordinates (first: the paper's)


# Fixed caps on numbers (docs/runs.md, "Bounds"): a seed is what numpy takes (32 bits); counts of epochs and steps
# are ones a run can finish; sizes past these would allocate more than any machine holds, and are refused first.
SEED_MAX = 2**32 - 1
COUNT_MAX = 10**9        # epochs, steps, intervals between evaluations, checkpoints and decays
BATCH_MAX = 2**20        # examples in one batch
EXAMPLES_MAX = 2**20     # sampled examples in one part (train, valid, test): each is a canvas-sized image or two
WIDTH_MAX = 64           # model.mul (channels x mul) and model.fs (a filter's side)
HIDDEN_MAX = 2**16       # an MLP layer's units
CANVAS_MAX = 256         # a canvas's side: every position of a square, each a canvas-sized image
DEPTH_MAX = 256          # an MLP's hidden layers


def bounded(low: float, high: float = math.inf, integer: bool = False, low_open: bool = False,
            high_open: bool = False) -> Callable[[Any], str | None]:
    """A range check: None for a finite number (an integer if `integer`) within the bounds, else what is allowed."""
    bounds = f"{'(' if low_open else '['}{low}, {'inf' if high == math.inf else high}{')' if high_open else ']'}"
    allowed = f"must be an integer {f'>= {low}' if high == math.inf else 'in ' + bounds}" if integer \
        else f"must be a finite number in {bounds}"

    def check(v: Any) -> str | None:
        ok = isinstance(v, int if integer else (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        return None if ok and (v > low if low_open else v >= low) and (v < high if high_open else v <= high) \
            else allowed
    return check


def power_of_two(v: Any) -> str | None:
    ok = bounded(16, CANVAS_MAX, integer=True)(v) is None and v & (v - 1) == 0
    return None if ok else f"must be a power of two from 16 to {CANVAS_MAX}"


def betas(v: Any) -> str | None:
    ok = len(v) == 2 and all(bounded(0, 1, high_open=True)(b) is None for b in v)
    return None if ok else "must be two numbers in [0, 1)"


def key(check: Callable[[Any], str | None] | None = None) -> Any:
    """A schema field: its value comes from the YAML (MISSING here), `check` bounds it beyond its type."""
    return field(default=MISSING, metadata={"check": check} if check else {})


def optional_key(check: Callable[[Any], str | None]) -> Any:
    """A field that may be null; otherwise checked like `key`."""
    return field(default=None, metadata={"check": lambda v: None if v is None else check(v) and check(v) + " or null"})


@dataclass
class Classification:
    name: str = key()
    input_coords: InputCoords = key()


@dataclass
class Regression:
    name: str = key()
    onehot_scale: float = key(bounded(0, low_open=True))
    target: RegressionTarget = key()
    loss: RegressionLoss = key()
    output: RegressionOutput = key()


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
    r_center: float = key(bounded(-1, 1))
    init: Init = key()
    l2_scope: L2Scope = key()
    fast: bool = key()  # same parameters, faster layers (configs/model/*.yaml say which)


@dataclass
class ConvFamily(Model):
    """Keys of both convolutional families: the width multiplier and the filter size."""
    mul: int = key(bounded(1, WIDTH_MAX, integer=True))
    fs: int = key(bounded(1, WIDTH_MAX, integer=True))


@dataclass
class Conv(ConvFamily):
    regressor: Regressor = key()
    padding: Padding = key()


@dataclass
class CoordConv(ConvFamily):
    centre_map: CentreMap = key()  # rendering only
    painter_width: PainterWidth = key()  # rendering only
    coord_layers: CoordLayers = key()  # counted over the model's convs in order
    coords: InputCoords = key()


@dataclass
class MLP(Model):
    hidden: int = key(bounded(1, HIDDEN_MAX, integer=True))
    depth: int = key(bounded(1, DEPTH_MAX, integer=True))


@dataclass
class OptimizerArgs:
    """Types and ranges of the optimizer arguments; which keys an optimizer takes is its class's signature (checked
    after composition: `~optimizer.betas` drops a setting's Adam betas for SGD)."""
    _target_: str = key()
    lr: float = key(bounded(0, low_open=True))
    weight_decay: float = key(bounded(0))
    betas: Any = key(betas)
    eps: float = key(bounded(0, low_open=True))
    momentum: float = key(bounded(0, 1, high_open=True))
    alpha: float = key(bounded(0, 1))
    nesterov: bool = key()
    fused: bool = key()


@dataclass
class Data:
    """Keys every data mode has."""
    name: str = key()
    canvas: int = key(power_of_two)
    square: int = key(bounded(1, CANVAS_MAX, integer=True))
    square_value: float = key(bounded(0, 1, low_open=True))


@dataclass
class Exhaustive(Data):
    uniform_split: UniformSplit = key()
    test_fraction: float = key(bounded(0, 1, low_open=True, high_open=True))
    split_seed: int = key(bounded(0, SEED_MAX, integer=True))


@dataclass
class Sampled(Data):
    train_size: int = key(bounded(1, EXAMPLES_MAX, integer=True))
    valid_size: int = key(bounded(1, EXAMPLES_MAX, integer=True))
    test_size: int = key(bounded(1, EXAMPLES_MAX, integer=True))
    train_seed: int = key(bounded(0, SEED_MAX, integer=True))
    valid_seed: int = key(bounded(0, SEED_MAX, integer=True))
    test_seed: int = key(bounded(0, SEED_MAX, integer=True))
    blur_sigma: float = key(bounded(0))


@dataclass
class Schedule:
    name: ScheduleName = key()
    every: int = key(bounded(1, COUNT_MAX, integer=True))
    gamma: float = key(bounded(0, 1, low_open=True))
    max_decays: Optional[int] = optional_key(bounded(0, COUNT_MAX, integer=True))
    final_factor: float = key(bounded(0, 1))


@dataclass
class Trainer:
    epochs: int = key(bounded(1, COUNT_MAX, integer=True))
    batch_size: int = key(bounded(1, BATCH_MAX, integer=True))
    max_steps_per_epoch: Optional[int] = optional_key(bounded(1, COUNT_MAX, integer=True))
    eval_every: int = key(bounded(1, COUNT_MAX, integer=True))
    eval_batch_size: int = key(bounded(1, BATCH_MAX, integer=True))
    checkpoint_every: int = key(bounded(1, COUNT_MAX, integer=True))
    deterministic: bool = key()
    precision: Precision = key()
    target: Optional[float] = optional_key(bounded(0))
    target_part: TargetPart = key()
    keep_freed_memory: bool = key()
    progress: bool = key()
    plots: bool = key()
    plot_examples: int = key(bounded(0, 16, integer=True))


@dataclass
class Config:
    seed: int = key(bounded(0, SEED_MAX, integer=True))
    device: Device = key()
    resume: Optional[str] = None
    task: Any = MISSING
    split: Split = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    data: Any = MISSING
    schedule: Schedule = MISSING
    trainer: Trainer = MISSING


# Each group option's YAML binds its schema in its defaults list: `- /schema/<group>/<option>@_here_`.
SCHEMAS = {"task": {"classification": Classification, "regression": Regression, "rendering": Rendering},
           "split": {"uniform": Split, "quarter": Split},
           "model": {"conv": Conv, "coordconv": CoordConv, "mlp": MLP, "coordmlp": MLP},
           "data": {"exhaustive": Exhaustive, "sampled": Sampled}}
TASKS, SPLITS, FAMILIES = (tuple(SCHEMAS[group]) for group in ("task", "split", "model"))
_store = ConfigStore.instance()
_store.store(name="schema", node=Config)
for _group, _options in SCHEMAS.items():
    for _option, _node in _options.items():
        _store.store(group=f"schema/{_group}", name=_option, node=_node)

def missing_keys(config: dict) -> list[str]:
    """The schema's keys that a saved run config (plain values) lacks: one written by an older coordexp."""
    def missing(node: dict, schema: type, prefix: str) -> list[str]:
        found, types = [], typing.get_type_hints(schema)
        for f in dataclasses.fields(schema):
            value = node.get(f.name, MISSING)
            if value is MISSING:
                found.append(prefix + f.name)
            elif isinstance(value, dict):  # a group's schema is its option's (the name), a section's its type
                sub = SCHEMAS[f.name].get(value.get("name")) if not prefix and f.name in SCHEMAS else types[f.name]
                found += missing(value, sub, f"{prefix}{f.name}.") if dataclasses.is_dataclass(sub) else []
        return found
    return missing(config, Config, "")


# Keys that only mean something alongside another setting: (key, setting key, the value it needs).
ONLY_WITH = [(key, setting, needed) for setting, needed, keys in (
    ("split.name", "uniform", ("data.test_fraction", "data.split_seed", "data.uniform_split")),
    ("data.uniform_split", "fraction", ("data.test_fraction", "data.split_seed")),
    ("schedule.name", "step", ("schedule.every", "schedule.gamma", "schedule.max_decays")),
    ("schedule.name", "cosine", ("schedule.final_factor",)),
    ("model.with_r", True, ("model.r_center",)),
    ("task.target", "pixels", ("task.output",)),
    ("task.name", "rendering", ("model.centre_map", "model.painter_width"))) for key in keys]


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
    if cfg.model.with_r and cfg.model.name not in ("coordconv", "coordmlp"):
        raise ConfigError(f"model.with_r=true is invalid with model={cfg.model.name}: it has no coordinate "
                          "channels; valid with model=coordconv or model=coordmlp")
    if cfg.data.get("blur_sigma") and cfg.task.name != "regression":  # the others' inputs are coordinates
        raise ConfigError(f"data.blur_sigma={cfg.data.blur_sigma!r} is invalid with task={cfg.task.name}: it blurs "
                          "image inputs; valid with task=regression (or data.blur_sigma=0)")
    side = cfg.data.canvas - cfg.data.square + 1  # every centre on the canvas bounds the training set
    if cfg.trainer.batch_size > cfg.data.get("train_size", side * side):
        raise ConfigError(f"trainer.batch_size={cfg.trainer.batch_size} is invalid: larger than the training set")
    keys, shown = override_keys(overrides), lambda v: str(v) if isinstance(v, Choice) else v  # a choice as typed
    for name, setting, needed in ONLY_WITH:
        if name in keys and OmegaConf.select(cfg, setting) != needed:
            value = "true" if needed is True else needed
            raise ConfigError(f"{name}={shown(OmegaConf.select(cfg, name))!r} has no effect with "
                              f"{setting}={shown(OmegaConf.select(cfg, setting))!r}: it applies only with "
                              f"{setting}={value}")
    unused = next((name for name in unused_model_keys(cfg) if name in keys), None)
    if unused:
        raise ConfigError(f"{unused}={shown(OmegaConf.select(cfg, unused))!r} has no effect with task={cfg.task.name} "
                          f"model={cfg.model.name}: that model does not read it")


def unused_model_keys(cfg: DictConfig) -> tuple[str, ...]:
    """The model keys that the model of cfg's task and family does not read (coordexp.models.build_model)."""
    regressor = cfg.model.get("regressor")
    unused = {("classification", "coordconv"): ("fs",), ("regression", "coordconv"): ("mul", "fs"),
              ("regression", "conv"): ("fs",) + (("padding",) if regressor == "uniform" else ()),
              ("classification", "conv"): ("regressor",), ("rendering", "conv"): ("regressor",)}
    return tuple(f"model.{key}" for key in unused.get((cfg.task.name, cfg.model.name), ()))


def override_keys(overrides: list[str]) -> list[str]:
    """The keys of command-line overrides ("+a.b=1" -> "a.b"; group choices "model=conv" -> "model")."""
    return [o.lstrip("+~").split("=", 1)[0] for o in overrides]
