"""brewnet doctor: how well a trained model's BatchNorm statistics fit real batches.

For each BatchNorm layer, over the batches seen (the net's own data layers, an LMDB, or random):

- the population statistics of its input (exact, float64, over every batch) against the stored
  ones: the largest mean shift in units of the stored standard deviation, and the relative
  difference of the variances;
- the gap between its output with batch statistics (train mode) and with the stored statistics,
  for the same input: ``||y_batch - y_global|| / ||y_batch||``;
- for the whole net, every Accuracy output with global statistics and with batch statistics.

:func:`recalibrate` re-estimates the statistics layer by layer in net order: layer k's input is
computed with the already recalibrated layers before it, in TEST mode, over all batches, and its
statistics become the exact population mean and unbiased variance of that input (sums kept in
float64 with Chan's pairwise update, not a moving average).  BVLC layers store them with s = 1.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .. import fileio
from ..errors import BrewnetError


class RunningMoments:
    """Exact per-channel count, mean and M2 (float64), merged batch by batch (Chan et al.)."""

    def __init__(self):
        self.n = 0
        self.mean = None
        self.m2 = None

    def add(self, x: torch.Tensor) -> None:
        c = x.shape[1]
        flat = x.detach().to(torch.float64).transpose(0, 1).reshape(c, -1)
        nb = flat.shape[1]
        mb = flat.mean(dim=1)
        m2b = ((flat - mb[:, None]) ** 2).sum(dim=1)
        if self.mean is None:
            self.n, self.mean, self.m2 = nb, mb, m2b
            return
        n = self.n + nb
        delta = mb - self.mean
        self.mean = self.mean + delta * (nb / n)
        self.m2 = self.m2 + m2b + delta ** 2 * (self.n * nb / n)
        self.n = n

    @property
    def var_unbiased(self) -> torch.Tensor:
        return self.m2 / max(self.n - 1, 1)


@dataclass
class LayerReport:
    name: str
    channels: int
    mean_shift_max: float = 0.0     # max_c |mu_batch - mu_stored| / sqrt(var_stored + eps)
    mean_shift_avg: float = 0.0
    var_rel_max: float = 0.0        # max_c |var_batch - var_stored| / var_stored
    var_rel_median: float = 0.0
    output_gap: float = 0.0         # mean over batches of ||y_b - y_g|| / ||y_b||
    layout: str = "-"               # the caffemodel layout the layer was loaded from


@dataclass
class Report:
    batches: int
    layers: list[LayerReport] = field(default_factory=list)
    accuracy_global: dict[str, float] = field(default_factory=dict)
    accuracy_batch: dict[str, float] = field(default_factory=dict)

    def format(self) -> str:
        rows = [f"{self.batches} batch(es); per BatchNorm layer: stored statistics vs the population "
                "statistics of the batches",
                f"{'layer':<24}{'C':>6}  {'mean shift (σ) max/avg':>24}  {'var rel diff max/median':>24}  "
                f"{'train-vs-global output gap':>27}  weights layout"]
        for r in self.layers:
            rows.append(f"{r.name:<24}{r.channels:>6}  {r.mean_shift_max:>11.3g} /{r.mean_shift_avg:>10.3g}  "
                        f"{r.var_rel_max:>11.3g} /{r.var_rel_median:>10.3g}  {r.output_gap:>27.3g}  {r.layout}")
        for k in self.accuracy_global:
            rows.append(f"{k}: {self.accuracy_global[k]:.4f} with stored (global) statistics, "
                        f"{self.accuracy_batch[k]:.4f} with batch statistics")
        return "\n".join(rows)


def layout_label(bn) -> str:
    """The caffemodel layout a BatchNorm layer was loaded from, and whether it took scale/bias
    its prototxt left implicit ("-" when no weights were loaded)."""
    layout = getattr(bn, "loaded_layout", None)
    if not layout:
        return "-"
    return layout + (" (implicit scale/bias from the file)" if getattr(bn, "implicit_scale_bias", None) else "")


def batchnorm_layers(net):
    return [layer for layer in net.layers if layer.type == "BatchNorm"]


def _first_compute_index(net) -> int:
    for i, layer in enumerate(net.layers):
        if not (layer.is_data and not layer.param.bottom):
            return i
    raise BrewnetError("the net has no layers after its data layers")


def data_tops(net) -> list[str]:
    return [t for layer in net.layers if layer.is_data and not layer.param.bottom for t in layer.param.top]


def collect_batches(net, n: int, seed: int = 0, lmdb: str | None = None, scale: float = 1.0):
    """n batches as {data top: array}: from the net's own data layers, or (for nets fed through
    Input layers) from an LMDB of raw Datums times ``scale``, or Gaussian."""
    tops = data_tops(net)
    feeders = [layer for layer in net.layers if layer.is_data and not layer.param.bottom
               and not getattr(layer, "reads_blob_storage", False)]
    batches = []
    if feeders:
        for _ in range(n):
            for layer in feeders:
                net.forward(start=layer.name, end=layer.name)
            batches.append({t: np.array(net.blobs[t].data, copy=True) for t in tops})
        return batches
    if lmdb:
        from ..data.lmdb_io import read_datums
        from ..data.image import datum_to_chw
        data_name = next((t for t in tops if "label" not in t.lower()), tops[0])
        shape = net.blobs[data_name].shape
        label_name = next((t for t in tops if "label" in t.lower()), None)
        records = []
        for _, d in read_datums(lmdb):
            records.append((datum_to_chw(d).astype(np.float64) * scale, d.label))
        if not records:
            raise BrewnetError(f"LMDB is empty: {lmdb}")
        k = 0
        for _ in range(n):
            xs, ys = [], []
            for _ in range(shape[0]):
                x, y = records[k % len(records)]
                k += 1
                if x.shape != tuple(shape[1:]):
                    raise BrewnetError(f"LMDB records are {x.shape}, the net's '{data_name}' takes {tuple(shape[1:])}")
                xs.append(x)
                ys.append(y)
            b = {t: np.random.default_rng(seed).normal(size=net.blobs[t].shape) for t in tops}
            b[data_name] = np.stack(xs)
            if label_name:
                b[label_name] = np.asarray(ys, dtype=np.float64).reshape(net.blobs[label_name].shape)
            batches.append(b)
        return batches
    rng = np.random.default_rng(seed)
    for _ in range(n):
        batches.append({t: (np.zeros(net.blobs[t].shape) if "label" in t.lower()
                            else rng.normal(size=net.blobs[t].shape)) for t in tops})
    return batches


def _replay(net, batch, end: str | None = None):
    for name, arr in batch.items():
        net.blobs[name].data[...] = arr
    start = net.layers[_first_compute_index(net)].name
    with torch.no_grad():
        return net.forward(start=start, end=end)


def _set_mode(bns, use_global: bool):
    for bn in bns:
        bn.use_global_stats = use_global
        bn.update_statistics = False


def _stored(bn):
    mean, var = bn._global_stats()
    return mean.detach().to(torch.float64), var.detach().to(torch.float64)


def _accuracy_tops(net):
    return [layer.param.top[0] for layer in net.layers if layer.type == "Accuracy"]


def diagnose(net, batches) -> Report:
    bns = batchnorm_layers(net)
    saved = [(bn.use_global_stats, bn.update_statistics) for bn in bns]
    moments = {bn.name: RunningMoments() for bn in bns}
    gaps = {bn.name: [] for bn in bns}
    acc_tops = _accuracy_tops(net)
    report = Report(len(batches))

    def hook(bn):
        def pre(module, inputs):
            x = inputs[0].detach()
            moments[bn.name].add(x)
            w = bn.weight if bn.scale_bias else None
            b = bn.bias if bn.scale_bias else None
            mean, var = bn._global_stats()
            yg = F.batch_norm(x, mean.to(x.dtype), var.to(x.dtype), w, b, False, 0.0, bn.eps)
            yb = F.batch_norm(x, None, None, w, b, True, 0.0, bn.eps)
            gaps[bn.name].append(float(torch.linalg.vector_norm(yb - yg) /
                                       torch.linalg.vector_norm(yb).clamp_min(1e-30)))
        return pre

    def accuracies(use_global: bool) -> dict[str, list[float]]:
        _set_mode(bns, use_global)
        acc = {t: [] for t in acc_tops}
        for batch in batches:
            _replay(net, batch)
            for t in acc_tops:
                acc[t].append(float(np.asarray(net.blobs[t].data).reshape(-1)[0]))
        return acc

    handles = [bn.register_forward_pre_hook(hook(bn)) for bn in bns]
    try:
        acc_g = accuracies(True)
    finally:
        for h in handles:
            h.remove()
    try:
        acc_b = accuracies(False)
    finally:
        for bn, (g, u) in zip(bns, saved):
            bn.use_global_stats, bn.update_statistics = g, u
    for bn in bns:
        m = moments[bn.name]
        if m.mean is None:
            continue
        mean_s, var_s = _stored(bn)
        shift = (m.mean - mean_s).abs() / torch.sqrt(var_s + bn.eps)
        rel = (m.var_unbiased - var_s).abs() / var_s.abs().clamp_min(1e-30)
        report.layers.append(LayerReport(
            bn.name, int(m.mean.numel()), float(shift.max()), float(shift.mean()), float(rel.max()),
            float(rel.median()), float(np.mean(gaps[bn.name])), layout_label(bn)))
    report.accuracy_global = {t: float(np.mean(v)) for t, v in acc_g.items()}
    report.accuracy_batch = {t: float(np.mean(v)) for t, v in acc_b.items()}
    return report


def recalibrate(net, batches) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Re-estimate every BatchNorm's statistics, in net order, over ``batches``; returns
    {layer: (mean, unbiased var)} (float64) and stores them in the layers."""
    bns = batchnorm_layers(net)
    saved = [(bn.use_global_stats, bn.update_statistics) for bn in bns]
    out = {}
    try:
        _set_mode(bns, True)
        for bn in bns:
            m = RunningMoments()
            h = bn.register_forward_pre_hook(lambda module, inputs: m.add(inputs[0]))
            try:
                for batch in batches:
                    _replay(net, batch, end=bn.name)
            finally:
                h.remove()
            if m.mean is None:
                continue
            mean, var = m.mean, m.var_unbiased
            with torch.no_grad():
                bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
                bn.running_var.copy_(var.to(bn.running_var.dtype))
                bn.factor.fill_(1.0)
            out[bn.name] = (mean.numpy(), var.numpy())
    finally:
        for bn, (g, u) in zip(bns, saved):
            bn.use_global_stats, bn.update_statistics = g, u
    return out


def write_recalibrated(weights_param, net, stats, path: str) -> None:
    """The original caffemodel with the BatchNorm statistics replaced (layout of the net's layer)."""
    layers = net.layer_dict
    for lp in weights_param.layer:
        if lp.name not in stats or lp.type != "BatchNorm":
            continue
        arrays = layers[lp.name].caffe_blob_arrays()
        if getattr(layers[lp.name], "scale_bias", False):
            # written in the layer's own order [mean, var, correction, scale, bias]: say so, so a
            # prototxt that leaves scale/bias implicit takes this file back
            lp.batch_norm_param.scale_bias = True
        del lp.blobs[:]
        for a in arrays:
            lp.blobs.add().CopyFrom(fileio.array_to_blob(a))
    present = {lp.name for lp in weights_param.layer}
    for name in stats:
        if name not in present:
            lp = weights_param.layer.add(name=name, type="BatchNorm")
            for a in layers[name].caffe_blob_arrays():
                lp.blobs.add().CopyFrom(fileio.array_to_blob(a))
    fileio.write_caffemodel(weights_param, path)


def finite(x: float) -> bool:
    return math.isfinite(x)
