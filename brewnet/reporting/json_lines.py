"""Append-only files of JSON lines shared by writers and tailing readers (the metrics file, the
progress file): each line goes out whole in one ``os.write`` on an ``O_APPEND`` descriptor, so
concurrent writers never interleave and a reader sees complete lines only (it still skips a last
line without its newline, in case it catches a write half way)."""
from __future__ import annotations

import json
import os


def open_append(path: str | os.PathLike, truncate: bool = False) -> int:
    """A descriptor appending to ``path``, created with its directory if needed."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
    return os.open(path, flags, 0o666)


def append_record(fd: int, rec: dict, allow_nan: bool = True) -> None:
    """``rec`` as one JSON line, in one write."""
    line = json.dumps(rec, separators=(", ", ": "), allow_nan=allow_nan) + "\n"
    os.write(fd, line.encode("utf-8"))


def read_records(path: str | os.PathLike) -> list[dict]:
    """The records of the complete lines of ``path`` (blank lines and a partial last one skipped)."""
    out = []
    with open(os.fspath(path), encoding="utf-8") as f:
        for line in f:
            if not line.endswith("\n"):
                break
            if line.strip():
                out.append(json.loads(line))
    return out
