"""The BatchNorm blob layouts met in caffemodels, detected from blob count and shapes.

==================  ==========================================================================
layout              blobs (C = channels)
==================  ==========================================================================
``bvlc``            mean accumulator (C), variance accumulator (C), factor s (1); the
                    statistics are ``acc / s`` (0 when s = 0, as Caffe does)
``nvcaffe-0.14-cudnn``  scale, bias, unused, mean, var — (1,C,1,1), unused (1,C,1,1) or
                    (1,1,1,1); cuDNN's running mean/var, used as they are; eps fixed 1e-4
``nvcaffe-0.15-caffe``  scale (C), bias (C), mean (C), var (C), counter (1); stats normalised
``nvcaffe-0.15-cudnn``  the same order, every blob rank 4
``nvcaffe-0.16``    mean (C), var (C), correction (1) [= 1], then scale (C), bias (C) when the
                    layer has ``scale_bias`` (0.16 and 0.17 write the same layout)
==================  ==========================================================================

:func:`detect` returns a :class:`BNBlobs` with the normalised statistics (float64), the affine
parameters when the file has them, an eps the layout forces, and notes saying what was found.

Scale and bias a prototxt leaves implicit (:func:`implicit_scale_bias`): NVCaffe 0.14's cuDNN
BatchNorm and every NVCaffe 0.15 BatchNorm always had scale and bias, and their prototxts had no
field to say so (``batch_norm_param { engine: CUDNN }``, or no batch_norm_param at all).  A layer
whose prototxt declares no scale/bias (no ``scale_bias``, ``scale_filler``, ``bias_filler``, nor
NVCaffe's 2/4-block param syntax) takes the file's scale and bias when

- the file's layout is one only those versions wrote (``nvcaffe-0.14-cudnn``,
  ``nvcaffe-0.15-caffe``, ``nvcaffe-0.15-cudnn``): the file says which Caffe made it;
- the prototxt is NVCaffe-dialect anyway (it sets ``engine``), whatever the layout; or
- the caffemodel's own layer definition declares them (as brewnet writes it after taking them).

A field-less (BVLC-dialect) prototxt meeting an NVCaffe 0.16/0.17 file with scale/bias is not
one of these: 0.16/0.17 write scale/bias only for layers that declare them, so such a prototxt is
BVLC's, whose Scale layer holds γ/β; loading refuses it and says how to proceed.  Nor is a
one-channel file (every blob has one value), whose layout only a declaration can settle.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import NetError

CUDNN_MIN_EPS = 1e-5
NVCAFFE_014_CUDNN_EPS = 1e-4

LAYOUTS = ("bvlc", "nvcaffe-0.14-cudnn", "nvcaffe-0.15-caffe", "nvcaffe-0.15-cudnn", "nvcaffe-0.16")
#: layouts written only by NVCaffe versions whose BatchNorm always had scale and bias
ALWAYS_AFFINE = ("nvcaffe-0.14-cudnn", "nvcaffe-0.15-caffe", "nvcaffe-0.15-cudnn")
#: BatchNormParameter fields BVLC's schema does not have
NVCAFFE_FIELDS = ("scale_bias", "scale_filler", "bias_filler", "engine")
LAYOUT_BLOBS = {
    "bvlc": "[mean_acc, var_acc, s]",
    "nvcaffe-0.14-cudnn": "[scale, bias, unused, mean, var] (rank 4)",
    "nvcaffe-0.15-caffe": "[scale, bias, mean, var, counter]",
    "nvcaffe-0.15-cudnn": "[scale, bias, mean, var, counter] (rank 4)",
    "nvcaffe-0.16": "[mean, var, correction, scale, bias]",
}


ACCUMULATOR_NOTE = "statistics = accumulators / s"


def is_routine_note(note: str) -> bool:
    """A note on BVLC's own 3-blob layout, read as it is: worth a debug line, not the log."""
    return note.endswith(ACCUMULATOR_NOTE) and "BVLC layout" in note


