"""Kind ``generic`` (DIGITS' "Other" dataset): existing LMDBs, validated, nothing copied.

The features and (optional) labels LMDBs of the train and val stages and a mean file are checked
(doc §1.2): each given LMDB folder exists (``Folder does not exist``), the mean file exists (``File
does not exist``) and is a BlobProto, and a stage's features and labels hold as many entries.
With ``force_same_shape`` every entry is decoded and must have the first one's shape (a clear
error naming the key and both shapes), and the train labels' range is measured; without it only
the first entry of each LMDB is read.  The summary names the given paths, made absolute.
"""
from __future__ import annotations

import os

import numpy as np

from ... import formats
from ...errors import BrewnetError, DataError
from ..image import datum_to_chw
from ..lmdb_io import count_records, key_text, read_datums
from .build import base_summary, logger, prepare_outdir
from .summary import write_summary
from .writer import StageResult

FLAGS = {("train", "features"): "-train-images", ("train", "labels"): "-train-labels",
         ("val", "features"): "-val-images", ("val", "labels"): "-val-labels"}


def _folder(path: str, flag: str) -> str:
    if not os.path.isdir(path):
        raise DataError(f"{flag} {path}: Folder does not exist")
    return os.path.abspath(path)


def _shape(datum, path: str, key) -> tuple:
    """A Datum's C×H×W as Caffe's Data layer decodes it; a datum with no data is its label alone."""
    return tuple(datum_to_chw(datum, what=f"{path} record {key_text(key)}").shape)


def describe(shape) -> str:
    """A C×H×W shape as DIGITS' analyze step reports it: ``WxHxC``."""
    return f"{shape[2]}x{shape[1]}x{shape[0]}" if len(shape) == 3 else "x".join(map(str, shape))


class _Scan:
    """One LMDB: its entry count, its first shape (all shapes when ``every``), its value range."""

    def __init__(self, path: str, flag: str, every: bool, values: bool):
        self.path, self.flag = path, flag
        self.count = count_records(path)
        if self.count == 0:
            raise DataError(f"{flag} {path}: the LMDB has no entries")
        self.shape = None
        self.low = self.high = None
        for key, datum in read_datums(path, limit=None if every else 1):
            shape = _shape(datum, path, key)
            if self.shape is None:
                self.shape, self.first_key = shape, key
            elif shape != self.shape:
                raise DataError(f"{flag} {path}: entry {key_text(key)} has shape {describe(shape)} (WxHxC), but the "
                                f"first entry {key_text(self.first_key)} has {describe(self.shape)}; pass "
                                "-no-force-same-shape if the shapes may vary")
            if values:
                array = datum_to_chw(datum)
                low, high = float(np.min(array)), float(np.max(array))
                self.low = low if self.low is None else min(self.low, low)
                self.high = high if self.high is None else max(self.high, high)


def _scalar_labels(path: str, every: bool) -> tuple[float, float]:
    """The range of the ``label`` fields of a features LMDB (its scalar labels)."""
    labels = [d.label for _, d in read_datums(path, limit=None if every else 1)]
    return float(min(labels)), float(max(labels))


def create_prebuilt(outdir: str, train_images: str, train_labels: str | None = None, val_images: str | None = None,
                    val_labels: str | None = None, mean: str | None = None, force_same_shape: bool = True,
                    overwrite: bool = False, stream=None) -> dict:
    given = dict(locals())
    del given["outdir"]
    log = logger(stream)
    if not train_images:
        raise DataError("-train-images DB is required (the train features LMDB)")
    if val_labels and not val_images:
        raise DataError("-val-labels needs -val-images (the val labels are read with the val features)")
    paths = {("train", "features"): train_images, ("train", "labels"): train_labels,
             ("val", "features"): val_images, ("val", "labels"): val_labels}
    paths = {k: _folder(p, FLAGS[k]) for k, p in paths.items() if p}
    mean_file = None
    if mean:
        if not os.path.isfile(mean):
            raise DataError(f"-mean {mean}: File does not exist")
        mean_file = os.path.abspath(mean)
        try:
            mean_shape = formats.read_binaryproto(mean_file).shape
        except BrewnetError as e:
            raise DataError(f"-mean {mean}: not a BlobProto mean file: {e}") from None
    results: dict[str, StageResult] = {}
    for stage in ("train", "val"):
        if (stage, "features") not in paths:
            continue
        features = _Scan(paths[stage, "features"], FLAGS[stage, "features"], force_same_shape, values=False)
        log(f"{FLAGS[stage, 'features']}: {features.count} entries found with shape {describe(features.shape)}")
        labels = None
        if (stage, "labels") in paths:
            labels = _Scan(paths[stage, "labels"], FLAGS[stage, "labels"], force_same_shape,
                           values=stage == "train" and force_same_shape)
            log(f"{FLAGS[stage, 'labels']}: {labels.count} entries found with shape {describe(labels.shape)}")
            if labels.count != features.count:
                raise DataError(f"{FLAGS[stage, 'features']} {features.path} has {features.count} entries but "
                                f"{FLAGS[stage, 'labels']} {labels.path} has {labels.count}: a stage's features "
                                "and labels must have one entry each per sample")
            low, high = labels.low, labels.high
        elif stage == "train" and force_same_shape:
            low, high = _scalar_labels(features.path, every=True)
        else:
            low = high = None
        results[stage] = StageResult(stage, features.count, features.path, labels.path if labels else None,
                                     mean_file if stage == "train" else None, list(features.shape),
                                     list(labels.shape) if labels else [1], low, high)
    train_shape = tuple(results["train"].feature_shape)
    if mean_file and tuple(mean_shape[-3:]) != train_shape and tuple(mean_shape) != train_shape:
        raise DataError(f"-mean {mean}: the mean has shape {list(mean_shape)}, the train features "
                        f"{list(train_shape)} (C, H, W)")
    prepare_outdir(outdir, overwrite)
    train = results["train"]
    summary = base_summary("generic", results, force_same_shape, (None, None), None, given)
    summary["label_range"] = [train.label_min, train.label_max] if train.label_min is not None else None
    # without force_same_shape only each LMDB's first entry was read: its shape is the one reported
    summary["shapes_checked"] = force_same_shape
    write_summary(outdir, summary)
    return summary

