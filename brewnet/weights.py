"""Loading and saving a Net's weights, matching layers by name: caffemodels (Caffe's
CopyTrainedLayersFrom) and Caffe's HDF5 weight files (``Net::ToHDF5`` / ``CopyTrainedLayersFromHDF5``).

Unlike Caffe, which stops at the first mismatch, every problem is collected and reported in one
error grouped by kind, and layers that are only on one side are listed in the returned report.
The functions take any net with ``layers``, ``layer_dict``, ``caffe_params`` and ``name`` (a
``brewnet.Net``); this module does not import the net module.  :func:`weight_arrays` gives a
caffemodel's blobs as arrays by layer name (for lint and the dialect conversion).
"""
from __future__ import annotations

import logging
import os

import numpy as np
from google.protobuf import text_format

from . import formats
from .formats.atomic import atomic_path
from .formats.batchnorm_layouts import is_routine_note
from .errors import NetError
from .proto import caffe_pb2

log = logging.getLogger("brewnet")


class LoadReport:
    """What loading weights did: layers copied, source layers ignored, layers left as filled."""

    def __init__(self):
        self.copied: list[str] = []
        self.ignored: list[str] = []   # in the weights file, not in the net
        self.missing: list[str] = []   # in the net (with blobs), not in the weights file
        self.notes: list[str] = []     # conversions (e.g. BatchNorm layouts)

    def __repr__(self) -> str:
        return (f"<LoadReport copied={len(self.copied)} ignored={self.ignored} "
                f"missing={self.missing} notes={len(self.notes)}>")


def weight_arrays(weights: caffe_pb2.NetParameter | None) -> dict[str, tuple[list[np.ndarray], object]]:
    """{layer name: (blob arrays, the caffemodel's LayerParameter)} of layers with blobs."""
    out = {}
    if weights is None:
        return out
    for lp in weights.layer:
        if len(lp.blobs) and lp.name not in out:
            out[lp.name] = ([formats.blob_to_array(b) for b in lp.blobs], lp)
    return out


def load_weights(net, net_param, source: str = "<caffemodel>") -> LoadReport:
    """Copy the blobs of a caffemodel's NetParameter into ``net``'s layers of the same name."""
    report = LoadReport()
    src = {lp.name: lp for lp in net_param.layer if len(lp.blobs)}
    problems: list[str] = []
    for layer in net.layers:
        if not layer.blob_tensors:
            continue
        lp = src.get(layer.name)
        if lp is None:
            report.missing.append(layer.name)
            continue
        try:
            arrays = [formats.blob_to_array(b) for b in lp.blobs]
            _load_layer(net, layer, arrays, lp, report)
        except (NetError, ValueError) as e:
            problems.append(str(e))
    own = set(net.layer_dict)
    report.ignored = [n for n in src if n not in own]
    _finish(report, net, problems, source)
    return report


def _load_layer(net, layer, arrays, source_param, report: LoadReport) -> None:
    had = len(layer.blob_tensors)
    report.notes.extend(layer.load_caffe_blobs(arrays, source_param))
    if len(layer.blob_tensors) > had:  # the file's layout gave the layer more blobs (BatchNorm)
        net.register_loaded_blobs(layer, had)
    report.copied.append(layer.name)


def _finish(report: LoadReport, net, problems: list[str], source: str) -> None:
    if problems:
        raise NetError(f"{source}: cannot load weights into net '{net.name}':\n  " + "\n  ".join(problems))
    if report.ignored:
        log.info("%s: ignoring layers not in the net: %s", source, ", ".join(report.ignored))
    if report.missing:
        log.warning("%s: no weights for layers %s (they keep their filler values)",
                    source, ", ".join(report.missing))
    for note in report.notes:
        log.log(logging.DEBUG if is_routine_note(note) else logging.INFO, "%s: %s", source, note)


