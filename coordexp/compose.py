"""Composing a config from overrides, as `python -m coordexp.train` does, and checking every job of a command
line (a sweep's too, job by job) before Hydra runs: a bad value is one line, exit status 2, nothing written."""
from __future__ import annotations

import dataclasses
import itertools
import math
import re
import sys
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from coordexp.config import CONFIG_DIR, SCHEMAS, ConfigError, check, check_writable, override_keys, resumed_config

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
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]) if hydra_node else cfg
    check(job, [o for o in overrides if not o.lstrip("+~").startswith("hydra")])
    return cfg


def _check_group_choices(overrides: tuple[str, ...]) -> None:
    """A choice for an optional group (debug, recipe) that has no config is an error, not silently nothing."""
    for override in overrides:
        name, _, value = override.lstrip("+").partition("=")
        folder = Path(CONFIG_DIR) / name
        if not any(c in name for c in "./@") and folder.is_dir() and value not in ("null", ""):
            options = sorted(p.stem for p in folder.glob("*.yaml"))
            if value not in options:
                raise ConfigError(f"{name}={value} is invalid: valid choices: {', '.join(options)}")


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
            from coordexp.runtime import resolve_device  # torch: only to ask it for CUDA
            resolve_device(run.device)
    if multirun:
        check_writable(cfg.hydra.sweep.dir, key="hydra.sweep.dir")


def exit_on_bad_command_line(argv: list[str]) -> None:
    """Run `check_command_line`; on a user error print one line and exit with status 2."""
    try:
        check_command_line(argv)
    except ConfigError as error:
        print(f"coordexp: error: {error}", file=sys.stderr)
        sys.exit(2)
