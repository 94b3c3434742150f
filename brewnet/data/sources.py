"""Batch sources behind the data layers: LMDB Datums, image list files, HDF5 files.

Each source reads records in Caffe's order and returns ``(data, label)`` numpy batches from
``next_batch()``; it is driven by one thread (the prefetcher's).  Decoding of encoded images is
spread over a shared thread pool (Pillow releases the GIL while decoding).
"""
from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import DataError
from . import resolve_path
from .image import datum_to_chw, load_image_file
from .lmdb_io import DatumCursor, key_text, parse_datum

log = logging.getLogger("brewnet")

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def decode_pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)),
                                       thread_name_prefix="brewnet-decode")
        return _POOL


def _parallel_map(fn, items):
    if len(items) <= 2:
        return [fn(x) for x in items]
    return list(decode_pool().map(fn, items))


# ----- LMDB -------------------------------------------------------------------------------------
class DatumSource:
    """Caffe's DataLayer reader: Datums in key order, wrapping around at the end.

    Records may differ in size from batch to batch (each batch takes its records' shape; the
    first record gives the shape the net is built with); the records of one batch must agree.
    Each record read gets an ordinal (0, 1, 2, ... from the first record, passes and skipped
    records counted), handed to the transformer so that random crops and mirrors can be a
    function of the record (see :class:`brewnet.data.transformer.RecordDraws`)."""

    def __init__(self, path: str, batch_size: int, transformer, rand_skip: int = 0,
                 rng: np.random.Generator | None = None, output_labels: bool = True, where: str = "Data"):
        self.where = where
        self.batch_size = batch_size
        self.transformer = transformer
        self.output_labels = output_labels
        self.cursor = DatumCursor(path)
        self.path = path
        self.ordinal = 0  # the ordinal of the record under the cursor
        rng = rng if rng is not None else np.random.default_rng()
        if rand_skip:  # skip a random number of records at the start (Caffe's rand_skip)
            self.skip(int(rng.integers(0, rand_skip)))
        key, value = self.cursor.current()
        first = parse_datum(value, key)
        self.encoded = bool(first.encoded)
        self.first_key = key
        self.item_shape = self._array(first, key).shape
        self.data_shape = (batch_size,) + transformer.output_shape(*self.item_shape)

    def _array(self, datum, key) -> np.ndarray:
        t = self.transformer
        return datum_to_chw(datum, t.force_color, t.force_gray,
                            what=f"{self.where}: Datum {key_text(key)} in {self.path}")

    def _stack(self, arrays: list[np.ndarray], records) -> np.ndarray:
        """The batch's arrays as one N×C×H×W array; they must share one shape."""
        shape = arrays[0].shape
        for (key, _), arr in zip(records, arrays):
            if arr.shape != shape:
                raise DataError(
                    f"{self.where}: Datum {key_text(key)} in {self.path} has shape {arr.shape} (C, H, W) but "
                    f"the first record of its batch ({key_text(records[0][0])}) has {shape}: the records of one "
                    f"batch must have one size (use batch_size 1 for records of different sizes, or resize them)")
        return np.stack(arrays)

    def next_batch(self):
        records = []
        for _ in range(self.batch_size):
            key, value = self.cursor.current()
            records.append((key, parse_datum(value, key)))
            self.cursor.next()
        ordinals = np.arange(self.ordinal, self.ordinal + self.batch_size)
        self.ordinal += self.batch_size
        labels = np.array([d.label for _, d in records], dtype=np.float32)
        if self.encoded:
            arrays = _parallel_map(lambda kd: self._array(kd[1], kd[0]), records)
        else:
            arrays = [self._array(d, k) for k, d in records]
        data = self.transformer(self._stack(arrays, records), ordinals)
        return (data, labels) if self.output_labels else (data,)

    def skip(self, n: int) -> None:
        """Pass over ``n`` records without decoding them (rand_skip, data-parallel sharding)."""
        for _ in range(n):
            self.cursor.next()
        self.ordinal += n

    def close(self) -> None:
        self.cursor.close()


