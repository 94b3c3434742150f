"""Atomic file writes: readers see the old file or the complete new one, never a part.

The one implementation for brewnet (Caffe's files, the datasets' lists and mean image, the
server's job files, HDF5 weights, deploy archives): a temporary file beside the target, fsync,
rename over the target, fsync of the folder. :func:`atomic_write` takes the bytes;
:func:`atomic_path` gives the temporary path to a writer that wants a file name (h5py, tarfile).
"""
from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]

__all__ = ["PathLike", "atomic_write", "atomic_path"]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the whole file to.

    When the block ends normally the file is fsynced and renamed over ``path`` (then the folder
    is fsynced); when it raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
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


def atomic_write(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); the new file's mode
    honours the umask."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
