"""Exports of model jobs' metric series (the Compare page's downloads): CSV, and TensorBoard
event files written without TensorFlow or TensorBoard.  Pure functions: they take the series as
``/api/v1/jobs/<id>/metrics`` gives them and return text or bytes.

A job's series here: ``{phase: {name: [[iteration, value, time], ...]}}`` (value None where the
trainer wrote a non-finite number).  The functions take a list of :class:`JobSeries`.

TensorBoard's event file
------------------------
A sequence of TFRecord records, each::

    uint64 length (little endian) | uint32 masked_crc32c(length bytes) |
    data (length bytes)           | uint32 masked_crc32c(data)

with ``masked_crc32c(x) = ((crc >> 15 | crc << 17) + 0xA282EAD8) mod 2**32`` of the CRC-32C
(Castagnoli) of ``x``.  Each record's data is a serialized protobuf ``Event``.  The field numbers
used here are facts of TensorFlow's message definitions (tensorflow/core/util/event.proto and
tensorflow/core/framework/summary.proto):

    Event:         wall_time   double  = 1   (seconds since the epoch)
                   step        int64   = 2
                   file_version string = 3   (the first event of a file: "brain.Event:2")
                   summary     Summary = 5
    Summary:       value  repeated Value = 1
    Summary.Value: tag          string = 1
                   simple_value float  = 2

Protobuf's wire format (varint keys ``field << 3 | wire_type``; wire types 0 varint, 1 64-bit,
2 length-delimited, 5 32-bit; little-endian fixed-width numbers) is encoded by the few helpers
below.  Each metric point becomes one event (tag ``<phase>/<name>``, step the iteration,
wall time the point's time), written in order of step: TensorBoard drops the events of a run
whose step goes back (it takes that for a restart), so the order matters.  A value the trainer
wrote as non-finite (None here) is written as NaN, as TensorBoard records one.
"""
from __future__ import annotations

import csv
import io
import math
import re
import struct
import tarfile
import time as _time
import zipfile
from dataclasses import dataclass, field

import google_crc32c

CSV_COLUMNS = ("job_id", "job_name", "phase", "name", "iteration", "value", "time")
FILE_VERSION = "brain.Event:2"

# protobuf wire types
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
# field numbers (tensorflow/core/util/event.proto, tensorflow/core/framework/summary.proto)
EVENT_WALL_TIME, EVENT_STEP, EVENT_FILE_VERSION, EVENT_SUMMARY = 1, 2, 3, 5
SUMMARY_VALUE = 1
VALUE_TAG, VALUE_SIMPLE_VALUE = 1, 2


@dataclass
class JobSeries:
    """One job's series: ``series`` = ``{phase: {name: [[iteration, value, time], ...]}}``."""
    job_id: str
    job_name: str
    series: dict = field(default_factory=dict)


def phases_in_order(series: dict) -> list[str]:
    """train, test, then the other phases by name."""
    return sorted(series, key=lambda p: (p != "train", p != "test", p))


def points(job: JobSeries):
    """``(phase, name, iteration, value, time)`` of every point, phase by phase (train, test,
    others), names sorted, points as given (by iteration)."""
    for phase in phases_in_order(job.series):
        for name in sorted(job.series[phase] or {}):
            for p in job.series[phase][name] or []:
                it = int(p[0])
                value = p[1] if len(p) > 1 else None
                t = p[2] if len(p) > 2 else None
                yield phase, name, it, value, t


# ----------------------------------------------------------------------- CSV

def _csv_number(v) -> str:
    """A number as text that reads back as the same float (repr); None as an empty cell."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, int):
        return str(v)
    return repr(float(v))


def to_csv(jobs: list[JobSeries]) -> str:
    """The series of ``jobs`` as CSV: a header, then one row per point with the columns of
    :data:`CSV_COLUMNS` (``value`` and ``time`` empty where unknown)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for job in jobs:
        for phase, name, it, value, t in points(job):
            w.writerow([job.job_id, job.job_name, phase, name, it, _csv_number(value), _csv_number(t)])
    return out.getvalue()


# ----------------------------------------------------------------------- protobuf, by hand

