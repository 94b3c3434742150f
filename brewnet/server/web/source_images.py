"""The input image of an inferred item, for thumbnails and views: an image file under a
``--data-root``, or an LMDB record ``<db>:<key>`` of a database inside the jobs folder (decoded
here with Pillow and numpy, without torch: the server process never loads it)."""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from ...data.lmdb_io import parse_datum, read_record
from ..errors import ApiError
from ..jobs.jobdir import confine_server_path


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def source_image(server, source: str):
    """A Pillow image of a classified source: an image file under a --data-root, or an LMDB
    record ``<db>:<key>`` of a database inside the jobs folder (decoded here without torch:
    the server process never loads it)."""
    if os.path.isfile(source):
        full = confine_server_path(source, server.config.data_roots, "source")
        return Image.open(full)
    db, sep, key = source.rpartition(":")
    jobs = Path(server.config.jobs_dir).resolve()
    if not sep or not db or not _inside(Path(db).resolve(), jobs) or not Path(db).is_dir():
        raise ApiError(404, "This image is no longer available")
    try:
        datum = parse_datum(read_record(str(Path(db).resolve()), key), key)
    except Exception:  # a record gone or unreadable: a missing thumbnail, not a 500
        raise ApiError(404, "This image is no longer available") from None
    if datum.encoded:
        return Image.open(io.BytesIO(datum.data))   # encoded from RGB: decodes as it was
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):
        chw = np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    else:
        f = np.asarray(datum.float_data, dtype=np.float32).reshape(shape)
        lo, hi = float(f.min()), float(f.max())
        chw = np.zeros(shape, np.uint8) if hi <= lo else ((f - lo) * (255.0 / (hi - lo))).astype(np.uint8)
    if chw.shape[0] == 1:
        return Image.fromarray(chw[0])
    return Image.fromarray(np.ascontiguousarray(chw[::-1].transpose(1, 2, 0)))   # BGR -> RGB
