"""``brewnet deploy -bake``: fold the validation preprocessing (mean, scale) into the deploy net,
so that a plain pycaffe or real-Caffe user feeding raw 0–255 pixels (BGR, at the crop size) gets
the bundle's scores without reading ``preprocess.json``.

Into the first layer's weights when that is exact (an InnerProduct with any mean; an unpadded,
possibly grouped Convolution with per-channel means), else as explicit ``Bias`` (minus the mean)
and ``Power`` (scale) layers after the Input.  Inputs stay BGR: the bundle's channel order is
already Caffe's, so there is no channel swap to bake.
"""
from __future__ import annotations

import numpy as np
from google.protobuf import text_format

from .. import formats
from ..proto import caffe_pb2
from ..weights import load_weights
from .bundle import DeployError
from .deploy_net import deploy_caffemodel, fresh_name
from .validation import TEST


def _crop_offsets(spec: dict) -> tuple[int, int, int, int]:
    h, w = spec["stored_size"]
    if not spec.get("crop"):
        return 0, 0, h, w
    ch, cw = spec["crop"]["height"], spec["crop"]["width"]
    return (h - ch) // 2, (w - cw) // 2, ch, cw  # TEST: centred, integer division (Caffe)


def _bake(model, weights, spec: dict, mean_image, notes: list[str]):
    """(model, caffemodel) that take raw 0-255 pixels (the crop still done outside, channels
    still BGR), and a description of what was done. ``weights``: the caffemodel NetParameter."""
    scale = np.float32(spec["scale"])
    c = spec["input_shape"][0]
    mean = per_channel = None
    if mean_image is not None:
        ho, wo, ch, cw = _crop_offsets(spec)
        mean = np.ascontiguousarray(mean_image[:, ho:ho + ch, wo:wo + cw], dtype=np.float32)  # (C, h, w)
    elif spec.get("mean") and "values" in spec["mean"]:
        v = np.asarray(spec["mean"]["values"], dtype=np.float32)
        per_channel = np.repeat(v, c) if v.size == 1 else v  # (C,)
    if mean is None and per_channel is None and scale == 1:
        return model, weights, "nothing to bake (no mean, scale 1)"
    input_name = spec["input"]
    readers = [i for i, lp in enumerate(model.layer) if input_name in lp.bottom]
    blobs = {lp.name: lp for lp in weights.layer}
    if len(readers) == 1:
        lp = model.layer[readers[0]]
        why = _fold_refusal(model, lp, mean, per_channel)
        if why is None:
            wl = blobs[lp.name]
            _fold(lp, wl, scale, mean, per_channel, spec["input_shape"])
            return model, weights, f"folded into layer '{lp.name}' ({lp.type})'s weights and bias"
        notes.append(f"bake: not folded into '{lp.name}' ({lp.type}): {why}; explicit layers instead")
    return _bake_layers(model, weights, input_name, scale, mean, per_channel)


def _fold_refusal(model, lp, mean, per_channel) -> str | None:
    """Why the preprocessing cannot be folded exactly into ``lp`` (None when it can)."""
    if len(lp.bottom) != 1:
        return "it has several bottoms"
    if any(p.name for p in lp.param):
        return "its parameters are shared by name"
    shifted = mean is not None or per_channel is not None
    if lp.type == "InnerProduct":
        p = lp.inner_product_param
        if p.axis not in (1, -3):
            return "its axis is not 1"
        if shifted and not p.bias_term:
            return "it has no bias to absorb the mean"
        return None
    if lp.type == "Convolution":
        p = lp.convolution_param
        if any(p.pad) or p.pad_h or p.pad_w:
            return "it pads with zeros, which the mean shift would not reach"
        if mean is not None:
            return "a mean image shifts every output position differently"
        if shifted and not p.bias_term:
            return "it has no bias to absorb the mean"
        return None
    return "only Convolution and InnerProduct can absorb it"


