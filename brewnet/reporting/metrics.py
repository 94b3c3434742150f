"""Structured training metrics as JSON lines, for plots and the web app.

One JSON object per line, each line written whole with a single ``write`` to a file opened in
append mode, so a reader tailing the file sees complete lines only (a reader should still ignore
a last line without its trailing newline, in case it catches a write half way)::

    {"iter": 100, "phase": "train", "name": "loss", "value": 0.53, "lr": 0.01,
     "time": 1718000000.12, "elapsed": 12.5}

- ``iter``: the solver iteration the value belongs to (train values: the iteration whose forward
  pass produced them, as in Caffe's log; test values: the iteration at which testing ran).
- ``phase``: ``"train"``, ``"test"`` or ``"test_moving_bn"``; ``test_net`` (an int) is added when
  a solver has several test nets and the net is not #0.  ``"test_moving_bn"`` (``brewnet train
  -bn_recalibrate N``, unless ``-bn_compare off``): the same test outputs, at the same
  iteration, computed with BatchNorm's moving averages as they stood (Caffe's numbers) just
  before precise BN re-estimated them; the ``"test"`` records of that iteration are then the
  numbers with the re-estimated statistics.  Without -bn_recalibrate there is only ``"test"``.
- ``name``: a net output blob (``name[k]`` for element k of an output with several values),
  ``"smoothed_loss"`` (train: the loss Caffe displays, averaged over ``average_loss``
  iterations), ``"test_loss"`` (test, with ``test_compute_loss``), or ``"lr"`` (train).
- ``value``: a float (NaN and infinities are written as ``null``).
- ``lr``: the learning rate in force at that iteration.
- ``time``: Unix time in seconds; ``elapsed``: seconds since this writer was opened.

A resumed training appends to the same file; a reader should keep the last value seen for each
(iter, phase, name) key.
"""
from __future__ import annotations

import math
import os
import time

from .json_lines import append_record, open_append, read_records


class MetricsWriter:
    """Appends metric records to ``path`` (created with its directory if needed)."""

    def __init__(self, path: str, truncate: bool = False):
        self.path = os.fspath(path)
        self._fd = open_append(self.path, truncate)
        self._start = time.time()

    def write(self, iter: int, phase: str, name: str, value, lr=None, **extra) -> None:
        value = float(value)
        rec = {"iter": int(iter), "phase": phase, "name": name,
               "value": value if math.isfinite(value) else None,
               "lr": None if lr is None else float(lr),
               "time": round(time.time(), 3), "elapsed": round(time.time() - self._start, 3)}
        rec.update(extra)
        self.write_record(rec)

    def write_record(self, rec: dict) -> None:
        if self._fd is None:
            return
        append_record(self._fd, rec, allow_nan=False)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: str) -> list[dict]:
    """All complete records of a metrics file (a partial last line is skipped)."""
    return read_records(path)
