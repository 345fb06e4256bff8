"""The config: its schema (structure, types, choices and ranges, declared once as dataclasses in Hydra's
ConfigStore), its composition, and its checks. Values and their comments live in configs/*.yaml; every
error names the key, the bad value and what is allowed, and is raised before any work starts.
"""
from __future__ import annotations

import dataclasses
import inspect
import itertools
import math
import re
import tempfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

import hydra.utils
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError


def _config_dir() -> str:
    """configs/ shipped inside the installed package, else the checkout's top-level configs/."""
    package = Path(__file__).resolve().parent
    installed = package / "configs"
    return str(installed if (installed / "config.yaml").is_file() else package.parent / "configs")


CONFIG_DIR = _config_dir()
CHECKPOINT = "checkpoint.pt"


class ConfigError(ValueError):
    """A user error in the configuration; the message is meant to be shown as it is."""


class Choice(str, Enum):
    """A config choice: a plain string everywhere (comparisons, JSON, f-strings), checked by OmegaConf."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


class Device(Choice):
    auto = "auto"  # cuda if available, else cpu
    cpu = "cpu"
    cuda = "cuda"


class Precision(Choice):
    bf16 = "bf16"
    fp32 = "fp32"


class ScheduleName(Choice):
    constant = "constant"
    step = "step"
    cosine = "cosine"


class InputCoords(Choice):
    normalized = "normalized"
    pixels = "pixels"


class RenderLoss(Choice):
    bce = "bce"
    mse = "mse"


class Regressor(Choice):
    uniform = "uniform"
    quarter = "quarter"


class CentreMap(Choice):
    density = "density"
    softmax = "softmax"


def choices(enum: type[Enum]) -> tuple[str, ...]:
    return tuple(member.value for member in enum)


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
class Rendering:
    name: str = key()
    input_coords: InputCoords = key()
    loss: RenderLoss = key()


@dataclass
class Split:
    name: str = key()


@dataclass
class Model:
    """Keys every model family has (with_r and r_center are unused by conv and mlp)."""

    name: str = key()
    with_r: bool = key()
    r_center: float = key(number(-1, 1))
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
    test_fraction: float = key(number(0, 1, low_open=True, high_open=True))
    split_seed: int = key(integer(0))


@dataclass
class Schedule:
    name: ScheduleName = key()
    every: int = key(integer(1))
    gamma: float = key(number(0, 1, low_open=True))
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
FAMILIES_WITH_COORDS = ("coordconv", "coordmlp")

# `resume=DIR` runs in DIR and leaves its saved .hydra/ config as it is.
OmegaConf.register_new_resolver("coordexp_run_dir", lambda resume, default: resume or default, replace=True)
OmegaConf.register_new_resolver("coordexp_output_subdir", lambda resume: None if resume else ".hydra", replace=True)


# ---- checks --------------------------------------------------------------------------------------------

def _check_node(node: DictConfig, schema: type, prefix: str) -> None:
    """Every key of `node` is a field of `schema` (a `+key=` append gets past Hydra) and passes its check."""
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for name in node:
        if name not in fields:
            raise ConfigError(f"{prefix}{name} is not a config key (not in struct {prefix.rstrip('.') or 'config'}); "
                              f"valid keys: {', '.join(fields)}")
    for name, f in fields.items():
        value = OmegaConf.select(node, name, throw_on_missing=False)
        if OmegaConf.is_missing(node, name):
            raise ConfigError(f"{prefix}{name} is not set: give it a value ({prefix}{name}=...)")
        if isinstance(value, ListConfig):
            value = list(value)
        problem = f.metadata.get("check", lambda v: None)(value) if not isinstance(value, DictConfig) else None
        if problem:
            raise ConfigError(f"{prefix}{name}={value!r} is invalid: {problem}")


def _check_optimizer(optimizer: DictConfig) -> None:
    """The optimizer's keys are its class's arguments, each within OptimizerArgs' range."""
    target = optimizer.get("_target_")
    try:
        accepted = set(inspect.signature(hydra.utils.get_class(target)).parameters) - {"self", "params"}
    except Exception as error:  # an unimportable or misspelt class: say so instead of failing later
        raise ConfigError(f"optimizer._target_={target!r} is invalid: {error}") from None
    for name in optimizer:
        if name != "_target_" and name not in accepted:
            raise ConfigError(f"optimizer.{name} is invalid with optimizer._target_={target}: it takes "
                              f"{', '.join(sorted(accepted))}; drop it with ~optimizer.{name}")
    checks = {f.name: f.metadata.get("check") for f in dataclasses.fields(OptimizerArgs)}
    for name, value in optimizer.items():
        value = list(value) if isinstance(value, ListConfig) else value
        problem = checks.get(name) and checks[name](value)
        if problem:
            raise ConfigError(f"optimizer.{name}={value!r} is invalid: {problem}")