def _fold(lp, wl, scale, mean, per_channel, input_shape) -> None:
    """W' = s·W and b' = b − s·W·m, computed in float64 (y = W·((x − m)·s) + b)."""
    w = formats.blob_to_array(wl.blobs[0]).astype(np.float64)
    s = float(scale)
    b = formats.blob_to_array(wl.blobs[1]).astype(np.float64) if len(wl.blobs) > 1 else None
    if lp.type == "InnerProduct":
        wt = w.T if lp.inner_product_param.transpose else w  # (N, K)
        if mean is not None or per_channel is not None:
            m = mean if mean is not None else np.broadcast_to(per_channel[:, None, None], input_shape)
            b = b - s * (wt @ np.asarray(m, np.float64).reshape(-1))
    else:  # Convolution, no padding, per-channel mean
        if per_channel is not None:
            o, cg = w.shape[:2]
            groups = int(lp.convolution_param.group) or 1
            m = np.asarray(per_channel, np.float64).reshape(groups, cg)  # (groups, C/groups)
            mo = np.repeat(m, o // groups, axis=0)  # (O, C/groups): output o sees its group's means
            b = b - s * (w.reshape(o, cg, -1).sum(-1) * mo).sum(1)
    w = w * s
    formats.array_to_blob(w.astype(np.float32), wl.blobs[0])
    if b is not None:
        formats.array_to_blob(b.astype(np.float32), wl.blobs[1])


def _bake_layers(model, weights, input_name, scale, mean, per_channel):
    """Insert Bias (−mean) and Power (scale) after the Input; consumers read their output."""
    taken_layers = {lp.name for lp in model.layer}
    taken_blobs = {t for lp in model.layer for t in lp.top}
    new_layers, new_blobs = [], []
    current = input_name
    if mean is not None or per_channel is not None:
        neg = -(mean if mean is not None else per_channel)  # x + (−m) is x − m, bit for bit
        top = fresh_name(f"{input_name}_centered", taken_blobs)
        lp = caffe_pb2.LayerParameter(name=fresh_name("preprocess_mean", taken_layers), type="Bias",
                                      bottom=[current], top=[top])
        lp.bias_param.axis = 1
        lp.bias_param.num_axes = 3 if mean is not None else 1
        lp.param.add(lr_mult=0, decay_mult=0)
        new_layers.append(lp)
        wl = caffe_pb2.LayerParameter()
        wl.CopyFrom(lp)
        formats.array_to_blob(np.asarray(neg, np.float32), wl.blobs.add())  # (C, h, w) or (C,)
        new_blobs.append(wl)
        current = top
    if scale != 1:
        top = fresh_name(f"{input_name}_scaled", taken_blobs)
        lp = caffe_pb2.LayerParameter(name=fresh_name("preprocess_scale", taken_layers), type="Power",
                                      bottom=[current], top=[top])
        lp.power_param.scale = float(scale)
        new_layers.append(lp)
        wl = caffe_pb2.LayerParameter()
        wl.CopyFrom(lp)
        new_blobs.append(wl)
        current = top
    out = caffe_pb2.NetParameter()
    out.CopyFrom(model)
    del out.layer[:]
    for lp in model.layer:
        new = out.layer.add()
        new.CopyFrom(lp)
        if lp.type == "Input" and input_name in lp.top:
            out.layer.extend(new_layers)
            continue
        for field_ in (new.bottom, new.top):  # everything downstream reads the preprocessed blob
            for i, name in enumerate(field_):
                if name == input_name:
                    field_[i] = current
    w_out = caffe_pb2.NetParameter()
    w_out.CopyFrom(weights)  # blobs are matched by layer name: the new ones go anywhere
    w_out.layer.extend(new_blobs)
    how = " and ".join(f"{lp.type} layer '{lp.name}'" for lp in new_layers)
    return out, w_out, f"inserted {how} after the Input"


# ----- the bundle --------------------------------------------------------------------------------------


def bake_bundle(deploy, caffemodel, spec: dict, mean, notes: list[str]):
    """``-bake``: the baked (deploy, caffemodel, net); ``spec`` becomes the crop alone, with
    what was baked in ``baked_from``."""
    from ..net import Net  # torch: imported here so that importing this module does not
    if spec.get("stored_size") is None or spec.get("input_range") is None:
        raise DeployError("-bake needs image input from a Data or ImageData layer "
                          "(there is no image preprocessing to bake)")
    before = {k: spec[k] for k in ("transform_param", "mean", "scale")}
    deploy, caffemodel, how = _bake(deploy, caffemodel, spec, mean, notes)
    notes.append(f"bake: {how}")
    net = Net(deploy, phase=TEST)
    report = load_weights(net, caffemodel, source="the baked weights")
    if report.missing:  # our own construction: a bug, not a user error
        raise RuntimeError(f"baked net lacks weights for {report.missing}")
    tp = text_format.Parse(spec["transform_param"], caffe_pb2.TransformationParameter())
    kept = caffe_pb2.TransformationParameter()
    for f in ("crop_size", "force_color", "force_gray"):  # what still happens outside the net
        if tp.HasField(f):
            setattr(kept, f, getattr(tp, f))
    spec.update(transform_param=text_format.MessageToString(kept), mean=None, scale=1.0,
                baked=True, baked_from=dict(before, how=how))
    return deploy, deploy_caffemodel(net, deploy), net
