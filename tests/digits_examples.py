"""What DIGITS' examples/classification scripts do with a "Download Model" archive, in our own
code, on brewnet through ``import brewnet as caffe`` (the way users run them on pycaffe).

Facts from DIGITS' use_archive.py and example.py (NVIDIA/DIGITS, examples/classification),
which these helpers follow step by step in what they read, not in how they are written:

- the archive (tar or zip) is extracted as it is; the files are looked for at its root only:
  any ``*.caffemodel``, ``deploy.prototxt``, any ``*.binaryproto`` (the mean) and
  ``labels.txt``; no caffemodel or no deploy.prototxt there is an error;
- the Transformer of input "data" is sized from deploy.prototxt's net-level ``input_shape[0].dim``
  (else ``input_dim[:4]``), read with caffe_pb2 and text_format, not by building the net; its
  transpose is (2, 0, 1), and three channels get the swap (2, 1, 0);
- the mean file is read as a BlobProto: a ``shape`` field must be 4-D by ``len(blob.shape)``
  (which fails on a BlobShape), else the legacy num/channels/height/width are used; the mean
  pixel (one value per channel) is subtracted;
- each image is converted to RGB (L for one channel), squashed to the input's height x width
  with a bilinear resize, preprocessed, and the scores are ``net.outputs[-1]``.
"""
from __future__ import annotations

import os
import tarfile
import zipfile

import numpy as np
from google.protobuf import text_format
from PIL import Image

import brewnet as caffe
from brewnet.proto import caffe_pb2

INPUT = "data"  # the scripts name the input blob "data"


class ScriptFailure(Exception):
    """Where DIGITS' scripts would stop on these files (the message says which step)."""


def extract(archive: str, into: str) -> str:
    """The archive extracted into the folder ``into`` (made if missing)."""
    os.makedirs(into, exist_ok=True)
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            tf.extractall(into, filter="data")
    elif zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(into)
    else:
        raise ScriptFailure(f"unknown archive type: {archive}")
    return into


def files_at_root(folder: str) -> dict[str, str | None]:
    """{caffemodel, deploy, mean, labels}: paths found directly in ``folder``, by DIGITS' names."""
    found: dict[str, str | None] = {"caffemodel": None, "deploy": None, "mean": None, "labels": None}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if name.endswith(".caffemodel"):
            found["caffemodel"] = path
        elif name == "deploy.prototxt":
            found["deploy"] = path
        elif name.endswith(".binaryproto"):
            found["mean"] = path
        elif name == "labels.txt":
            found["labels"] = path
    if found["caffemodel"] is None:
        raise ScriptFailure("Caffe model file not found")
    if found["deploy"] is None:
        raise ScriptFailure("Deploy file not found")
    return found


def input_dims(deploy_file: str) -> list[int]:
    """The net-level input dims of deploy.prototxt, read without building the net."""
    net = caffe_pb2.NetParameter()
    with open(deploy_file, encoding="utf-8") as f:
        text_format.Merge(f.read(), net)
    return list(net.input_shape[0].dim) if len(net.input_shape) else list(net.input_dim[:4])


def mean_pixel(mean_file: str) -> np.ndarray:
    """The per-channel mean of a mean.binaryproto, from its legacy 4-D dims."""
    blob = caffe_pb2.BlobProto()
    with open(mean_file, "rb") as f:
        blob.MergeFromString(f.read())
    if blob.HasField("shape"):
        raise ScriptFailure("the mean has a 'shape' field: DIGITS' example.py takes len() of it, "
                            "which a BlobShape does not have")
    legacy = ("num", "channels", "height", "width")
    if not all(blob.HasField(d) for d in legacy):
        raise ScriptFailure("blob does not provide shape or 4d dimensions")
    dims = [getattr(blob, d) for d in legacy]
    return np.reshape(np.asarray(blob.data, dtype=np.float32), dims[1:]).mean(axis=(1, 2))


def transformer(deploy_file: str, mean_file: str | None) -> "caffe.io.Transformer":
    dims = input_dims(deploy_file)
    t = caffe.io.Transformer(inputs={INPUT: dims})
    try:
        t.set_transpose(INPUT, (2, 0, 1))
    except ValueError as e:
        raise ScriptFailure(str(e)) from None
    if dims[1] == 3:
        t.set_channel_swap(INPUT, (2, 1, 0))
    if mean_file:
        t.set_mean(INPUT, mean_pixel(mean_file))
    return t


def load_image(path: str, height: int, width: int, channels: int) -> np.ndarray:
    """An image file as (height, width[, 3]) uint8, squashed with a bilinear resize."""
    image = Image.open(path).convert("RGB" if channels == 3 else "L")
    if image.size != (width, height):
        image = image.resize((width, height), Image.BILINEAR)
    return np.array(image)


def classify(caffemodel: str, deploy_file: str, images: list[str], mean_file: str | None = None,
             labels_file: str | None = None) -> tuple[np.ndarray, list[str] | None]:
    """(scores (n, classes) of ``net.outputs[-1]``, the labels or None), one image at a time."""
    net = caffe.Net(deploy_file, caffemodel, caffe.TEST)
    t = transformer(deploy_file, mean_file)
    _, channels, height, width = t.inputs[INPUT]
    scores = []
    for path in images:
        image = load_image(path, height, width, channels)
        if image.ndim == 2:
            image = image[:, :, np.newaxis]
        net.blobs[INPUT].reshape(1, channels, height, width)
        net.blobs[INPUT].data[0] = t.preprocess(INPUT, image)
        scores.append(np.array(net.forward()[net.outputs[-1]]).reshape(-1))
    labels = None
    if labels_file:
        with open(labels_file, encoding="utf-8") as f:
            labels = [line.strip() for line in f if line.strip()]
    return np.stack(scores), labels


def classify_with_archive(archive: str, images: list[str], workdir: str
                          ) -> tuple[np.ndarray, list[str] | None]:
    """use_archive.py: extract, find the files at the root, classify."""
    found = files_at_root(extract(archive, workdir))
    return classify(found["caffemodel"], found["deploy"], images, found["mean"], found["labels"])