def check(cfg: DictConfig, overrides: list[str] = ()) -> None:
    """Raise ConfigError for the first bad value in a composed run config (ranges, then cross-field rules).

    `overrides` are the command line's; an override of a key that has no effect with the rest is refused.
    """
    _check_node(cfg, Config, "")
    for group, options in SCHEMAS.items():
        schema = options.get(cfg[group].get("name"))
        if schema is None:
            raise ConfigError(f"{group}.name={cfg[group].get('name')!r} is invalid: valid choices: {', '.join(options)}")
        _check_node(cfg[group], schema, f"{group}.")
    for group, schema in (("data", Data), ("schedule", Schedule), ("trainer", Trainer)):
        _check_node(cfg[group], schema, f"{group}.")
    _check_optimizer(cfg.optimizer)
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


# ---- composition ---------------------------------------------------------------------------------------

def compose_config(*overrides: str, hydra_node: bool = False) -> DictConfig:
    """The config `python -m coordexp.train OVERRIDES` runs, checked (ConfigError on a bad value).

    Composition errors (an unknown group choice or key, a value of the wrong type, an unparsable override)
    are ConfigErrors too. With `hydra_node`, the `hydra` node is kept (the run directory, the launcher).
    """
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=hydra_node)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(composition_error(error, list(overrides))) from None
    _check_group_choices(overrides)
    job = cfg.copy()
    if hydra_node:
        with _open(job):
            del job["hydra"]
    check(job, [o for o in overrides if not o.lstrip("+~").startswith("hydra")])
    return cfg


def _check_group_choices(overrides: tuple[str, ...]) -> None:
    """A choice for an optional group (debug, recipe) that has no config is an error, not silently nothing."""
    for override in overrides:
        name, _, value = override.lstrip("+").partition("=")
        folder = Path(CONFIG_DIR) / name
        if "." not in name and name != "hydra" and folder.is_dir() and value not in ("null", ""):
            options = sorted(p.stem for p in folder.glob("*.yaml"))
            if value not in options:
                raise ConfigError(f"{name}={value} is invalid: valid choices: {', '.join(options)}")


class _open:
    """OmegaConf's struct flag off for a block (to drop the hydra node from a copy)."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg

    def __enter__(self):
        OmegaConf.set_struct(self.cfg, False)

    def __exit__(self, *exc):
        OmegaConf.set_struct(self.cfg, True)


def composition_error(error: Exception, overrides: list[str]) -> str:
    """One line for an error Hydra or OmegaConf raised while composing: the key, the value, what is allowed."""
    cause = error
    while cause.__cause__ is not None and not isinstance(cause, (ValidationError, ConfigAttributeError,
                                                                 ConfigKeyError)):
        cause = cause.__cause__
    message = str(cause).split("\n")[0]
    if isinstance(error, MissingConfigException):
        found = re.search(r"Could not find '([^']+)'", str(error))
        options = re.findall(r"^\t(\S+)$", str(error), flags=re.M)
        if found and "/" in found[1]:
            group, option = found[1].rsplit("/", 1)
            return f"{group}={option} is invalid: valid choices: {', '.join(options)}"
        return message
    if isinstance(error, OverrideParseException):
        reason = [line for line in str(error).splitlines()
                  if not line.startswith(("See ", "Error parsing override"))] or ["syntax error"]
        return f"override {error.override!r} cannot be parsed: {reason[0]} (an override is key=value)"
    full_key = getattr(cause, "full_key", None)
    if isinstance(cause, ValidationError) and full_key:
        value = next((o.split("=", 1)[1] for o in overrides if override_keys([o])[0] == full_key), cause.value)
        expected = re.search(r"expected one of \[(.*)\]", message)
        allowed = f"valid choices: {expected[1]}" if expected else _allowed(cause.object_type, full_key, message)
        return f"{full_key}={value!r} is invalid: {allowed}"
    if isinstance(cause, (ConfigAttributeError, ConfigKeyError)) and full_key:
        parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
        elsewhere = [f"{parent}={option}" for option, schema in SCHEMAS.get(parent, {}).items()
                     if full_key.rsplit(".", 1)[-1] in {f.name for f in dataclasses.fields(schema)}]
        return (f"{full_key} is not a config key here (not in struct {parent or 'config'})"
                + (f"; it is a key of {', '.join(elsewhere)}" if elsewhere else "")
                + "; python -m coordexp.train --cfg job lists the keys")
    return message


def _allowed(schema: Any, full_key: str, message: str) -> str:
    """What a schema field allows, in words: its range check's, else its type's."""
    found = {f.name: f for f in dataclasses.fields(schema)}.get(full_key.rsplit(".", 1)[-1]) \
        if dataclasses.is_dataclass(schema) else None
    if found is not None and "check" in found.metadata:
        return found.metadata["check"](object())  # any non-value makes a check say what it allows
    if found is not None and found.type in ("bool", bool):
        return "must be true or false"
    return message


# ---- the command line ----------------------------------------------------------------------------------

_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--info", "-i", "--shell-completion", "-sc",
               "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_VALUED_FLAGS = {"--cfg", "-c", "--package", "-p"}
MAX_CHECKED_JOBS = 4096  # a larger sweep's jobs are checked one swept value at a time


def command_line_overrides(argv: list[str]) -> tuple[list[str], bool] | None:
    """(overrides, multirun) of a `python -m coordexp.train` command line; None when it only asks for
    information or points Hydra at other configs (nothing of ours to check)."""
    overrides, multirun, skip = [], False, False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _INFO_FLAGS or arg.split("=", 1)[0] in _INFO_FLAGS:
            return None
        elif arg in _VALUED_FLAGS:
            skip = True
        elif arg in ("-m", "--multirun"):
            multirun = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, multirun


def job_overrides(overrides: list[str], multirun: bool) -> list[list[str]]:
    """The override lists of every job a command line runs: one, or a multirun's product of swept values."""
    if not multirun:
        return [overrides]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        raise ConfigError(composition_error(error, overrides)) from None
    options = []
    for override, line in zip(parsed, overrides):
        try:
            values = [f"{override.get_key_element()}={v}" for v in override.sweep_string_iterator()] \
                if override.is_sweep_override() else [line]
        except Exception:  # a search space (interval, tag) is the sweeper's to sample: check the rest
            values = []
        options.append(values or [None])
    if math.prod(len(o) for o in options) <= MAX_CHECKED_JOBS:
        return [[o for o in job if o is not None] for job in itertools.product(*options)]
    first = [o[0] for o in options]
    return [[o for o in first[:i] + [value] + first[i + 1:] if o is not None]
            for i, values in enumerate(options) for value in values]


