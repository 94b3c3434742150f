"""Data for Caffe nets: LMDB Datum databases, images, the DataTransformer, prefetching, datasets.

- :mod:`brewnet.data.lmdb_io` — read and write LMDBs of ``Datum`` records as real Caffe does.
- :mod:`brewnet.data.image` — decode/encode images (Pillow), OpenCV-like resizing, DIGITS resize modes.
- :mod:`brewnet.data.transformer` — Caffe's DataTransformer (crop, mirror, mean, scale).
- :mod:`brewnet.data.sources` — batch sources behind the data layers (LMDB, list files, HDF5).
- :mod:`brewnet.data.prefetch` — a background thread that prepares the next batches.
- :mod:`brewnet.data.idx` and :mod:`brewnet.data.builder` — ``brewnet dataset create``.
"""
from __future__ import annotations

import os

from ..errors import DataError

__all__ = ["DataError", "resolve_path", "set_input_arrays"]


def resolve_path(path: str, model_dir: str | None = None) -> str:
    """Resolve a path from a prototxt as Caffe does (relative to the working directory), falling
    back to the prototxt's own directory when the path does not exist there."""
    path = os.path.expanduser(path)
    if os.path.isabs(path) or os.path.exists(path) or not model_dir:
        return path
    alt = os.path.join(model_dir, path)
    return alt if os.path.exists(alt) else path


def set_input_arrays(net, data, labels, layer: str | None = None) -> None:
    """pycaffe's ``net.set_input_arrays(data, labels)``: feed the net's (first) MemoryData layer."""
    for lyr in net.layers:
        if lyr.type == "MemoryData" and (layer is None or lyr.name == layer):
            lyr.set_input_arrays(data, labels)
            return
    raise DataError("set_input_arrays: the net has no MemoryData layer"
                    + (f" named '{layer}'" if layer else ""))
