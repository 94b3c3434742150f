"""Atomic file writes: readers see the old file or the complete new one, never a part.

The one implementation for brewnet (Caffe's files, the datasets' lists, the server's job files):
a temporary file beside the target, fsync, rename over the target, fsync of the folder.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Union

PathLike = Union[str, os.PathLike]

__all__ = ["PathLike", "atomic_write"]


def atomic_write(path: PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over ``path``.

    Readers see either the old file or the complete new one, never a partial snapshot.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours umask
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (best effort: not every platform can open a dir)
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)
