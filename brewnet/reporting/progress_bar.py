"""The training progress bar on a terminal: one line on stderr, cleared before each log line
(``brewnet train``, and the launcher of a data-parallel job, which draws rank 0's progress)."""
from __future__ import annotations

import time


class TerminalProgress:
    """A one-line progress bar on a terminal (stderr); log lines clear it first."""

    def __init__(self, stream):
        self.stream = stream
        self.shown = False
        self.last = 0.0
        self.t0 = time.perf_counter()
        self.i0 = None

    def filter(self, record) -> bool:  # a logging filter: clear the bar before a log line
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False
        return True

    def __call__(self, it, start, stop) -> None:
        now = time.perf_counter()
        if self.i0 is None:
            self.i0, self.t0 = start, now
        if now - self.last < 0.1 and it < stop:
            return
        self.last = now
        total = max(stop - start, 1)
        done = it - start
        width = 30
        fill = int(width * done / total)
        rate = (it - self.i0) / max(now - self.t0, 1e-9)
        eta = (stop - it) / rate if rate > 0 else 0
        self.stream.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {it}/{stop} iters "
                          f"{rate:.1f} it/s ETA {eta:.0f}s\033[K")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        self.filter(None)