@dataclass
class BNBlobs:
    layout: str
    mean: np.ndarray                    # normalised running mean (C,), float64
    var: np.ndarray                     # normalised running variance (C,), float64
    scale: np.ndarray | None = None     # γ (C,) when the file has it
    bias: np.ndarray | None = None      # β (C,)
    raw_bvlc: tuple | None = None       # (mean_acc, var_acc, s) exactly as stored (bvlc layout)
    eps: float | None = None            # eps this layout forces (0.14 cuDNN)
    eps_min: float | None = None        # smallest eps the engine accepts (cuDNN)
    notes: list[str] = field(default_factory=list)
    ambiguous: bool = False             # one channel: the layout was a guess (see detect)
    shapes: str = ""                    # the blob shapes as found, for messages

    @property
    def channels(self) -> int:
        return int(self.mean.size)

    def affine_is_identity(self) -> bool:
        return self.scale is None or (np.all(self.scale == 1) and np.all(self.bias == 0))


def nvcaffe_dialect(layer_param) -> bool:
    """Does this BatchNorm LayerParameter use any NVCaffe-only field (``engine`` included)?"""
    if layer_param is None or not layer_param.HasField("batch_norm_param"):
        return False
    p = layer_param.batch_norm_param
    return any(p.HasField(f) for f in NVCAFFE_FIELDS)


def declares_scale_bias(layer_param) -> bool:
    """Does this BatchNorm LayerParameter say it has scale/bias: ``scale_bias``, a filler, or
    NVCaffe 0.14/0.15's 2- or 4-block param syntax (scale, bias first) in the NVCaffe dialect?"""
    if not nvcaffe_dialect(layer_param):
        return False
    p = layer_param.batch_norm_param
    return bool(p.scale_bias or p.HasField("scale_filler") or p.HasField("bias_filler")
                or len(layer_param.param) in (2, 4))


def implicit_scale_bias(info: "BNBlobs", layer_param, source_param=None) -> str | None:
    """Why a BatchNorm whose prototxt (``layer_param``) declares no scale/bias takes the file's,
    or None when it does not (the file has none, or nothing says the prototxt leaves them
    implicit; see the module docstring).  ``source_param``: the caffemodel's LayerParameter."""
    if info.scale is None:
        return None
    if declares_scale_bias(source_param):
        return "the caffemodel's own definition of the layer declares them"
    if nvcaffe_dialect(layer_param):
        p = layer_param.batch_norm_param
        fields = " ".join(f for f in NVCAFFE_FIELDS if p.HasField(f))
        return (f"the prototxt's BatchNorm is NVCaffe's ({fields} set) and leaves them implicit, as "
                "NVCaffe 0.14/0.15 prototxts did")
    if info.layout in ALWAYS_AFFINE:
        which = "0.14's cuDNN" if info.layout == "nvcaffe-0.14-cudnn" else "0.15's"
        return (f"NVCaffe {which} BatchNorm always had them, and its prototxts had no field to say "
                "so")
    return None


def _shapes(arrays) -> str:
    return ", ".join(str(tuple(a.shape)) for a in arrays)


