"""Caffe's text files: prototxt nets and solvers (protobuf text format), read and written.

Parsing errors are :class:`~brewnet.formats.errors.CaffeFormatError` naming ``file:line:column``,
the enclosing layer and the closest valid field or enum name. Nets and solvers read from files
are upgraded (:mod:`brewnet.formats.upgrade`).
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from google.protobuf import message as pb_message
from google.protobuf import text_format

from brewnet.proto import caffe_pb2

from .atomic import PathLike, atomic_write
from .errors import CaffeFormatError, with_filename
from .upgrade import upgrade_net, upgrade_solver

__all__ = ["parse_text", "read_prototxt", "read_net", "net_from_text", "read_solver",
           "write_prototxt"]


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
    return with_filename(filename, upgrade_net, net)


def net_from_text(text: str) -> caffe_pb2.NetParameter:
    """Parse and upgrade a net given as prototxt text (handy in tests)."""
    return with_filename("<string>", upgrade_net, parse_text(text, caffe_pb2.NetParameter()))


def read_solver(path: PathLike) -> caffe_pb2.SolverParameter:
    """Read a text solver file and upgrade it (legacy ``solver_type`` enum -> ``type``)."""
    solver = read_prototxt(path, caffe_pb2.SolverParameter)
    return with_filename(str(path), upgrade_solver, solver)


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
