"""A sweep job in a process of its own: a fork of its joblib worker, so that a kill of the job's process (out of memory,
SIGKILL) ends that job alone. A joblib worker that dies breaks joblib's pool, which kills the other workers' jobs and
ends the sweep with no summary; a job's process that dies is one failed job, and its worker goes on to the next.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import stat
from typing import Any, Callable

from coordexp.rundir import StopRequest, watch_owner


def run_in_own_process(run: Callable[[], Any], stop: StopRequest) -> tuple[Any, str | None]:
    """`run()` in a forked child, waited for: (its result, None), or (None, how its process ended) when it ended
    without one. The result travels as JSON. A signal to this process while it waits is `stop`'s to handle (a
    sweep's: its stop file, which the child reads)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the job's process: it never returns into the worker's code
        code = 1
        try:
            os.close(read)
            _let_go_of_worker_pipes(keep=write)
            watch_owner()  # it stops when the sweep is gone (a killed worker's job ends: the sweep waits for it)
            os.write(write, json.dumps(run()).encode())
            code = 0
        finally:
            for handler in logging.getLogger().handlers:
                handler.flush()
            os._exit(code)
    os.close(write)
    with stop:
        _, status = os.waitpid(pid, 0)
    with os.fdopen(read, "rb") as f:
        result = f.read()
    if result:
        return json.loads(result), None
    return None, (f"the job's process (pid {pid}) " + (f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
                  if os.WIFSIGNALED(status) else f"exited with status {os.waitstatus_to_exitcode(status)}"))


def _let_go_of_worker_pipes(keep: int) -> None:
    """Point the pipes and sockets the child inherited from its joblib worker at /dev/null (its standard streams and
    `keep` aside): while a copy of them is open, joblib cannot see that the worker died. (The numbers stay taken:
    the worker's objects that own them are never used or freed in the child.)"""
    try:
        fds = [int(fd) for fd in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: a killed worker's pool breaks when its job's process ends
        return
    null = os.open(os.devnull, os.O_RDWR)
    for fd in fds:
        try:
            mode = os.fstat(fd).st_mode
        except OSError:  # listdir's own descriptor, closed since
            continue
        if fd > 2 and fd not in (keep, null) and (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
            os.dup2(null, fd)
    os.close(null)
