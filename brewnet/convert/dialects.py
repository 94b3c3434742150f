"""Whole-model BatchNorm dialect conversion: BVLC <-> NVCaffe 0.17.

- :func:`to_bvlc`: every NVCaffe BatchNorm with scale/bias becomes a BVLC BatchNorm (three
  statistics blobs, lr_mult 0) followed by a ``Scale`` layer with ``bias_term`` working in place on
  the BatchNorm's top, so an in-place chain stays in place.  Statistics are stored with s = 1.
- :func:`to_nvcaffe`: every BatchNorm followed by a foldable ``Scale`` becomes one NVCaffe 0.17
  BatchNorm with ``scale_bias: true`` (blobs [mean, var, correction = 1, scale, bias]).

Both read every BatchNorm layout (brewnet.formats.batchnorm_layouts), work on the whole prototxt (all
phases, TRAIN/TEST duplicates of a layer included) and return (prototxt NetParameter, caffemodel
NetParameter, notes).  Other layers and their blobs are carried over unchanged.
"""
from __future__ import annotations

import numpy as np

from .. import formats
from ..errors import NetError
from ..formats.batchnorm_layouts import CUDNN_MIN_EPS, BNBlobs, declares_scale_bias, detect
from ..formats.batchnorm_layouts import nvcaffe_dialect as is_nvcaffe_batchnorm
from ..net_state import layer_phases
from ..proto import caffe_pb2
from ..weights import weight_arrays

def affine_specs(lp) -> list:
    """The user's param blocks for scale and bias of an NVCaffe BatchNorm (may be empty)."""
    specs = list(lp.param)
    if not is_nvcaffe_batchnorm(lp) or not specs:
        return []
    if len(specs) in (2, 4):
        return specs[:2]
    return specs[3:5]


def _zero_spec():
    return caffe_pb2.ParamSpec(lr_mult=0, decay_mult=0)


def _const(value: float):
    return caffe_pb2.FillerParameter(type="constant", value=value)


def _bn_info(name, arrays_src, proto_lp) -> BNBlobs | None:
    if arrays_src is None:
        return None
    arrays, src = arrays_src
    use = src if src.HasField("batch_norm_param") else proto_lp
    return detect(arrays, use, name)


def _caffemodel(model: caffe_pb2.NetParameter, blobs: dict[str, list[np.ndarray]]) -> caffe_pb2.NetParameter:
    out = caffe_pb2.NetParameter(name=model.name)
    seen = set()
    for lp in model.layer:
        if lp.name in seen or lp.name not in blobs:
            continue
        seen.add(lp.name)
        new = out.layer.add()
        new.CopyFrom(lp)
        del new.blobs[:]
        for arr in blobs[lp.name]:
            new.blobs.add().CopyFrom(formats.array_to_blob(np.asarray(arr, dtype=np.float32)))
    return out


def unique_name(base: str, taken: set[str], sep: str = "") -> str:
    """``base``, or ``base<sep>2``, ``base<sep>3``, ... : the first not in ``taken``."""
    name, k = base, 1
    while name in taken:
        k += 1
        name = f"{base}{sep}{k}"
    return name


def _stats3(info: BNBlobs) -> list[np.ndarray]:
    return [info.mean.astype(np.float32), info.var.astype(np.float32), np.ones(1, np.float32)]


