"""Progress reporting: a bar on a terminal, plain periodic lines otherwise (logs, the web app),
and JSON lines in ``$BREWNET_PROGRESS_FILE`` when it is set (brewnet.reporting.progress_file; the task is
the label)."""
from __future__ import annotations

import sys
import time

from .progress_file import from_env


class Progress:
    def __init__(self, total: int, label: str, stream=None, every_s: float = 5.0):
        self.total = max(0, int(total))
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.done = 0
        self.start = time.monotonic()
        self.every_s = every_s
        self._last_t = 0.0 if self.tty else self.start
        self._last_pct = 0
        self.file = from_env()
        if self.file is not None:
            self.file.update(self.label, 0, self.total)

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        pct = int(100 * self.done / self.total) if self.total else 100
        if self.file is not None:
            self.file.update(self.label, self.done, self.total)
        if self.tty:
            if now - self._last_t >= 0.1 or self.done >= self.total:
                width = 30
                fill = int(width * self.done / self.total) if self.total else width
                rate = self.done / max(now - self.start, 1e-9)
                self.stream.write(f"\r{self.label}: [{'#' * fill}{'.' * (width - fill)}] {pct:3d}% "
                                  f"{self.done}/{self.total} ({rate:.0f}/s)")
                self.stream.flush()
                self._last_t = now
        elif (pct // 10 > self._last_pct // 10 or now - self._last_t >= self.every_s) and pct != self._last_pct:
            self.stream.write(f"{self.label}: {self.done}/{self.total} ({pct}%)\n")
            self.stream.flush()
            self._last_t, self._last_pct = now, pct

    def close(self) -> None:
        if self.file is not None:
            self.file.close()  # writes the final numbers if throttling held them back
            self.file = None
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
        elif self._last_pct != 100 and self.total:
            self.stream.write(f"{self.label}: {self.done}/{self.total} (100%)\n")
            self.stream.flush()
