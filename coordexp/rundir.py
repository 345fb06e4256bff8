"""The life of a run directory: who holds it, what it holds, and how a run writes, checkpoints and stops there.

- Atomic files: every file is written to a temporary file and renamed into place, so a reader, or a run
  killed mid-write, never sees a half-written file; the next run to hold the directory removes the leftovers.
- Checkpoints: everything needed to continue a run exactly where it stopped.
- Signals: SIGINT / SIGTERM finish the current step, checkpoint and stop; a second one exits at once.
- Ownership: one process holds a run (or sweep) directory for its lifetime, by an OS lock on an open file
  that dies with the process (a SIGKILL never leaves a stale lock). A run started in a directory that holds
  another run's results continues it when it is the same config, reports it when that run is over, and is
  refused otherwise.
"""
from __future__ import annotations

import errno
import io
import json
import math
import os
import random
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
import torch
from filelock import FileLock, Timeout
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from coordexp.config import missing_keys

CHECKPOINT = "checkpoint.pt"
METRICS_FILE = "metrics.json"
HYDRA_DIR = ".hydra"         # the run's composed config, its overrides and Hydra's config:
CONFIG_FILE, OVERRIDES_FILE, HYDRA_FILE = "config.yaml", "overrides.yaml", "hydra.yaml"  # the files in HYDRA_DIR
LOG_FILE = "train.log"       # Hydra's log of the job (the entry module's name)
MISSING = "missing"          # the status of a run without metrics.json: still running, killed or cut short
UNREADABLE = "unreadable"    # the status of a metrics.json that is not a JSON object with a status
LOCK = ".coordexp.lock"      # locked by the process that holds the directory; it names that process
TEMPORARY = ".*.tmp"         # what atomic_write leaves behind when it is killed mid-write
# What a run writes besides its log: a directory holding any of these holds a run.
RESULTS = (CHECKPOINT, METRICS_FILE, HYDRA_DIR, "plots", "events.out.tfevents.*")
FINAL = ("completed", "diverged")  # a run that ended so is not trained again with the same config

# A default run directory carries the start time and the process id, so runs started at once never share
# one; the cache keeps one value per config (a sweep's jobs get their parent's through Hydra's cache copy).
OmegaConf.register_new_resolver("coordexp_pid", os.getpid, use_cache=True, replace=True)
# `resume=DIR` runs in DIR.
OmegaConf.register_new_resolver("coordexp_run_dir", lambda resume, default: resume or default, replace=True)


class RunDirError(ValueError):
    """A run or sweep directory that cannot be used as asked; the message is meant to be shown as it is."""


# --- where outputs go ------------------------------------------------------------------------------------

MIN_FREE_BYTES = 8 * 2**20  # free space an output directory needs before any work: a run's checkpoint, logs and
                            # plots, or a summary's files, take well under this at the paper's sizes
WRITE_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)  # the disk's, not the program's


def check_output_dir(directory: str | os.PathLike, key: str) -> None:
    """RunDirError, naming `key`, the directory and the cause, unless `directory` is (or can be made) a directory
    this process can write into, on a file system with MIN_FREE_BYTES free. Creates nothing."""
    directory = Path(os.path.abspath(directory))
    existing = next(p for p in (directory, *directory.parents) if p.exists() or p == p.parent)
    where = f"{key}={str(directory)!r} is invalid"
    if not existing.is_dir():
        raise RunDirError(f"{where}: {existing} is a file, not a directory; choose another directory")
    if not os.access(existing, os.W_OK | os.X_OK):  # a read-only file system refuses root too
        cause = "read-only file system" if os.statvfs(existing).f_flag & os.ST_RDONLY else "permission denied"
        raise RunDirError(f"{where}: cannot write there ({cause} in {existing}); choose another directory")
    free = os.statvfs(existing).f_bavail * os.statvfs(existing).f_frsize
    if free < MIN_FREE_BYTES:
        raise RunDirError(f"{where}: no space left on device ({free / 2**20:.1f} MiB free in {existing}, under the "
                          f"{MIN_FREE_BYTES // 2**20} MiB its outputs need); free some or choose another directory")


