"""Small generic datasets in the C1 layout (docs of issue 22: ``train_db/features``, ``train_db/labels``,
``train_db/mean.binaryproto``, summary.json written last), made here so that the server's generic
model tests need no dataset builder: image gradients (DIGITS' regression data, formula of
digits-other-jobs.md §2.3) and a segmentation set of squares and discs (label images of class indices).
Also :func:`add_dataset_job`, a Done dataset job row over such a folder, and two small DIGITS-style
generic networks (a regression net, an FCN)."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from brewnet.data.lmdb_io import DatumWriter
from brewnet.formats import atomic_write
from brewnet.proto import caffe_pb2


# a DIGITS-style generic network: Data layers per stage, the loss out of deploy
REGRESSION_NET = """
layer { name: "train_data" type: "Data" top: "data" include { stage: "train" } data_param { batch_size: 8 } }
layer { name: "train_label" type: "Data" top: "label" include { stage: "train" } data_param { batch_size: 8 } }
layer { name: "val_data" type: "Data" top: "data" include { stage: "val" } data_param { batch_size: 4 } }
layer { name: "val_label" type: "Data" top: "label" include { stage: "val" } data_param { batch_size: 4 } }
layer { name: "scale" type: "Power" bottom: "data" top: "scaled" power_param { scale: 0.0078125 } }
layer { name: "ip1" type: "InnerProduct" bottom: "scaled" top: "output"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "output" bottom: "label" top: "loss" exclude { stage: "deploy" } }
"""

FCN = """
layer { name: "data" type: "Data" top: "data" include { stage: "train" }
        transform_param { mirror: true } data_param { batch_size: 2 } }
layer { name: "label" type: "Data" top: "label" include { stage: "train" } data_param { batch_size: 2 } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 stride: 2 } }
layer { name: "score" type: "Convolution" bottom: "conv1" top: "score"
        convolution_param { num_output: 21 kernel_size: 1 } }
layer { name: "upscore" type: "Deconvolution" bottom: "score" top: "upscore"
        convolution_param { num_output: 21 group: 21 kernel_size: 4 stride: 2 bias_term: false } }
layer { name: "crop" type: "Crop" bottom: "upscore" bottom: "data" top: "cropped" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "cropped" bottom: "label" top: "loss" exclude { stage: "deploy" } }
layer { name: "accuracy" type: "Accuracy" bottom: "cropped" bottom: "label" top: "accuracy" include { stage: "val" } }
"""


def _datum(chw: np.ndarray) -> caffe_pb2.Datum:
    c, h, w = chw.shape
    d = caffe_pb2.Datum(channels=c, height=h, width=w, label=0)
    if chw.dtype == np.uint8:
        d.data = chw.tobytes()
    else:
        d.float_data.extend(float(x) for x in chw.ravel())
    return d


def _write_stage(outdir: Path, stage: str, features, labels) -> dict:
    db = outdir / f"{stage}_db"
    with DatumWriter(str(db / "features"), key_format="%09d") as w:
        for f in features:
            w.put(_datum(f))
    label_db = None
    if labels is not None:
        label_db = db / "labels"
        with DatumWriter(str(label_db), key_format="%09d") as w:
            for lab in labels:
                w.put(_datum(lab))
    mean = np.mean(np.stack(features).astype(np.float64), axis=0).round().astype(np.float32)
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([1, *mean.shape])
    blob.data.extend(float(x) for x in mean.ravel())
    atomic_write(db / "mean.binaryproto", blob.SerializeToString())
    return {"entries": len(features), "features": str(db / "features"),
            "labels": str(label_db) if label_db else None, "mean": str(db / "mean.binaryproto"),
            "feature_shape": list(features[0].shape),
            "label_shape": list(labels[0].shape) if labels is not None else [1]}


def gradient_image(gx: float, gy: float, width: int, height: int) -> np.ndarray:
    """DIGITS' gradient image (digits-other-jobs.md §2.3), H x W uint8."""
    a, b = gx * 255.0 / width, gy * 255.0 / height
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return (a * (x - width / 2) + b * (y - height / 2) + 127.5).astype(np.uint8)


