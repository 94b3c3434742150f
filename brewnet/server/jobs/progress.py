"""Reading a job's progress and metrics from the files its task writes.

- ``metrics.jsonl`` (model jobs): brewnet train's JSON lines (see :mod:`brewnet.reporting.metrics`); a
  resumed training appends, so the last value wins for each (iter, phase, name).
- ``progress.jsonl`` (every kind): ``{"task", "done", "total", "time"}`` lines written by the CLI
  when BREWNET_PROGRESS_FILE is set.

Nothing here parses human log lines.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

from . import states

METRICS_FILE = "metrics.jsonl"
PROGRESS_FILE = "progress.jsonl"
PLAN_FILE = "plan.json"


def read_metrics(jobdir: str | os.PathLike, offset: int = 0) -> tuple[list[dict], int]:
    """The metric records from byte ``offset`` of ``<jobdir>/metrics.jsonl`` and the offset after
    the last complete line (a line still being written is left for the next call).  Lines that are
    not JSON objects are skipped.  A missing file gives ``([], offset)``; a file shorter than
    ``offset`` (rewritten by a fresh training) is read from the start."""
    path = Path(jobdir) / METRICS_FILE
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() < offset:
                offset = 0
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    records = []
    for line in data[:end + 1].splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict) and "iter" in rec and "name" in rec:
            records.append(rec)
    return records, offset + end + 1


def _phase_key(rec: dict) -> str:
    phase = str(rec.get("phase", "train"))
    net = rec.get("test_net")
    return f"{phase}#{net}" if net not in (None, 0) else phase


def _best_index(name: str, points: list[list]) -> int | None:
    """Index of the best point of a series: max for names with 'accuracy', min for 'loss'."""
    lname = name.lower()
    if "accuracy" in lname:
        sign = 1.0
    elif "loss" in lname:
        sign = -1.0
    else:
        return None
    best, best_i = None, None
    for i, p in enumerate(points):
        v = p[1]
        if v is None or not math.isfinite(v):
            continue
        if best is None or sign * v > sign * best:
            best, best_i = v, i
    return best_i


def _downsample(points: list[list], max_points: int, keep: set[int]) -> list[list]:
    """At most ``max_points`` points chosen by even stride, always keeping the first, the last and
    the indices in ``keep`` (each replaces the nearest stride point that is not itself kept)."""
    n = len(points)
    if n <= max_points:
        return points
    forced = sorted({0, n - 1, *keep})
    if max_points <= len(forced):
        return [points[i] for i in forced]
    chosen = {round(k * (n - 1) / (max_points - 1)) for k in range(max_points)}
    for f in forced:
        if f in chosen:
            continue
        # the nearest stride point not forced gives way (the count stays max_points)
        victims = sorted((c for c in chosen if c not in forced), key=lambda c: (abs(c - f), c))
        if victims:
            chosen.discard(victims[0])
        chosen.add(f)
    return [points[i] for i in sorted(chosen)]


def metric_series(records: list[dict], max_points: int | None = None) -> dict:
    """``{"train": {name: [[iter, value, time], ...]}, "test": {...}, <other phases>: {...}}``
    sorted by iteration, the last record winning for each (iter, phase, name) (a resumed run
    rewrites the iterations it repeats).  With ``max_points``, each series keeps at most that many
    points by even stride, always with its first and last point and, for test phases, its best
    point (the highest of a name with 'accuracy', the lowest of a name with 'loss').  Phases other
    than train/test (e.g. ``test_moving_bn``: validation with Caffe's moving-average BatchNorm
    statistics when -bn_recalibrate runs) come as they are, under their own key."""
    table: dict[str, dict[str, dict[int, list]]] = {"train": {}, "test": {}}
    for rec in records:
        try:
            it = int(rec["iter"])
        except (KeyError, TypeError, ValueError):
            continue
        value = rec.get("value")
        value = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
        phase = _phase_key(rec)
        table.setdefault(phase, {}).setdefault(str(rec["name"]), {})[it] = [it, value, rec.get("time")]
    out: dict[str, dict[str, list]] = {}
    for phase, names in table.items():
        out[phase] = {}
        for name, by_iter in names.items():
            points = [by_iter[i] for i in sorted(by_iter)]
            if max_points is not None and max_points > 0 and len(points) > max_points:
                keep = set()
                if phase != "train":
                    b = _best_index(name, points)
                    if b is not None:
                        keep.add(b)
                points = _downsample(points, max_points, keep)
            out[phase][name] = points
    return out


def best_value(records: list[dict], phase: str = "test") -> dict | None:
    """The best validation point of ``phase``: the highest value of an output named with
    'accuracy' (the first such output), else the lowest of one with 'loss';
    ``{"name", "value", "iteration"}`` or None."""
    series = metric_series(records).get(phase, {})
    for word in ("accuracy", "loss"):
        for name in sorted(series):
            if word in name.lower():
                i = _best_index(name, series[name])
                if i is not None:
                    it, v, _ = series[name][i]
                    return {"name": name, "value": v, "iteration": it}
    return None


def read_plan(jobdir: str | os.PathLike) -> dict:
    """A model job's plan.json (iterations per epoch, max_iter, ...); {} when absent/unreadable."""
    try:
        with open(Path(jobdir) / PLAN_FILE, encoding="utf-8") as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}


def _tail_lines(path: Path, tail_bytes: int = 65536) -> list[bytes]:
    """The complete lines in the last ``tail_bytes`` bytes of a file (the first, possibly cut
    line dropped unless the read started at 0; a last line without newline dropped)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            start = max(0, size - tail_bytes)
            f.seek(start)
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    lines.pop()  # after the last newline: empty, or a line still being written
    if start > 0 and lines:
        lines.pop(0)
    return lines


def newest_train_iter(jobdir: str | os.PathLike) -> int | None:
    """The highest train iteration in the tail of metrics.jsonl (the file only grows)."""
    best = None
    for line in _tail_lines(Path(jobdir) / METRICS_FILE):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if isinstance(rec, dict) and rec.get("phase") == "train" and isinstance(rec.get("iter"), int):
            best = rec["iter"] if best is None else max(best, rec["iter"])
    return best


def progress_from_file(jobdir: str | os.PathLike) -> float | None:
    """Progress from progress.jsonl: the last line of each task, sum(done)/sum(total) over tasks,
    in [0, 1]; None when the file has no usable line yet."""
    last: dict[str, tuple[float, float]] = {}
    for line in _tail_lines(Path(jobdir) / PROGRESS_FILE):
        try:
            rec = json.loads(line)
            done, total = float(rec["done"]), float(rec["total"])
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            continue
        last[str(rec.get("task", ""))] = (done, total)
    total = sum(t for _, t in last.values())
    if not last or total <= 0:
        return None
    return min(1.0, max(0.0, sum(d for d, _ in last.values()) / total))


def read_progress(jobdir: str | os.PathLike, job) -> float:
    """Progress of ``job`` in [0, 1]: 1 when Done; a model, its newest train iteration over
    plan.json's max_iter; other kinds from progress.jsonl; otherwise the stored value."""
    if job.status == states.DONE:
        return 1.0
    stored = float(job.progress or 0.0)
    if job.kind == states.MODEL:
        max_iter = read_plan(jobdir).get("max_iter")
        it = newest_train_iter(jobdir)
        if it is None or not max_iter:
            return stored
        return min(1.0, max(0.0, it / float(max_iter)))
    p = progress_from_file(jobdir)
    return stored if p is None else p
