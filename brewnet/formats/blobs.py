"""Blobs: Caffe's BlobProto <-> numpy arrays, shapes (legacy 4-D num/channels/height/width
included) and NVCaffe's raw (e.g. FLOAT16) storage."""
from __future__ import annotations

import numpy as np

from brewnet.proto import caffe_pb2

from .errors import CaffeFormatError

__all__ = ["blob_shape", "blob_matches_shape", "legacy_shape_equals", "blob_to_array",
           "array_to_blob", "varint"]


# NVCaffe raw storage: Type enum -> (little-endian dtype on disk, dtype returned).
_RAW_DTYPES = {
    caffe_pb2.FLOAT: ("<f4", np.float32),
    caffe_pb2.FLOAT16: ("<f2", np.float32),
    caffe_pb2.DOUBLE: ("<f8", np.float64),
    caffe_pb2.INT: ("<i4", np.int32),
    caffe_pb2.UINT: ("<u4", np.uint32),
}
_LEGACY_DIMS = ("num", "channels", "height", "width")


def blob_shape(blob: caffe_pb2.BlobProto) -> tuple[int, ...]:
    """The shape of a BlobProto, as Caffe's ``Blob::FromProto`` reads it.

    Caffe checks the legacy 4-D fields first: if any of num/channels/height/width is set the
    shape is (num, channels, height, width) (old files store e.g. a bias as (1, 1, 1, N)).
    Otherwise it is ``shape.dim``; no dims at all means a scalar (count 1).
    """
    if any(blob.HasField(d) for d in _LEGACY_DIMS):
        return tuple(getattr(blob, d) for d in _LEGACY_DIMS)
    return tuple(blob.shape.dim)


def blob_matches_shape(blob: caffe_pb2.BlobProto, shape: tuple[int, ...]) -> bool:
    """Caffe's ``Blob::ShapeEquals``: may ``blob`` be loaded into a blob of ``shape``?

    A legacy 4-D blob matches any shape of at most 4 axes that equals it once left-padded with
    ones, so an old (1, 1, 1, N) bias loads into an (N,) bias.
    """
    if any(blob.HasField(d) for d in _LEGACY_DIMS):
        return legacy_shape_equals(blob_shape(blob), shape)
    return tuple(shape) == tuple(blob.shape.dim)


def legacy_shape_equals(legacy: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    """Caffe's ShapeEquals for a legacy 4-D (num, channels, height, width) shape: equal once
    ``shape`` (at most 4 axes) is left-padded with ones."""
    shape = tuple(shape)
    return len(legacy) == 4 and len(shape) <= 4 and (1,) * (4 - len(shape)) + shape == tuple(legacy)


def blob_to_array(blob: caffe_pb2.BlobProto, diff: bool = False) -> np.ndarray:
    """The values (or with ``diff=True`` the gradients) of a BlobProto as a shaped array.

    Values come from NVCaffe's ``raw_data`` when present (little-endian bytes of
    ``raw_data_type``; FLOAT16 is widened to float32, DOUBLE gives float64), else from
    ``double_data`` (float64) when non-empty, else from ``data`` (float32) -- Caffe's own order of
    preference between double_data and data. The returned array is a fresh copy.

    Raises:
        CaffeFormatError: the number of stored values does not match the shape.
    """
    field, dfield, raw, rawtype = (("diff", "double_diff", "raw_diff", "raw_diff_type") if diff
                                   else ("data", "double_data", "raw_data", "raw_data_type"))
    shape = blob_shape(blob)
    if blob.HasField(raw):
        # An absent raw_*_type reads as DOUBLE (the enum's first value), as in NVCaffe itself.
        kind = getattr(blob, rawtype)
        if kind not in _RAW_DTYPES:
            raise CaffeFormatError(f"blob {raw} has unsupported {rawtype} {kind}")
        disk, out = _RAW_DTYPES[kind]
        data = getattr(blob, raw)
        if len(data) % np.dtype(disk).itemsize:
            raise CaffeFormatError(f"blob {raw} holds {len(data)} bytes, not a whole number of "
                                   f"{caffe_pb2.Type.Name(kind)} values")
        values = np.frombuffer(data, dtype=disk).astype(out)
        source = f"{raw} ({caffe_pb2.Type.Name(kind)})"
    elif len(getattr(blob, dfield)):
        values, source = np.array(getattr(blob, dfield), dtype=np.float64), dfield
    else:
        values, source = np.array(getattr(blob, field), dtype=np.float32), field
    count = int(np.prod(shape, dtype=np.int64))
    if values.size != count:
        raise CaffeFormatError(f"blob of shape {shape} needs {count} values but its {source} "
                               f"holds {values.size}")
    return values.reshape(shape)


def array_to_blob(arr: np.ndarray, blob: caffe_pb2.BlobProto | None = None,
                  legacy_4d: bool = False, double: bool = False,
                  diff: np.ndarray | None = None) -> caffe_pb2.BlobProto:
    """Store ``arr`` (and optionally a same-shaped ``diff``) in a BlobProto, as Caffe writes it.

    Writes ``shape`` and packed float32 ``data`` (``double_data`` when ``double``). With
    ``legacy_4d`` the shape goes into num/channels/height/width instead, left-padded with ones
    like pre-2015 Caffe stored it (a bias (N,) becomes (1, 1, 1, N)). ``blob`` is cleared and
    filled when given (e.g. ``layer.blobs.add()``), else a new BlobProto is returned.
    """
    arr = np.asarray(arr)
    blob = caffe_pb2.BlobProto() if blob is None else blob
    blob.Clear()
    if legacy_4d:
        if arr.ndim > 4:
            raise ValueError(f"legacy 4-D blobs hold at most 4 axes, got shape {arr.shape}")
        for name, dim in zip(_LEGACY_DIMS, (1,) * (4 - arr.ndim) + arr.shape):
            setattr(blob, name, dim)
    else:
        blob.shape.dim.extend(arr.shape)
    fields = ("double_data", "double_diff") if double else ("data", "diff")
    _set_packed(blob, fields[0], arr, "<f8" if double else "<f4")
    if diff is not None:
        diff = np.asarray(diff)
        if diff.shape != arr.shape:
            raise ValueError(f"diff shape {diff.shape} differs from data shape {arr.shape}")
        _set_packed(blob, fields[1], diff, "<f8" if double else "<f4")
    return blob


def _set_packed(blob: caffe_pb2.BlobProto, field: str, arr: np.ndarray, dtype: str) -> None:
    """Append ``arr`` to a packed repeated float/double field of ``blob``.

    Merging the field's wire encoding (tag, byte length, raw little-endian values) lets protobuf
    copy the values in one go; ``extend(ndarray)`` converts element by element (~20x slower on
    large weights).
    """
    if arr.size == 0:
        return
    raw = np.ascontiguousarray(arr, dtype=dtype).tobytes()
    number = blob.DESCRIPTOR.fields_by_name[field].number
    blob.MergeFromString(varint(number << 3 | 2) + varint(len(raw)) + raw)


def varint(value: int) -> bytes:
    """Protobuf's base-128 varint of a non-negative int (a wire field's tag or byte length)."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
