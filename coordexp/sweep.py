"""Hydra multirun support (`python -m coordexp.train -m ...`), enabled in configs/hydra/callbacks/sweep.yaml.

Before any work, every job's config is checked (a bad value refuses the whole sweep with exit status 2) and
the sweep takes its directory (a second sweep into it is refused, unless it is the same sweep, which
continues it). Then a progress line per finished job; a job that fails is recorded and the sweep goes on (under
joblib each job runs in a process of its own, coordexp.jobprocess: a killed one is a failed job, and a killed worker
ends the sweep with its summary);
SIGINT / SIGTERM stop the sweep (running jobs checkpoint and are recorded interrupted, no new job starts);
at the end the summary files (`coordexp.aggregate`) and an exit status that says how the sweep ended.
"""
from __future__ import annotations

import copy
import itertools
import logging
import math
import os
import re
import shlex
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock, Timeout
from hydra import compose
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from coordexp.compose import check_choices, composition_error, without_hydra
from coordexp.config import ConfigError, check
from coordexp.data import selection_part
from coordexp.jobprocess import run_in_own_process
from coordexp.loop import Diverged
from coordexp.runtime import resolve_device
from coordexp.tasks import build_task
from coordexp.results import SUMMARY_FILES, describe, read_job
from coordexp.run import probe_data
from coordexp.rundir import (LOCK, LOG_FILE, METRICS_FILE, DirLock, Interrupted, RunDirError, StopRequest, discard_if_untouched,
                             is_write_fault, read_metrics, remove_temporary_files, watch_owner, write_fault_line,
                             write_json)

log = logging.getLogger(__name__)
PROGRESS_LOG = "sweep.log"  # in the sweep directory: one line per finished job, then the sweep's summary
PROGRESS_LOCK = ".sweep.log.lock"  # held while a job counts and appends its line
SESSION_STARTS = ("sweep started", "sweep continued")  # a progress log line that begins a session's count
STOP_FILE = ".stop"         # in the sweep directory while a sweep is stopping: the signal's name
SKIPPED = "skipped"         # a job that did not start because the sweep was stopping
JOB_END_WAIT = 60           # seconds a broken sweep waits for a job still writing its checkpoint before its summary


# --- the jobs of a sweep, and their check before any work ---------------------------------------------

def sweep_jobs(config: DictConfig) -> list[list[str]] | None:
    """Each job's overrides, in the order Hydra's basic sweeper launches them (the product of the values of every
    swept key, in hydra.sweeper.params then on the command line; a later key replaces an earlier one).
    None for other sweepers, which choose their jobs as they go."""
    if not str(config.hydra.sweeper._target_).endswith(".BasicSweeper"):
        return None
    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    values: dict[str, list[str]] = {}
    for override in _parser().parse_overrides(arguments):
        key = override.get_key_element()
        values[key] = ([f"{key}={v}" for v in override.sweep_string_iterator()] if override.is_sweep_override()
                       else [f"{key}={override.get_value_element_as_str()}"])
    return [list(job) for job in itertools.product(*values.values())]


def planned_jobs(config: DictConfig) -> int | None:
    """How many jobs the sweep of `config` (with its hydra node) launches; None for sweepers other than the basic one."""
    jobs = sweep_jobs(config)
    return None if jobs is None else len(jobs)


def _parser() -> OverridesParser:
    hydra = GlobalHydra.instance()  # inside an app it expands glob() sweeps over groups
    return OverridesParser.create(config_loader=hydra.config_loader() if hydra.is_initialized() else None)


