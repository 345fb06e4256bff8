"""Hydra multirun support (`python -m coordexp.train -m ...`), enabled in configs/hydra/callbacks/sweep.yaml.

A progress line per finished job; a job that fails is recorded and the sweep goes on; when the sweep
ends, the summary files (`coordexp.aggregate`) and a non-zero exit status if any job did not complete.
"""
from __future__ import annotations

import fcntl
import logging
import math
import sys
from collections import Counter
from pathlib import Path

import torch
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from coordexp.aggregate import aggregate, describe, read_job
from coordexp.files import write_json

log = logging.getLogger(__name__)
PROGRESS_LOG = "sweep.log"  # in the sweep directory: one line per finished job, then the sweep's summary


def planned_jobs(config: DictConfig) -> int | None:
    """How many jobs Hydra's basic sweeper launches for `config` (with its hydra node): the product of the
    numbers of values of every swept key, in hydra.sweeper.params and on the command line. None for other sweepers."""
    if config.hydra.sweeper._target_ != f"{BasicSweeper.__module__}.{BasicSweeper.__name__}":
        return None
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    overrides = OverridesParser.create().parse_overrides(arguments)
    return len(BasicSweeper.split_arguments(overrides, max_batch_size=None)[0])


def append_line(sweep_dir: Path, line: str) -> None:
    """Append one line to the sweep's progress log."""
    with open(sweep_dir / PROGRESS_LOG, "a") as f:
        f.write(line + "\n")


def append_progress(sweep_dir: Path, planned: int | None, outcome: str) -> str:
    """Append 'job K/N done: OUTCOME' to the sweep's progress log, K counting the jobs done so far; return it."""
    with open(sweep_dir / PROGRESS_LOG, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # parallel jobs may finish together: count and append as one step
        f.seek(0)
        done = sum(line.startswith("job ") for line in f) + 1
        line = f"job {done}/{planned or '?'} done: {outcome}"
        f.write(line + "\n")
    return line


def job_outcome(run_dir: Path, settings: str) -> str:
    """'classification quarter conv lr=0.01 status=completed test accuracy=0 in 12.3s threads=1 -> RUN_DIR'."""
    row = read_job(run_dir, run_dir)
    outcome = " ".join(filter(None, (row["task"], row["split"], row["model"], settings, f"status={row['status']}")))
    if row["status"] == "completed":
        outcome += f" test {row['headline']}={row['test_' + row['headline']]:.4g}"
    elif row["error"]:
        outcome += f" error={row['error']}"
    if row["wall_seconds"] is not None:
        outcome += f" in {row['wall_seconds']:.1f}s"
    return outcome + f" threads={torch.get_num_threads()} -> {run_dir.name}"


class SweepCallback(Callback):
    """Progress, failure handling and the summary of a multirun; does nothing for a single run."""

    def __init__(self) -> None:
        self.planned: int | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        # set before the launcher pickles the callbacks for its worker processes, so every job sees it
        self.planned = planned_jobs(config)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        # submitit starts every job at once on a local machine: each may use only the cores it asked for
        # (joblib needs nothing: its workers get cores // n_jobs threads through OMP_NUM_THREADS)
        cpus = OmegaConf.select(config, "hydra.launcher.cpus_per_task")
        if cpus:
            torch.set_num_threads(cpus)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs) -> None:
        if config.hydra.mode != RunMode.MULTIRUN:
            return
        run_dir, sweep_dir = Path(config.hydra.runtime.output_dir), Path(config.hydra.sweep.dir)
        if job_return.status == JobStatus.FAILED:
            record_failure(job_return, run_dir)
        log.info(append_progress(sweep_dir, self.planned, job_outcome(run_dir, config.hydra.job.override_dirname)))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = aggregate(sweep_dir)
        line = f"sweep done: {describe(rows)}; summary in {sweep_dir / 'summary.md'}"
        log.info(line)
        append_line(sweep_dir, line)
        unfinished = Counter(row["status"] for row in rows if row["status"] != "completed")
        if unfinished:
            print(f"coordexp: {sum(unfinished.values())} of {len(rows)} jobs did not complete "
                  f"({', '.join(f'{n} {status}' for status, n in sorted(unfinished.items()))}); "
                  f"see {sweep_dir / 'summary.md'}", file=sys.stderr)
            sys.exit(1)


def record_failure(job_return: JobReturn, run_dir: Path) -> None:
    """Log a failed job's traceback, make sure its metrics.json says failed, and let the sweep go on."""
    error = job_return._return_value  # the job's exception (the public `return_value` re-raises it)
    log.error("job failed: %r", error, exc_info=error)
    if not (run_dir / "metrics.json").exists():  # train() writes it itself once the model is built
        write_json(run_dir / "metrics.json", {"status": "failed", "error": repr(error)})
    # Hydra's sweeper re-raises a failed job after its batch, which skips the later batches and the
    # summary: the failure is on disk now, so hand the sweeper a NaN result instead
    job_return.status, job_return.return_value = JobStatus.COMPLETED, math.nan
