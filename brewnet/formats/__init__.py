"""Caffe's files: reading and writing them, and upgrading legacy nets.

Text files (``.prototxt``, solvers) are protobuf text format; ``.caffemodel``, ``.solverstate``
and ``.binaryproto`` are protobuf binary. Both use the schema in ``brewnet/proto/caffe.proto``
(BVLC Caffe plus NVCaffe's non-clashing fields), so files stay byte-compatible with BVLC Caffe.

Every error a user can cause is a :class:`CaffeFormatError` whose message names the file (and,
for text, ``file:line:column``). Nets are upgraded on read, as Caffe's ``UpgradeNetAsNeeded``
does: V0/V1 ``layers`` become ``layer``, legacy net inputs become ``Input`` layers and legacy
data-layer transformation fields move into ``transform_param``.

- :mod:`~brewnet.formats.text` — prototxt nets and solvers: parse, read (upgraded), write.
- :mod:`~brewnet.formats.binary` — caffemodel, binaryproto, solverstate: read, write.
- :mod:`~brewnet.formats.blobs` — BlobProto <-> numpy arrays, shapes, legacy 4-D blobs.
- :mod:`~brewnet.formats.upgrade` — V0/V1 layers, legacy net inputs, legacy solver types.
- :mod:`~brewnet.formats.batchnorm_layouts` — the BVLC/NVCaffe BatchNorm blob layouts.
- :mod:`~brewnet.formats.atomic` — the one atomic file write (fsync, rename, fsync folder).
- :mod:`~brewnet.formats.errors` — :class:`CaffeFormatError`.

The common functions are re-exported here: ``from brewnet import formats; formats.read_net(p)``.
This package imports only the standard library, numpy, protobuf, ``brewnet.errors`` and
``brewnet.proto``.
"""
from __future__ import annotations

from .atomic import atomic_path, atomic_write
from .binary import (read_binary, read_binaryproto, read_caffemodel, write_binary, write_binaryproto,
                     write_caffemodel)
from .blobs import array_to_blob, blob_matches_shape, blob_shape, blob_to_array, legacy_shape_equals
from .errors import CaffeFormatError
from .text import net_from_text, parse_text, read_net, read_prototxt, read_solver, write_prototxt
from .upgrade import upgrade_net, upgrade_net_with_notes, upgrade_solver

__all__ = [
    "CaffeFormatError", "parse_text", "read_prototxt", "read_net", "net_from_text", "read_solver",
    "read_binary", "read_caffemodel", "write_caffemodel", "write_prototxt", "write_binary",
    "read_binaryproto", "write_binaryproto", "blob_shape", "blob_matches_shape", "legacy_shape_equals", "blob_to_array",
    "array_to_blob", "upgrade_net", "upgrade_net_with_notes", "upgrade_solver", "atomic_write",
    "atomic_path",
]