def check_sweep(config: DictConfig) -> int | None:
    """Check every job of the sweep of `config` (with its hydra node) as a single run would be checked, before any
    work: ConfigError, naming the job, the key, the bad value and what is allowed, for the first bad one.

    A configuration is composed once per distinct set of group choices and the swept values are applied to
    it, as Hydra applies them (composing each job costs ~0.1 s: minutes for the paper's grids). Returns the
    number of jobs; None (nothing checked but the device) for sweepers other than the basic one.
    """
    resolve_device(config.device)  # cuda without CUDA refuses the sweep
    jobs = sweep_jobs(config)
    if jobs is None:
        return None
    parser, bases, options, probed = _parser(), {}, GroupOptions(), set()
    for number, job in enumerate(jobs, 1):
        try:
            overrides = parser.parse_overrides(job)
            swept = [o for o in overrides if _is_value_change(o, options)]
            groups = tuple(o.input_line for o in overrides if not _is_value_change(o, options))
            if groups not in bases:
                bases[groups] = _compose(config.hydra.job.config_name, groups, overrides, options)
            cfg = copy.deepcopy(bases[groups])
            for override in swept:
                try:
                    OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
                except Exception as error:  # an unknown key, or a value its type refuses: as a single run says it
                    raise ConfigError(composition_error(error, [override.input_line])) from None
            if cfg.resume is not None:
                raise ConfigError(f"resume={cfg.resume!r} is invalid with -m: a sweep is continued by running its "
                                  "own command again with its hydra.sweep.dir")
            check(cfg, job)
            data = repr([cfg[key] for key in ("task", "split", "data")])
            if data not in probed:  # the data a job would build, probed once per distinct data config
                probe_data(cfg)
                probed.add(data)
        except ConfigError as error:
            raise ConfigError(f"{error} (sweep job {number} of {len(jobs)}: {' '.join(job)}); nothing was run") from None
    return len(jobs)


class GroupOptions(dict):
    """Config group name -> its options ([] for a key that is not a group), asked of Hydra once per name."""

    def __missing__(self, name: str) -> list[str]:
        self[name] = GlobalHydra.instance().config_loader().get_group_options(name)  # ~50 ms a call
        return self[name]


def _is_value_change(override: Override, options: GroupOptions) -> bool:
    """A plain `key=value` on a config key (not a group choice, not +, ++ or ~): applied after composition."""
    if override.package is not None or override.is_add() or override.is_force_add() or override.is_delete():
        return False
    return not options[override.key_or_group]


def _compose(config_name: str, groups: tuple[str, ...], overrides: list[Override],
             options: GroupOptions) -> DictConfig:
    for override in overrides:
        choices = options[override.key_or_group]
        if choices and not _is_value_change(override, options) and override.value() not in choices:
            raise ConfigError(f"{override.key_or_group}={override.value()!r} is invalid: valid choices: "
                              f"{', '.join(choices)}")
    try:
        cfg = compose(config_name, overrides=list(groups), return_hydra_config=True)
    except Exception as error:  # Hydra's composition errors span lines: one line with its reason
        raise ConfigError(f"{' '.join(groups)}: {composition_error(error, list(groups))}") from None
    check_choices(cfg.hydra.runtime.choices)
    return without_hydra(cfg)


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# --- the sweep directory ------------------------------------------------------------------------------

@dataclass
class Sweep:
    """The sweep this process launched: its directory's lock and its stop request (held until it ends)."""

    pid: int
    directory: Path
    lock: DirLock
    stop: StopRequest
    command: str  # how to continue it
    config: DictConfig  # its config, with the hydra node
    planned: int | None = None  # its jobs, when its sweeper plans them


_sweep: Sweep | None = None           # set in the process that launched the sweep
_notes: dict[Path, str] = {}          # run dir -> what on_job_end should know about a job that did not run


def claim_sweep_dir(config: DictConfig) -> bool:
    """Hold the sweep directory for this process; True when it continues an earlier run of the same sweep.

    RunDirError when another process holds it, or when it holds another sweep (other overrides or params).
    """
    global _sweep
    sweep_dir = Path(config.hydra.sweep.dir).absolute()
    lock = DirLock(sweep_dir, "hydra.sweep.dir")
    try:
        continued = _same_sweep(sweep_dir, config)
    except BaseException:
        lock.release()
        raise
    lock.announce()
    remove_temporary_files(sweep_dir)
    (sweep_dir / STOP_FILE).unlink(missing_ok=True)  # an earlier session's stop does not stop this one
    _sweep = Sweep(os.getpid(), sweep_dir, lock, StopRequest(sweep_dir / STOP_FILE).__enter__(),
                   continue_command(config), config)
    return continued


