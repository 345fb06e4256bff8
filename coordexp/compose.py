"""Composing a config from overrides as `python -m coordexp.train` does, or from a run's checkpoint to resume it,
and checking a command line before Hydra runs: a bad value is one line, exit status 2, nothing written."""
from __future__ import annotations

import dataclasses
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from coordexp.rundir import CHECKPOINT, load_checkpoint  # importing it registers the run directory's resolvers
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


_INFO_FLAGS = {"--help", "-h", "--hydra-help", "--version", "--info", "-i", "--shell-completion", "-sc",
               "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_VALUED_FLAGS = {"--cfg", "-c", "--package", "-p"}
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


def check_command_line(argv: list[str]) -> None:
    """Every check of a single run that can be made before Hydra creates anything (a sweep's jobs are checked
    when it starts: coordexp.sweep.check_sweep, which sees its sweeper's params too)."""
    parsed = command_line_overrides(argv)
    if parsed is None or parsed[1]:
        return
    cfg = compose_config(*parsed[0], hydra_node=True)
    run = resumed_config(cfg, parsed[0]) if cfg.resume is not None else cfg
    if cfg.resume is None:
        check_writable(cfg.hydra.run.dir)
    if run.device == "cuda":
        from coordexp.runtime import resolve_device  # torch: only to ask it for CUDA
        resolve_device(run.device)


def exit_on_bad_command_line(argv: list[str]) -> None:
    """Run `check_command_line`; on a user error print one line and exit with status 2."""
    try:
        check_command_line(argv)
    except ConfigError as error:
        print(f"coordexp: error: {error}", file=sys.stderr)
        sys.exit(2)


# ---- resume ---------------------------------------------------------------------------------------------

# What a resumed run may change: how it runs, never what it computes (trainer.epochs extends it).
RESUMABLE = ("trainer.epochs", "trainer.eval_every", "trainer.eval_batch_size", "trainer.checkpoint_every",
             "trainer.progress", "trainer.plots", "trainer.plot_examples", "trainer.keep_freed_memory", "device")

def checkpoint_config(run_dir: Path) -> dict:
    """The config saved in the checkpoint of `run_dir` (ConfigError when there is none or it is damaged)."""
    path = run_dir / CHECKPOINT
    if not path.is_file():
        raise ConfigError(f"resume={str(run_dir)!r} is invalid: no checkpoint.pt there; valid: the run "
                          "directory of an earlier coordexp.train run (it holds metrics.json and a checkpoint)")
    try:
        return load_checkpoint(path)["config"]
    except Exception as error:
        raise ConfigError(f"resume={str(run_dir)!r} is invalid: its checkpoint.pt cannot be read "
                          f"({type(error).__name__}: {error})") from None


def resumed_config(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """The config saved in the checkpoint of run directory `cfg.resume`, with the allowed overrides applied.

    Overrides that would change the experiment (task, split, model, data, optimizer, ...) are refused.
    """
    saved = OmegaConf.create(checkpoint_config(Path(cfg.resume)))
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
