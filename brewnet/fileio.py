"""Reading and writing Caffe's files, and upgrading legacy nets.

Text files (``.prototxt``, solvers) are protobuf text format; ``.caffemodel``, ``.solverstate``
and ``.binaryproto`` are protobuf binary. Both use the schema in ``brewnet/proto/caffe.proto``
(BVLC Caffe plus NVCaffe's non-clashing fields), so files stay byte-compatible with BVLC Caffe.

Every error a user can cause is a :class:`CaffeFormatError` whose message names the file (and,
for text, ``file:line:column``). Nets are upgraded on read, as Caffe's ``UpgradeNetAsNeeded``
does: V0/V1 ``layers`` become ``layer``, legacy net inputs become ``Input`` layers and legacy
data-layer transformation fields move into ``transform_param``.
"""
from __future__ import annotations

import difflib
import os
import re
import uuid
from pathlib import Path
from typing import Callable, TypeVar, Union

import numpy as np
from google.protobuf import message as pb_message
from google.protobuf import text_format

from brewnet.errors import BrewnetError
from brewnet.proto import caffe_pb2

PathLike = Union[str, os.PathLike]
_T = TypeVar("_T")

__all__ = [
    "CaffeFormatError", "parse_text", "read_prototxt", "read_net", "net_from_text", "read_solver",
    "read_binary", "read_caffemodel", "write_caffemodel", "write_prototxt", "write_binary",
    "read_binaryproto", "write_binaryproto", "blob_shape", "blob_matches_shape", "legacy_shape_equals", "blob_to_array",
    "array_to_blob", "upgrade_net", "upgrade_net_with_notes", "upgrade_solver",
]


class CaffeFormatError(BrewnetError, ValueError):
    """A Caffe file (or text) that cannot be read; the message names the file and the place."""


# ------------------------------------------------------------------------------------------------
# Text format
# ------------------------------------------------------------------------------------------------

def parse_text(text: str, message: pb_message.Message | type,
               filename: str = "<string>") -> pb_message.Message:
    """Parse protobuf text format into ``message`` (cleared first) and return it.

    ``message`` may be a message instance or class. Like Caffe's ``TextFormat::Parse`` a singular
    field given twice is an error. No upgrade is applied (see :func:`read_net`).

    Raises:
        CaffeFormatError: ``filename:line:column: ...``; for an unknown field or enum value the
            message names it, the enclosing layer, and the closest valid name.
    """
    if isinstance(message, type):
        message = message()
    message.Clear()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as err:
        raise _text_error(err, text, filename) from err
    return message


def read_prototxt(path: PathLike, message_cls: type = caffe_pb2.NetParameter) -> pb_message.Message:
    """Read a text-format file into a new ``message_cls`` (no upgrade applied)."""
    return parse_text(_read_text(path), message_cls(), str(path))


def read_net(path_or_text: PathLike) -> caffe_pb2.NetParameter:
    """Read a text net (a file path, or the prototxt text itself) and upgrade it (upgrade_net).

    A ``str`` is taken as text when it is not an existing file and contains a newline, ``{`` or
    ``:``; otherwise as a path.
    """
    if isinstance(path_or_text, str) and not os.path.exists(path_or_text) and \
            any(c in path_or_text for c in "\n{:"):
        text, filename = path_or_text, "<string>"
    else:
        text, filename = _read_text(path_or_text), str(path_or_text)
    net = parse_text(text, caffe_pb2.NetParameter(), filename)
    return _with_filename(filename, upgrade_net, net)


def net_from_text(text: str) -> caffe_pb2.NetParameter:
    """Parse and upgrade a net given as prototxt text (handy in tests)."""
    return _with_filename("<string>", upgrade_net, parse_text(text, caffe_pb2.NetParameter()))


def read_solver(path: PathLike) -> caffe_pb2.SolverParameter:
    """Read a text solver file and upgrade it (legacy ``solver_type`` enum -> ``type``)."""
    solver = read_prototxt(path, caffe_pb2.SolverParameter)
    return _with_filename(str(path), upgrade_solver, solver)


def write_prototxt(msg: pb_message.Message, path: PathLike) -> None:
    """Write ``msg`` in text format, atomically. (Unknown fields are not written.)"""
    atomic_write(path, text_format.MessageToString(msg).encode("utf-8"))


def _read_text(path: PathLike) -> str:
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        if b"\0" in data[:4096]:  # a caffemodel has NULs; prototxt never does
            raise CaffeFormatError(
                f"{path}: this is a binary file, not a text prototxt "
                "(binary .caffemodel files are read with read_caffemodel)") from err
        return data.decode("latin-1")  # Caffe's parser accepts any bytes in comments