def _identity(config: DictConfig) -> tuple[list, dict]:
    """What makes a sweep the same sweep: its overrides and its sweeper's params (the launcher may differ)."""
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    return (OmegaConf.to_container(config.hydra.overrides.task),
            OmegaConf.to_container(params) if params is not None else {})


def continue_command(config: DictConfig) -> str:
    """The command that runs the sweep of `config` (the launching process's) again, in the same directory."""
    # as written: an override like hydra.sweep.subdir=${split.name} is text here, not an interpolation to resolve
    task, hydra = (OmegaConf.to_container(config.hydra.overrides[part]) for part in ("task", "hydra"))
    hydra_overrides = [o for o in hydra if not o.startswith(("hydra.sweep.dir=", "hydra.mode="))]
    return shlex.join(["python", "-m", "coordexp.train", "-m", *task, *hydra_overrides,
                       f"hydra.sweep.dir={Path(config.hydra.sweep.dir).absolute()}"])


def _same_sweep(sweep_dir: Path, config: DictConfig) -> bool:
    previous = sweep_dir / "multirun.yaml"
    if not previous.exists():
        return False
    try:
        theirs = _identity(OmegaConf.load(previous))
    except Exception as error:
        raise RunDirError(f"hydra.sweep.dir={str(sweep_dir)!r} is invalid: its multirun.yaml cannot be read "
                          f"({_first_line(error)}); choose another directory") from None
    if theirs != _identity(config):
        raise RunDirError(f"hydra.sweep.dir={str(sweep_dir)!r} is invalid: it holds another sweep "
                          f"({' '.join(theirs[0]) or 'no overrides'}); choose another directory, or run that "
                          "sweep's command again to continue it")
    return True


def _launched_here() -> Sweep | None:
    return _sweep if _sweep is not None and _sweep.pid == os.getpid() else None


# --- jobs ---------------------------------------------------------------------------------------------

def failed_job_value(cfg: DictConfig) -> float:
    """What a sweep job that did not complete returns to the sweeper: the worst value of the headline metric,
    so that a search counts it as its worst trial (Optuna 2 ends a whole search on a NaN)."""
    return -math.inf if build_task(cfg.task, cfg.data).higher_is_better else math.inf



def run_sweep_job(run_dir: Path, sweep_dir: Path, job: Callable[[StopRequest], dict]) -> float:
    """Run one job of a sweep, `job(stop)`, and return its headline metric on valid where its data has a valid set,
    else on test (NaN if it has none): the value a sweeper selects by.

    A job that fails is recorded in its metrics.json (its traceback in its log) and returns normally, so the
    sweep goes on. A job that would start after the sweep was asked to stop does not start, and the folder
    Hydra made for it is removed.
    """
    watch_owner()  # a worker stops when the sweep that started it is gone
    sweep = _launched_here()  # jobs in the sweep's own process share its stop request
    stop = sweep.stop if sweep is not None else StopRequest(sweep_dir / STOP_FILE)
    if stop.poll():
        _notes[run_dir] = SKIPPED
        discard_if_untouched(run_dir)
        return math.nan
    if sweep is None and _in_joblib_worker():
        return _job_in_own_process(run_dir, stop, job)
    return _run_job(run_dir, stop, job)


def _run_job(run_dir: Path, stop: StopRequest, job: Callable[[StopRequest], dict]) -> float:
    before = _identity_of(run_dir / METRICS_FILE)
    try:
        metrics = job(stop)
        return metrics.get(selection_part(metrics), {}).get(metrics.get("headline"), math.nan)
    except RunDirError as error:  # the directory is not this job's to write: record nothing there
        log.error("job refused: %s", error)
        _notes[run_dir] = f"refused: {error}"
    except (Interrupted, Diverged) as error:  # train() recorded it
        log.warning("%s", error)
    except Exception as error:
        log.error("job failed: %r", error, exc_info=error)
        if _identity_of(run_dir / METRICS_FILE) == before:  # failed before train() could record it
            write_json(run_dir / METRICS_FILE, {"status": "failed", "error": repr(error)})
    return math.nan