def to_bvlc(model: caffe_pb2.NetParameter, weights: caffe_pb2.NetParameter | None):
    """NVCaffe BatchNorm (+ scale/bias) -> BVLC BatchNorm + Scale.  Returns (model, weights, notes)."""
    src = weight_arrays(weights)
    notes: list[str] = []
    out = caffe_pb2.NetParameter()
    out.CopyFrom(model)
    del out.layer[:]
    blobs: dict[str, list[np.ndarray]] = {}
    taken = {lp.name for lp in model.layer}
    scale_names: dict[str, str] = {}
    for lp in model.layer:
        if lp.type != "BatchNorm":
            out.layer.add().CopyFrom(lp)
            if lp.name in src:
                blobs.setdefault(lp.name, src[lp.name][0])
            continue
        info = _bn_info(lp.name, src.get(lp.name), lp)
        affine = declares_scale_bias(lp) or (info is not None and not info.affine_is_identity())
        bn = out.layer.add()
        bn.CopyFrom(lp)
        p = bn.batch_norm_param
        for f in ("scale_filler", "bias_filler", "scale_bias", "engine"):
            p.ClearField(f)
        del bn.param[:]
        bn.param.extend([_zero_spec() for _ in range(3)])
        if info is not None:
            if info.eps is not None:
                p.eps = info.eps
            if info.eps_min is not None and p.eps < info.eps_min:
                p.eps = info.eps_min
            blobs.setdefault(lp.name, _stats3(info))
            if info.layout != "bvlc":
                notes.append(f"layer '{lp.name}': {info.layout} statistics stored as BVLC accumulators "
                             "with s = 1")
        if not affine:
            continue
        if lp.name not in scale_names:
            scale_names[lp.name] = unique_name(f"{lp.name}_scale", taken)
            taken.add(scale_names[lp.name])
        top = lp.top[0]
        sc = out.layer.add(name=scale_names[lp.name], type="Scale", bottom=[top], top=[top])
        sc.include.extend(lp.include)
        sc.exclude.extend(lp.exclude)
        if lp.HasField("phase"):
            sc.phase = lp.phase
        sp = sc.scale_param
        sp.bias_term = True
        src_p = lp.batch_norm_param
        sp.filler.CopyFrom(src_p.scale_filler if src_p.HasField("scale_filler") else _const(1.0))
        sp.bias_filler.CopyFrom(src_p.bias_filler if src_p.HasField("bias_filler") else _const(0.0))
        specs = affine_specs(lp)
        if specs:
            sc.param.extend(specs[:2])
        if info is not None:
            c = info.channels
            scale = info.scale if info.scale is not None else np.ones(c)
            bias = info.bias if info.bias is not None else np.zeros(c)
            blobs.setdefault(sc.name, [scale.astype(np.float32), bias.astype(np.float32)])
            notes.append(f"layer '{lp.name}': scale/bias moved into Scale layer '{sc.name}' "
                         f"(in place on '{top}')")
    return out, _caffemodel(out, blobs), notes


def _readers(model, blob: str, after: int) -> list[int]:
    """Indices of layers after ``after`` that read ``blob`` before something rewrites it out of place."""
    found = []
    for k in range(after + 1, len(model.layer)):
        lp = model.layer[k]
        if blob in lp.bottom:
            found.append(k)
        if blob in lp.top and blob not in lp.bottom:
            break
    return found


def _foldable(model, run: list[int], j: int) -> str | None:
    """Why the Scale at index j cannot be folded into the BatchNorm run (None if it can)."""
    sc = model.layer[j]
    bns = [model.layer[i] for i in run]
    p = sc.scale_param
    top = bns[0].top[0]
    if len(sc.bottom) != 1 or sc.bottom[0] != top:
        return "it does not read the BatchNorm's top alone"
    if p.axis != 1 or p.num_axes != 1:
        return "its axis/num_axes are not the channel axis"
    if any(declares_scale_bias(b) for b in bns):
        return "the BatchNorm already has scale/bias"
    if any(b.top[0] != top for b in bns):
        return "the BatchNorm definitions write different tops"
    sc_ph = layer_phases(sc)
    union = set().union(*(layer_phases(b) for b in bns))
    if not sc_ph <= union or any(not layer_phases(b) <= sc_ph for b in bns):
        return "its phase rules differ from the BatchNorm's"
    if sc.top[0] != sc.bottom[0] and len(_readers(model, top, j)) > 0:
        return f"other layers read '{top}' before the Scale"
    return None