# ----- Caffe's HDF5 weight files --------------------------------------------------------------
# Layout (net.cpp): group "data" (and "diff" with write_diff) holding one group per layer, named
# as the layer, holding datasets "0", "1", ... in blob order.  A blob shared from another layer
# (param { name }) is written only by its owner; its diff is written by every layer.

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path) -> bool:
    """Does the file start with HDF5's signature (Caffe's H5Fis_hdf5 test, for files at offset 0)?"""
    try:
        with open(path, "rb") as f:
            return f.read(8) == _HDF5_SIGNATURE
    except OSError:
        return False


def _owned(net) -> set[tuple[int, int]]:
    return {(id(e.layer), e.index) for e in net.caffe_params}


def save_weights_hdf5(net, path, write_diff: bool = False) -> None:
    """Write ``net``'s blobs as Caffe's Net::ToHDF5 does, atomically."""
    import h5py

    owned = _owned(net)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            data = f.create_group("data")
            diff = f.create_group("diff") if write_diff else None
            for layer in net.layers:
                group = data.create_group(layer.name)
                # the layer's definition (Caffe ignores attributes): how a BatchNorm's blobs
                # are laid out, as a caffemodel's LayerParameter tells it
                group.attrs["layer_param"] = text_format.MessageToString(layer.param)
                dgroup = diff.create_group(layer.name) if diff is not None else None
                arrays = layer.caffe_blob_arrays()
                for i, (arr, t) in enumerate(zip(arrays, layer.blob_tensors)):
                    if (id(layer), i) in owned:
                        group.create_dataset(str(i), data=arr)
                    if dgroup is not None:
                        g = t.grad
                        dgroup.create_dataset(str(i), data=np.zeros_like(arr) if g is None else
                                              g.detach().to("cpu").float().numpy().reshape(arr.shape))


def _stored_layer_param(group):
    """The LayerParameter brewnet stores beside a layer's datasets, or None (Caffe's files)."""
    text = group.attrs.get("layer_param")
    if text is None:
        return None
    lp = caffe_pb2.LayerParameter()
    try:
        text_format.Parse(text if isinstance(text, str) else text.decode(), lp)
    except text_format.ParseError:
        return None
    return lp


def load_weights_hdf5(net, path) -> LoadReport:
    """Copy blobs from a Caffe HDF5 weight file into ``net``'s layers of the same name."""
    import h5py

    source = os.fspath(path)
    if not os.path.exists(source):
        raise NetError(f"weights file not found: {source}")
    report = LoadReport()
    problems: list[str] = []
    owned = _owned(net)
    layers = net.layer_dict
    try:
        f = h5py.File(source, "r")
    except OSError as e:
        raise NetError(f"{source}: not an HDF5 weights file ({e})") from None
    with f:
        if "data" not in f:
            raise NetError(f"{source}: no 'data' group (not a Caffe HDF5 weights file)")
        data = f["data"]
        report.ignored = [n for n in data if n not in layers]
        for layer in net.layers:
            tensors = layer.blob_tensors
            if not tensors:
                continue
            if layer.name not in data:
                report.missing.append(layer.name)
                continue
            group = data[layer.name]
            # the layer checks the count (a BatchNorm may take a longer NVCaffe layout)
            arrays = []
            for i in range(max(len(group), len(tensors))):
                if str(i) in group:
                    arrays.append(np.asarray(group[str(i)], dtype=np.float32))
                elif i < len(tensors) and (id(layer), i) not in owned:  # shared: from its owner
                    arrays.append(tensors[i].detach().to("cpu").float().numpy())
                else:
                    problems.append(f"layer '{layer.name}': the file has no blob {i} "
                                    f"(it has {len(group)}, the layer {len(tensors)})")
                    break
            else:
                try:
                    _load_layer(net, layer, arrays, _stored_layer_param(group), report)
                except (NetError, ValueError) as e:
                    problems.append(str(e))
    _finish(report, net, problems, source)
    return report