_FIELD_RE = re.compile(r'Message type "caffe\.([\w.]+)" has no field named "(\w+)"')
_ENUM_RE = re.compile(r'Enum type "caffe\.([\w.]+)" has no value named (\w+)')
# Tokens of protobuf text format, enough to track { } nesting (strings and comments skipped).
_TOKEN_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#[^\n]*|[A-Za-z_][\w.]*|\S')


def _text_error(err: text_format.ParseError, text: str, filename: str) -> CaffeFormatError:
    """Turn protobuf's ParseError into ``file:line:col: what (in layer 'x'); did you mean ...``."""
    line, col = err.GetLine(), err.GetColumn()
    msg = re.sub(r"^\d+:\d+ : ", "", str(err))
    lines = text.split("\n")
    if line and line <= len(lines):  # some messages quote the whole source line first
        msg = msg.removeprefix(f"'{lines[line - 1]}': ")
    layer = _enclosing_layer_name(text, line, col) if line else None
    in_layer = f" in layer '{layer}'" if layer else ""

    if m := _FIELD_RE.search(msg):
        type_name, field = m.groups()
        desc = caffe_pb2.DESCRIPTOR.pool.FindMessageTypeByName("caffe." + type_name)
        hint = _suggest(field, [f.name for f in desc.fields])
        if not hint and type_name in ("LayerParameter", "V1LayerParameter"):
            # A common slip: a convolution_param field written directly in the layer.
            owners = [f.name for f in desc.fields
                      if f.message_type and field in f.message_type.fields_by_name]
            if owners:
                hint = f"; '{field}' belongs inside {' or '.join(owners[:3])} {{ }}"
        msg = f"unknown field '{field}'{in_layer} ({type_name}){hint}"
    elif m := _ENUM_RE.search(msg):
        type_name, value = m.groups()
        desc = caffe_pb2.DESCRIPTOR.pool.FindEnumTypeByName("caffe." + type_name)
        msg = f"unknown value '{value}' for {type_name}{in_layer}" + \
            _suggest(value, [v.name for v in desc.values])
    elif layer:
        msg = f"{msg.rstrip('.')} (in layer '{layer}')"
    where = f"{filename}:{line}:{col}" if line else filename
    return CaffeFormatError(f"{where}: {msg}")


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _enclosing_layer_name(text: str, line: int, col: int) -> str | None:
    """Name of the innermost ``layer {``/``layers {`` block around (line, col), if any.

    Tracks brace nesting up to the error, then looks for the block's own ``name:`` anywhere in
    the block (it often comes after the error when a layer lists name last).
    """
    offset = sum(len(s) + 1 for s in text.split("\n")[:line - 1]) + max(col - 1, 0)
    tokens = [(m.start(), m.group()) for m in _TOKEN_RE.finditer(text)
              if not m.group().startswith("#")]
    stack: list[tuple[str, int]] = []  # (field name, index of first token inside the block)
    for i, (pos, tok) in enumerate(tokens):
        if pos >= offset:
            break
        if tok in ("{", "<"):
            j = i - 2 if i >= 2 and tokens[i - 1][1] == ":" else i - 1
            stack.append((tokens[j][1] if j >= 0 else "", i + 1))
        elif tok in ("}", ">") and stack:
            stack.pop()
    for field, start in reversed(stack):
        if field in ("layer", "layers"):
            name = _block_name(tokens, start)
            if name is not None:
                return name
    return None


def _block_name(tokens: list[tuple[int, str]], start: int) -> str | None:
    depth = 0
    for k in range(start, len(tokens)):
        tok = tokens[k][1]
        if tok in ("{", "<"):
            depth += 1
        elif tok in ("}", ">"):
            if depth == 0:
                return None
            depth -= 1
        elif depth == 0 and tok == "name" and k + 2 < len(tokens) and tokens[k + 1][1] == ":" \
                and tokens[k + 2][1][:1] in "\"'":
            return tokens[k + 2][1][1:-1]
    return None


# ------------------------------------------------------------------------------------------------
# Binary files
# ------------------------------------------------------------------------------------------------

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
    return _with_filename(str(path), upgrade_net, net)


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
    return _with_filename(str(path), blob_to_array, blob)


def write_binaryproto(array: np.ndarray, path: PathLike) -> None:
    """Write ``array`` as a float32 BlobProto ``.binaryproto`` (modern ``shape`` form)."""
    write_binary(array_to_blob(array), path)


