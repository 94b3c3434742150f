"""IDX files (MNIST, Fashion-MNIST), gzipped or not."""
from __future__ import annotations

import glob
import gzip
import os

import numpy as np

from ..errors import DataError

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain) into an array of its shape."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"not an IDX file (bad magic number): {path}")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(_DTYPES[raw[2]])
    start = 4 + 4 * ndim
    need = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - start < need:
        raise DataError(f"IDX file {path} is truncated: {len(raw) - start} bytes of data for shape {dims}")
    return np.frombuffer(raw, dtype=dtype, count=int(np.prod(dims)), offset=start).reshape(dims)


def _one(folder: str, prefix: str, kind: str) -> str | None:
    found = sorted(glob.glob(os.path.join(folder, f"{prefix}-{kind}-idx*-ubyte*")))
    return found[0] if found else None


def find_idx_sets(folder: str) -> dict[str, tuple[str, str]]:
    """``{'train': (images, labels), 'test': (...)}`` for ``train-*`` and ``t10k-*`` files in folder."""
    sets = {}
    for name, prefix in (("train", "train"), ("test", "t10k")):
        im, lb = _one(folder, prefix, "images"), _one(folder, prefix, "labels")
        if im and lb:
            sets[name] = (im, lb)
        elif im or lb:
            raise DataError(f"{folder}: found {os.path.basename(im or lb)} without its "
                            f"{'labels' if im else 'images'} file")
    return sets


def load_idx_set(images_path: str, labels_path: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if images.ndim not in (3, 4) or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(f"IDX images {images.shape} and labels {labels.shape} do not match "
                        f"({images_path}, {labels_path})")
    return images, labels.astype(np.int64)


def write_idx(path: str, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped when the name ends in .gz); for tests."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(head + array.tobytes())
