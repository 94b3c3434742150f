"""Machine-readable progress as JSON lines, for the server (``brewnet serve``) and any other
program that runs the CLI and wants to show how far a task is.

When the environment variable ``BREWNET_PROGRESS_FILE`` names a file, ``brewnet dataset create``,
``brewnet classify`` and ``brewnet train`` append one line per update::

    {"task": "train_db", "done": 1200, "total": 5000, "time": 1718000000.123}

- ``task``: what is being counted (dataset create: ``train_db``/``val_db``/``test_db``;
  classify: ``classify``; train: ``train``, with ``done`` the solver iteration and ``total``
  its ``max_iter``).
- ``time``: Unix time in seconds.

Each line is written whole by one ``os.write`` on a descriptor opened with ``O_APPEND``, so
several writers (the steps of a job) can share one file and a reader tailing it sees complete
lines only (a reader should still ignore a last line without its newline).  Lines are throttled
to at most :data:`MAX_PER_S` per second and task; the final line of a task (``done == total``,
or :meth:`ProgressFile.close`) is always written.
"""
from __future__ import annotations

import os
import time

from .json_lines import append_record, open_append, read_records

ENV = "BREWNET_PROGRESS_FILE"
#: at most this many lines per second and task (the final line of a task is always written)
MAX_PER_S = 2.0


class ProgressFile:
    """Appends ``{"task", "done", "total", "time"}`` lines to ``path`` (see the module docstring).

    ``clock`` (default ``time.monotonic``) decides the throttling; it is a parameter so tests
    can drive it without sleeping.
    """

    def __init__(self, path: str | os.PathLike, *, max_per_s: float = MAX_PER_S, clock=time.monotonic):
        self.path = os.fspath(path)
        self._fd: int | None = open_append(self.path)
        self._interval = 1.0 / max_per_s if max_per_s > 0 else 0.0
        self._clock = clock
        # task -> (clock time of its last line, (done, total) of the last line written / seen)
        self._last_t: dict[str, float] = {}
        self._written: dict[str, tuple[int, int]] = {}
        self._seen: dict[str, tuple[int, int]] = {}

    def update(self, task: str, done: int, total: int, *, force: bool = False) -> bool:
        """Record that ``task`` has ``done`` of ``total``; returns whether a line was written.
        Written when ``force``, when the task is complete (done >= total) or when the task's
        previous line is at least 1/max_per_s old."""
        if self._fd is None:
            return False
        done, total = int(done), int(total)
        self._seen[task] = (done, total)
        now = self._clock()
        final = total > 0 and done >= total
        last = self._last_t.get(task)
        if not (force or final or last is None or now - last >= self._interval):
            return False
        if self._written.get(task) == (done, total):
            return False  # the same numbers again (e.g. close() after the final line)
        self._write(task, done, total)
        self._last_t[task] = now
        return True

    def finish(self, task: str) -> None:
        """Write the task's last seen numbers unless that line was already written."""
        seen = self._seen.get(task)
        if seen is not None and self._written.get(task) != seen:
            self._write(task, *seen)

    def _write(self, task: str, done: int, total: int) -> None:
        rec = {"task": task, "done": done, "total": total, "time": round(time.time(), 3)}
        append_record(self._fd, rec)  # one write: concurrent writers never interleave
        self._written[task] = (done, total)

    def close(self) -> None:
        """Write each task's final numbers (if not yet written) and close the file."""
        if self._fd is None:
            return
        for task in list(self._seen):
            self.finish(task)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> "ProgressFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def from_env(environ=None) -> ProgressFile | None:
    """A :class:`ProgressFile` on ``$BREWNET_PROGRESS_FILE``, or None when it is unset or empty."""
    path = (environ if environ is not None else os.environ).get(ENV, "")
    return ProgressFile(path) if path else None


def read_progress_file(path: str | os.PathLike) -> list[dict]:
    """The complete lines of a progress file (a last line without its newline is skipped)."""
    return read_records(path)