def is_write_fault(error: BaseException) -> bool:
    """Whether `error` is the disk's refusal of a write (full, read-only, not permitted), not a fault of ours."""
    return isinstance(error, OSError) and error.errno in WRITE_FAULTS


def write_fault_line(error: OSError, where: str | os.PathLike) -> str:
    """'cannot write PATH: no space left on device', PATH the file `error` names, else `where`."""
    return f"cannot write {error.filename or where}: {os.strerror(error.errno).lower()}"


# --- atomic files ----------------------------------------------------------------------------------------

def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call `write` on a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as error:
        raise _naming(error, path) from None
    try:
        os.chmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if is_write_fault(error):  # disk full, read-only: the file it would have replaced is intact
            raise _naming(error, path) from None
        raise


def _naming(error: OSError, path: Path) -> OSError:
    """A write fault as an OSError naming the file it was for (not a temporary file, or none)."""
    return OSError(error.errno, os.strerror(error.errno), str(path)) if is_write_fault(error) else error


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def finite_json(data: Any) -> tuple[Any, dict[str, str]]:
    """`data` with every non-finite float replaced by None, and {dotted path: the value it had} for each."""
    replaced: dict[str, str] = {}

    def clean(value, path):
        if isinstance(value, float) and not math.isfinite(value):
            replaced[path] = str(value)  # 'nan', 'inf' or '-inf'
            return None
        if isinstance(value, dict):
            return {k: clean(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [clean(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return value

    return clean(data, ""), replaced


def write_json(path: str | os.PathLike, data: Any) -> Any:
    """Write `data` as indented, valid JSON, atomically; return what was written.

    JSON has no NaN or infinity: such a number is written as null, and a dict gets a "nonfinite" entry
    mapping the path of each such null to the value it stands for.
    """
    data, replaced = finite_json(data)
    if replaced and isinstance(data, dict):
        data["nonfinite"] = replaced
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda f: f.write(text.encode()))
    return data


def remove_temporary_files(directory: Path) -> list[Path]:
    """Remove what killed atomic writes left in `directory` and its direct subfolders; return what was removed.
    Only the directory's holder may call this: another process's write in progress looks the same."""
    leftovers = [*directory.glob(TEMPORARY), *directory.glob(f"*/{TEMPORARY}")]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


# --- checkpoints -----------------------------------------------------------------------------------------

@dataclass
class History:
    """Per-evaluation metrics, as logged: one entry per evaluated epoch."""

    epochs: list[int] = field(default_factory=list)
    metrics: list[dict[str, dict[str, float]]] = field(default_factory=list)


@dataclass
class TrainState:
    """Where training stands. The learning rate is a function of `step`, so it needs no state of its own."""

    epoch: int = 0                 # epochs completed
    batch: int = 0                 # next batch of the current epoch
    step: int = 0                  # optimizer steps taken
    perm: Tensor | None = None     # the current epoch's batch order, while inside an epoch
    loss_sum: Tensor | None = None  # the current epoch's summed training loss so far
    history: History = field(default_factory=History)
    wall_seconds: float = 0.0      # time of every session of this run so far, evaluations included
    train_seconds: float = 0.0     # time spent in training steps only, every session included


def rng_states(order: torch.Generator) -> dict:
    states = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
              "order": order.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict, order: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    order.set_state(states["order"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(path: Path, config: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    state: TrainState, order: torch.Generator) -> None:
    """Write the checkpoint atomically: a kill during the write leaves the previous one intact."""
    payload = {"config": config, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
               "state": state.__dict__ | {"history": state.history.__dict__}, "rng": rng_states(order)}
    buffer = io.BytesIO()
    torch.save(payload, buffer)  # serialise fully first, so the file write is one short step
    atomic_write(path, lambda f: f.write(buffer.getbuffer()))


# Keys added after runs were first saved: (section, key, the model families it applies to, the behaviour of the runs
# saved before it). A run saved without the key is read with that value, so it resumes as the network it trained.
ADDED_KEYS = [("model", "padding", ("conv",), "symmetric")]  # TF's padding became the default after 7ff63cc


def with_added_keys(config: dict) -> dict:
    """A saved config with every key added since it was saved, at the value its run had (ADDED_KEYS)."""
    for section, key, families, value in ADDED_KEYS:
        node = config.get(section)
        if isinstance(node, dict) and node.get("name") in families and key not in node:
            node[key] = value
    return config


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's contents, on the CPU (its config with the keys added since: with_added_keys); RunDirError
    if it cannot be read."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing") from None
    except Exception as error:  # truncated, overwritten, not a checkpoint: torch says so in many ways
        raise RunDirError(f"{path} cannot be read ({type(error).__name__}: {str(error).splitlines()[0][:200]}); "
                          "it is damaged: start the run afresh in another directory") from None
    if not isinstance(checkpoint, dict) or not {"config", "model", "optimizer", "state", "rng"} <= set(checkpoint):
        raise RunDirError(f"{path} cannot be read: it is not a coordexp checkpoint")
    missing = missing_keys(with_added_keys(checkpoint["config"]))
    if missing:  # a key added since, whose default is not known to give the run's result
        raise RunDirError(f"{path} was written by an older coordexp: its config has no {', '.join(missing)}, and "
                          "the current default may not give its result; start the run afresh in another directory")
    return checkpoint


def restore(checkpoint: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer, order: torch.Generator,
            device: torch.device) -> TrainState:
    """Load model, optimizer and RNG states from `checkpoint`; return the training state to continue from."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    set_rng_states(checkpoint["rng"], order)
    saved = dict(checkpoint["state"])
    saved["history"] = History(**saved["history"])
    state = TrainState(**saved)
    if state.perm is not None:
        state.perm, state.loss_sum = state.perm.to(device), state.loss_sum.to(device)
    return state


# --- signals ---------------------------------------------------------------------------------------------

class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint."""

    def __init__(self, signum: int, epoch: int, step: int):
        self.signum, self.epoch, self.step = signum, epoch, step
        super().__init__(f"interrupted by {signal.Signals(signum).name} at epoch {epoch}, step {step}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class StopRequest:
    """Records the first SIGINT/SIGTERM while active (a second one exits at once); the training loop polls it.

    With `stop_file` (a sweep's), a signal caught here is written there, and one that another process of
    the sweep wrote there counts as caught here: that is how one Ctrl-C reaches jobs in other processes.
    A handler another library installed (submitit's, which turns SIGTERM into a requeue) is left alone.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    LOOK_EVERY = 1.0  # seconds between looks at the stop file: a stat per step would cost on a network disk

    def __init__(self, stop_file: Path | None = None):
        self.signum = 0   # the signal to stop for, caught here or read from the stop file
        self.caught = 0   # the signal this process caught itself
        self.stop_file = stop_file
        self._previous: dict[int, object] = {}
        self._depth = 0   # a sweep holds its request across jobs, which enter it again
        self._next_look = 0.0

    def poll(self) -> int:
        """The signal to stop for, or 0; the loop calls it after every step."""
        if not self.signum and self.stop_file is not None and time.monotonic() >= self._next_look:
            self._next_look = time.monotonic() + self.LOOK_EVERY
            self.signum = read_stop_file(self.stop_file)
        return self.signum

    def _handle(self, signum, frame):
        if self.caught:
            os._exit(128 + signum)  # second signal: the user means it
        self.caught = signum
        if not self.signum:
            self.signum = signum
            if self.stop_file is not None:
                atomic_write(self.stop_file, lambda f: f.write(signal.Signals(signum).name.encode()))

    def __enter__(self) -> "StopRequest":
        self._depth += 1
        if self._depth == 1 and threading.current_thread() is threading.main_thread():  # handlers live there
            for sig in self.SIGNALS:
                current = signal.getsignal(sig)
                if _replaceable(current):
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()


def _replaceable(handler) -> bool:
    """Python's defaults and our own handlers may be replaced; another library's may not."""
    return (handler in (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, None)
            or isinstance(getattr(handler, "__self__", None), StopRequest))


# The process that started this one (a sweep for its workers, a reproduction for its sweeps): "PID@HOST". Set for
# its children by every coordexp process; a child on the same host stops when its owner is gone (watch_owner).
OWNER_ENV = "COORDEXP_OWNER"
_watching = (0, "")  # the process whose watcher thread runs, and the owner it watches


def watch_owner(look_every: float = 1.0) -> None:
    """Stop this process as SIGTERM would if the coordexp process that started it dies (even by SIGKILL), and
    name this process the owner of the processes it starts. Once per process; not in SLURM jobs, which outlive
    the process that submitted them by design. A fork of a watching process (no thread comes with it) watches
    the owner its parent watches: a sweep job forked by its worker outlives the worker, not the sweep."""
    global _watching
    if _watching[0] not in (0, os.getpid()):
        os.environ[OWNER_ENV] = _watching[1]
    owner = os.environ.get(OWNER_ENV, "")
    os.environ[OWNER_ENV] = f"{os.getpid()}@{socket.gethostname()}"
    pid, _, host = owner.partition("@")
    if _watching[0] == os.getpid() or not pid.isdigit() or int(pid) == os.getpid() or host != socket.gethostname() \
            or "SLURM_JOB_ID" in os.environ:
        return
    _watching = (os.getpid(), owner)
    threading.Thread(target=_stop_when_gone, args=(int(pid), look_every), daemon=True,
                     name="coordexp-owner").start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_when_gone(pid: int, look_every: float, grace: float = 5.0) -> None:
    while _alive(pid):
        time.sleep(look_every)
    os.kill(os.getpid(), signal.SIGTERM)  # the run in progress stops as on SIGTERM: checkpoint, status, exit 143
    # a process that does not end by itself (a pool's worker whose sweep is gone) ends `grace` seconds after it
    # holds no run directory any more: a run's last checkpoint and metrics are written first
    quiet_since = None
    while quiet_since is None or time.monotonic() - quiet_since < grace:
        quiet_since = (quiet_since or time.monotonic()) if not _held else None
        time.sleep(0.1)
    os._exit(128 + signal.SIGTERM)


def read_stop_file(path: Path) -> int:
    """The signal number a sweep's stop file names, or 0 when there is none."""
    try:
        name = path.read_text().strip()
    except FileNotFoundError:
        return 0
    return signal.Signals[name].value if name in signal.Signals.__members__ else signal.SIGTERM.value


# --- ownership -------------------------------------------------------------------------------------------

class DirLock:
    """An exclusive file lock (filelock) on `directory`/.coordexp.lock, held until `release` or the process ends.

    RunDirError, naming the directory under `key` and the holder, when another process holds it or the
    directory cannot be written. With `create`, a missing directory is made first.
    """

    def __init__(self, directory: Path, key: str, create: bool = True):
        self.path = directory / LOCK
        self.lock = FileLock(self.path, timeout=0, thread_local=False)  # released by whichever thread ends the run
        check_output_dir(directory, key)  # a full disk is said so, before a failed lock could read as a held one
        try:
            if create:
                directory.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
        except Timeout:
            raise RunDirError(f"{key}={str(directory)!r} is in use by another coordexp run ({self.holder()}); wait for "
                              "it to end or choose another directory") from None
        except OSError as error:
            raise RunDirError(f"{key}={str(directory)!r} is invalid: cannot write there ({error})") from None
        try:
            tempfile.TemporaryFile(dir=directory).close()  # the lock file may exist in a directory we cannot write
        except OSError as error:
            self.release()
            raise RunDirError(f"{key}={str(directory)!r} is invalid: cannot write there ({error})") from None

    def holder(self, wait: float = 1.0) -> str:
        """Who holds the directory, as its holder wrote it (once it decided to run there: a moment after it locked)."""
        deadline = time.monotonic() + wait
        while True:
            written = self.path.read_text(errors="replace").strip()
            if written or time.monotonic() > deadline:
                return written or "a process that just started"
            time.sleep(0.01)

    def announce(self) -> None:
        """Write who holds the directory into the lock file, for the message of a process it refuses."""
        try:
            self.path.write_text(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        except OSError as error:
            self.release()
            raise RunDirError(write_fault_line(error, self.path)) from None

    def release(self) -> None:
        """Let go of the directory (the lock file stays: removing it could let two processes hold it)."""
        if self.lock.is_locked:
            try:
                if self.path.stat().st_size:
                    self.path.write_text("")
            except OSError:  # a file system turned read-only: the note stays, the lock goes with it
                pass
            self.lock.release()


@dataclass
class Claim:
    """A run directory this process holds, and what the run started in it does.

    action: "fresh" (train from the start), "resume" (continue from its checkpoint; its training may be
    over, then only the final outputs are written) or "done" (the same config already ended there, with
    `status` completed or diverged: nothing to do).
    """

    path: Path
    action: str
    status: str | None
    lock: DirLock
    checkpoint: dict | None = None  # a resumed run's checkpoint, read once when it was claimed
    config: DictConfig | None = None  # a resumed run's config: its checkpoint's, with the allowed overrides

    def release(self) -> None:
        _held.pop(self.path, None)
        self.lock.release()


_held: dict[Path, Claim] = {}  # the run directories this process holds


def claim_run_dir(run_dir: str | os.PathLike, config: dict, resume: bool = False,
                  key: str = "hydra.run.dir") -> Claim:
    """Hold `run_dir` for this process and decide what a run of `config` (resolved, as in checkpoints) does there.

    With `resume`, the run continues from the directory's checkpoint. Otherwise: an empty or new directory
    starts afresh; one holding a run of the same config continues it from its checkpoint (or starts it over
    when it has none), unless that run completed or diverged, which is reported as it is; a directory
    holding anything else is refused. Leftovers of killed atomic writes are removed. Holding a directory
    twice in one process returns the first claim. Raises RunDirError, with nothing written, on refusal.
    """
    run_dir = Path(os.path.abspath(run_dir))  # as Hydra makes hydra.runtime.output_dir
    if run_dir in _held:
        return _held[run_dir]
    key = "resume" if resume else key
    lock = DirLock(run_dir, key, create=not resume)
    try:
        action, status = ("resume", None) if resume else _decide(run_dir, config, key)
    except BaseException:
        lock.release()
        raise
    lock.announce()
    remove_temporary_files(run_dir)
    _held[run_dir] = claim = Claim(run_dir, action, status, lock)
    return claim


def job_config(config: DictConfig) -> dict:
    """A run's config resolved to plain values, without the hydra node: what checkpoints record."""
    return {key: OmegaConf.to_container(config[key], resolve=True) if OmegaConf.is_config(config[key])
            else config[key] for key in config if key != "hydra"}


def holds_results(run_dir: Path) -> list[str]:
    """The names of the run outputs in `run_dir` (its log aside)."""
    return sorted({p.name for pattern in RESULTS for p in run_dir.glob(pattern)})


def read_metrics(run_dir: Path) -> dict:
    """The run's metrics.json; {"status": MISSING} when there is none, {"status": UNREADABLE, "error": why} when it
    is not a JSON object with a status (truncated by a full disk, edited, another program's)."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        return {"status": MISSING}
    try:
        metrics = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        return {"status": UNREADABLE, "error": f"{path.name}: {type(error).__name__}: {error}"}
    if not isinstance(metrics, dict) or not isinstance(metrics.get("status"), str):
        what = "has no status" if isinstance(metrics, dict) else f"is a JSON {type(metrics).__name__}, not an object"
        return {"status": UNREADABLE, "error": f"{path.name} {what}"}
    return metrics


def is_complete(run_dir: Path, metrics: dict) -> bool:
    """Whether the run completed and every output its metrics.json lists is there (`metrics`: read_metrics')."""
    return (metrics.get("status") == "completed"
            and all((run_dir / name).exists() for name in metrics.get("outputs", [])))


def saved_config(run_dir: Path) -> dict | None:
    """The config of the run in `run_dir`: its checkpoint's (which a resume may have extended), else .hydra's."""
    if (run_dir / CHECKPOINT).exists():
        return load_checkpoint(run_dir / CHECKPOINT)["config"]
    try:
        return with_added_keys(OmegaConf.to_container(OmegaConf.load(run_dir / HYDRA_DIR / CONFIG_FILE), resolve=True))
    except Exception:  # missing or damaged: the run cannot be identified
        return None


def first_difference(theirs: Any, ours: Any, path: str = "") -> str | None:
    """'optimizer.lr: 0.01 there, 0.1 here' for the first key where two configs differ; None if they agree."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for key in dict.fromkeys([*theirs, *ours]):
            if path == "" and key == "resume":
                continue
            found = first_difference(theirs.get(key, "<absent>"), ours.get(key, "<absent>"), f"{path}{key}.")
            if found:
                return found
        return None
    return None if theirs == ours else f"{path.rstrip('.')}: {as_typed(theirs)} there, {as_typed(ours)} here"


def as_typed(value: Any) -> str:
    """A config value as a user types it on the command line (a choice by its name, not its Enum's repr)."""
    value = value.value if isinstance(value, Enum) else value
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _decide(run_dir: Path, config: dict, key: str) -> tuple[str, str | None]:
    found = holds_results(run_dir)
    if not found:
        return "fresh", None
    theirs = saved_config(run_dir)
    where = f"{key}={str(run_dir)!r} is invalid: it holds"
    if theirs is None:
        raise RunDirError(f"{where} files of a run it cannot identify ({', '.join(found)}; no {CHECKPOINT} or "
                          f"{HYDRA_DIR}/{CONFIG_FILE}); choose another directory")
    difference = first_difference(theirs, config)
    if difference:
        raise RunDirError(f"{where} another run, whose config differs ({difference}); choose another directory, "
                          f"or continue that run with resume={run_dir}")
    metrics = read_metrics(run_dir)
    status = metrics["status"]
    if status == "diverged" or is_complete(run_dir, metrics):
        return "done", status
    if (run_dir / CHECKPOINT).exists():
        return "resume", None
    for name in found:  # the same run, stopped before its first checkpoint: start it over
        if name != HYDRA_DIR:
            path = run_dir / name
            if path.is_dir():
                for child in path.iterdir():
                    child.unlink()
                path.rmdir()
            else:
                path.unlink()
    return "fresh", None


def write_hydra_dir(run_dir: Path, cfg: DictConfig, hydra_cfg: DictConfig) -> None:
    """Write .hydra/ as Hydra would (config.yaml, hydra.yaml, overrides.yaml), once the run holds its directory."""
    files = {CONFIG_FILE: cfg, HYDRA_FILE: OmegaConf.create({"hydra": hydra_cfg}),
             OVERRIDES_FILE: hydra_cfg.overrides.task}
    for name, node in files.items():
        text = OmegaConf.to_yaml(node).encode()
        atomic_write(run_dir / HYDRA_DIR / name, lambda f: f.write(text))


def discard_if_untouched(run_dir: Path) -> bool:
    """Remove `run_dir` if it holds nothing but empty logs (Hydra made it for a job that then did not run)."""
    entries = list(run_dir.iterdir())
    if not all(p.suffix == ".log" and p.is_file() and p.stat().st_size == 0 for p in entries):
        return False
    for path in entries:
        path.unlink()
    run_dir.rmdir()
    return True