def to_nvcaffe(model: caffe_pb2.NetParameter, weights: caffe_pb2.NetParameter | None):
    """BatchNorm + following Scale -> one NVCaffe 0.17 BatchNorm with scale_bias.

    Returns (model, weights, notes)."""
    src = weight_arrays(weights)
    notes: list[str] = []
    layers = list(model.layer)
    out = caffe_pb2.NetParameter()
    out.CopyFrom(model)
    del out.layer[:]
    blobs: dict[str, list[np.ndarray]] = {}
    i = 0
    while i < len(layers):
        lp = layers[i]
        if lp.type != "BatchNorm":
            out.layer.add().CopyFrom(lp)
            if lp.name in src:
                blobs.setdefault(lp.name, src[lp.name][0])
            i += 1
            continue
        run = [i]
        while run[-1] + 1 < len(layers) and layers[run[-1] + 1].type == "BatchNorm" \
                and layers[run[-1] + 1].name == lp.name:
            run.append(run[-1] + 1)
        j = run[-1] + 1
        scale = None
        if j < len(layers) and layers[j].type == "Scale":
            why = _foldable(model, run, j)
            if why is None:
                scale = layers[j]
            else:
                notes.append(f"layer '{lp.name}': Scale '{layers[j].name}' kept separate ({why})")
        info = _bn_info(lp.name, src.get(lp.name), lp)
        file_affine = info is not None and not info.affine_is_identity()
        if scale is not None and file_affine:
            notes.append(f"layer '{lp.name}': Scale '{layers[j].name}' kept separate (the caffemodel's "
                         "BatchNorm already has scale/bias)")
            scale = None
        for k in run:
            bn = out.layer.add()
            bn.CopyFrom(layers[k])
            p = bn.batch_norm_param
            specs = affine_specs(layers[k])
            had_affine = declares_scale_bias(layers[k])
            del bn.param[:]
            bn.param.extend([_zero_spec() for _ in range(3)])
            if scale is not None:
                sp = scale.scale_param
                p.scale_bias = True
                p.scale_filler.CopyFrom(sp.filler if sp.HasField("filler") else _const(1.0))
                p.bias_filler.CopyFrom(sp.bias_filler if (sp.bias_term and sp.HasField("bias_filler"))
                                       else _const(0.0))
                sspecs = list(scale.param)
                bn.param.add().CopyFrom(sspecs[0] if sspecs else caffe_pb2.ParamSpec(lr_mult=1, decay_mult=1))
                if sp.bias_term:
                    bn.param.add().CopyFrom(sspecs[1] if len(sspecs) > 1 else
                                            caffe_pb2.ParamSpec(lr_mult=1, decay_mult=1))
                else:  # a Scale without bias: NVCaffe's bias stays frozen at 0
                    bn.param.add().CopyFrom(_zero_spec())
                del bn.top[:]
                bn.top.append(scale.top[0])
            elif had_affine or file_affine:
                p.scale_bias = True
                if specs:
                    bn.param.extend(specs)
            if info is not None:
                if info.eps is not None:
                    p.eps = info.eps
                if info.eps_min is not None and p.eps < info.eps_min:
                    p.eps = info.eps_min
            if p.eps < CUDNN_MIN_EPS and k == run[0]:
                notes.append(f"layer '{lp.name}': eps {p.eps:g} is below NVCaffe 0.17's minimum "
                             f"{CUDNN_MIN_EPS:g}; NVCaffe would use {CUDNN_MIN_EPS:g}")
        if info is not None:
            arrs = _stats3(info)
            if scale is not None:
                c = info.channels
                sblobs = src.get(scale.name, ([], None))[0]
                gamma = sblobs[0].reshape(-1) if sblobs else np.ones(c)
                beta = sblobs[1].reshape(-1) if len(sblobs) > 1 else np.zeros(c)
                arrs += [gamma.astype(np.float32), beta.astype(np.float32)]
                notes.append(f"layer '{lp.name}': Scale '{scale.name}' folded in (scale_bias: true)")
            elif info.scale is not None and (declares_scale_bias(lp) or file_affine):
                arrs += [info.scale.astype(np.float32), info.bias.astype(np.float32)]
            blobs[lp.name] = arrs
            if info.layout != "nvcaffe-0.16" or scale is not None:
                notes.append(f"layer '{lp.name}': {info.layout} statistics written normalised "
                             "(correction 1), NVCaffe 0.17 order")
        elif scale is not None and scale.name in src:
            raise NetError(f"layer '{lp.name}': the caffemodel has Scale '{scale.name}' but no "
                           "BatchNorm statistics to fold it into")
        i = j + (1 if scale is not None else 0)
    return out, _caffemodel(out, blobs), notes