def _looks_like_text(data: bytes) -> bool:
    head = data[:4096]
    return b"\0" not in head and sum(b < 9 or 13 < b < 32 for b in head) < len(head) // 100 + 1


def atomic_write(path: PathLike, data: bytes) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over ``path``.

    Readers see either the old file or the complete new one, never a partial snapshot.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours umask
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (best effort: not every platform can open a dir)
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# ------------------------------------------------------------------------------------------------
# Blobs
# ------------------------------------------------------------------------------------------------

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
    blob.MergeFromString(_varint(number << 3 | 2) + _varint(len(raw)) + raw)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


# ------------------------------------------------------------------------------------------------
# Upgrades of legacy nets and solvers
# ------------------------------------------------------------------------------------------------

# V1LayerParameter.LayerType name -> the type string of today's LayerParameter.
_V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}
# V1 repeated fields that become fields of the i-th ParamSpec.
_V1_PARAM_SPEC = {"param": "name", "blob_share_mode": "share_mode", "blobs_lr": "lr_mult",
                  "weight_decay": "decay_mult"}
# V0 type string -> V1 LayerType name, and the V1 *_param message its settings go into.
_V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING", "relu": "RELU",
    "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT",
    "tanh": "TANH", "window_data": "WINDOW_DATA",
}
_V0_PARAM_MSG = {
    "CONCAT": "concat_param", "CONVOLUTION": "convolution_param", "DATA": "data_param",
    "DROPOUT": "dropout_param", "HDF5_DATA": "hdf5_data_param",
    "HDF5_OUTPUT": "hdf5_output_param", "IMAGE_DATA": "image_data_param",
    "INFOGAIN_LOSS": "infogain_loss_param", "INNER_PRODUCT": "inner_product_param",
    "LRN": "lrn_param", "POOLING": "pooling_param", "WINDOW_DATA": "window_data_param",
}
# V0 field -> its name inside the *_param message (only where that message has it).
_V0_FIELDS = {
    "num_output": "num_output", "biasterm": "bias_term", "weight_filler": "weight_filler",
    "bias_filler": "bias_filler", "pad": "pad", "kernelsize": "kernel_size", "group": "group",
    "stride": "stride", "pool": "pool", "dropout_ratio": "dropout_ratio",
    "local_size": "local_size", "alpha": "alpha", "beta": "beta", "k": "k", "source": "source",
    "scale": "scale", "meanfile": "mean_file", "batchsize": "batch_size",
    "cropsize": "crop_size", "mirror": "mirror", "rand_skip": "rand_skip",
    "shuffle_images": "shuffle", "new_height": "new_height", "new_width": "new_width",
    "concat_dim": "concat_dim", "det_fg_threshold": "fg_threshold",
    "det_bg_threshold": "bg_threshold", "det_fg_fraction": "fg_fraction",
    "det_context_pad": "context_pad", "det_crop_mode": "crop_mode",
}
_LEGACY_TRANSFORM = ("scale", "mean_file", "crop_size", "mirror")
_SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                 "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}


