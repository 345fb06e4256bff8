"""SIGINT / SIGTERM: finish the current step, checkpoint, stop. A second signal exits at once."""
from __future__ import annotations

import os
import signal
import threading


class Interrupted(Exception):
    """Training stopped on a signal after writing a checkpoint."""

    def __init__(self, signum: int, epoch: int, step: int):
        self.signum, self.epoch, self.step = signum, epoch, step
        super().__init__(f"interrupted by {signal.Signals(signum).name} at epoch {epoch}, step {step}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention: 130 for SIGINT, 143 for SIGTERM


class StopRequest:
    """Records the first SIGINT/SIGTERM while active; the training loop polls `signum` between steps."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = 0
        self._previous: dict[int, object] = {}

    def poll(self) -> int:
        """The caught signal's number, or 0; the loop calls it after every step."""
        return self.signum

    def _handle(self, signum, frame):
        if self.signum:
            os._exit(128 + signum)  # second signal: the user means it
        self.signum = signum

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():  # handlers can only be set there
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
