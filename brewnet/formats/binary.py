"""Caffe's binary files: ``.caffemodel``, ``.solverstate`` and ``.binaryproto`` (protobuf binary).

Reading names the file in every error and says when a file is text, empty or truncated; writing
is atomic. A caffemodel read is upgraded (:mod:`brewnet.formats.upgrade`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from google.protobuf import message as pb_message

from brewnet.proto import caffe_pb2

from .atomic import PathLike, atomic_write
from .blobs import array_to_blob, blob_to_array
from .errors import CaffeFormatError, with_filename
from .upgrade import upgrade_net

__all__ = ["read_binary", "read_caffemodel", "write_binary", "write_caffemodel",
           "read_binaryproto", "write_binaryproto"]


def read_binary(path: PathLike, message_cls: type) -> pb_message.Message:
    """Read a protobuf-binary file (caffemodel, solverstate, binaryproto) into ``message_cls``."""
    data = Path(path).read_bytes()
    kind = message_cls.DESCRIPTOR.name
    if not data:
        raise CaffeFormatError(f"{path}: file is empty (expected a binary {kind})")
    msg = message_cls()
    try:
        msg.ParseFromString(data)
    except pb_message.DecodeError as err:
        if _looks_like_text(data):
            hint = "it looks like a text file; prototxt files are read with read_net/read_prototxt"
        else:
            hint = "the file is truncated or is not a Caffe binary file"
        raise CaffeFormatError(
            f"{path}: cannot parse {len(data)} bytes as a binary {kind}: {hint}") from err
    return msg


def read_caffemodel(path: PathLike) -> caffe_pb2.NetParameter:
    """Read a binary ``.caffemodel`` (a NetParameter with blobs) and upgrade it (upgrade_net)."""
    net = read_binary(path, caffe_pb2.NetParameter)
    if not net.layer and not net.layers:
        # Random bytes sometimes parse as a message of unknown fields; a caffemodel has layers.
        raise CaffeFormatError(f"{path}: parsed as binary but holds no layers; "
                               "is it really a .caffemodel?")
    return with_filename(str(path), upgrade_net, net)


def write_binary(msg: pb_message.Message, path: PathLike) -> None:
    """Write ``msg`` in protobuf binary, atomically."""
    atomic_write(path, msg.SerializeToString())


def write_caffemodel(net_param: caffe_pb2.NetParameter, path: PathLike) -> None:
    """Write a NetParameter as a binary ``.caffemodel``, atomically."""
    write_binary(net_param, path)


def read_binaryproto(path: PathLike) -> np.ndarray:
    """Read a ``.binaryproto`` BlobProto (e.g. a mean image) as an array of its shape.

    float32 (float64 when the file stores ``double_data``).
    """
    blob = read_binary(path, caffe_pb2.BlobProto)
    return with_filename(str(path), blob_to_array, blob)


def write_binaryproto(array: np.ndarray, path: PathLike) -> None:
    """Write ``array`` as a float32 BlobProto ``.binaryproto`` (modern ``shape`` form)."""
    write_binary(array_to_blob(array), path)


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    return b"\0" not in head and sum(b < 9 or 13 < b < 32 for b in head) < len(head) // 100 + 1