def make_gradients_dataset(outdir: Path, train: int = 64, val: int = 16, size: int = 8, seed: int = 0) -> Path:
    """A gradients dataset: 1 x size x size images, labels (1, 1, 2) floats [gx, gy] in [-0.5, 0.5)."""
    rng = np.random.default_rng(seed)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    stages = {}
    for stage, n in (("train", train), ("val", val)):
        if not n:
            continue
        g = rng.random((n, 2)) - 0.5
        feats = [gradient_image(gx, gy, size, size)[None] for gx, gy in g]
        labels = [np.array([[[gx, gy]]], np.float32) for gx, gy in g]
        stages[stage] = _write_stage(outdir, stage, feats, labels)
    summary = {"kind": "gradients", "stages": stages, "feature_dims": [size, size, 1],
               "mean_file": stages["train"]["mean"], "force_same_shape": True, "feature_encoding": "none",
               "label_encoding": "none", "class_labels": None, "color_palette": None, "num_classes": None,
               "label_range": [-0.5, 0.5], "seed": seed, "options": {}, "class_pixel_counts": None}
    atomic_write(outdir / "summary.json", json.dumps(summary).encode())
    return outdir


def make_segmentation_dataset(outdir: Path, train: int = 8, val: int = 4, size: int = 16, seed: int = 0,
                              classes=("background", "square", "disc")) -> Path:
    """A segmentation dataset: 3 x size x size images with a square (class 1) or a disc (class 2),
    labels 1 x size x size uint8 class indices, labels.txt with the class names."""
    rng = np.random.default_rng(seed)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    stages = {}
    y, x = np.mgrid[0:size, 0:size]
    for stage, n in (("train", train), ("val", val)):
        feats, labels = [], []
        for i in range(n):
            lab = np.zeros((size, size), np.uint8)
            cx, cy = rng.integers(size // 4, 3 * size // 4, 2)
            r = size // 5
            if i % 2:
                lab[(x - cx) ** 2 + (y - cy) ** 2 <= r * r] = 2
            else:
                lab[(abs(x - cx) <= r) & (abs(y - cy) <= r)] = 1
            img = (rng.integers(0, 40, (3, size, size)) + 200 * (lab > 0)[None]).astype(np.uint8)
            feats.append(img)
            labels.append(lab[None])
        stages[stage] = _write_stage(outdir, stage, feats, labels)
    (outdir / "labels.txt").write_text("".join(f"{c}\n" for c in classes))
    palette = [0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (768 - 9)
    summary = {"kind": "segmentation", "stages": stages, "feature_dims": [size, size, 3],
               "mean_file": stages["train"]["mean"], "force_same_shape": True, "feature_encoding": "none",
               "label_encoding": "none", "class_labels": list(classes), "color_palette": palette,
               "num_classes": len(classes), "label_range": None, "seed": seed, "options": {},
               "class_pixel_counts": None}
    atomic_write(outdir / "summary.json", json.dumps(summary).encode())
    return outdir


def add_dataset_job(server, name: str, kind: str, build) -> str:
    """A Done dataset job of ``kind`` whose folder ``build(folder)`` fills (C1 layout); its id."""
    from brewnet.server.jobs.jobdir import write_job_json
    from brewnet.server.store.db import new_job_id
    from brewnet.server.store.models import Job

    job_id = new_job_id()
    d = server.job_dir(job_id)
    d.mkdir(parents=True)
    build(d)
    now = time.time()
    job = Job(id=job_id, kind="dataset", name=name, group_name="", notes="", owner="tests", status="Done",
              status_history=[["Initialized", now], ["Done", now]], created=now, progress=1.0, resources={},
              assigned={}, spec={"kind": kind, "name": name}, summary={})
    server.store.add_job(job, before_commit=lambda row: write_job_json(d, row))
    return job_id
