"""Lint rules for BatchNorm (and deploy) pitfalls, each with a rule id, severity, layer, line and fix.

=======  ========================  ==================================================================
BN001    inplace-cudnn             in-place BatchNorm on NVCaffe's cuDNN engine (its backward read an
                                   input the forward had overwritten: the net never converges)
BN002    scale-filler              NVCaffe-dialect scale/bias with a zero or missing ``scale_filler``
                                   (NVCaffe 0.14 defaulted γ to 0)
BN003    trained-statistics        ``lr_mult`` ≠ 0 on the statistics blobs
BN004    global-stats-phase        ``use_global_stats`` fighting the phase
BN005    untrained-test-layer      a TEST-only layer with parameters that no TRAIN layer of the same
                                   name trains (or of another type)
BN006    missing-scale             BVLC BatchNorm without a following Scale (no learnable γ/β)
BN007    eps-minimum               eps ≤ 0, or below cuDNN's minimum 1e-5 (NVCaffe 0.14's cuDNN
                                   engine even ignores eps and uses 1e-4)
BN008    moving-average-window     ``moving_average_fraction`` so low the statistics are noisy, or so
                                   high they are stale for the planned iterations
BN009    deploy-preprocessing      a data layer's ``transform_param`` (scale, mean) that a deploy net
                                   will not carry
BN010    implicit-scale-bias       (with the caffemodel) the file's BatchNorm has scale/bias that the
                                   prototxt leaves implicit: named with the layout found, info when
                                   brewnet takes them from the file, error when it cannot
=======  ========================  ==================================================================

:func:`lint` returns findings; :func:`apply_fixes` returns a corrected NetParameter (for the
rules that have a mechanical fix).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

from ..errors import NetError
from ..formats.batchnorm_layouts import (CUDNN_MIN_EPS, LAYOUT_BLOBS, NVCAFFE_014_CUDNN_EPS, declares_scale_bias,
                                         detect, implicit_scale_bias, nvcaffe_dialect)
from ..layers import is_data_layer
from ..net_state import layer_phases
from ..proto import caffe_pb2
from ..weights import weight_arrays

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
CUDNN = caffe_pb2.BatchNormParameter.CUDNN
RULES = {
    "BN001": "inplace-cudnn", "BN002": "scale-filler", "BN003": "trained-statistics",
    "BN004": "global-stats-phase", "BN005": "untrained-test-layer", "BN006": "missing-scale",
    "BN007": "eps-minimum", "BN008": "moving-average-window", "BN009": "deploy-preprocessing",
    "BN010": "implicit-scale-bias",
}
PARAM_TYPES = {"Convolution", "Deconvolution", "InnerProduct", "BatchNorm", "Scale", "Bias", "PReLU",
               "Embed", "Parameter", "LSTM", "RNN"}
#: data layers whose transform_param is not preprocessing a deploy net repeats (BN009): HDF5Data
#: refuses one, DummyData and Input read nothing, VideoData is a camera's
NO_DEPLOY_TRANSFORM = frozenset({"HDF5Data", "DummyData", "Input", "VideoData"})
NOISY_WINDOW = 10  # iterations: fewer and the running statistics are dominated by a few batches
# A window longer than a fifth of the run averages activations of weights long gone. Measured on
# LeNet-BN / Fashion-MNIST (base_lr 0.05, poly, 4220 iterations): maf 0.999 (window 1000) gave
# 0.8985 test accuracy from the TEST net, 0.99 (window 100) 0.9207.  PyTorch's momentum 0.1 is a
# window of 10; 100 is the suggestion, shorter for short runs.
STALE_FRACTION = 5
GOOD_WINDOW = 100


@dataclass
class Finding:
    rule: str
    severity: str          # "error" | "warning" | "info"
    layer: str
    line: int | None
    message: str
    fix: str
    index: int = -1        # position of the layer in the parsed net
    apply: Callable | None = field(default=None, repr=False)  # mechanical fix (list of layers, index)

    @property
    def name(self) -> str:
        return RULES[self.rule]

    def format(self, path: str = "") -> str:
        where = f"{path}:{self.line}" if self.line else (path or "?")
        return (f"{where}: {self.severity} {self.rule} ({self.name}) layer '{self.layer}': {self.message}\n"
                f"    fix: {self.fix}")


# ----- line numbers ---------------------------------------------------------------------------
_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'|#[^\n]*|[A-Za-z_][\w.]*|\S')


def layer_name_lines(text: str) -> dict[str, list[int]]:
    """{layer name: [line of its `name: "..."`, per occurrence in file order]}."""
    out: dict[str, list[int]] = {}
    tokens = [(m.start(), m.group()) for m in _TOKEN.finditer(text) if not m.group().startswith("#")]
    line_starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]

    def line_of(pos):
        lo, hi = 0, len(line_starts)
        while lo + 1 < hi:
            mid = (lo + hi) // 2
            if line_starts[mid] <= pos:
                lo = mid
            else:
                hi = mid
        return lo + 1

    stack: list[str] = []
    for i, (pos, tok) in enumerate(tokens):
        if tok in ("{", "<"):
            j = i - 2 if i >= 2 and tokens[i - 1][1] == ":" else i - 1
            stack.append(tokens[j][1] if j >= 0 else "")
        elif tok in ("}", ">"):
            if stack:
                stack.pop()
        elif tok == "name" and stack and stack[-1] in ("layer", "layers") and i + 2 < len(tokens) \
                and tokens[i + 1][1] == ":" and tokens[i + 2][1][:1] in "\"'":
            out.setdefault(tokens[i + 2][1][1:-1], []).append(line_of(pos))
    return out


# ----- helpers ----------------------------------------------------------------------------------
def _stat_specs(lp):
    specs = list(lp.param)
    if nvcaffe_dialect(lp) and len(specs) in (2, 4):
        return list(range(2, len(specs)))
    return list(range(min(3, len(specs))))


def _readers_after(layers, i: int, blob: str, skip_name: str | None = None):
    """Layers after i that read ``blob`` (stopping where it is rewritten out of place)."""
    for k in range(i + 1, len(layers)):
        lp = layers[k]
        if skip_name is not None and lp.name == skip_name:
            continue
        if blob in lp.bottom:
            yield k
        if blob in lp.top and blob not in lp.bottom:
            return


def _const(v):
    return caffe_pb2.FillerParameter(type="constant", value=v)


def _fmt_phases(ph: set[int]) -> str:
    return "/".join("TRAIN" if p == TRAIN else "TEST" for p in sorted(ph)) or "no phase"


# ----- the rules --------------------------------------------------------------------------------
def lint(net: caffe_pb2.NetParameter, text: str | None = None, phase: int | None = None,
         max_iter: int | None = None, target: str | None = None,
         deploy: caffe_pb2.NetParameter | None = None,
         weights: caffe_pb2.NetParameter | None = None) -> list[Finding]:
    """Lint a (parsed, upgraded) net.  ``text`` gives line numbers; ``phase`` restricts to one
    phase; ``max_iter`` enables the stale-statistics check; ``target`` ("bvlc", "nvcaffe",
    "nvcaffe-0.14") is the Caffe the net is meant for; ``deploy`` is its deploy net (BN009
    needs it: without the deploy net nothing says the preprocessing will be lost); ``weights``
    is a caffemodel for it (BN010 judges the BatchNorm layouts it holds, and BN006 does not ask
    for a Scale where the file's scale/bias become the layer's)."""
    lines = layer_name_lines(text) if text else {}
    seen: dict[str, int] = {}
    findings: list[Finding] = []
    layers = list(net.layer)
    all_phases = {TRAIN, TEST} if phase is None else {phase}

    def add(rule, severity, i, message, fix, apply=None):
        lp = layers[i]
        occ = occurrence[i]
        ln = lines.get(lp.name, [])
        findings.append(Finding(rule, severity, lp.name, ln[occ] if occ < len(ln) else None, message, fix,
                                i, apply))

    occurrence = []
    for lp in layers:
        occurrence.append(seen.get(lp.name, 0))
        seen[lp.name] = occurrence[-1] + 1

    by_name: dict[str, list[int]] = {}
    for i, lp in enumerate(layers):
        by_name.setdefault(lp.name, []).append(i)
    files = weight_arrays(weights)

    for i, lp in enumerate(layers):
        phases = layer_phases(lp) & all_phases
        if not phases:
            continue
        if lp.type == "BatchNorm":
            _bn_rules(add, layers, i, lp, phases, max_iter, target, files.get(lp.name))
        if phases == {TEST} and phase is None and (lp.type in PARAM_TYPES or len(lp.param)):
            trainers = [k for k in by_name[lp.name] if TRAIN in layer_phases(layers[k])]
            train_names = {q.name for other in layers if TRAIN in layer_phases(other) for q in other.param
                           if q.name}
            shared = bool(lp.param) and all(q.name and q.name in train_names for q in lp.param)
            if not trainers and not shared:
                add("BN005", "error", i, f"{lp.type} layer exists only in TEST, and no TRAIN layer named "
                    f"'{lp.name}' trains its parameters"
                    + (" (its statistics stay zero)" if lp.type == "BatchNorm" else ""),
                    f"give the TRAIN-phase layer it should share with the same name '{lp.name}' "
                    "(brewnet and Caffe share TEST parameters with TRAIN by layer name)")
            elif trainers and any(layers[k].type != lp.type for k in trainers):
                other = layers[trainers[0]].type
                add("BN005", "error", i, f"the TRAIN layer named '{lp.name}' is a {other}, this TEST one a "
                    f"{lp.type}: their parameters cannot be shared", "use the same layer type in both phases")
        if deploy is not None and is_data_layer(lp.type) and lp.type not in NO_DEPLOY_TRANSFORM \
                and lp.HasField("transform_param"):
            _deploy_rule(add, layers, i, lp, deploy)
    # BN009 once per distinct transform
    out, done = [], set()
    for f in findings:
        if f.rule == "BN009":
            if f.message in done:
                continue
            done.add(f.message)
        out.append(f)
    return out


def _bn_rules(add, layers, i, lp, phases, max_iter, target, file_blobs=None):
    p = lp.batch_norm_param
    nv = nvcaffe_dialect(lp)
    cudnn = p.engine == CUDNN or (target == "nvcaffe-0.14" and p.engine == 0)
    affine = declares_scale_bias(lp) or (nv and p.HasField("engine")) or target == "nvcaffe-0.14"
    first = next(k for k in range(len(layers)) if layers[k].name == lp.name)

    # BN010: the caffemodel's scale/bias that the prototxt leaves implicit (once per layer name)
    file_affine = False
    if file_blobs is not None and first == i:
        file_affine = _implicit_rule(add, i, lp, *file_blobs)

    # BN001: in-place on cuDNN
    if cudnn and len(lp.bottom) and lp.top and lp.top[0] == lp.bottom[0]:
        add("BN001", "error", i, f"in place (top == bottom == '{lp.top[0]}') on the cuDNN engine: NVCaffe's "
            "cuDNN BatchNorm backward reads its input after the forward overwrote it, so the net does not "
            "converge (brewnet itself is correct in place)",
            f"write the output to a new blob (top: \"{lp.name}\") and let the following layers read it, "
            "or use engine: CAFFE", _fix_inplace)

    # BN002: scale filler
    if affine:
        if p.HasField("scale_filler"):
            f = p.scale_filler
            if f.type == "constant" and f.value == 0:
                add("BN002", "error", i, "scale_filler is constant 0: γ starts at 0, every output is β "
                    "and no gradient reaches the layers below",
                    'scale_filler { type: "constant" value: 1 }', _fix_scale_filler)
        else:
            add("BN002", "warning", i, "NVCaffe-dialect BatchNorm without scale_filler: NVCaffe 0.14 filled "
                "γ with 0 (the net then never trains); brewnet uses 1",
                'scale_filler { type: "constant" value: 1 } bias_filler { type: "constant" value: 0 }',
                _fix_scale_filler)

    # BN003: statistics given a learning rate
    bad = [k for k in _stat_specs(lp) if lp.param[k].lr_mult != 0]
    if bad:
        add("BN003", "warning", i, f"param block(s) {', '.join(str(k + 1) for k in bad)} give the statistics "
            "lr_mult ≠ 0: old Caffe trains them with the solver (and weight decay), BVLC refuses the net; "
            "brewnet ignores them", "set lr_mult: 0 decay_mult: 0 on the statistics blocks", _fix_stat_specs)

    # BN004: use_global_stats vs the phase
    if p.HasField("use_global_stats"):
        if not p.use_global_stats and TEST in phases:
            sev = "error" if phases == {TEST} else "warning"
            add("BN004", sev, i, "use_global_stats: false in the TEST phase: validation normalises each batch "
                "with its own statistics, so accuracy depends on the batch and the stored statistics are "
                "never used", "remove use_global_stats (it defaults to phase == TEST)", _fix_ugs)
        elif p.use_global_stats and TRAIN in phases:
            sev = "error" if phases == {TRAIN} else "warning"
            add("BN004", sev, i, f"use_global_stats: true in the TRAIN phase ({_fmt_phases(phases)}): training "
                "normalises with stored statistics that never update (only right when fine-tuning with "
                "frozen statistics)", "remove use_global_stats (it defaults to phase == TEST)", _fix_ugs)

    # BN006: BVLC BatchNorm without Scale (reported once per layer name)
    if not declares_scale_bias(lp) and not (nv and p.HasField("engine")) and not file_affine and lp.top \
            and first == i:
        nxt = next(_readers_after(layers, i, lp.top[0], skip_name=lp.name), None)
        if nxt is None or layers[nxt].type != "Scale":
            what = "nothing" if nxt is None else f"{layers[nxt].type} '{layers[nxt].name}'"
            add("BN006", "warning", i, f"BVLC BatchNorm has no learnable γ/β and is followed by {what}, "
                "not by a Scale layer", f'add layer {{ name: "{lp.name}_scale" type: "Scale" '
                f'bottom: "{lp.top[0]}" top: "{lp.top[0]}" scale_param {{ bias_term: true }} }}',
                _fix_add_scale)

    # BN007: eps
    eps = p.eps
    if eps <= 0:
        add("BN007", "error", i, f"eps {eps:g} ≤ 0: division by zero for a constant channel",
            f"eps: {CUDNN_MIN_EPS:g}", _fix_eps)
    elif ((cudnn or target in ("nvcaffe", "nvcaffe-0.14") or nv)
          and eps < CUDNN_MIN_EPS * (1 - 1e-6)):  # eps is a float32
        add("BN007", "error" if cudnn else "warning", i, f"eps {eps:g} is below cuDNN's minimum "
            f"{CUDNN_MIN_EPS:g} (NVCaffe clamps or refuses it, so results differ between engines)",
            f"eps: {CUDNN_MIN_EPS:g}", _fix_eps)
    elif cudnn and target == "nvcaffe-0.14" and abs(eps - NVCAFFE_014_CUDNN_EPS) > 1e-9:
        add("BN007", "info", i, f"NVCaffe 0.14's cuDNN engine ignores eps ({eps:g}) and uses "
            f"{NVCAFFE_014_CUDNN_EPS:g}", f"eps: {NVCAFFE_014_CUDNN_EPS:g} to say what runs")

    # BN008: moving-average window
    if TRAIN in phases and not (p.HasField("use_global_stats") and p.use_global_stats):
        maf = p.moving_average_fraction
        if maf >= 1 or maf < 0:
            add("BN008", "error", i, f"moving_average_fraction {maf:g} is outside [0, 1)",
                "moving_average_fraction: 0.999 (or 1 − 10/max_iter for short runs)", _fix_maf(max_iter))
        else:
            window = 1.0 / (1.0 - maf)
            if window < NOISY_WINDOW:
                add("BN008", "warning", i, f"moving_average_fraction {maf:g} averages the statistics over "
                    f"only ~{window:.0f} batches: TEST results will be noisy",
                    f"moving_average_fraction: {_good_maf(max_iter):g}", _fix_maf(max_iter))
            elif max_iter and round(window) > max_iter / STALE_FRACTION:
                left = maf ** max_iter
                extra = (f"; the initial zeros still weigh {left:.0%}" if nv and left > 0.01 else
                         "; the statistics are dominated by early-training activations")
                add("BN008", "warning", i, f"moving_average_fraction {maf:g} averages over ~{window:.0f} "
                    f"iterations, too long for {max_iter} iterations{extra}",
                    f"moving_average_fraction: {_good_maf(max_iter):g}", _fix_maf(max_iter))


def _implicit_rule(add, i, lp, arrays, src) -> bool:
    """BN010 for one BatchNorm and its blobs in the caffemodel (``src``: the file's definition of
    the layer).  True when loading takes the file's scale/bias as the layer's own."""
    try:
        info = detect(arrays, src, lp.name)
    except NetError as e:
        add("BN010", "error", i, f"the caffemodel's blobs for this layer are no BatchNorm layout brewnet "
            f"knows: {e}", "load the caffemodel that goes with this prototxt")
        return False
    if info.scale is None or declares_scale_bias(lp):
        return False
    what = f"the caffemodel's BatchNorm is {info.layout} {LAYOUT_BLOBS[info.layout]}"
    why = implicit_scale_bias(info, lp, src)
    if why is not None and info.ambiguous and not declares_scale_bias(src):
        add("BN010", "error", i, f"the prototxt declares no scale/bias and {what}, but with one channel "
            f"(shapes {info.shapes}) that layout is a guess: loading refuses it",
            "add scale_bias: true to batch_norm_param if the file is NVCaffe's with scale/bias", _fix_scale_bias)
        return False
    if why is not None:
        add("BN010", "info", i, f"the prototxt declares no scale/bias, but {what}, with scale/bias: {why}; "
            "brewnet takes them from the file as this layer's learnable scale and bias",
            "add scale_bias: true to batch_norm_param, so the prototxt says what the layer has", _fix_scale_bias)
        return True
    if not info.affine_is_identity():
        add("BN010", "error", i, f"{what}, with scale/bias, and this BVLC-dialect BatchNorm has no place for "
            "them (NVCaffe 0.16/0.17 write them only for layers that declare them): loading fails",
            "add scale_bias: true to batch_norm_param (the layer then applies them; drop a following Scale "
            "layer that has no weights of its own), or convert the model: brewnet convert -to bvlc")
    return False


def _good_maf(max_iter):
    window = min(max(max_iter / (2 * STALE_FRACTION), NOISY_WINDOW), GOOD_WINDOW) if max_iter else GOOD_WINDOW
    return round(1 - 1 / window, 6)


def _deploy_rule(add, layers, i, lp, deploy):
    t = lp.transform_param
    parts = []
    if t.scale != 1:
        parts.append(f"scale {t.scale:g}")
    if t.HasField("mean_file"):
        parts.append(f"mean_file {t.mean_file}")
    if t.mean_value:
        parts.append("mean_value " + ",".join(f"{v:g}" for v in t.mean_value))
    if not parts:
        return
    if _deploy_carries(deploy, t):
        return
    fix = ("the deploy net must apply the same preprocessing: after its Input add "
           + (f'layer {{ type: "Power" power_param {{ scale: {t.scale:.9g}'  # float32's digits
              + (f" shift: {-t.mean_value[0] * t.scale:.9g}" if len(t.mean_value) == 1 else "")
              + " } }" if t.scale != 1 else "a mean-subtracting layer")
           + ", or serve it with brewnet's bundled preprocessing (the deploy bundle carries transform_param)")
    add("BN009", "warning", i, f"transform_param ({', '.join(parts)}) is applied by the data layer only; "
        f"{_net_label(deploy)} does not carry it, so inference sees differently scaled "
        "input than validation did", fix)


def _net_label(net) -> str:
    return f"the deploy net '{net.name}'" if net.name else "the deploy net"


def _same_float32(a: float, b: float) -> bool:
    """Equal as the float32 fields they are (a value written with 6 or more digits and read back
    counts as the same), not to float64 precision that the protobuf field never had."""
    return abs(a - b) <= 1e-6 * max(abs(a), abs(b))


def _deploy_carries(deploy, t) -> bool:
    for lp in deploy.layer:
        if lp.type == "Power" and _same_float32(lp.power_param.scale, t.scale):
            return True
        if lp.type == "Scale" and lp.scale_param.HasField("filler") and \
                _same_float32(lp.scale_param.filler.value, t.scale):
            return True
    return False


# ----- fixes (each edits the list of layers in place) -------------------------------------------
def _fix_scale_filler(layers, i):
    p = layers[i].batch_norm_param
    p.scale_filler.CopyFrom(_const(1.0))
    if not p.HasField("bias_filler"):
        p.bias_filler.CopyFrom(_const(0.0))


def _fix_scale_bias(layers, i):
    name = layers[i].name
    for lp in layers:
        if lp.name == name and lp.type == "BatchNorm":
            lp.batch_norm_param.scale_bias = True


def _fix_stat_specs(layers, i):
    lp = layers[i]
    for k in _stat_specs(lp):
        lp.param[k].lr_mult = 0
        lp.param[k].decay_mult = 0


def _fix_ugs(layers, i):
    layers[i].batch_norm_param.ClearField("use_global_stats")


def _fix_eps(layers, i):
    layers[i].batch_norm_param.eps = CUDNN_MIN_EPS


def _fix_maf(max_iter):
    def fix(layers, i):
        layers[i].batch_norm_param.moving_average_fraction = _good_maf(max_iter)
    return fix


def _fix_add_scale(layers, i):
    lp = layers[i]
    top = lp.top[0]
    names = {x.name for x in layers}
    name = f"{lp.name}_scale"
    while name in names:
        name += "_"
    last = i
    while last + 1 < len(layers) and layers[last + 1].name == lp.name:
        last += 1
    sc = caffe_pb2.LayerParameter(name=name, type="Scale", bottom=[top], top=[top])
    sc.scale_param.bias_term = True
    if last == i:  # one definition: the Scale lives in the same phases
        sc.include.extend(lp.include)
        sc.exclude.extend(lp.exclude)
    layers.insert(last + 1, sc)


def _fix_inplace(layers, i):
    lp = layers[i]
    old = lp.top[0]
    blobs = {b for x in layers for b in list(x.top) + list(x.bottom)}
    new = lp.name if lp.name not in blobs else f"{old}_{lp.name}"
    while new in blobs:
        new += "_"
    group = [k for k in range(len(layers)) if layers[k].name == lp.name and layers[k].type == "BatchNorm"
             and layers[k].top and layers[k].top[0] == old]
    for k in group:
        layers[k].top[0] = new
    for k in range(max(group) + 1, len(layers)):
        x = layers[k]
        reads = old in x.bottom
        for j, b in enumerate(x.bottom):
            if b == old:
                x.bottom[j] = new
        if old in x.top:
            if not reads:
                break  # rewritten out of place: later readers mean the new value
            for j, t in enumerate(x.top):
                if t == old:
                    x.top[j] = new


_ORDER = {"BN001": 3, "BN006": 2}


def apply_fixes(net: caffe_pb2.NetParameter, findings: list[Finding]) -> tuple[caffe_pb2.NetParameter, int]:
    """A corrected copy of ``net`` and the number of fixes applied (rules without a fix are left)."""
    layers = [caffe_pb2.LayerParameter() for _ in net.layer]
    for dst, src in zip(layers, net.layer):
        dst.CopyFrom(src)
    refs = list(layers)  # identity of the original layers survives insertions
    todo = sorted((f for f in findings if f.apply is not None), key=lambda f: _ORDER.get(f.rule, 0))
    for f in todo:
        f.apply(layers, next(k for k, x in enumerate(layers) if x is refs[f.index]))
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    out.layer.extend(layers)
    return out, len(todo)
