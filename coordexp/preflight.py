"""A Hydra callback that checks a run before Hydra creates anything: a user error writes nothing."""
from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from coordexp.config import ConfigError, check_overrides, check_writable, resolve_device, resumed_config, validate
from coordexp.rundir import RunDirError, claim_run


def check_run(config: DictConfig) -> None:
    """Every check that can be made before training; raises ConfigError naming the key, value and choices."""
    overrides = list(config.hydra.overrides.task)
    if config.resume is not None:
        job = resumed_config(config, overrides)
    else:
        job = config
        check_overrides(job, overrides)
        check_writable(config.hydra.run.dir)
    validate(job)
    resolve_device(job.device)


class Preflight(Callback):
    """Runs `check_run` in on_run_start; on a user error prints one line and exits with status 2."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_run(config)
            claim_run(config)  # coordexp.rundir: hold the run directory before Hydra writes into it
        except (ConfigError, RunDirError) as error:
            print(f"coordexp: error: {error}", file=sys.stderr)
            sys.exit(2)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            check_writable(config.hydra.sweep.dir, key="hydra.sweep.dir")
        except ConfigError as error:
            print(f"coordexp: error: {error}", file=sys.stderr)
            sys.exit(2)
