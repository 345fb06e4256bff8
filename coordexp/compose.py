"""Composing a config from overrides as `python -m coordexp.train` does, or from a run's checkpoint to resume it,
and checking a single run in Hydra's on_run_start, before anything is written: a bad value is one line, exit
status 2. (A sweep's jobs are checked in its on_multirun_start: coordexp.sweep.)"""
from __future__ import annotations

import dataclasses
import functools
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.experimental.callback import Callback
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from coordexp.rundir import CHECKPOINT, Claim, RunDirError, claim_run_dir, job_config, load_checkpoint
from coordexp.config import SCHEMAS, ConfigError, check, override_keys


def _config_dir() -> str:
    """configs/ shipped inside the installed package, else the checkout's top-level configs/."""
    package = Path(__file__).resolve().parent
    installed = package / "configs"
    return str(installed if (installed / "config.yaml").is_file() else package.parent / "configs")


CONFIG_DIR = _config_dir()


def compose_config(*overrides: str, hydra_node: bool = False) -> DictConfig:
    """The config `python -m coordexp.train OVERRIDES` runs, checked (ConfigError on a bad value).

    Composition errors (an unknown group choice or key, a value of the wrong type, an unparsable override)
    are ConfigErrors too. With `hydra_node`, the `hydra` node is kept (the run directory, the launcher).
    """
    try:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(composition_error(error, list(overrides))) from None
    _check_group_choices(overrides)
    check_choices(cfg.hydra.runtime.choices, job=cfg.hydra.mode != RunMode.MULTIRUN)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if hydra_node else without_hydra(cfg)
    check(job, [o for o in overrides if not o.lstrip("+~").startswith("hydra")])
    return cfg


def without_hydra(cfg: DictConfig) -> DictConfig:
    """`cfg` without its hydra node, in place: the rest keeps its schema's type and struct flag."""
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def check_choices(choices: DictConfig, job: bool = True) -> None:
    """The group choices that do not combine, each one line naming both sides (ConfigError). A setting belongs to
    one task x model (its name starts with it); a multirun states the task and model it is for in its file (its
    defaults list's `override /task`, `override /model`, or the models it sweeps), which a command-line choice
    could otherwise replace silently. A multirun's own config (not `job`) has not swept its groups yet: the models it
    sweeps are checked per job."""
    setting, pair = choices.get("setting"), f"{choices.get('task')}_{choices.get('model')}"
    if setting and setting != pair and not setting.startswith(pair + "_"):
        raise ConfigError(f"setting={setting} is invalid with task={choices.get('task')} model={choices.get('model')}: "
                          f"it is a setting of another task x model; valid here: the settings named {pair}*")
    multirun = choices.get("multirun")
    needs = dict(multirun_needs(multirun, swept=job)) if multirun else {}
    if any(choices.get(group) not in options.split(",") for group, options in needs.items()):
        chosen = " ".join(f"{group}={choices.get(group)}" for group in needs)
        raise ConfigError(f"multirun={multirun} is invalid with {chosen}: it is a multirun of "
                          f"{' '.join(f'{group}={options}' for group, options in needs.items())}; choose that "
                          f"{' and '.join(needs)} (or leave them out), or another multirun")


@functools.lru_cache(maxsize=None)  # a sweep's check asks once per distinct group choices: read each file once
def multirun_needs(name: str, swept: bool = True) -> dict[str, str]:
    """The task and model a multirun of configs/multirun/ is for (with `swept`, a model it sweeps: 'mlp,coordmlp'),
    as its file and those of the multiruns it extends say: {} for one that runs on any."""
    config = OmegaConf.load(Path(CONFIG_DIR) / "multirun" / f"{name}.yaml")
    needs: dict[str, str] = {}
    for entry in config.get("defaults", []):
        if isinstance(entry, str) and entry != "_self_":  # a multirun it extends
            needs.update(multirun_needs(entry, swept))
        elif not isinstance(entry, str):
            needs.update({key.split("/")[-1]: value for key, value in entry.items()
                          if key in ("override /task", "override /model")})
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None) or {}
    needs.update({group: str(params[group]) for group in ("task", "model") if swept and group in params})
    return needs


def _check_group_choices(overrides: tuple[str, ...]) -> None:
    """A choice for an optional group (debug, setting) that has no config is an error, not silently nothing."""
    for override in overrides:
        name, _, value = override.lstrip("+").partition("=")
        folder = Path(CONFIG_DIR) / name
        if not any(c in name for c in "./@") and folder.is_dir() and value not in ("null", ""):
            options = sorted(p.stem for p in folder.glob("*.yaml"))
            if value not in options:
                raise ConfigError(f"{name}={value} is invalid: valid choices: {', '.join(options)}")


def preset_groups() -> set[str]:
    """configs/' preset groups: those whose options are `_global_` packages (they set keys anywhere in the config).
    Read only when a composition error needs them, never at start-up."""
    return {p.parent.name for p in Path(CONFIG_DIR).glob("*/*.yaml") if p.read_text().startswith("# @package _global_")}