# ----- list files (ImageData) -------------------------------------------------------------------
def read_list_file(path: str, where: str = "ImageData") -> list[tuple[str, int]]:
    """Caffe's list file: "<filename> <label>" per line, the label after the last space."""
    if not os.path.isfile(path):
        raise DataError(f"{where}: list file not found: {path}")
    lines = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            name, sep, label = line.rpartition(" ")
            try:
                if not sep:
                    raise ValueError
                lines.append((name.strip(), int(label)))
            except ValueError:
                raise DataError(f"{where}: {path}:{lineno}: expected '<filename> <integer label>', "
                                f"got {line!r}") from None
    if not lines:
        raise DataError(f"{where}: list file is empty: {path}")
    return lines


class ImageListSource:
    """Caffe's ImageDataLayer reader: images named in a list file, optionally shuffled each epoch.

    Unreadable images are skipped (logged with the file name) and counted in ``skipped``.
    """

    def __init__(self, list_path: str, batch_size: int, transformer, root_folder: str = "",
                 new_height: int = 0, new_width: int = 0, is_color: bool = True, shuffle: bool = False,
                 rand_skip: int = 0, rng: np.random.Generator | None = None, where: str = "ImageData"):
        if (new_height > 0) != (new_width > 0):
            raise DataError(f"{where}: new_height and new_width must be set together")
        self.where = where
        self.lines = read_list_file(list_path, where)
        self.root = root_folder
        self.batch_size = batch_size
        self.transformer = transformer
        self.new_hw = (new_height, new_width)
        self.is_color = is_color
        self.shuffle = shuffle
        self.rng = rng if rng is not None else np.random.default_rng()
        self.skipped = 0
        self.skipped_files: list[str] = []
        if shuffle:
            self._shuffle()
        self.pos = 0
        if rand_skip:
            skip = int(self.rng.integers(0, rand_skip))
            if skip >= len(self.lines):
                raise DataError(f"{where}: rand_skip {rand_skip} is not smaller than the number of images "
                                f"({len(self.lines)})")
            self.pos = skip
        first = self._next_images(1)[0][0]
        self.pos = (self.pos - 1) % len(self.lines)  # batches start at the first readable image
        self.item_shape = first.shape
        self.data_shape = (batch_size,) + transformer.output_shape(*self.item_shape)

    def _shuffle(self) -> None:
        order = self.rng.permutation(len(self.lines))
        self.lines = [self.lines[i] for i in order]

    def _load(self, name: str):
        # Caffe concatenates root_folder + filename; joining also accepts a root without "/"
        path = os.path.join(self.root, name) if self.root else name
        try:
            return load_image_file(path, self.is_color, *self.new_hw), path
        except DataError as e:
            return e, path

    def _take(self, n: int) -> list[int]:
        idx = []
        for _ in range(n):
            idx.append(self.pos)
            self.pos += 1
            if self.pos >= len(self.lines):  # wrap around; reshuffle every epoch
                self.pos = 0
                if self.shuffle:
                    self._shuffle_pending = True
        return idx

    def _next_images(self, n: int):
        got, failures_in_row = [], 0
        while len(got) < n:
            self._shuffle_pending = False
            idx = self._take(n - len(got))
            names = [self.lines[i] for i in idx]
            results = _parallel_map(lambda nl: (self._load(nl[0]), nl[1]), names)
            for (arr, path), label in results:
                if isinstance(arr, DataError):
                    self.skipped += 1
                    self.skipped_files.append(path)
                    log.warning("%s: skipping unreadable image (%d skipped so far): %s",
                                self.where, self.skipped, arr)
                    failures_in_row += 1
                    if failures_in_row >= len(self.lines):
                        raise DataError(f"{self.where}: none of the {len(self.lines)} images in the list "
                                        f"could be read (last: {arr})")
                    continue
                failures_in_row = 0
                got.append((arr, label, path))
            if self._shuffle_pending:
                self._shuffle()
        return got

    def next_batch(self):
        items = self._next_images(self.batch_size)
        for arr, _, path in items:
            if arr.shape != self.item_shape:
                raise DataError(f"{self.where}: image {path} has shape {arr.shape} (C, H, W) but the first "
                                f"image has {self.item_shape}; set new_height/new_width to resize")
        data = self.transformer(np.stack([a for a, _, _ in items]))
        labels = np.array([lab for _, lab, _ in items], dtype=np.float32)
        return data, labels

    def skip(self, n: int) -> None:
        """Pass over ``n`` list entries without reading them (data-parallel sharding; an
        unreadable image among them is not replaced, as the rank that reads it would)."""
        self._shuffle_pending = False
        self._take(n)
        if self._shuffle_pending:
            self._shuffle()

    def close(self) -> None:
        pass


