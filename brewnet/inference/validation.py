"""The train_val as ``brewnet deploy`` reads it: the validation (TEST) net, its data layer (set
up alone to read the item shape), the dataset's ``summary.json`` beside its LMDB, and the deploy
input shape that follows — computed once (:func:`analyse`) for the deploy net
(:mod:`brewnet.inference.deploy_net`) and the preprocessing (:mod:`brewnet.inference.preprocess_spec`).

brewnet.net and brewnet.layers import torch: they are imported where used, so that importing
this module (``brewnet deploy``'s command line, the server's forms) does not.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Sequence

from .. import formats
from ..data import resolve_path
from ..errors import DataError, NetError
from ..net_state import filter_net, net_state
from ..proto import caffe_pb2
from .bundle import DeployError

log = logging.getLogger("brewnet")

TEST = caffe_pb2.TEST
DEPLOY_STAGE = "deploy"


@dataclass
class Probe:
    """What the validation data layer gives: its item shape after the transform, the stored
    image shape before it, or why it could not be read."""

    item: tuple[int, ...] | None = None      # (C, H, W) after crop
    stored: tuple[int, ...] | None = None    # (C, H, W) as stored
    error: str | None = None


@dataclass
class Analysis:
    """The train_val as deploy sees it, computed once for the net and the preprocessing."""

    train_val: caffe_pb2.NetParameter
    model_dir: str | None
    data: caffe_pb2.LayerParameter | None    # the TEST data layer whose top[0] is the net input
    probe: Probe
    summary: dict | None                     # the dataset's summary.json, when there is one
    dataset_dir: str | None
    item: tuple[int, ...] | None = None      # the deploy input item shape (C, H, W)
    notes: list[str] = field(default_factory=list)
    labels: caffe_pb2.LayerParameter | None = None  # a generic net's TEST labels data layer


def features_and_labels(data_layers: list) -> tuple[caffe_pb2.LayerParameter | None,
                                                    caffe_pb2.LayerParameter | None]:
    """(features layer, labels layer) among the TEST net's data layers, by DIGITS' rule for
    generic nets: a top containing "data" reads the features, one containing "label" the labels
    (a second data layer). One data layer (classification: data and label tops) has no labels
    layer; without a "data" top the first data layer reads the features."""
    if not data_layers:
        return None, None
    if len(data_layers) == 1:
        return data_layers[0], None
    features = next((lp for lp in data_layers if any("data" in t for t in lp.top)
                     and not any("label" in t for t in lp.top)), data_layers[0])
    labels = next((lp for lp in data_layers if lp is not features and any("label" in t for t in lp.top)), None)
    return features, labels


def phase_test_state(stages: Sequence[str] = ()) -> caffe_pb2.NetState:
    """The NetState of phase TEST with ``stages``."""
    return net_state(TEST, stages)


def is_data_layer(lp) -> bool:
    """A layer that brings data into the net (a Python layer with no bottoms too)."""
    if lp.type == "Python":  # pycaffe data layers read no bottoms
        return not lp.bottom
    from ..layers import is_data_layer as is_data_type  # torch
    return is_data_type(lp.type)


def validation_net(train_val) -> caffe_pb2.NetParameter:
    """The TEST net that validation ran; DIGITS' all-in-one nets put it under stage "val"."""
    val = filter_net(train_val, phase_test_state())
    if not any(is_data_layer(lp) for lp in val.layer):
        staged = filter_net(train_val, phase_test_state(["val"]))
        if any(is_data_layer(lp) for lp in staged.layer):
            return staged
    return val


def resolve(path: str, model_dir: str | None) -> str:
    """A path the train_val names, absolute (Caffe's rule, then beside the prototxt)."""
    found = resolve_path(path, model_dir)
    if not os.path.exists(found) and model_dir and not os.path.isabs(found):
        # a source that is gone still names its dataset folder (summary.json, labels.txt)
        beside = os.path.join(model_dir, path)
        if os.path.isdir(os.path.dirname(beside.rstrip("/" + os.sep))):
            found = beside
    return os.path.abspath(found)


def source_path(lp, model_dir) -> str | None:
    """The LMDB or list file a Data or ImageData layer reads (None for other layers)."""
    if lp.type == "Data" and lp.data_param.source:
        return resolve(lp.data_param.source, model_dir)
    if lp.type == "ImageData" and lp.image_data_param.source:
        return resolve(lp.image_data_param.source, model_dir)
    return None


