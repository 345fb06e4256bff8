"""A one-line progress bar on stderr: epoch, loss and the latest test metric. Silent when not a terminal."""
from __future__ import annotations

import sys
import time


class ProgressBar:
    """Redraws one line in place; `clear` before printing anything else on the terminal."""

    def __init__(self, epochs: int, enabled: bool, stream=sys.stderr, width: int = 24):
        self.epochs, self.stream, self.width = epochs, stream, width
        self.enabled = enabled and stream.isatty()
        self.start = time.perf_counter()

    def update(self, epoch: float, loss: float, latest: str) -> None:
        """Show progress at fractional epoch `epoch` (0-based), the running loss and the latest test metric."""
        if not self.enabled:
            return
        done = int(self.width * min(epoch / self.epochs, 1.0))
        bar = "#" * done + "." * (self.width - done)
        elapsed = time.perf_counter() - self.start
        line = f"[{bar}] epoch {min(int(epoch) + 1, self.epochs)}/{self.epochs} loss {loss:.4g} {latest} {elapsed:.0f}s"
        self.stream.write("\r" + line[:150].ljust(100))
        self.stream.flush()

    def clear(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 100 + "\r")
            self.stream.flush()