# ----- HDF5 -------------------------------------------------------------------------------------
class HDF5Source:
    """Caffe's HDF5DataLayer: datasets named by the tops, rows in order (or shuffled), file by file."""

    def __init__(self, list_path: str, tops: list[str], batch_size: int, shuffle: bool = False,
                 rng: np.random.Generator | None = None, model_dir: str | None = None, where: str = "HDF5Data"):
        if not os.path.isfile(list_path):
            raise DataError(f"{where}: HDF5 source list not found: {list_path}")
        base = os.path.dirname(os.path.abspath(list_path))
        with open(list_path, encoding="utf-8") as f:
            names = [ln.strip() for ln in f if ln.strip()]
        if not names:
            raise DataError(f"{where}: HDF5 source list is empty: {list_path}")
        self.files = []
        for n in names:
            p = resolve_path(n, base)
            if not os.path.isfile(p):
                p = resolve_path(n, model_dir)
            if not os.path.isfile(p):
                raise DataError(f"{where}: HDF5 file listed in {list_path} not found: {n}")
            self.files.append(p)
        self.where = where
        self.tops = list(tops)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = rng if rng is not None else np.random.default_rng()
        self.file_perm = np.arange(len(self.files))
        if shuffle:
            self.rng.shuffle(self.file_perm)
        self.current_file = 0
        self.row_shapes = None
        self._load(self.files[self.file_perm[0]])
        self.shapes = [(batch_size,) + s for s in self.row_shapes]

    def _load(self, path: str) -> None:
        import h5py
        try:
            with h5py.File(path, "r") as f:
                arrays = []
                for name in self.tops:
                    if name not in f:
                        raise DataError(f"{self.where}: {path} has no dataset '{name}' "
                                        f"(datasets: {', '.join(f.keys())})")
                    arrays.append(np.asarray(f[name], dtype=np.float32))
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"{self.where}: cannot read HDF5 file {path}: {e}") from None
        rows = {a.shape[0] if a.ndim else 0 for a in arrays}
        if len(rows) != 1 or 0 in rows:
            raise DataError(f"{self.where}: datasets in {path} must all have the same (non-zero) number "
                            f"of rows: {dict(zip(self.tops, [a.shape for a in arrays]))}")
        shapes = [a.shape[1:] for a in arrays]
        if self.row_shapes is not None and shapes != self.row_shapes:
            raise DataError(f"{self.where}: {path} has row shapes {shapes}, the first file {self.row_shapes}")
        self.row_shapes = shapes
        self.arrays = arrays
        self.data_perm = np.arange(arrays[0].shape[0])
        if self.shuffle:
            self.rng.shuffle(self.data_perm)
        self.current_row = 0

    def _next(self) -> None:  # Caffe's HDF5DataLayer::Next
        self.current_row += 1
        if self.current_row == self.arrays[0].shape[0]:
            if len(self.files) > 1:
                self.current_file += 1
                if self.current_file == len(self.files):
                    self.current_file = 0
                    if self.shuffle:
                        self.rng.shuffle(self.file_perm)
                self._load(self.files[self.file_perm[self.current_file]])
            else:
                if self.shuffle:
                    self.rng.shuffle(self.data_perm)
            self.current_row = 0

    def next_batch(self):
        outs = [np.empty((self.batch_size,) + s, dtype=np.float32) for s in self.row_shapes]
        for i in range(self.batch_size):
            r = self.data_perm[self.current_row]
            for o, a in zip(outs, self.arrays):
                o[i] = a[r]
            self._next()
        return tuple(outs)

    def skip(self, n: int) -> None:
        """Pass over ``n`` rows (data-parallel sharding)."""
        for _ in range(n):
            self._next()

    def close(self) -> None:
        pass
