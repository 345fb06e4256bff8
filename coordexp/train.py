"""The entry point: `python -m coordexp.train task=... split=... model=... [key=value ...]`.

`main` is the Hydra wrapper; `start` applies the run directory's rules (coordexp.rundir: train afresh,
continue, or report a run that already ended) around coordexp.run.train, which does the work.
"""
from __future__ import annotations

import atexit
import gc
import logging
import math
import os
import signal
import sys
from concurrent.futures import BrokenExecutor
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from coordexp.compose import CONFIG_DIR, composition_error, quoted_values, typed_overrides
from coordexp.config import ConfigError
from coordexp.data import selection_part
from coordexp.loop import Diverged
from coordexp.rundir import (CHECKPOINT, Interrupted, RunDirError, StopRequest, claim_run_dir, is_write_fault,
                             job_config, read_metrics, watch_owner, write_fault_line, write_hydra_dir)
from coordexp.run import train
from coordexp.sweep import end_broken_sweep, failed_job_value, run_sweep_job

log = logging.getLogger(__name__)


def start(cfg: DictConfig, run_dir: Path, resume: bool, stop: StopRequest) -> dict:
    """Run `cfg` in run_dir as the directory's rules say (coordexp.rundir.claim_run_dir): train it afresh,
    continue the run of the same config that is there, or report the one that already ended; return its metrics."""
    claim = claim_run_dir(run_dir, job_config(cfg), resume=resume,
                          key="hydra.run.dir" if HydraConfig.get().mode == RunMode.RUN else "hydra.sweep.subdir")
    try:
        if claim.action == "done":
            metrics = read_metrics(run_dir)
            log.info("%s already holds this run, %s: not run again", run_dir, claim.status)
            if claim.status == "diverged":
                raise Diverged(metrics.get("error", "diverged earlier"), metrics.get("epochs", 0), metrics.get("step", 0))
            return metrics
        if claim.action == "fresh":
            write_hydra_dir(run_dir, cfg, HydraConfig.get())
        # a resumed single run: the config and checkpoint read when on_run_start claimed it (coordexp.compose)
        return train(claim.config or cfg, run_dir, resume=claim.action == "resume", stop=stop,
                     checkpoint=claim.checkpoint)
    finally:
        claim.release()


def exit_with(code: int, message: str) -> None:
    """End a single run with `message` on stderr and exit status `code`."""
    logging.shutdown()
    print(f"coordexp: {message}", file=sys.stderr)
    sys.exit(code)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra entry: returns the task's headline metric for sweepers, on valid where the data has it, else test."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        value = run_sweep_job(run_dir, Path(hydra_cfg.sweep.dir), lambda stop: start(cfg, run_dir, False, stop))
        return failed_job_value(cfg) if math.isnan(value) else value
    resume = cfg.resume is not None
    stop = StopRequest()
    try:
        metrics = start(cfg, run_dir, resume, stop)
    except (ConfigError, RunDirError) as error:
        exit_with(2, f"error: {error}")
    except Interrupted as error:
        exit_with(error.exit_code, f"{error}; checkpoint saved. Continue with: python -m coordexp.train resume={run_dir}")
    except Diverged as error:
        exit_with(3, f"diverged: {error}")
    except OSError as error:
        if not is_write_fault(error):
            raise
        kept = (run_dir / CHECKPOINT).exists()
        exit_with(1, f"error: {write_fault_line(error, run_dir)}; "
                  + (f"its last checkpoint is kept: continue with python -m coordexp.train resume={run_dir}" if kept
                     else "no checkpoint was written: the same command starts it again"))
    if stop.caught:
        log.info("%s arrived after training ended: the run was completed first", signal.Signals(stop.caught).name)
    return metrics[selection_part(metrics)][metrics["headline"]]


if __name__ == "__main__":
    # at exit, the interpreter's last garbage collection walks every object torch and its compiler stack made
    # (~0.5 s a process); frozen objects are skipped, and everything a run writes is closed before then
    atexit.register(gc.freeze)
    watch_owner()  # a sweep or run started by a reproduction stops when the reproduction is gone
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises what it cannot compose to us, which say it in one line
    logging.raiseExceptions = False  # a log file on a full disk: the run's own write fault says so, in one line
    sys.argv[1:] = quoted_values(sys.argv[1:])  # a path Hydra's grammar cannot read is taken as typed
    try:
        main()
    except (HydraException, OmegaConfBaseException) as error:
        print(f"coordexp: error: {composition_error(error, typed_overrides(sys.argv[1:]))}", file=sys.stderr)
        sys.exit(2)
    except BrokenExecutor as error:  # a sweep's joblib pool lost a worker process: the sweep says what it did
        sys.exit(end_broken_sweep(error))
    except OSError as error:  # a sweep's disk filled or turned read-only (a single run's says so in main)
        if not is_write_fault(error):
            raise
        print(f"coordexp: error: {write_fault_line(error, Path.cwd())}", file=sys.stderr)
        sys.exit(1)