def _in_joblib_worker() -> bool:
    return str(OmegaConf.select(HydraConfig.get(), "launcher._target_", default="")).endswith(".JoblibLauncher")


def _job_in_own_process(run_dir: Path, stop: StopRequest, job: Callable[[StopRequest], dict]) -> float:
    """_run_job in a process of its own (coordexp.jobprocess): a job whose process is killed is recorded failed."""
    before = _identity_of(run_dir / METRICS_FILE)
    result, ended = run_in_own_process(lambda: (_run_job(run_dir, stop, job), _notes.pop(run_dir, None)), stop)
    if ended is None:
        value, note = result
        if note:
            _notes[run_dir] = note
        return value
    error = f"{ended} before it ended; the same sweep again continues it"
    log.error("job failed: %s", error)
    if _identity_of(run_dir / METRICS_FILE) == before:  # it recorded nothing: record why
        write_json(run_dir / METRICS_FILE, {**read_metrics(run_dir), "status": "failed", "error": error})
    return math.nan


def _identity_of(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size  # an atomic rewrite makes a new inode


# --- progress and the end of the sweep ------------------------------------------------------------------

def append_line(sweep_dir: Path, line: str) -> None:
    """Append one line to the sweep's progress log."""
    with open(sweep_dir / PROGRESS_LOG, "a") as f:
        f.write(line + "\n")


def append_progress(sweep_dir: Path, planned: int | None, outcome: str) -> str:
    """Append 'job K/N done: OUTCOME' to the sweep's progress log, K counting the jobs this session has finished."""
    # parallel jobs may finish together: count and append as one step
    with FileLock(sweep_dir / PROGRESS_LOCK, thread_local=False), open(sweep_dir / PROGRESS_LOG, "a+") as f:
        f.seek(0)
        done = 1
        for line in f:
            done = 1 if line.startswith(SESSION_STARTS) else done + line.startswith("job ")
        line = f"job {done}/{planned or '?'} done: {outcome}"
        f.write(line + "\n")
    return line


def job_outcome(run_dir: Path, settings: str, note: str | None = None) -> str:
    """'classification quarter conv lr=0.01 status=completed test accuracy=0 in 12.3s threads=1 -> RUN_DIR'."""
    if note:
        return f"{settings} {note} -> {run_dir.name}"
    row = read_job(run_dir, run_dir)
    outcome = " ".join(filter(None, (row["task"], row["split"], row["model"], settings, f"status={row['status']}")))
    if row["status"] == "completed":
        outcome += "".join(f" {part} {row['headline']}={row[f'{part}_' + row['headline']]:.4g}"
                           for part in ("valid", "test") if f"{part}_{row['headline']}" in row)
    elif row["error"]:
        outcome += f" error={row['error']}"
    if row["wall_seconds"] is not None:
        outcome += f" in {row['wall_seconds']:.1f}s"
    return outcome + f" threads={torch.get_num_threads()} -> {run_dir.name}"


def finish_sweep(config: DictConfig, planned: int | None, broken: str | None = None) -> int:
    """Write the summary, say how the sweep ended, let go of its directory; return the exit status:
    128 + the signal when it was stopped, 1 when a job did not complete or the launcher `broken` (why), else 0."""
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep = _launched_here()
    signum = sweep.stop.poll() if sweep is not None else 0
    from coordexp.aggregate import aggregate  # a sweep's only: matplotlib loads with it, which a single run skips
    try:
        rows = aggregate(sweep_dir)
        line = (f"sweep {'stopped' if signum or broken else 'done'}: {describe(rows)}; "
                f"summary in {sweep_dir / SUMMARY_FILES[1]}")
        log.info(line)
        append_line(sweep_dir, line)
    except OSError as error:  # the disk filled or turned read-only: the jobs' files are whole, the summary is not there
        if not is_write_fault(error):
            raise
        rows = None
        print(f"coordexp: error: {write_fault_line(error, sweep_dir)}; the finished jobs are kept: once there is "
              f"room, continue the sweep with: {sweep.command if sweep else 'its command'}", file=sys.stderr)
    if sweep is not None:
        sweep.stop.__exit__(None, None, None)
        (sweep_dir / STOP_FILE).unlink(missing_ok=True)
        sweep.lock.release()
    if rows is None:
        return 1
    if signum:
        print(f"coordexp: sweep stopped by {signal.Signals(signum).name} after {len(rows)} of {planned or '?'} "
              f"jobs ({describe(rows)}); continue it with: {sweep.command}", file=sys.stderr)
        return 128 + signum
    if broken:
        print(f"coordexp: the sweep ended early: {broken}; {describe(rows)}, {(planned or len(rows)) - len(rows)} "
              f"not started; see {sweep_dir / SUMMARY_FILES[1]}; continue it with: {sweep.command}", file=sys.stderr)
        return 1
    unfinished = Counter(row["status"] for row in rows if row["status"] != "completed")
    if unfinished:
        print(f"coordexp: {sum(unfinished.values())} of {len(rows)} jobs did not complete "
              f"({', '.join(f'{n} {status}' for status, n in sorted(unfinished.items()))}); "
              f"see {sweep_dir / SUMMARY_FILES[1]}", file=sys.stderr)
        return 1
    return 0


def end_broken_sweep(error: Exception) -> int:
    """The end of a sweep whose launcher raised `error`, its pool of worker processes broken (joblib's, when one
    is killed: it kills the others' jobs too): once no job holds its directory (a killed worker's job stops and
    records itself), write the summary as finish_sweep does and return its exit status. Raises `error` again
    in a process that launched no sweep."""
    sweep = _launched_here()
    if sweep is None:
        raise error
    for job_lock in sweep.directory.glob(f"*/{LOCK}"):
        try:
            with FileLock(job_lock, timeout=JOB_END_WAIT, thread_local=False):
                pass
        except Timeout:  # not ours to wait for any longer: the summary says what it holds now
            pass
    cause = _first_line(error).rstrip(".")
    codes = re.search(r"exit codes of the workers are (.*)", str(error))
    return finish_sweep(sweep.config, sweep.planned, f"{cause}{f' (exit codes {codes[1]})' if codes else ''}")


class SweepCallback(Callback):
    """Checks, progress, stopping and the summary of a multirun; does nothing for a single run."""

    def __init__(self) -> None:
        self.planned: int | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        try:
            # set before the launcher pickles the callbacks for its worker processes, so every job sees it
            self.planned = check_sweep(config)
            continued = claim_sweep_dir(config)
            _sweep.planned = self.planned
        except (ConfigError, RunDirError) as error:
            print(f"coordexp: error: {error}", file=sys.stderr)
            sys.exit(2)
        append_line(Path(config.hydra.sweep.dir), f"{SESSION_STARTS[continued]}: {self.planned or '?'} jobs planned")

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
        note = _notes.pop(run_dir, None)
        if job_return.status == JobStatus.FAILED:  # run_sweep_job records failures: this is a bug, say so
            note = f"status=failed error=an exception escaped the job (see {run_dir / LOG_FILE})"
        if note != SKIPPED:
            try:
                log.info(append_progress(sweep_dir, self.planned,
                                         job_outcome(run_dir, config.hydra.job.override_dirname, note)))
            except OSError as error:  # a full or read-only disk: the sweep's end says so
                if not is_write_fault(error):
                    raise
        sweep = _launched_here()
        if sweep is not None and sweep.stop.poll():  # jobs run in this process: end here, so no job starts
            sys.exit(finish_sweep(config, self.planned))

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        code = finish_sweep(config, self.planned)
        if code:
            sys.exit(code)
