"""The stage writer: one stage's samples into a features LMDB and, for array labels, a labels LMDB.

Every sample is a feature array and a label, both C×H×W (colour in RGB order) or a scalar label.
Records are Datums exactly as Caffe's Data layer reads them (doc §1.3): keys ``%09d``, the same
key for a sample's feature and label; encoding ``none`` stores 3-channel arrays in BGR, uint8 as
``data`` bytes and any other dtype as ``float_data``; ``png``/``jpg`` store the RGB (or grey)
image encoded, which Caffe decodes to BGR.  A scalar label goes into the feature Datum's
``label`` field and no labels LMDB is made; an array label gets its own Datum with ``label`` 0.

Samples are loaded and encoded by a pool of threads (Pillow releases the GIL while it decodes and
encodes), but written in the order of their index, unlike DIGITS' encoder threads: the same
inputs and seed give the same LMDBs, byte for byte, so a dataset can be rebuilt and compared.

With ``force_same_shape`` every feature and every label must have the first one's shape, and the
stage's mean (float64 sum / count, channel order as stored, BlobProto 1×C×H×W of floats) is
written to ``<stage>_db/mean.binaryproto`` (unless ``WriteOptions.mean`` is off).  Without it
shapes may vary and no mean is written.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from PIL import Image

from ... import formats
from ...errors import DataError
from ...proto import caffe_pb2
from ...reporting.task_progress import Progress
from ..image import encode_image
from ..lmdb_io import DatumWriter

ENCODINGS = ("png", "jpg", "none")
CHANNEL_CONVERSIONS = ("RGB", "L", "none")
KEY_FORMAT = "%09d"


@dataclass
class WriteOptions:
    feature_encoding: str = "png"
    label_encoding: str = "none"
    force_same_shape: bool = True
    workers: int = 0          # 0: up to 8 threads
    stream: object = None     # progress and log lines (default stderr)
    mean: bool = True         # with force_same_shape: write the stage's mean (detection has none)


@dataclass
class StageResult:
    """What one written stage holds (the summary's ``stages`` entry is made from it)."""
    stage: str
    entries: int
    features: str
    labels: str | None
    mean: str | None
    feature_shape: list[int] | None   # None: the shapes vary
    label_shape: list[int] | None     # [1]: scalar labels; None: the shapes vary
    label_min: float | None = None
    label_max: float | None = None
    label_histogram: np.ndarray | None = field(default=None, repr=False)  # uint8 labels: pixels per value

    def summary_entry(self) -> dict:
        return {"entries": self.entries, "features": self.features, "labels": self.labels, "mean": self.mean,
                "feature_shape": self.feature_shape, "label_shape": self.label_shape}


def read_image(path: str, conversion: str = "none") -> np.ndarray:
    """An image file as C×H×W uint8 (RGB order for colour): ``RGB`` and ``L`` convert, ``none``
    keeps grey as one channel and colour as three (an alpha channel is dropped, a palette
    image becomes its colours: what Caffe's colour decoder would give)."""
    check_conversion(conversion)
    try:
        with Image.open(path) as im:
            im.load()
            if conversion == "none":
                conversion = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
            hwc = np.asarray(im.convert(conversion), dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    return np.ascontiguousarray(hwc[None] if hwc.ndim == 2 else hwc.transpose(2, 0, 1))


def array_datum(chw: np.ndarray, encoding: str, what: str) -> caffe_pb2.Datum:
    """A C×H×W array (RGB order when it has 3 channels) as the Datum Caffe's Data layer reads."""
    chw = np.asarray(chw)
    if chw.ndim != 3:
        raise DataError(f"{what}: expected a C×H×W array, got shape {chw.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = chw.shape
    if encoding == "none":
        stored = chw[::-1] if chw.shape[0] == 3 else chw   # RGB -> BGR, Caffe's colour order
        if chw.dtype == np.uint8:
            datum.data = np.ascontiguousarray(stored).tobytes()
        else:
            datum.float_data.extend(np.asarray(stored, dtype=np.float32).ravel().tolist())
        return datum
    if chw.dtype != np.uint8:
        raise DataError(f"{what}: {chw.dtype} values cannot be stored as {encoding.upper()} "
                        "(float labels require -label-encoding none)")
    if chw.shape[0] not in (1, 3):
        raise DataError(f"{what}: {chw.shape[0]} channels cannot be stored as {encoding.upper()} (1 or 3)")
    datum.data = encode_image(chw.transpose(1, 2, 0), encoding)
    datum.encoded = True
    return datum


def check_conversion(value: str) -> str:
    if value not in CHANNEL_CONVERSIONS:
        raise DataError(f"-channel-conversion {value!r}: one of {', '.join(CHANNEL_CONVERSIONS)}")
    return value


def check_encoding(value: str, flag: str) -> str:
    if value not in ENCODINGS:
        raise DataError(f"{flag} {value!r}: one of {', '.join(ENCODINGS)}")
    return value


class _Shapes:
    """The first shape seen and whether all shapes agreed (an error when they must)."""

    def __init__(self, what: str, stage: str, force: bool):
        self.what, self.stage, self.force = what, stage, force
        self.first: tuple | None = None
        self.first_name = ""
        self.same = True

    def see(self, shape: tuple, name: str, key: str) -> None:
        if self.first is None:
            self.first, self.first_name = shape, name
        elif shape != self.first:
            if self.force:
                raise DataError(f"{self.stage} entry {key} ({name}): {self.what} shape {list(shape)} differs from "
                                f"{list(self.first)} of the first entry ({self.first_name}); all {self.what}s must "
                                "have one shape, or pass -no-force-same-shape")
            self.same = False

    def result(self) -> list[int] | None:
        return list(self.first) if self.same and self.first is not None else None


def _encode(sample, options: WriteOptions, what: str):
    """(feature, label, feature Datum bytes, label Datum bytes or None) of one loaded sample."""
    feature, label = sample
    datum = array_datum(feature, options.feature_encoding, f"{what}: feature")
    if np.ndim(label) == 0:
        if float(label) != int(label):
            raise DataError(f"{what}: a scalar label must be an integer (Datum.label), got {label}")
        datum.label = int(label)
        return feature, label, datum.SerializeToString(), None
    label_datum = array_datum(label, options.label_encoding, f"{what}: label")
    return feature, label, datum.SerializeToString(), label_datum.SerializeToString()


def write_stage(outdir: str, stage: str, count: int, load: Callable[[int], tuple],
                name: Callable[[int], str], options: WriteOptions, log: Callable[[str], None]) -> StageResult:
    """Write ``count`` samples (``load(i)`` -> (feature, label)) into ``outdir/<stage>_db/``."""
    db = os.path.join(outdir, f"{stage}_db")
    features_path, labels_path = os.path.join(db, "features"), os.path.join(db, "labels")
    log(f"Found {count} entries for stage {stage}")
    feature_shapes = _Shapes("feature", stage, options.force_same_shape)
    label_shapes = _Shapes("label", stage, options.force_same_shape)
    mean_sum = None
    low = high = None
    histogram = None
    label_writer = None
    workers = options.workers or min(8, os.cpu_count() or 1)
    chunk = max(32, 4 * workers)

    def work(i: int):
        what = f"{stage} entry {KEY_FORMAT % i} ({name(i)})"
        return _encode(load(i), options, what)

    progress = Progress(count, f"{stage}_db", options.stream)
    pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 else None
    try:
        with DatumWriter(features_path, key_format=KEY_FORMAT) as feature_writer:
            for start in range(0, count, chunk):
                indices = range(start, min(count, start + chunk))
                results = pool.map(work, indices) if pool else map(work, indices)
                for i, (feature, label, feature_bytes, label_bytes) in zip(indices, results):
                    key = KEY_FORMAT % i
                    feature_shapes.see(np.shape(feature), name(i), key)
                    label_shapes.see(np.shape(label) if label_bytes is not None else (1,), name(i), key)
                    if (label_bytes is None) != (label_writer is None) and i > 0:
                        raise DataError(f"{stage} entry {key} ({name(i)}): scalar and array labels mixed in one stage")
                    feature_writer.put_raw(key.encode("ascii"), feature_bytes)
                    if label_bytes is not None:
                        if label_writer is None:
                            label_writer = DatumWriter(labels_path, key_format=KEY_FORMAT)
                        label_writer.put_raw(key.encode("ascii"), label_bytes)
                    if options.force_same_shape and options.mean:
                        mean_sum = np.asarray(feature, np.float64) if mean_sum is None else mean_sum + feature
                    values = np.asarray(label)
                    low = float(values.min()) if low is None else min(low, float(values.min()))
                    high = float(values.max()) if high is None else max(high, float(values.max()))
                    if values.dtype == np.uint8:
                        counts = np.bincount(values.ravel(), minlength=256)
                        histogram = counts if histogram is None else histogram + counts
                    progress.update()
    finally:
        if pool:
            pool.shutdown()
        if label_writer is not None:
            label_writer.close()
        progress.close()
    log(f"Created features db for stage {stage} in {features_path}")
    if label_writer is not None:
        log(f"Created labels db for stage {stage} in {labels_path}")
    result = StageResult(stage, count, os.path.abspath(features_path),
                         os.path.abspath(labels_path) if label_writer is not None else None, None,
                         feature_shapes.result(), label_shapes.result(), low, high, histogram)
    log(f"Feature shape for stage {stage}: {result.feature_shape or 'varies'}")
    log(f"Label shape for stage {stage}: {result.label_shape or 'varies'}")
    if mean_sum is not None:
        mean = mean_sum / count
        if mean.shape[0] == 3:
            mean = mean[::-1]   # RGB -> BGR, the order the Data layer gives the features in
        path = os.path.join(db, "mean.binaryproto")
        formats.write_binary(formats.array_to_blob(mean.astype(np.float32)[None], legacy_4d=True), path)
        result.mean = os.path.abspath(path)
        log(f"Created mean file for stage {stage} in {path}")
    return result