def detect(arrays: list[np.ndarray], source_param=None, name: str = "?",
           channels: int | None = None) -> BNBlobs:
    """Detect the layout of a BatchNorm layer's blobs read from a caffemodel.

    ``source_param`` (the caffemodel's LayerParameter, when it has one) breaks ties when the
    shapes alone cannot (C = 1).  ``channels`` is what the net expects, for the error message.
    Raises NetError for a layout that is none of the known ones.
    """
    arrs = [np.asarray(a) for a in arrays]
    n = len(arrs)
    sizes = [a.size for a in arrs]
    ranks = {a.ndim for a in arrs}
    where = f"layer '{name}' (BatchNorm)"

    def flat(a):
        return np.asarray(a, dtype=np.float64).reshape(-1)

    if n == 3 and sizes[0] == sizes[1] and sizes[2] == 1:
        m, v, s = flat(arrs[0]), flat(arrs[1]), float(flat(arrs[2])[0])
        nv = nvcaffe_dialect(source_param)
        layout = "nvcaffe-0.16" if nv else "bvlc"
        inv = 0.0 if s == 0 else 1.0 / s
        out = BNBlobs(layout, m * inv, v * inv, raw_bvlc=(flat(arrs[0]), flat(arrs[1]), s),
                      shapes=_shapes(arrs))
        what = ("NVCaffe 0.16/0.17 layout without scale/bias [mean, var, correction]" if nv else
                "BVLC layout [mean_acc, var_acc, s]")
        out.notes.append(f"{where}: {what}, s = {s:g}; {ACCUMULATOR_NOTE}")
        if s == 0:
            out.notes.append(f"{where}: the factor s is 0 (statistics never accumulated): global "
                             "statistics are 0/0, which Caffe takes as mean 0, variance 0 — kept, "
                             "but this layer was probably never trained")
        return out
    if n == 5:
        c = max(sizes)
        by_size = [s == c for s in sizes]
        rank4 = ranks == {4}
        ambiguous = c == 1  # every blob has one value: only the ranks and the prototxt can tell
        if ambiguous:
            if rank4:
                kind = "0.15-cudnn"
            else:
                # 0.16/0.17 keep the correction blob (index 2) at exactly 1, as brewnet does: a
                # 0.15 mean (the same index) is almost never exactly 1.0
                kind = "0.16" if ((source_param is not None and
                                   source_param.batch_norm_param.HasField("scale_bias"))
                                  or float(flat(arrs[2])[0]) == 1.0) else "0.15"
        elif by_size == [True, True, True, True, False] and sizes[4] == 1:
            kind = "0.15-cudnn" if rank4 else "0.15"
        elif by_size == [True, True, False, True, True] and sizes[2] == 1:
            kind = "0.14" if rank4 else "0.16"
        elif all(by_size) and rank4:
            kind = "0.14"
        else:
            kind = None
        amb = [f"{where}: one channel, so the layout is ambiguous; read as NVCaffe {kind}"] \
            if ambiguous and kind else []
        if kind == "0.16":
            m, v, s = flat(arrs[0]), flat(arrs[1]), float(flat(arrs[2])[0])
            inv = 0.0 if s == 0 else 1.0 / s
            out = BNBlobs("nvcaffe-0.16", m * inv, v * inv, scale=flat(arrs[3]), bias=flat(arrs[4]),
                          ambiguous=ambiguous, shapes=_shapes(arrs))
            out.notes.extend(amb)
            out.notes.append(f"{where}: NVCaffe 0.16/0.17 layout [mean, var, correction={s:g}, scale, bias]"
                             + ("" if s == 1 else "; statistics divided by the correction"))
            return out
        if kind == "0.14":
            out = BNBlobs("nvcaffe-0.14-cudnn", flat(arrs[3]), flat(arrs[4]), scale=flat(arrs[0]),
                          bias=flat(arrs[1]), eps=NVCAFFE_014_CUDNN_EPS, ambiguous=ambiguous,
                          shapes=_shapes(arrs))
            out.notes.extend(amb)
            out.notes.append(f"{where}: NVCaffe 0.14 cuDNN layout [scale, bias, unused, mean, var] "
                             "(rank 4); cuDNN's running mean/var used as normalised statistics; "
                             f"eps set to {NVCAFFE_014_CUDNN_EPS:g} (fixed in 0.14's cuDNN engine)")
            return out
        if kind in ("0.15", "0.15-cudnn"):
            layout = "nvcaffe-0.15-cudnn" if kind == "0.15-cudnn" else "nvcaffe-0.15-caffe"
            counter = float(flat(arrs[4])[0])
            out = BNBlobs(layout, flat(arrs[2]), flat(arrs[3]), scale=flat(arrs[0]), bias=flat(arrs[1]),
                          eps_min=CUDNN_MIN_EPS if kind == "0.15-cudnn" else None, ambiguous=ambiguous,
                          shapes=_shapes(arrs))
            out.notes.extend(amb)
            out.notes.append(f"{where}: NVCaffe 0.15 {'cuDNN (rank 4)' if kind == '0.15-cudnn' else 'CAFFE'} "
                             f"layout [scale, bias, mean, var, counter={counter:g}]; statistics are "
                             "already normalised (counter ignored)")
            return out
    want = f" (the net expects {channels} channels)" if channels is not None else ""
    raise NetError(f"{where}: caffemodel has {n} blobs with shapes {_shapes(arrs)}, which is no "
                   "known BatchNorm layout: BVLC [mean_acc (C), var_acc (C), s (1)]; NVCaffe 0.14 "
                   "cuDNN [scale, bias, unused, mean, var] (1,C,1,1); NVCaffe 0.15 [scale, bias, "
                   "mean, var, counter]; NVCaffe 0.16/0.17 [mean, var, correction, scale, bias]" + want)
