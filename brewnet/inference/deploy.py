"""``brewnet deploy``: from a train_val prototxt and a snapshot to a deploy bundle whose scores are
the scores validation saw (the bundle's layout is defined in :mod:`brewnet.inference.bundle`).

- :func:`deploy_net_param` — the net for the deploy NetState, by DIGITS' rules: layers filtered
  by phase TEST and stage "deploy"; the data layers replaced by one ``Input`` of the validation
  item's shape after the crop; loss and accuracy layers removed, then every layer that only fed
  them (label branches, auxiliary heads); a ``Softmax`` "prob" added where the net ends in the
  logits its ``SoftmaxWithLoss`` read (an existing Softmax output is kept instead); NetState rules
  and NVCaffe-only fields dropped, so that real BVLC Caffe parses it.
- :func:`preprocess_spec` — what the validation data path did to an image, read from the TEST
  Data (or ImageData) layer's ``transform_param`` and from the dataset ``brewnet dataset create``
  wrote beside its LMDB (``summary.json``: resize size and mode, image size and channels).
- :func:`write_bundle` — both, plus the trained weights of the deploy layers only (an NVCaffe
  BatchNorm becomes BVLC BatchNorm + Scale), labels and ``info.json``, written atomically;
  ``bake=True`` folds the mean and scale into the net (brewnet/inference/bake.py).
- :func:`net_level_inputs` and :func:`legacy_mean_blob` — deploy.prototxt and mean.binaryproto
  in the forms DIGITS writes (net-level ``input_shape``; legacy num/channels/height/width),
  which DIGITS' example scripts read; the server's download archive uses them too.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import tarfile
import uuid
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from google.protobuf import text_format

from .. import fileio
from ..errors import BrewnetError, DataError
from ..net_state import filter_net, net_state
from ..proto import caffe_pb2
from .bundle import FILES, PREPROCESS_VERSION, Bundle

log = logging.getLogger("brewnet")

TEST = caffe_pb2.TEST
DEPLOY_STAGE = "deploy"
#: fields of our schema that BVLC Caffe's does not have, by message (checked against BVLC's
#: schema by tests/test_deploy.py). BVLC Caffe refuses a prototxt that names any of them.
#: BatchNormParameter's (scale_bias, fillers, engine) are not simply dropped: the layer is
#: converted to BVLC BatchNorm + Scale (brewnet.convert.dialects.to_bvlc).
NVCAFFE_ONLY = {
    "NetParameter": ("default_forward_type", "default_backward_type", "default_forward_math",
                     "default_backward_math", "global_grad_scale", "global_grad_scale_adaptive",
                     "default_conv_algos_override", "reduce_buckets", "default_cudnn_math_override",
                     "eltwise_mem_sharing"),
    "LayerParameter": ("debug", "cudnn_math_override", "nvcaffe_recurrent_param", "trt_param",
                       "annotated_data_param", "multibox_loss_param", "permute_param",
                       "prior_box_param", "detection_output_param", "detection_evaluate_param",
                       "norm_param", "video_data_param", "detectnet_groundtruth_param",
                       "detectnet_augmentation_param", "forward_type", "backward_type",
                       "forward_math", "backward_math"),
    "TransformationParameter": ("use_gpu_transform", "random_seed", "img_rand_resize_lower",
                                "img_rand_resize_upper", "rand_resize_ratio_lower",
                                "rand_resize_ratio_upper", "vertical_stretch_lower",
                                "vertical_stretch_upper", "horizontal_stretch_lower",
                                "horizontal_stretch_upper", "interpolation_algo_down",
                                "interpolation_algo_up", "allow_upscale", "forward_packing",
                                "display", "num_labels", "resize_param", "noise_param",
                                "emit_constraint", "crop_h", "crop_w", "distort_param",
                                "expand_param"),
    "LossParameter": ("label_smoothing",),
    "ConvolutionParameter": ("cudnn_convolution_algo_seeker", "conv_algos_override"),
    "DataParameter": ("threads", "parser_threads", "cache", "shuffle", "precache"),
    "DropoutParameter": ("engine", "random_seed"),
    "ELUParameter": ("lambda",),
    "ImageDataParameter": ("short_side", "threads", "cache", "precache", "dataset_share_per_node"),
    "PoolingParameter": ("torch_pooling",),
}
#: how a stored image was resized (preprocess.json ``resize.interpolation``)
PILLOW_BILINEAR = "pillow_bilinear"  # brewnet.data.image.digits_resize (brewnet dataset create)
OPENCV_BILINEAR = "opencv_bilinear"  # brewnet.data.image.resize_bilinear (ImageData new_height/width)
#: Caffe's snapshot names: <snapshot_prefix>_iter_<N>.caffemodel (.caffemodel.h5 in HDF5 format)
_SNAPSHOT = re.compile(r"^(?P<prefix>.*)_iter_(?P<iter>\d+)\.(caffemodel|caffemodel\.h5|h5)$")
_BUNDLE_ENTRIES = set(FILES) | {"mean.binaryproto"}


class DeployError(BrewnetError):
    """A deploy bundle cannot be made from these files (the message says why and what to do)."""


# ----- the validation data layer -----------------------------------------------------------------
@dataclass
class _Probe:
    """What the validation data layer gives: its item shape after the transform, the stored
    image shape before it, or why it could not be read."""

    item: tuple[int, ...] | None = None      # (C, H, W) after crop
    stored: tuple[int, ...] | None = None    # (C, H, W) as stored
    error: str | None = None


@dataclass
class _Analysis:
    """The train_val as deploy sees it, computed once for the net and the preprocessing."""

    train_val: caffe_pb2.NetParameter
    model_dir: str | None
    data: caffe_pb2.LayerParameter | None    # the TEST data layer whose top[0] is the net input
    probe: _Probe
    summary: dict | None                     # the dataset's summary.json, when there is one
    dataset_dir: str | None
    item: tuple[int, ...] | None = None      # the deploy input item shape (C, H, W)
    notes: list[str] = field(default_factory=list)


def _state(stages: Sequence[str] = ()) -> caffe_pb2.NetState:
    return net_state(TEST, stages)


def _is_data_layer(lp) -> bool:
    """A layer that brings data into a net (the deploy net has one Input in their place)."""
    if lp.type == "Python":  # pycaffe data layers read no bottoms
        return not lp.bottom
    from ..layers import is_data_layer  # the layers import torch; deploy's readers need none
    return is_data_layer(lp.type)


def _is_loss_layer(lp) -> bool:
    """Loss layers (the registry's ``is_loss``, or any non-zero ``loss_weight``) and Accuracy."""
    if lp.type == "Accuracy" or any(w != 0 for w in lp.loss_weight):
        return True
    from ..layers import LAYER_REGISTRY
    cls = LAYER_REGISTRY.get(lp.type)
    return bool(cls is not None and cls.is_loss)


def _validation_net(train_val) -> caffe_pb2.NetParameter:
    """The TEST net that validation ran; DIGITS' all-in-one nets put it under stage "val"."""
    val = filter_net(train_val, _state())
    if not any(_is_data_layer(lp) for lp in val.layer):
        staged = filter_net(train_val, _state(["val"]))
        if any(_is_data_layer(lp) for lp in staged.layer):
            return staged
    return val


def _resolve(path: str, model_dir: str | None) -> str:
    from ..data import resolve_path
    found = resolve_path(path, model_dir)
    if not os.path.exists(found) and model_dir and not os.path.isabs(found):
        # a source that is gone still names its dataset folder (summary.json, labels.txt)
        beside = os.path.join(model_dir, path)
        if os.path.isdir(os.path.dirname(beside.rstrip("/" + os.sep))):
            found = beside
    return os.path.abspath(found)


def _source_path(lp, model_dir) -> str | None:
    if lp.type == "Data" and lp.data_param.source:
        return _resolve(lp.data_param.source, model_dir)
    if lp.type == "ImageData" and lp.image_data_param.source:
        return _resolve(lp.image_data_param.source, model_dir)
    return None


def _probe(lp, model_dir) -> _Probe:
    """Set up the data layer alone, as the TEST net would (it reads the first record only)."""
    from ..errors import NetError
    from ..layers import layer_class
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
        return _Probe(error=str(e))
    item = tuple(int(d) for d in shapes[0][1:])
    source = getattr(layer, "_source", None)
    stored = tuple(int(d) for d in source.item_shape) if source is not None and \
        hasattr(source, "item_shape") else None
    return _Probe(item=item, stored=stored)


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


def _summary_stored(summary: dict, tp) -> tuple[int, int, int]:
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


def _analyse(train_val, model_dir: str | None, input_shape) -> _Analysis:
    val = _validation_net(train_val)
    data = next((lp for lp in val.layer if _is_data_layer(lp)), None)
    if data is None:  # a deploy Input (DIGITS' all-in-one nets include it with stage "deploy")
        data = next((lp for lp in filter_net(train_val, _state([DEPLOY_STAGE])).layer
                     if _is_data_layer(lp)), None)
    source = _source_path(data, model_dir) if data is not None else None
    dataset_dir = os.path.dirname(source.rstrip("/" + os.sep)) if source else None
    a = _Analysis(train_val, model_dir, data, _Probe(), _read_summary(dataset_dir), dataset_dir)
    if data is not None:
        a.probe = _probe(data, model_dir)
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
            stored = _summary_stored(a.summary, tp)
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


# ----- the deploy net ------------------------------------------------------------------------------
def _strip_nvcaffe(msg, notes: list[str], where: str) -> None:
    """Clear the fields BVLC Caffe's schema lacks, in ``msg`` and the messages inside it."""
    drop = NVCAFFE_ONLY.get(msg.DESCRIPTOR.name, ())
    for fd, value in msg.ListFields():
        if fd.name in drop:
            msg.ClearField(fd.name)
            notes.append(f"{where}: dropped NVCaffe-only {msg.DESCRIPTOR.name}.{fd.name} "
                         "(BVLC Caffe has no such field)")
        elif fd.message_type is not None:
            for m in (value if fd.is_repeated else [value]):
                _strip_nvcaffe(m, notes, where)


def _unique(base: str, taken: set[str]) -> str:
    from ..convert.dialects import unique_name
    return unique_name(base, taken, sep="_")


def _build_deploy(a: _Analysis) -> tuple[caffe_pb2.NetParameter, dict]:
    """The deploy NetParameter (BatchNorm left in the train_val's dialect) and its blobs:
    {"input": the Input's top, "outputs": the kept outputs, "output": the main one}."""
    notes = a.notes
    net = filter_net(a.train_val, _state([DEPLOY_STAGE]))
    layers = list(net.layer)
    data_layers = [lp for lp in layers if _is_data_layer(lp)]
    if a.data is not None:
        input_name = a.data.top[0]
    elif data_layers:
        input_name = data_layers[0].top[0]
    else:  # no data layer: the first bottom no layer produces is the input
        produced: set[str] = set()
        input_name = None
        for lp in layers:
            free = [b for b in lp.bottom if b not in produced]
            if free:
                input_name = free[0]
                break
            produced.update(lp.top)
        if input_name is None:
            raise DeployError("the net has no data layer and no input blob")
    kept, removed_losses = [], []
    for lp in layers:
        if _is_data_layer(lp):
            continue
        if _is_loss_layer(lp):
            removed_losses.append(lp)
            notes.append(f"removed {lp.type} layer '{lp.name}'")
            continue
        kept.append(lp)
    # forward: a layer whose bottoms are not all there read a label (or a removed output)
    available = {input_name}
    reachable = []
    for lp in kept:
        missing = [b for b in lp.bottom if b not in available]
        if missing:
            notes.append(f"removed layer '{lp.name}' ({lp.type}): it reads '{missing[0]}', which "
                         "the deploy net does not have")
            continue
        reachable.append(lp)
        available.update(lp.top)
    outputs = _unread_tops(reachable)
    taken_layers = {lp.name for lp in reachable} | {input_name}
    softmax_out = [t for lp in reachable if lp.type == "Softmax" for t in lp.top if t in outputs]
    swl = [lp for lp in removed_losses if lp.type == "SoftmaxWithLoss" and lp.bottom
           and lp.bottom[0] in available]
    if softmax_out:
        keep = softmax_out
    elif swl:
        logits = swl[-1].bottom[0]
        prob = caffe_pb2.LayerParameter(name=_unique("prob", taken_layers), type="Softmax",
                                        bottom=[logits], top=[_unique("prob", available)])
        if swl[-1].HasField("softmax_param"):
            prob.softmax_param.CopyFrom(swl[-1].softmax_param)
        reachable.append(prob)
        keep = [prob.top[0]]
        notes.append(f"added Softmax '{prob.name}' on the logits '{logits}' that "
                     f"'{swl[-1].name}' read")
    else:
        preds = []
        for lp in removed_losses:
            if lp.type != "Accuracy" and lp.bottom and lp.bottom[0] in available \
                    and lp.bottom[0] not in preds:
                preds.append(lp.bottom[0])
        keep = preds or [t for t in outputs]
    if not keep:
        raise DeployError("the deploy net has no output left (every layer fed a loss or accuracy)")
    # backward: keep the layers the kept outputs depend on (dead heads and label branches go)
    live = set(keep)
    needed = []
    for lp in reversed(reachable):
        if any(t in live for t in lp.top):
            live.difference_update(lp.top)
            live.update(lp.bottom)
            needed.append(lp)
        else:
            notes.append(f"removed layer '{lp.name}' ({lp.type}): nothing the deploy net outputs "
                         "depends on it")
    needed.reverse()
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for f in ("layer", "state", "force_backward", "debug_info"):
        out.ClearField(f)
    inp = out.layer.add(name=_unique(input_name, {lp.name for lp in needed}), type="Input",
                        top=[input_name])
    inp.input_param.shape.add().dim.extend((1,) + tuple(a.item))
    for src in needed:
        lp = out.layer.add()
        lp.CopyFrom(src)
        for f in ("include", "exclude", "phase", "loss_weight"):
            lp.ClearField(f)
        if lp.type == "BatchNorm" and lp.batch_norm_param.HasField("use_global_stats") \
                and not lp.batch_norm_param.use_global_stats:
            lp.batch_norm_param.ClearField("use_global_stats")
            notes.append(f"layer '{lp.name}': use_global_stats false dropped (a deploy net "
                         "normalises with the trained statistics)")
    _strip_nvcaffe_except_batchnorm(out, notes)
    return out, {"input": input_name, "outputs": list(keep), "output": keep[-1]}


def _strip_nvcaffe_except_batchnorm(net: caffe_pb2.NetParameter, notes: list[str]) -> None:
    for fd, _ in net.ListFields():
        if fd.name in NVCAFFE_ONLY["NetParameter"]:
            net.ClearField(fd.name)
            notes.append(f"dropped NVCaffe-only NetParameter.{fd.name}")
    for lp in net.layer:
        bn = None
        if lp.HasField("batch_norm_param"):  # converted with the weights (write_bundle)
            bn = caffe_pb2.BatchNormParameter()
            bn.CopyFrom(lp.batch_norm_param)
            lp.ClearField("batch_norm_param")
        _strip_nvcaffe(lp, notes, f"layer '{lp.name}'")
        if bn is not None:
            lp.batch_norm_param.CopyFrom(bn)


def _unread_tops(layers) -> list[str]:
    """Caffe's net outputs: tops no later layer reads (an in-place top is read by nothing)."""
    consumed: set[str] = set()
    seen: list[str] = []
    for lp in layers:
        consumed.update(lp.bottom)
        for t in lp.top:
            consumed.discard(t)
            if t not in seen:
                seen.append(t)
    return [t for t in seen if t not in consumed]


def _load_model(model) -> tuple[caffe_pb2.NetParameter, str | None, str | None]:
    """(upgraded NetParameter, the prototxt's directory, its path) from a path or a NetParameter."""
    if isinstance(model, caffe_pb2.NetParameter):
        return fileio.upgrade_net(model), None, None
    path = os.fspath(model)
    if not os.path.isfile(path):
        raise DeployError(f"model file not found: {path}")
    return fileio.read_net(path), os.path.dirname(os.path.abspath(path)), os.path.abspath(path)


def deploy_net_param(train_val, *, input_shape: Sequence[int] | None = None,
                     model_dir: str | None = None) -> caffe_pb2.NetParameter:
    """The deploy net of ``train_val`` (a NetParameter or a prototxt path), by DIGITS' rules.

    Layers are filtered for the NetState phase TEST, stage "deploy"; the data layers become one
    ``Input`` named after the data top with shape (1, C, H, W): the validation item after the
    crop, from the TEST data layer (its source read when it can be; otherwise its ``crop_size``
    and the dataset's ``summary.json``), or ``input_shape`` (C, H, W) when given. Loss and
    Accuracy layers go, then every layer whose bottoms are gone (labels) and every layer no
    output depends on; a ``Softmax`` "prob" reads the logits the last ``SoftmaxWithLoss`` read,
    unless the net already ends in a Softmax. Include/exclude rules, ``phase`` and NVCaffe-only
    fields are dropped, except a BatchNorm's: those need the weights to become BVLC BatchNorm +
    Scale, which :func:`write_bundle` does. ``model_dir`` resolves relative data paths (the
    prototxt's directory when ``train_val`` is a path).

    Raises DeployError when the input shape cannot be known.
    """
    tv, own_dir, _ = _load_model(train_val)
    a = _analyse(tv, model_dir if model_dir is not None else own_dir, input_shape)
    net, _ = _build_deploy(a)
    for note in a.notes:
        log.info("deploy: %s", note)
    return net


# ----- preprocessing -------------------------------------------------------------------------------
def _preprocess(a: _Analysis, input_name: str) -> tuple[dict, np.ndarray | None, str | None]:
    """(preprocess.json's dict, the full mean image (C, H, W) or None, the mean file's path)."""
    lp = a.data
    item = list(a.item)
    rank3 = len(item) == 3
    spec = {"version": PREPROCESS_VERSION, "input": input_name, "input_shape": item,
            "channels": item[0] if rank3 else None, "channel_order": None, "stored_size": None,
            "resize": None, "transform_param": "", "crop": None, "mean": None, "scale": 1.0,
            "input_range": None, "source": None, "baked": False}
    if lp is None:
        spec["source"] = {"layer": None, "type": None, "db": None, "backend": None}
        if rank3:
            spec["stored_size"] = item[1:]
        spec["channel_order"] = _order(spec["channels"])
        return spec, None, None
    spec["source"] = {"layer": lp.name, "type": lp.type, "db": _source_path(lp, a.model_dir),
                      "backend": {"Data": "LMDB", "ImageData": "image list"}.get(lp.type)}
    if lp.type not in ("Data", "ImageData"):
        # HDF5Data, MemoryData, DummyData, Input: values reach the net as they are
        if rank3:
            spec["stored_size"] = item[1:]
        spec["channel_order"] = _order(spec["channels"])
        return spec, None, None
    tp = caffe_pb2.TransformationParameter()
    tp.CopyFrom(lp.transform_param)
    stored = a.probe.stored
    if lp.type == "Data":
        summary = a.summary
        if summary is not None:
            from_summary = _summary_stored(summary, tp)
            if stored is not None and tuple(stored) != from_summary:
                a.notes.append(f"{a.dataset_dir}/summary.json describes {from_summary} images but "
                               f"the LMDB holds {tuple(stored)}: it is not this LMDB's summary; "
                               "ignored")
                summary = None
            else:
                stored = from_summary
        if summary is not None and summary.get("resize"):
            w, h = (int(v) for v in summary["resize"])
            spec["resize"] = {"width": w, "height": h, "mode": summary.get("resize_mode") or "squash",
                              "interpolation": PILLOW_BILINEAR}
    else:
        p = lp.image_data_param
        if p.new_height > 0 and p.new_width > 0:
            spec["resize"] = {"width": int(p.new_width), "height": int(p.new_height), "mode": "squash",
                              "interpolation": OPENCV_BILINEAR}
    if stored is None and not tp.crop_size and len(a.item) == 3:
        stored = tuple(a.item)  # no crop: the images are what the net takes
        a.notes.append(f"data layer '{lp.name}': {a.probe.error}; stored size taken from the "
                       "input shape (no crop)")
    if stored is None:
        raise DeployError(f"cannot tell the size of the images data layer '{lp.name}' reads: "
                          f"{a.probe.error or 'no readable source'} (and no summary.json beside it)")
    spec["channels"] = int(stored[0])
    spec["channel_order"] = _order(spec["channels"])
    spec["stored_size"] = [int(stored[1]), int(stored[2])]
    spec["input_range"] = [0, 255]
    if tp.crop_size:
        spec["crop"] = {"height": int(tp.crop_size), "width": int(tp.crop_size)}
    spec["scale"] = _f32(tp.scale)
    mean = mean_path = None
    if tp.mean_file:
        from ..data.transformer import load_mean
        mean_path = _resolve(tp.mean_file, a.model_dir)
        mean = load_mean(mean_path, where=f"layer '{lp.name}' transform_param mean_file")
        if mean.shape != tuple(stored):
            raise DeployError(f"layer '{lp.name}': the mean file {mean_path} has shape {mean.shape} "
                              f"but the images are {tuple(stored)} (C, H, W)")
        tp.mean_file = "mean.binaryproto"
        spec["mean"] = {"image": "mean.binaryproto"}
    elif len(tp.mean_value):
        spec["mean"] = {"values": [_f32(v) for v in tp.mean_value]}
    spec["transform_param"] = text_format.MessageToString(tp)
    return spec, mean, mean_path


def _f32(value) -> float:
    """A float32 field as the shortest decimal that reads back as it (0.0125, not 0.01250000018)."""
    return float(str(np.float32(value)))


def _order(channels) -> str | None:
    return {3: "BGR", 1: "GRAY"}.get(channels)


def preprocess_spec(train_val, model_dir: str | None = None, *,
                    input_shape: Sequence[int] | None = None) -> tuple[dict, np.ndarray | None]:
    """What the validation data path did to an image, as preprocess.json (version 1) holds it,
    and the full mean image (C, H, W) float32 when validation subtracted one (else None).

    Read from the TEST data layer (``train_val`` a NetParameter or a prototxt path): its
    ``transform_param`` (as prototxt text, ``mean_file`` renamed "mean.binaryproto"), and for a
    Data layer the dataset folder that holds its LMDB: ``summary.json`` (``brewnet dataset
    create``) gives the resize (size, DIGITS mode, done with Pillow's bilinear) and the stored
    image size, else the first Datum gives the stored size. An ImageData layer's
    ``new_height``/``new_width`` are a squash with OpenCV's bilinear, ``is_color`` its
    channels. ``input_shape`` (C, H, W) is used when the source cannot be read.
    """
    tv, own_dir, _ = _load_model(train_val)
    a = _analyse(tv, model_dir if model_dir is not None else own_dir, input_shape)
    input_name = a.data.top[0] if a.data is not None else _build_deploy(a)[1]["input"]
    spec, mean, _ = _preprocess(a, input_name)
    return spec, mean


def describe_preprocess(spec: dict) -> str:
    """preprocess.json in one sentence (what ``brewnet deploy`` prints)."""
    parts = []
    order = spec.get("channel_order")
    if spec.get("channels"):
        parts.append(f"decode to {order or str(spec['channels']) + ' channels'}")
    r = spec.get("resize")
    if r:
        parts.append(f"resize to {r['width']}x{r['height']} ({r['mode']})")
    elif spec.get("stored_size"):
        h, w = spec["stored_size"]
        parts.append(f"images as stored at {w}x{h}")
    if spec.get("crop"):
        parts.append(f"centre crop {spec['crop']['width']}x{spec['crop']['height']}")
    mean = spec.get("mean")
    if mean and "image" in mean:
        parts.append(f"subtract the mean image ({mean['image']})")
    elif mean and "values" in mean:
        parts.append("subtract mean values " + ", ".join(f"{v:g}" for v in mean["values"]))
    if spec.get("scale", 1.0) != 1.0:
        parts.append(f"times {spec['scale']:g}")
    text = ", ".join(parts) if parts else "none"
    if spec.get("baked"):
        text += "; mean and scale are baked into the net, which takes raw 0-255 pixels"
    return text


# ----- weights and BatchNorm -------------------------------------------------------------------------
def _trained_net(model: caffe_pb2.NetParameter, weights, source: str):
    """The net of ``model`` with the weights (a path or a caffemodel NetParameter); every layer
    with blobs must find them."""
    from ..net import Net
    from ..weights import load_weights
    net = Net(model, phase=TEST)
    report = net.copy_from(weights) if isinstance(weights, str) else \
        load_weights(net, weights, source=source)
    if report.missing:
        raise DeployError(f"{source}: no weights for deploy layer(s) {', '.join(report.missing)} "
                          "(is it a snapshot of this net?)")
    return net


def _to_bvlc_batchnorm(model, net, source: str, notes: list[str]):
    """(model, caffemodel NetParameter): NVCaffe BatchNorm layers (by the prototxt, or by the
    layout found in the weights) as BVLC BatchNorm + Scale; unchanged when there are none."""
    from ..convert.dialects import to_bvlc
    from ..batchnorm.layouts import nvcaffe_dialect
    own = {layer.name: layer.param for layer in net.layers}
    if not any(lp.type == "BatchNorm" and nvcaffe_dialect(own.get(lp.name)) for lp in model.layer):
        return model, None
    defs = caffe_pb2.NetParameter()
    defs.CopyFrom(model)
    for lp in defs.layer:
        if lp.type == "BatchNorm" and lp.name in own:
            lp.CopyFrom(own[lp.name])  # a layer that took scale/bias from the file says so
            lp.ClearField("phase")
    new_model, new_weights, bn_notes = to_bvlc(defs, net.to_proto())
    notes.extend(bn_notes)
    notes.append("NVCaffe BatchNorm converted to BVLC BatchNorm + Scale "
                 "(brewnet.convert.dialects.to_bvlc)")
    return new_model, new_weights


def _deploy_caffemodel(net, model) -> caffe_pb2.NetParameter:
    """``net.to_proto()`` holding exactly the deploy prototxt's layers (not Caffe's Splits)."""
    names = {lp.name for lp in model.layer}
    full = net.to_proto()
    out = caffe_pb2.NetParameter(name=full.name)
    out.layer.extend(lp for lp in full.layer if lp.name in names)
    return out


# ----- baking the preprocessing into the net -------------------------------------------------------
def _read_labels(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise DeployError(f"labels file not found: {path}")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\r\n") for line in f if line.strip()]


def _labels(labels, a: _Analysis, classes: int | None, notes: list[str]) -> list[str]:
    if labels is not None:
        names = _read_labels(os.fspath(labels)) if isinstance(labels, (str, os.PathLike)) \
            else [str(n) for n in labels]
        where = "the labels given"
    elif a.dataset_dir and os.path.isfile(os.path.join(a.dataset_dir, "labels.txt")):
        names = _read_labels(os.path.join(a.dataset_dir, "labels.txt"))
        where = os.path.join(a.dataset_dir, "labels.txt")
    else:
        if classes is None:
            raise DeployError("no labels given, none beside the dataset, and the net's output "
                              "does not say how many classes there are: give labels")
        msg = (f"no labels given and no labels.txt beside the dataset: classes named 0..{classes - 1}")
        log.warning("deploy: %s", msg)
        notes.append(msg)
        return [str(i) for i in range(classes)]
    if classes is not None and len(names) != classes:
        msg = f"{where} has {len(names)} labels but the net outputs {classes} classes"
        log.warning("deploy: %s", msg)
        notes.append(msg)
    return names


def _accuracy_tops(train_val) -> list[str]:
    """Tops of the validation net's top-1 Accuracy layers, in net order."""
    return [lp.top[0] for lp in _validation_net(train_val).layer
            if lp.type == "Accuracy" and lp.top and lp.accuracy_param.top_k == 1]


def _logged(weights_path: str, iteration: int | None, accuracy_tops: list[str],
            metrics: str | os.PathLike | None = None) -> dict:
    """The test outputs logged at ``iteration`` (test net 0) in ``metrics``, by default
    ``<snapshot_prefix>_metrics.jsonl``."""
    if iteration is None:
        return {}
    if metrics is not None:
        path = os.path.abspath(os.fspath(metrics))
    else:
        m = _SNAPSHOT.match(os.path.abspath(weights_path))
        if m is None:
            return {}
        path = m.group("prefix") + "_metrics.jsonl"
    if not os.path.isfile(path):
        return {}
    from ..reporting.metrics import read_metrics
    try:
        records = read_metrics(path)
    except (OSError, ValueError) as e:
        log.warning("deploy: cannot read %s: %s", path, e)
        return {}
    outputs: dict[str, float | None] = {}
    for r in records:  # a resumed run appends: the last value of a key wins
        if r.get("phase") == "test" and r.get("iter") == iteration and not r.get("test_net"):
            outputs[r.get("name")] = r.get("value")
    acc_name = next((t for t in accuracy_tops if t in outputs), None)
    return {"metrics_file": path, "test_outputs": outputs, "accuracy_output": acc_name,
            "accuracy": outputs.get(acc_name) if acc_name else None}


def _iteration(weights_path: str) -> int | None:
    m = _SNAPSHOT.match(os.path.basename(weights_path))
    return int(m.group("iter")) if m else None


def _brewnet_version() -> str:
    from .. import __version__
    return __version__


# ----- the files in DIGITS' forms ----------------------------------------------------------------------
#: fields an Input layer may set and still be written as net-level inputs
_PLAIN_INPUT_FIELDS = frozenset({"name", "type", "top", "input_param"})


def net_level_inputs(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """A copy of ``net`` whose leading ``Input`` layers are net-level ``input`` + ``input_shape``
    entries instead, the form DIGITS writes deploy.prototxt in.

    DIGITS' example scripts (examples/classification/example.py) size their Transformer from
    ``input_shape[0].dim`` (or ``input_dim``) and find nothing in an Input layer. Caffe, and
    brewnet's :func:`brewnet.fileio.upgrade_net`, turn the entries back into one Input layer
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


def _input_layer_as_loaded(caffemodel: caffe_pb2.NetParameter,
                           written: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """``caffemodel`` with the Input layers that ``written`` declares at net level replaced by
    the one Input layer "input" that loading ``written`` makes (and Caffe's ``Net::ToProto``
    would save): the weights file then names exactly the layers of the net it is loaded into.
    Input layers have no blobs, so nothing else changes."""
    if not written.input:
        return caffemodel
    loaded = fileio.upgrade_net(written).layer[0]
    moved = set(written.input)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(caffemodel)
    rest = [lp for lp in out.layer if not (lp.type == "Input" and set(lp.top) <= moved)]
    out.ClearField("layer")
    first = out.layer.add()
    first.CopyFrom(loaded)
    first.phase = TEST
    out.layer.extend(rest)
    return out


def legacy_mean_blob(mean: np.ndarray) -> caffe_pb2.BlobProto:
    """A mean image (C, H, W) as the BlobProto DIGITS and Caffe's compute_image_mean write: the
    legacy num/channels/height/width (1, C, H, W) and float32 ``data``, no ``shape``. DIGITS'
    example scripts read those four fields (``len(blob.shape)`` fails on a BlobShape)."""
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim != 3:
        raise DeployError(f"a mean image is (C, H, W), got shape {mean.shape}")
    return fileio.array_to_blob(mean, legacy_4d=True)


def write_legacy_mean(mean: np.ndarray, path: str | os.PathLike) -> None:
    """:func:`legacy_mean_blob` written to ``path`` atomically."""
    fileio.write_binary(legacy_mean_blob(mean), path)


# ----- writing ----------------------------------------------------------------------------------------
def _is_bundle_dir(path: str) -> bool:
    """A directory holding a bundle and nothing else (or empty): safe to replace."""
    entries = set(os.listdir(path))
    return not entries or ("preprocess.json" in entries and "deploy.prototxt" in entries
                           and entries <= _BUNDLE_ENTRIES)


def _write_json(path: str, value: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def _write_tar(directory: str) -> str:
    """``directory.tar.gz`` with the bundle's files at the archive's root, as DIGITS' "Download
    Model" archive has them (its use_archive.py looks for them there, not in a folder)."""
    target = directory.rstrip("/" + os.sep) + ".tar.gz"
    tmp = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tarfile.open(tmp, "w:gz") as tar:
            for name in sorted(os.listdir(directory)):
                tar.add(os.path.join(directory, name), arcname=name, recursive=False)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return target


def _install(tmp: str, output: str) -> None:
    """Move the finished bundle ``tmp`` to ``output``, replacing an old bundle there."""
    if not os.path.exists(output):
        os.rename(tmp, output)
        return
    old = os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.old-{uuid.uuid4().hex[:8]}")
    os.rename(output, old)
    try:
        os.rename(tmp, output)
    except BaseException:
        os.rename(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_text(path: str, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _write_dir(output: str, files: dict) -> None:
    """Write {name: writer(path)} into a temporary sibling of ``output``, check that it loads as
    a bundle, then put it in place (replacing an old bundle there)."""
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(output)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        for name, write in files.items():
            write(os.path.join(tmp, name))
        Bundle.load(tmp)  # the bundle reads back as the schema says
        _install(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bundle(model, weights, output, *, labels=None, tar: bool = False, bake: bool = False,
                 name: str | None = None, input_shape: Sequence[int] | None = None,
                 metrics: str | os.PathLike | None = None) -> str:
    """Write the deploy bundle of ``model`` (train_val prototxt path or NetParameter) with the
    trained ``weights`` (caffemodel or Caffe HDF5 path) into the directory ``output``; returns
    its path.

    Files (see :mod:`brewnet.inference.bundle`), in the forms DIGITS writes them:
    deploy.prototxt (:func:`deploy_net_param`, any NVCaffe BatchNorm converted to BVLC
    BatchNorm + Scale, its input as net-level ``input`` + ``input_shape``:
    :func:`net_level_inputs`), weights.caffemodel (the deploy
    layers only, with the trained blobs), labels.txt (``labels``: a file or a list of names;
    else the dataset's labels.txt; else "0".."N-1" with a warning), preprocess.json
    (:func:`preprocess_spec`), mean.binaryproto (the validation mean image, with legacy
    num/channels/height/width dims: :func:`legacy_mean_blob`) and
    info.json (name, snapshot iteration, creation time, brewnet version, sources, the accuracy
    logged at that iteration in ``metrics`` (default ``<snapshot_prefix>_metrics.jsonl``, what
    ``brewnet train`` writes without ``-metrics``) when there is one, notes).

    The bundle is built in a temporary sibling directory and renamed into place: ``output``
    holds either the old bundle or the complete new one. A directory that is not a bundle is
    never replaced. ``tar`` also writes ``output.tar.gz`` with the files at its root, no folder
    (as DIGITS' download archive: its use_archive.py finds them there).

    ``bake`` folds mean subtraction and scale into the net, which then takes raw 0–255 pixels at
    the crop size, still in BGR order (the bundle's channel order; no channel swap is needed as
    nothing changes it): into the first layer's weights when that is exact (an InnerProduct, or
    an unpadded Convolution with per-channel means), otherwise as a ``Bias`` layer (−mean per
    channel, or the centre-cropped mean image as a (C, H, W) blob) and a ``Power`` layer
    (scale) after the Input. preprocess.json then says ``baked``: true, with only the crop left
    in its transform and the original in ``baked_from``.
    """
    tv, model_dir, model_path = _load_model(model)
    weights = os.fspath(weights)
    if not os.path.isfile(weights):
        raise DeployError(f"weights file not found: {weights}")
    output = os.path.abspath(os.fspath(output))
    if os.path.exists(output) and not (os.path.isdir(output) and _is_bundle_dir(output)):
        what = "a directory that is not a deploy bundle" if os.path.isdir(output) else "a file"
        raise DeployError(f"{output} exists and is {what}; choose a new -output (nothing was written)")
    a = _analyse(tv, model_dir, input_shape)
    deploy, meta = _build_deploy(a)
    notes = a.notes
    net = _trained_net(deploy, weights, weights)
    converted, bvlc_weights = _to_bvlc_batchnorm(deploy, net, weights, notes)
    if bvlc_weights is not None:
        deploy = converted
        net = _trained_net(deploy, bvlc_weights, weights)
    spec, mean, mean_path = _preprocess(a, meta["input"])
    caffemodel = _deploy_caffemodel(net, deploy)
    if bake:
        from .bake import bake_bundle
        deploy, caffemodel, net = bake_bundle(deploy, caffemodel, spec, mean, notes)
        mean_path = None
    out_shape = tuple(net.blobs[meta["output"]].shape)
    classes = int(out_shape[1]) if len(out_shape) > 1 else int(out_shape[0])
    names = _labels(labels, a, classes, notes)
    iteration = _iteration(weights)
    info = {
        "name": name or os.path.basename(output),
        "iteration": iteration,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "brewnet_version": _brewnet_version(),
        "source_prototxt": model_path,
        "source_weights": os.path.abspath(weights),
        "accuracy": None,
        "input": meta["input"],
        "input_shape": [1] + list(a.item),
        "output": meta["output"],
        "classes": classes,
        "baked": bool(bake),
        "batchnorm_converted": bvlc_weights is not None,
    }
    info.update(_logged(weights, iteration, _accuracy_tops(tv), metrics))
    info["notes"] = list(notes)
    written = net_level_inputs(deploy)
    caffemodel = _input_layer_as_loaded(caffemodel, written)
    files = {"deploy.prototxt": lambda p: fileio.write_prototxt(written, p),
             "weights.caffemodel": lambda p: fileio.write_caffemodel(caffemodel, p),
             "labels.txt": lambda p: _write_text(p, "".join(f"{n}\n" for n in names)),
             "preprocess.json": lambda p: _write_json(p, spec),
             "info.json": lambda p: _write_json(p, info)}
    if mean_path is not None:
        files["mean.binaryproto"] = lambda p: write_legacy_mean(mean, p)
    _write_dir(output, files)
    if tar:
        _write_tar(output)
    for note in notes:
        log.info("deploy: %s", note)
    return output