def composition_error(error: Exception, overrides: list[str]) -> str:
    """One line for an error Hydra or OmegaConf raised while composing: the key, the value, what is allowed."""
    cause = error
    while cause.__cause__ is not None and not isinstance(cause, (ValidationError, ConfigAttributeError,
                                                                 ConfigKeyError)):
        cause = cause.__cause__
    lines = str(cause).splitlines() or [type(cause).__name__]
    message = lines[0]
    if message.endswith("raised while composing config:") and len(lines) > 1:  # Hydra's reason is the next line
        where = message.split(": ", 1)[0] if message.startswith("In '") else ""
        full_key = re.search(r"full_key: (\S+)", str(cause))
        groups = preset_groups()
        presets = [o for o in overrides if o.split("=", 1)[0] in groups]
        message = (f"{where + ': ' if where else ''}{lines[1].strip()}"
                   + (f" ({full_key[1]})" if full_key else "")
                   + (f"; the presets {', '.join(presets)} do not combine" if len(presets) > 1 else ""))
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
        written = next((o for o in overrides if override_keys([o])[0] == full_key), full_key)
        return (f"{written} is invalid: {full_key} is not a config key here (not in struct {parent or 'config'})"
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


def quoted_values(argv: list[str]) -> list[str]:
    """The command line with each `key=value` whose value Hydra's override grammar cannot read (a path with a
    zero-width space, a letter outside its lexer, a quote) quoted, so that the value is the text as typed; every
    other word as it is. A legal path is never refused as unparsable; a value with Hydra's structure (a list, a
    dict, a sweep function: brackets, braces, parentheses) is Hydra's to read, and to refuse."""
    parser = OverridesParser.create()
    out = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and not arg.startswith("-") and value and value[0] not in "'\"" and not set(value) & set("[]{}()"):
            try:
                parser.parse_override(arg)
            except (OverrideParseException, HydraException):
                quoted = "{}='{}'".format(key, value.replace("\\", "\\\\").replace("'", "\\'"))
                try:
                    if parser.parse_override(quoted).value() == value:
                        arg = quoted
                except (OverrideParseException, HydraException):
                    pass
        out.append(arg)
    return out


def typed_overrides(argv: list[str]) -> list[str]:
    """The key=value words of a command line, as the user typed them (for naming a bad value in a message)."""
    return [arg for arg in argv if "=" in arg and not arg.startswith("-")]


def check_run(config: DictConfig) -> None:
    """The checks of a single run's composed config (with its hydra node) that Hydra's composition does not make:
    a choice of an optional group that has no config, the ranges and rules of coordexp.config, a run directory
    that can be written. ConfigError on a bad value."""
    overrides = list(config.hydra.overrides.task)
    _check_group_choices(overrides)
    check_choices(config.hydra.runtime.choices)
    job = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
    check(job, overrides)
    if config.resume is None:
        from coordexp.run import probe_data  # the task and data modules: needed by a run anyway
        probe_data(job)
        check_writable(config.hydra.run.dir)


def hold_run(config: DictConfig) -> Claim:
    """Check a single run (check_run) and hold its directory; a resumed run's checkpoint is read here, once, and
    its config (the checkpoint's, with the allowed overrides) kept with the claim for the run."""
    check_run(config)
    if config.resume is None:
        check_device(config.device)
        claim = claim_run_dir(config.hydra.run.dir, job_config(config))
    else:
        if not (Path(config.resume) / CHECKPOINT).is_file():
            raise ConfigError(f"resume={str(config.resume)!r} is invalid: no checkpoint.pt there; valid: the run "
                              "directory of an earlier coordexp.train run (it holds metrics.json and a checkpoint)")
        claim = claim_run_dir(config.hydra.run.dir, {}, resume=True)
        try:
            claim.checkpoint = read_checkpoint(Path(config.resume))
            claim.config = resumed_config(config, list(config.hydra.overrides.task), claim.checkpoint["config"])
            check_device(claim.config.device)
        except BaseException:
            claim.release()
            raise
    return claim


def check_device(device: str) -> None:
    """ConfigError when the run asks for CUDA on a machine without it."""
    if device == "cuda":
        from coordexp.runtime import resolve_device  # torch's CUDA: asked only when a run asks for it
        resolve_device(device)


class HoldRunDir(Callback):
    """Hydra's on_run_start: check a single run and hold its directory (hold_run) before Hydra writes into it;
    a bad value or a directory that is not this run's to write is one line and exit status 2, nothing written."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            hold_run(config)
        except (ConfigError, RunDirError) as error:
            print(f"coordexp: error: {error}", file=sys.stderr)
            sys.exit(2)


# ---- resume ---------------------------------------------------------------------------------------------

# What a resumed run may change: how it runs, never what it computes (trainer.epochs extends it).
RESUMABLE = ("trainer.epochs", "trainer.eval_every", "trainer.eval_batch_size", "trainer.checkpoint_every",
             "trainer.progress", "trainer.plots", "trainer.plot_examples", "trainer.keep_freed_memory", "device")

def read_checkpoint(run_dir: Path) -> dict:
    """The checkpoint of `run_dir` (ConfigError when it is damaged)."""
    try:
        return load_checkpoint(run_dir / CHECKPOINT)
    except RunDirError as error:
        raise ConfigError(f"resume={str(run_dir)!r} is invalid: {error}") from None


def resumed_config(cfg: DictConfig, overrides: list[str], saved: dict) -> DictConfig:
    """The config `saved` in the checkpoint of run directory `cfg.resume`, with the allowed overrides applied.

    Overrides that would change the experiment (task, split, model, data, optimizer, ...) are refused.
    """
    saved = OmegaConf.create(saved)
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