def check_command_line(argv: list[str]) -> None:
    """Every check that can be made before Hydra creates anything, for every job of the command line."""
    parsed = command_line_overrides(argv)
    if parsed is None:
        return
    overrides, multirun = parsed
    for job in job_overrides(overrides, multirun):
        cfg = compose_config(*job, hydra_node=True)
        run = resumed_config(cfg, job) if cfg.resume is not None else cfg
        if cfg.resume is None and not multirun:
            check_writable(cfg.hydra.run.dir)
        if run.device == "cuda":
            resolve_device(run.device)
    if multirun:
        check_writable(cfg.hydra.sweep.dir, key="hydra.sweep.dir")


# ---- resume and the run directory ----------------------------------------------------------------------

def saved_config(run_dir: Path) -> dict:
    """The config saved in the checkpoint of `run_dir` (ConfigError when there is none or it is damaged)."""
    from coordexp.checkpoint import load_checkpoint  # torch: only when resuming
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"resume={str(run_dir)!r} is invalid: no {CHECKPOINT} there; valid: the run "
                          "directory of an earlier coordexp.train run (it holds metrics.json and a checkpoint)")
    try:
        return load_checkpoint(path)["config"]
    except Exception as error:
        raise ConfigError(f"resume={str(run_dir)!r} is invalid: its {CHECKPOINT} cannot be read "
                          f"({type(error).__name__}: {error})") from None


def resumed_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The config saved in the checkpoint of run directory `cfg.resume`, with the allowed overrides applied.

    Overrides that would change the experiment (task, split, model, data, optimizer, ...) are refused.
    """
    saved = OmegaConf.create(saved_config(Path(cfg.resume)))
    for override, name in zip(overrides, override_keys(overrides)):
        if name == "resume" or name.startswith("hydra."):
            if name == "hydra.run.dir":
                raise ConfigError(f"{override!r} is invalid with resume: a resumed run continues in its own "
                                  f"directory {cfg.resume}")
            continue
        if name not in RESUMABLE:
            raise ConfigError(f"{override!r} is refused with resume={cfg.resume}: it would change the experiment; "
                              f"a resumed run may change only {', '.join(RESUMABLE)}")
        OmegaConf.update(saved, name, OmegaConf.select(cfg, name))
    saved.resume = cfg.resume
    check_writable(cfg.resume, key="resume")
    return saved


def check_writable(path: str | Path, key: str = "hydra.run.dir") -> None:
    """Raise ConfigError unless a directory can be made (or written) at `path`, set by `key` (nothing is created)."""
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


def resolve_device(name: str):
    """`auto` picks cuda when it is available, else cpu; `cuda` without CUDA is a ConfigError."""
    import torch
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' is invalid: CUDA is not available on this machine; "
                          f"valid choices: {', '.join(choices(Device))} (auto falls back to cpu)")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(str(name))