def upgrade_net(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """An upgraded copy of ``net`` in today's format (see :func:`upgrade_net_with_notes`)."""
    return upgrade_net_with_notes(net)[0]


def upgrade_net_with_notes(net: caffe_pb2.NetParameter
                           ) -> tuple[caffe_pb2.NetParameter, list[str]]:
    """Upgrade a copy of ``net`` as Caffe's ``UpgradeNetAsNeeded`` does; say what changed.

    Steps, each applied only when needed:
      1. V0 layers (``layers { layer { type: "conv" ... } }``, pre-2014) -> V1, merging the old
         separate "padding" layers into the convolution/pooling that consumes them.
      2. V1 ``layers`` -> ``layer``: type enum -> type string, ``blobs_lr``/``weight_decay``/
         ``param``/``blob_share_mode`` -> ``param { lr_mult decay_mult name share_mode }``.
      3. Legacy scale/mean_file/crop_size/mirror of data_param, image_data_param and
         window_data_param -> ``transform_param`` (an explicit transform_param value wins).
      4. Net ``input`` + ``input_dim`` (4 per input) or ``input_shape`` -> one ``Input`` layer per
         input, named like its blob, at the front of the net. (BVLC Caffe makes a single layer
         named "input" with all the inputs as tops; blobs and outputs are the same.) An
         ``input`` without dims, as in old caffemodels, is simply dropped.
    Not applied: BVLC's removal of BatchNorm ``param`` specs. brewnet never trains BatchNorm
    statistics whatever they say, and keeps them so that lint can warn about them.

    Returns:
        (upgraded copy, human-readable notes; empty when nothing needed upgrading)
    Raises:
        CaffeFormatError: the net cannot be upgraded (e.g. both ``layer`` and ``layers``).
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    notes: list[str] = []
    if out.layers:
        if out.layer:
            raise CaffeFormatError("net mixes 'layer' and legacy 'layers' entries; "
                                   "use one or the other")
        if any(v1.HasField("layer") for v1 in out.layers):
            _upgrade_v0(out, notes)
        upgraded = [_v1_to_layer(v1) for v1 in out.layers]
        out.ClearField("layers")
        out.layer.extend(upgraded)
        notes.append(f"converted {len(upgraded)} V1 'layers' entries to 'layer'")
    for layer in out.layer:
        _upgrade_transform(layer, notes)
    _upgrade_inputs(out, notes)
    return out, notes


def upgrade_solver(solver: caffe_pb2.SolverParameter) -> caffe_pb2.SolverParameter:
    """An upgraded copy of ``solver``: the legacy ``solver_type`` enum becomes ``type``."""
    out = caffe_pb2.SolverParameter()
    out.CopyFrom(solver)
    if out.HasField("solver_type"):
        name = _SOLVER_TYPES[caffe_pb2.SolverParameter.SolverType.Name(out.solver_type)]
        if out.HasField("type") and out.type != name:
            raise CaffeFormatError(f"solver gives both solver_type ({name}) and type "
                                   f"({out.type!r}); remove solver_type")
        out.type = name
        out.ClearField("solver_type")
    return out


def _v1_to_layer(v1: caffe_pb2.V1LayerParameter) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter()
    for field, value in v1.ListFields():
        name = field.name
        if name == "name":
            layer.name = value
        elif name == "type":
            type_name = caffe_pb2.V1LayerParameter.LayerType.Name(value)
            if type_name not in _V1_TYPES:
                raise CaffeFormatError(f"V1 layer '{v1.name}' has type {type_name}, which has "
                                       "no modern equivalent")
            layer.type = _V1_TYPES[type_name]
        elif name in ("bottom", "top", "include", "exclude", "loss_weight", "blobs"):
            getattr(layer, name).extend(value)
        elif name in _V1_PARAM_SPEC:
            for i, item in enumerate(value):
                while len(layer.param) <= i:
                    layer.param.add()
                setattr(layer.param[i], _V1_PARAM_SPEC[name], item)
        elif name.endswith("_param"):  # every V1 *_param has a same-named LayerParameter field
            getattr(layer, name).CopyFrom(value)
        else:
            raise CaffeFormatError(f"V1 layer '{v1.name}': cannot upgrade field '{name}'")
    if not v1.HasField("type"):
        raise CaffeFormatError(f"V1 layer '{v1.name}' has no type")
    return layer


def _upgrade_v0(net: caffe_pb2.NetParameter, notes: list[str]) -> None:
    """Rewrite V0 connections (``layers { layer {...} bottom top }``) as V1 layers in place."""
    padding: dict[str, caffe_pb2.V1LayerParameter] = {}  # top name -> V0 "padding" connection
    converted = []
    for conn in net.layers:
        v0 = conn.layer
        if v0.type == "padding":
            # V0 padded with a separate layer; Caffe folds its pad into the consumer.
            padding[conn.top[0]] = conn
            continue
        v1 = caffe_pb2.V1LayerParameter()
        v1.CopyFrom(conn)
        v1.ClearField("layer")
        pad = None
        for i, bottom in enumerate(conn.bottom):
            if bottom in padding:
                if v0.type not in ("conv", "pool"):
                    raise CaffeFormatError(f"V0 layer '{v0.name}' ({v0.type}) reads the output "
                                           "of a padding layer; only conv and pool may")
                v1.bottom[i] = padding[bottom].bottom[0]
                pad = padding[bottom].layer.pad
        _v0_fill(v0, v1)
        if pad is not None:
            msg = getattr(v1, _V0_PARAM_MSG[caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)])
            if isinstance(msg, caffe_pb2.ConvolutionParameter):
                msg.ClearField("pad")
                msg.pad.append(pad)
            else:
                msg.pad = pad
        converted.append(v1)
    net.ClearField("layers")
    net.layers.extend(converted)
    notes.append(f"converted {len(converted)} V0 layers to V1"
                 + (f", folding {len(padding)} padding layers" if padding else ""))


def _v0_fill(v0: caffe_pb2.V0LayerParameter, v1: caffe_pb2.V1LayerParameter) -> None:
    if v0.type not in _V0_TYPES:
        raise CaffeFormatError(f"V0 layer '{v0.name}' has type '{v0.type}', which brewnet "
                               "cannot upgrade")
    type_name = _V0_TYPES[v0.type]
    v1.type = caffe_pb2.V1LayerParameter.LayerType.Value(type_name)
    if v0.HasField("name"):
        v1.name = v0.name
    v1.blobs.extend(v0.blobs)
    v1.blobs_lr.extend(v0.blobs_lr)
    v1.weight_decay.extend(v0.weight_decay)
    params = getattr(v1, _V0_PARAM_MSG[type_name]) if type_name in _V0_PARAM_MSG else None
    for field, value in v0.ListFields():
        if field.name in ("name", "type", "blobs", "blobs_lr", "weight_decay"):
            continue
        if field.name == "hdf5_output_param":
            v1.hdf5_output_param.CopyFrom(value)
            continue
        target = _V0_FIELDS.get(field.name)
        if params is None or target not in params.DESCRIPTOR.fields_by_name:
            raise CaffeFormatError(f"V0 layer '{v0.name}' ({v0.type}): cannot upgrade field "
                                   f"'{field.name}'")
        dest = params.DESCRIPTOR.fields_by_name[target]
        if dest.is_repeated:  # e.g. ConvolutionParameter.kernel_size
            getattr(params, target).append(value)
        elif dest.message_type is not None:
            getattr(params, target).CopyFrom(value)
        else:
            setattr(params, target, value)


def _upgrade_transform(layer: caffe_pb2.LayerParameter, notes: list[str]) -> None:
    """Move a data layer's pre-2014 transformation fields into ``transform_param``.

    Caffe only does this for V1 nets; a modern Caffe silently ignores these fields, which is
    never what the author meant, so brewnet moves them for every net and says so.
    """
    for params_name in ("data_param", "image_data_param", "window_data_param"):
        if not layer.HasField(params_name):
            continue
        params = getattr(layer, params_name)
        for field in _LEGACY_TRANSFORM:
            if not params.HasField(field):
                continue
            if layer.transform_param.HasField(field):
                notes.append(f"layer '{layer.name}': dropped legacy {params_name}.{field}, "
                             f"transform_param.{field} is set")
            else:
                setattr(layer.transform_param, field, getattr(params, field))
                notes.append(f"layer '{layer.name}': moved {params_name}.{field} to "
                             f"transform_param.{field}")
            params.ClearField(field)


def _upgrade_inputs(net: caffe_pb2.NetParameter, notes: list[str]) -> None:
    names, dims, shapes = list(net.input), list(net.input_dim), list(net.input_shape)
    if not (names or dims or shapes):
        return
    if dims and shapes:
        raise CaffeFormatError("net gives both input_dim and input_shape; use one")
    if dims and len(dims) != 4 * len(names):
        raise CaffeFormatError(f"net has {len(names)} inputs but {len(dims)} input_dim values "
                               f"(need 4 per input: N, C, H, W)")
    if shapes and len(shapes) != len(names):
        raise CaffeFormatError(f"net has {len(names)} inputs but {len(shapes)} input_shape")
    for f in ("input", "input_dim", "input_shape"):
        net.ClearField(f)
    if not (dims or shapes):  # an old caffemodel repeats the input names without shapes
        notes.append(f"dropped legacy net inputs {names} (no shapes given)")
        return
    # Caffe's UpgradeNetInput: one Input layer named "input" with every input as a top, so that
    # layer names match pycaffe's.
    layer = caffe_pb2.LayerParameter(name="input", type="Input", top=names)
    for i in range(len(names)):
        shape = layer.input_param.shape.add()
        if shapes:
            shape.CopyFrom(shapes[i])
        else:
            shape.dim.extend(dims[4 * i: 4 * i + 4])
    layers = [layer]
    layers.extend(net.layer)
    net.ClearField("layer")
    net.layer.extend(layers)
    notes.append(f"turned legacy net inputs {names} into Input layers")


def _with_filename(filename: str, fn: Callable[..., _T], *args) -> _T:
    """Call ``fn(*args)``, prefixing the file name to any CaffeFormatError it raises."""
    try:
        return fn(*args)
    except CaffeFormatError as err:
        raise CaffeFormatError(f"{filename}: {err}") from err