def varint(n: int) -> bytes:
    """Protobuf's base-128 varint (a negative int64 as its two's complement, 10 bytes)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def field_varint(number: int, value: int) -> bytes:
    return _key(number, _VARINT) + varint(int(value))


def field_double(number: int, value: float) -> bytes:
    return _key(number, _I64) + struct.pack("<d", float(value))


def field_float(number: int, value: float) -> bytes:
    return _key(number, _I32) + struct.pack("<f", float(value))


def field_bytes(number: int, data: bytes) -> bytes:
    return _key(number, _LEN) + varint(len(data)) + data


def summary_value(tag: str, value: float | None) -> bytes:
    """A serialized ``Summary.Value`` with ``tag`` and ``simple_value`` (None: NaN)."""
    v = math.nan if value is None else float(value)
    return field_bytes(VALUE_TAG, tag.encode("utf-8")) + field_float(VALUE_SIMPLE_VALUE, v)


def event(wall_time: float, step: int | None = None, *, file_version: str | None = None,
          values: list[tuple[str, float | None]] | None = None) -> bytes:
    """A serialized ``Event``: wall time, step (left out when None), the file version or a
    summary of ``values`` [(tag, value), ...]."""
    out = field_double(EVENT_WALL_TIME, wall_time)
    if step is not None:
        out += field_varint(EVENT_STEP, step)
    if file_version is not None:
        out += field_bytes(EVENT_FILE_VERSION, file_version.encode("utf-8"))
    if values:
        summary = b"".join(field_bytes(SUMMARY_VALUE, summary_value(t, v)) for t, v in values)
        out += field_bytes(EVENT_SUMMARY, summary)
    return out


# ----------------------------------------------------------------------- TFRecord framing

def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of ``data``."""
    crc = google_crc32c.value(bytes(data))
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """``data`` framed as one TFRecord record."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


# ----------------------------------------------------------------------- event files

def first_time(job: JobSeries) -> float | None:
    """The earliest point time of a job (None when no point has one)."""
    times = [t for *_, t in points(job) if isinstance(t, (int, float))]
    return min(times) if times else None


def event_file(job: JobSeries) -> bytes:
    """A TensorBoard event file of one job: the file-version event, then one event per point
    (tag ``<phase>/<name>``) in order of step (then time, then tag).  A point without a time
    gets the time of the job's newest earlier point (the job's first time at the start)."""
    start = first_time(job)
    start = _time.time() if start is None else float(start)
    pts = sorted(points(job), key=lambda p: (p[2], p[4] if isinstance(p[4], (int, float)) else math.inf,
                                             f"{p[0]}/{p[1]}"))
    out = [tfrecord(event(start, 0, file_version=FILE_VERSION))]
    last = start
    for phase, name, it, value, t in pts:
        if isinstance(t, (int, float)):
            last = float(t)
        out.append(tfrecord(event(last, it, values=[(f"{phase}/{name}", value)])))
    return b"".join(out)


def event_file_name(job: JobSeries) -> str:
    """TensorBoard reads files whose name contains ``tfevents``."""
    start = first_time(job)
    return f"events.out.tfevents.{int(start or 0)}.brewnet"


def safe_name(text: str, fallback: str = "job") -> str:
    """A folder name made of letters, digits, '.', '-', '_' only (no leading dot)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", str(text or "")).strip("._-")[:80]
    return s or fallback


def run_folders(jobs: list[JobSeries]) -> list[str]:
    """A run folder per job, named after it (``<name>_<id>``), each distinct."""
    seen: set[str] = set()
    out = []
    for job in jobs:
        base = f"{safe_name(job.job_name)}_{safe_name(job.job_id, 'id')}"
        name, n = base, 2
        while name in seen:
            name, n = f"{base}_{n}", n + 1
        seen.add(name)
        out.append(name)
    return out


def tensorboard_files(jobs: list[JobSeries]) -> list[tuple[str, bytes, float]]:
    """``(path in the archive, event file bytes, mtime)`` per job: ``<run>/events.out.tfevents...``."""
    out = []
    for job, folder in zip(jobs, run_folders(jobs)):
        out.append((f"{folder}/{event_file_name(job)}", event_file(job), first_time(job) or 0.0))
    return out


def tensorboard_zip(jobs: list[JobSeries]) -> bytes:
    """A zip of one run folder per job (``tensorboard --logdir`` on the unpacked folder)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for path, data, mtime in tensorboard_files(jobs):
            stamp = _time.localtime(max(mtime, 315532800))[:6]   # zip dates start in 1980
            info = zipfile.ZipInfo(path, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, data)
    return buf.getvalue()


def tensorboard_tar_gz(jobs: list[JobSeries]) -> bytes:
    """The same as :func:`tensorboard_zip`, as a gzipped tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path, data, mtime in tensorboard_files(jobs):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = int(mtime)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
