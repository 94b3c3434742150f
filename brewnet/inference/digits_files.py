"""deploy.prototxt and mean.binaryproto in the forms DIGITS writes them (net-level ``input`` +
``input_shape``; a mean with the legacy num/channels/height/width dims), which DIGITS' example
scripts read: ``brewnet deploy`` writes its bundles so, and the server's download archive uses
them too.
"""
from __future__ import annotations

import os

import numpy as np

from .. import formats
from ..proto import caffe_pb2
from .bundle import DeployError

#: fields an Input layer may set and still be written as net-level inputs
_PLAIN_INPUT_FIELDS = frozenset({"name", "type", "top", "input_param"})


def net_level_inputs(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A copy of ``net`` whose leading ``Input`` layers are net-level ``input`` + ``input_shape``
    entries instead, the form DIGITS writes deploy.prototxt in.

    DIGITS' example scripts (examples/classification/example.py) size their Transformer from
    ``input_shape[0].dim`` (or ``input_dim``) and find nothing in an Input layer. Caffe, and
    brewnet's :func:`brewnet.formats.upgrade.upgrade_net`, turn the entries back into one Input layer
    named "input" when they load the net, so the blobs, shapes and outputs do not change.
    Left as they are: a net that already has net-level inputs, and any Input layer after the
    first other layer, with rules or other fields, or with a shape count Caffe's Input layer
    would not accept for its tops (none, or neither one nor one per top).
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    if out.input or out.input_shape or out.input_dim:
        return out
    names: list[str] = []
    shapes: list = []
    moved = 0
    for lp in out.layer:
        fields = {fd.name for fd, _ in lp.ListFields()}
        given = list(lp.input_param.shape)
        if lp.type != "Input" or not fields <= _PLAIN_INPUT_FIELDS or not lp.top \
                or len(given) not in (1, len(lp.top)):
            break
        names.extend(lp.top)
        shapes.extend(given * len(lp.top) if len(given) == 1 else given)
        moved += 1
    if not moved:
        return out
    rest = list(out.layer)[moved:]
    out.ClearField("layer")
    out.input.extend(names)
    for shape in shapes:
        out.input_shape.add().CopyFrom(shape)
    out.layer.extend(rest)
    return out


def input_layer_as_loaded(caffemodel: caffe_pb2.NetParameter,
                           written: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """``caffemodel`` with the Input layers that ``written`` declares at net level replaced by
    the one Input layer "input" that loading ``written`` makes (and Caffe's ``Net::ToProto``
    would save): the weights file then names exactly the layers of the net it is loaded into.
    Input layers have no blobs, so nothing else changes."""
    if not written.input:
        return caffemodel
    loaded = formats.upgrade_net(written).layer[0]
    moved = set(written.input)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(caffemodel)
    rest = [lp for lp in out.layer if not (lp.type == "Input" and set(lp.top) <= moved)]
    out.ClearField("layer")
    first = out.layer.add()
    first.CopyFrom(loaded)
    first.phase = caffe_pb2.TEST
    out.layer.extend(rest)
    return out


def legacy_mean_blob(mean: np.ndarray) -> caffe_pb2.BlobProto:
    """A mean image (C, H, W) as the BlobProto DIGITS and Caffe's compute_image_mean write: the
    legacy num/channels/height/width (1, C, H, W) and float32 ``data``, no ``shape``. DIGITS'
    example scripts read those four fields (``len(blob.shape)`` fails on a BlobShape)."""
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim != 3:
        raise DeployError(f"a mean image is (C, H, W), got shape {mean.shape}")
    return formats.array_to_blob(mean, legacy_4d=True)


def write_legacy_mean(mean: np.ndarray, path: str | os.PathLike) -> None:
    """:func:`legacy_mean_blob` written to ``path`` atomically."""
    formats.write_binary(legacy_mean_blob(mean), path)