def probe_data_layer(lp, model_dir) -> Probe:
    """Set up the data layer alone, as the TEST net would (it reads the first record only)."""
    from ..layers import layer_class  # torch
    param = caffe_pb2.LayerParameter()
    param.CopyFrom(lp)
    try:
        layer = layer_class(param.type, param.name)(param, TEST)
        layer.model_dir = model_dir
        try:
            shapes = layer.setup([])
        finally:
            close = getattr(layer, "close", None)
            if close is not None:
                close()
    except (DataError, NetError) as e:
        return Probe(error=str(e))
    item = tuple(int(d) for d in shapes[0][1:])
    source = getattr(layer, "source", None)  # reader layers (brewnet.layers.datalayers)
    stored = tuple(int(d) for d in source.item_shape) if source is not None and \
        hasattr(source, "item_shape") else None
    return Probe(item=item, stored=stored)


def _read_summary(dataset_dir: str | None) -> dict | None:
    if not dataset_dir:
        return None
    path = os.path.join(dataset_dir, "summary.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        log.warning("deploy: ignoring %s: %s", path, e)
        return None
    return summary if isinstance(summary, dict) and isinstance(summary.get("image"), dict) else None


def summary_stored(summary: dict, tp) -> tuple[int, int, int]:
    """(C, H, W) of the stored images by ``summary.json``, after force_gray/force_color."""
    im = summary["image"]
    c = int(im["channels"])
    if tp.force_gray:
        c = 1
    elif tp.force_color:
        c = 3
    return c, int(im["height"]), int(im["width"])


def _after_crop(stored: tuple[int, ...], tp) -> tuple[int, ...]:
    cs = int(tp.crop_size)
    return (stored[0], cs, cs) if cs else tuple(stored)


def analyse(train_val, model_dir: str | None, input_shape) -> Analysis:
    """The :class:`Analysis` of an upgraded train_val; DeployError when the input shape
    cannot be known (give ``input_shape``)."""
    val = validation_net(train_val)
    data, labels = features_and_labels([lp for lp in val.layer if is_data_layer(lp)])
    if data is None:  # a deploy Input (DIGITS' all-in-one nets include it with stage "deploy")
        data = next((lp for lp in filter_net(train_val, phase_test_state([DEPLOY_STAGE])).layer
                     if is_data_layer(lp)), None)
    source = source_path(data, model_dir) if data is not None else None
    dataset_dir = os.path.dirname(source.rstrip("/" + os.sep)) if source else None
    a = Analysis(train_val, model_dir, data, Probe(), _read_summary(dataset_dir), dataset_dir, labels=labels)
    if data is not None:
        a.probe = probe_data_layer(data, model_dir)
    if input_shape is not None:
        a.item = tuple(int(d) for d in input_shape)
        if not a.item or min(a.item) <= 0:
            raise DeployError(f"input_shape must be positive dimensions (C, H, W), got {input_shape}")
        if a.probe.item is not None and a.probe.item != a.item:
            a.notes.append(f"input shape {a.item} given; the validation data layer "
                           f"'{data.name}' gives {a.probe.item}")
    elif a.probe.item is not None:
        a.item = a.probe.item
    elif data is not None and data.type in ("Data", "ImageData"):
        # the source cannot be read here: the crop and the dataset's stored size still tell
        tp = data.transform_param
        stored = None
        if data.type == "Data" and a.summary is not None:
            stored = summary_stored(a.summary, tp)
        elif data.type == "ImageData" and data.image_data_param.new_height > 0 \
                and data.image_data_param.new_width > 0:
            p = data.image_data_param
            stored = (3 if p.is_color else 1, int(p.new_height), int(p.new_width))
        if stored is not None:
            a.probe.stored = stored
            a.item = _after_crop(stored, tp)
            a.notes.append(f"data layer '{data.name}': {a.probe.error}; input shape {a.item} "
                           "taken from the dataset's stored size and the crop")
    if a.item is None:
        if data is None:
            raise DeployError("the net has no data layer to take the input shape from "
                              "(give input_shape, -input_shape C,H,W on the command line)")
        why = a.probe.error or f"brewnet cannot tell what a {data.type} layer yields"
        raise DeployError(f"cannot tell the deploy input shape from data layer '{data.name}' "
                          f"({data.type}): {why}; give input_shape (-input_shape C,H,W)")
    return a


def load_model(model) -> tuple[caffe_pb2.NetParameter, str | None, str | None]:
    """(upgraded NetParameter, the prototxt's directory, its path) from a path or a NetParameter."""
    if isinstance(model, caffe_pb2.NetParameter):
        return formats.upgrade_net(model), None, None
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise DeployError(f"model file not found: {path}")
    return formats.read_net(path), os.path.dirname(os.path.abspath(path)), os.path.abspath(path)
