"""Loss layers and Accuracy, with BVLC Caffe's normalisation, ignore_label and shape rules.

Every loss top is a scalar (shape ()).  Labels arrive as float blobs and are truncated to
integers as Caffe's ``static_cast<int>`` does; a label out of range is an error at forward (Caffe
only DCHECKs it).  Caffe's LossLayer requires bottom 0 and bottom 1 to agree on shape(0).
"""
from __future__ import annotations

import weakref

import numpy as np
import torch

from .base import Layer, canonical_axis, count, register

FLT_MIN = float(np.finfo(np.float32).tiny)
LOG_FLT_MIN_NEG = float(-np.log(FLT_MIN))  # Caffe's largest per-sample softmax loss, -log(FLT_MIN)
LOG_THRESHOLD = 1e-20  # MultinomialLogisticLoss's kLOG_THRESHOLD


def _normalization(param, default):
    """LossParameter mode: ``normalization`` if given, else legacy ``normalize`` (true: VALID,
    false: BATCH_SIZE), else the layer's default."""
    lp = param.loss_param
    if lp.HasField("normalization"):
        return lp.normalization
    if lp.HasField("normalize"):
        return lp.VALID if lp.normalize else lp.BATCH_SIZE
    return default


def _normalizer(layer, mode, outer: int, inner: int, valid):
    """Caffe's LossLayer::GetNormalizer, floored at 1.  ``valid`` may be a tensor."""
    lp = layer.param.loss_param
    if mode == lp.FULL:
        n = outer * inner
    elif mode == lp.VALID:
        n = valid
    elif mode == lp.BATCH_SIZE:
        n = outer
    elif mode == lp.NONE:
        n = 1
    else:
        layer.fail(f"unknown normalization mode {mode}")
    if isinstance(n, torch.Tensor):
        return n.clamp(min=1)
    return max(1, n)


class _LossLayer(Layer):
    """Caffe's LossLayer: two bottoms (or more), a scalar top, no gradient to the labels."""

    num_bottoms = (2, 2)
    is_loss = True

    def check_first_axis(self, bottom_shapes):
        a, b = tuple(bottom_shapes[0]), tuple(bottom_shapes[1])
        if not a or not b or a[0] != b[0]:
            self.fail(f"the data and label should have the same first dimension: {a} and {b}")

    def allow_force_backward(self, bottom_index):
        return bottom_index != 1



def defers_checks(device: torch.device) -> bool:
    """Whether checks that read values back wait for a sync point (accelerators: reading a value
    each iteration would stall the device queue)."""
    return device.type != "cpu"


#: layers whose deferred label check is pending -> (device bool "a label was out of range", C)
_pending_label_checks: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _check_labels(layer, labels, num_classes, valid=None) -> torch.Tensor:
    """Caffe DCHECKs 0 <= label < C; here an out-of-range label is always an error.

    On the CPU it is raised at once.  On an accelerator the check is recorded on the device and
    raised at the next sync point (raise_deferred_label_errors: pycaffe forward, the solver's
    display, test and the end of step), and the labels the kernels see are clamped into
    range meanwhile, so no device-side assert takes the CUDA context down.  Returns the labels
    to use."""
    if not defers_checks(labels.device):
        lab = labels if valid is None else labels[valid]
        if lab.numel():
            lo, hi = torch.aminmax(lab)
            if int(lo) < 0 or int(hi) >= num_classes:
                bad = lab[(lab < 0) | (lab >= num_classes)][0]
                layer.fail(f"label {int(bad)} out of range [0, {num_classes})")
        return labels
    out = (labels < 0) | (labels >= num_classes)
    if valid is not None:
        out = out & valid
    flag = out.any()
    previous = _pending_label_checks.get(layer)
    _pending_label_checks[layer] = (flag if previous is None else previous[0] | flag, num_classes)
    return labels.clamp(0, num_classes - 1)


def raise_deferred_label_errors() -> None:
    """Raise the first out-of-range label recorded since the last call (one device sync)."""
    if not _pending_label_checks:
        return
    pending = list(_pending_label_checks.items())
    _pending_label_checks.clear()
    flags = torch.stack([flag.to("cpu") for _, (flag, _) in pending]).tolist()
    for (layer, (_, num_classes)), bad in zip(pending, flags):
        if bad:
            layer.fail(f"a label out of range [0, {num_classes}) (found at a sync point; on an "
                       "accelerator labels are checked without stopping the device each iteration)")


def _softmax_axis_setup(layer, bottom_shapes, axis_value, what="softmax"):
    shape = tuple(bottom_shapes[0])
    axis = canonical_axis(axis_value, len(shape), layer)
    outer, inner = count(shape, 0, axis), count(shape, axis + 1)
    if outer * inner != count(bottom_shapes[1]):
        layer.fail(f"number of labels must match number of predictions: prediction shape {shape} with "
                   f"{what} axis {axis} needs {outer * inner} labels, label shape {tuple(bottom_shapes[1])} "
                   f"has {count(bottom_shapes[1])}")
    return axis, outer, inner


def _labels_like(x, label, axis):
    """Labels reshaped to (outer, 1, inner) against x viewed as (outer, C, inner)."""
    outer = count(x.shape, 0, axis)
    return label.detach().reshape(outer, 1, -1).long()


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(_LossLayer):
    """-log softmax(x)[label] summed over non-ignored positions, divided by the normaliser
    (``normalization`` VALID by default; legacy ``normalize``); floor log at FLT_MIN like Caffe.
    An optional second top is the softmax output (Caffe's backward ignores its diff)."""

    num_tops = (1, 2)

    def setup(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        _softmax_axis_setup(self, bottom_shapes, self.param.softmax_param.axis)
        return [()] + ([tuple(bottom_shapes[0])] if len(self.param.top) > 1 else [])

    def forward(self, x, label):
        lp = self.param.loss_param
        axis = canonical_axis(self.param.softmax_param.axis, x.dim(), self)
        outer, c = count(x.shape, 0, axis), x.shape[axis]
        if not lp.HasField("ignore_label") and len(self.param.top) == 1:
            return self._forward_all_valid(x, label, axis, outer, c)
        logp = torch.log_softmax(x, dim=axis)
        lab = _labels_like(x, label, axis)
        valid = lab != lp.ignore_label if lp.HasField("ignore_label") else torch.ones_like(lab, dtype=torch.bool)
        lab = _check_labels(self, lab, c, valid)
        nll = -logp.reshape(outer, c, -1).gather(1, torch.where(valid, lab, 0))
        # Caffe: -log(max(p, FLT_MIN)); its gradient is p - 1 even where the floor applies
        nll = nll - (nll - nll.clamp(max=LOG_FLT_MIN_NEG)).detach()
        loss = torch.where(valid, nll, 0).sum()
        inner = count(x.shape, axis + 1)
        norm = _normalizer(self, _normalization(self.param, lp.VALID), outer, inner, valid.sum())
        loss = loss / norm
        if len(self.param.top) > 1:
            return loss, logp.exp().detach()
        return loss

    def _forward_all_valid(self, x, label, axis, outer, c):
        """The usual case (no ignore_label, loss top only) in fewer ops: PyTorch's fused cross
        entropy, then Caffe's FLT_MIN floor as a constant correction (its gradient is p - 1
        even where the floor applies)."""
        x3 = x if (x.dim() == 2 and axis == 1) else x.reshape(outer, c, -1)
        lab = label.detach().reshape((outer,) + tuple(x3.shape[2:])).long()
        lab = _check_labels(self, lab, c)
        nll = torch.nn.functional.cross_entropy(x3, lab, reduction="none")
        loss = nll.sum()
        # rarely needed: subtract what the floor cuts off (on an accelerator always, unread)
        if defers_checks(nll.device) or float(nll.detach().max()) > LOG_FLT_MIN_NEG:
            with torch.no_grad():
                excess = (nll - LOG_FLT_MIN_NEG).clamp_(min=0).sum()
            loss = loss - excess
        inner = count(x.shape, axis + 1)
        norm = _normalizer(self, _normalization(self.param, self.param.loss_param.VALID), outer, inner,
                           outer * inner)
        return loss / norm


@register("EuclideanLoss")
class EuclideanLoss(_LossLayer):
    """sum((a - b)^2) / (2 N), N = shape(0); gradients to both bottoms (b is not a label)."""

    def setup(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        a, b = bottom_shapes
        if count(a, 1) != count(b, 1):
            self.fail(f"inputs must have the same dimension: {tuple(a)} and {tuple(b)}")
        return [()]

    def allow_force_backward(self, bottom_index):
        return True

    def forward(self, a, b):
        d = a - b.reshape(a.shape)
        return (d * d).sum() / a.shape[0] / 2


@register("L1Loss")
class L1Loss(_LossLayer):
    """NVCaffe's L1Loss (BVLC has none): sum(|a - b|) / N, N = shape(0) (the batch, not the
    element count); gradients sign(a - b) / N to a and the opposite to b, sign(0) = 0 (both
    bottoms may learn, as in NVCaffe).  Bottoms need the same count per item."""

    def setup(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        a, b = bottom_shapes
        if count(a, 1) != count(b, 1):
            self.fail(f"inputs must have the same count per item: {tuple(a)} and {tuple(b)}")
        return [()]

    def allow_force_backward(self, bottom_index):
        return True

    def forward(self, a, b):
        return (a - b.reshape(a.shape)).abs().sum() / a.shape[0]


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(_LossLayer):
    """Cross-entropy of sigmoid(x) against targets in [0, 1], in Caffe's stable form
    ``max(x, 0) - x t + log(1 + exp(-|x|))``.  Normalisation: ``normalization`` if given, else
    legacy ``normalize`` (true: VALID), else BATCH_SIZE (BVLC's default for this layer);
    ``ignore_label`` skips targets whose integer value equals it (VALID counts the rest)."""

    def setup(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        if count(bottom_shapes[0]) != count(bottom_shapes[1]):
            self.fail(f"inputs must have the same count: {tuple(bottom_shapes[0])} and {tuple(bottom_shapes[1])}")
        return [()]

    def forward(self, x, target):
        lp = self.param.loss_param
        t = target.detach().reshape(x.shape)
        per = x.clamp(min=0) - x * t + torch.log1p(torch.exp(-x.abs()))
        if lp.HasField("ignore_label"):
            valid = t.long() != lp.ignore_label  # static_cast<int>(target)
            per = torch.where(valid, per, 0)
            n_valid = valid.sum()
        else:
            n_valid = x.numel()
        mode = _normalization(self.param, lp.BATCH_SIZE)
        return per.sum() / _normalizer(self, mode, x.shape[0], count(x.shape, 1), n_valid)


@register("HingeLoss")
class HingeLoss(_LossLayer):
    """sum over n, k of max(0, 1 - t_nk x_nk) / N (t = +1 for the label class, -1 otherwise);
    ``norm: L2`` squares each term.  x is (N, ...) flattened per num."""

    def setup(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        if count(bottom_shapes[1]) != bottom_shapes[0][0]:
            self.fail(f"needs one label per num: data {tuple(bottom_shapes[0])}, label {tuple(bottom_shapes[1])}")
        return [()]

    def forward(self, x, label):
        p = self.param.hinge_loss_param
        n = x.shape[0]
        flat = x.reshape(n, -1)
        lab = label.detach().reshape(n, 1).long()
        lab = _check_labels(self, lab, flat.shape[1])
        sign = torch.ones_like(flat).scatter(1, lab, -1.0)
        margin = torch.relu(1 + sign * flat)
        if p.norm == p.L2:
            return (margin * margin).sum() / n
        return margin.sum() / n


@register("InfogainLoss")
class InfogainLoss(_LossLayer):
    """-sum_l H[label, l] log(max(softmax(x)_l, FLT_MIN)), normalised like SoftmaxWithLoss (BVLC
    master applies the softmax itself).  H (C x C) comes from ``infogain_loss_param.source`` (a
    BlobProto file) or a third bottom (no gradient).  Optional second top: the probabilities."""

    num_bottoms = (2, 3)
    num_tops = (1, 2)

    def setup(self, bottom_shapes):
        p = self.param.infogain_loss_param
        self.check_first_axis(bottom_shapes)
        axis, _, _ = _softmax_axis_setup(self, bottom_shapes, p.axis)
        c = bottom_shapes[0][axis]
        if len(bottom_shapes) > 2:
            h_shape = tuple(bottom_shapes[2])
        else:
            if not p.source:
                self.fail("give infogain_loss_param.source or a third bottom with the H matrix")
            if not hasattr(self, "_h"):
                self._h = self._read_h(p.source)
            h_shape = tuple(self._h.shape)
        if count(h_shape) != c * c:
            self.fail(f"the infogain matrix must be {c} x {c} for {c} classes, got shape {h_shape}")
        return [()] + ([tuple(bottom_shapes[0])] if len(self.param.top) > 1 else [])

    def _read_h(self, path):
        from ..proto import caffe_pb2
        blob = caffe_pb2.BlobProto()
        try:
            with open(path, "rb") as f:
                blob.ParseFromString(f.read())
        except (OSError, Exception) as e:  # noqa: BLE001 - unreadable or not a BlobProto
            self.fail(f"cannot read the infogain matrix from {path!r}: {e}")
        values = np.asarray(blob.double_data if len(blob.double_data) else blob.data, dtype=np.float64)
        return torch.as_tensor(values)

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def forward(self, x, label, h=None):
        p = self.param.infogain_loss_param
        lp = self.param.loss_param
        axis = canonical_axis(p.axis, x.dim(), self)
        outer, c = count(x.shape, 0, axis), x.shape[axis]
        h = (self._h if h is None else h.detach()).to(x.device, x.dtype).reshape(c, c)
        logp = torch.log_softmax(x, dim=axis).reshape(outer, c, -1)
        logp = logp - (logp - logp.clamp(min=np.log(FLT_MIN))).detach()
        lab = _labels_like(x, label, axis)
        valid = lab != lp.ignore_label if lp.HasField("ignore_label") else torch.ones_like(lab, dtype=torch.bool)
        lab = _check_labels(self, lab, c, valid)
        rows = h[torch.where(valid, lab, 0)[:, 0]].transpose(1, 2)  # (outer, C, inner)
        loss = -torch.where(valid, rows * logp, 0).sum()
        norm = _normalizer(self, _normalization(self.param, lp.VALID), outer, count(x.shape, axis + 1), valid.sum())
        loss = loss / norm
        if len(self.param.top) > 1:
            return loss, torch.softmax(x, dim=axis).detach()
        return loss


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(_LossLayer):
    """-sum_n log(max(p[n, label_n], 1e-20)) / N on probabilities p (N, C, 1, 1); Caffe's
    gradient -1 / max(p, 1e-20) also where the floor applies."""

    def setup(self, bottom_shapes):
        self.check_first_axis(bottom_shapes)
        if count(bottom_shapes[1]) != bottom_shapes[0][0]:
            self.fail(f"needs one label per num: data {tuple(bottom_shapes[0])}, label {tuple(bottom_shapes[1])}")
        return [()]

    def forward(self, p, label):
        n = p.shape[0]
        flat = p.reshape(n, -1)
        lab = label.detach().reshape(n, 1).long()
        lab = _check_labels(self, lab, flat.shape[1])
        prob = flat.gather(1, lab)
        prob = prob + (prob.clamp(min=LOG_THRESHOLD) - prob).detach()
        return -torch.log(prob).sum() / n


@register("ContrastiveLoss")
class ContrastiveLoss(_LossLayer):
    """Caffe's contrastive loss over pairs (a, b) of shape (N, C, 1, 1) and similarity y (N):
    similar pairs add d^2, dissimilar ones max(margin - d, 0)^2 (``legacy_version``:
    max(margin - d^2, 0)); the sum is divided by 2N.  Caffe's backward for dissimilar pairs
    divides by (d + 1e-4) instead of d; this layer does the same."""

    num_bottoms = (3, 3)

    def setup(self, bottom_shapes):
        a, b, y = (tuple(s) for s in bottom_shapes)
        self.check_first_axis(bottom_shapes)
        if a != b or count(a, 1) != (a[1] if len(a) > 1 else 1) or count(y) != a[0]:
            self.fail(f"takes a and b of the same shape (N, C, 1, 1) and one similarity per pair: "
                      f"got {a}, {b}, {y}")
        return [()]

    def allow_force_backward(self, bottom_index):
        return bottom_index != 2

    def forward(self, a, b, y):
        p = self.param.contrastive_loss_param
        n = a.shape[0]
        d = (a - b).reshape(n, -1)
        dist_sq = (d * d).sum(1)
        similar = y.detach().reshape(n).long() != 0
        if p.legacy_version:
            dissim = torch.relu(p.margin - dist_sq)
        else:
            dist = torch.sqrt(dist_sq.detach())
            mdist = (p.margin - dist).clamp(min=0)
            value = mdist * mdist
            # gradient -2 * mdist / (dist + 1e-4) * (a - b), as Caffe computes it
            coef = (2 * mdist / (dist + 1e-4)).detach()
            surrogate = -coef * dist_sq / 2
            dissim = value + surrogate - surrogate.detach()
        return torch.where(similar, dist_sq, dissim).sum() / (2 * n)


@register("Accuracy")
class Accuracy(Layer):
    """Top-k accuracy over ``axis`` (default 1), skipping ``ignore_label``.  BVLC's rule: a
    prediction is correct when fewer than ``top_k`` other classes score >= the true class (so a
    tie counts against it).  Optional second top: per-class accuracy (C,), 0 for an absent class.
    No backward."""

    num_bottoms = (2, 2)
    num_tops = (1, 2)
    has_backward = False

    def setup(self, bottom_shapes):
        p = self.param.accuracy_param
        if count(bottom_shapes[1]) and p.top_k > count(bottom_shapes[0]) // count(bottom_shapes[1]):
            self.fail(f"top_k {p.top_k} must be <= the number of classes "
                      f"({count(bottom_shapes[0]) // count(bottom_shapes[1])}) for data "
                      f"{tuple(bottom_shapes[0])} and label {tuple(bottom_shapes[1])}")
        axis, _, _ = _softmax_axis_setup(self, bottom_shapes, p.axis, "label")
        return [()] + ([(bottom_shapes[0][axis],)] if len(self.param.top) > 1 else [])

    def forward(self, x, label):
        p = self.param.accuracy_param
        x = x.detach()
        axis = canonical_axis(p.axis, x.dim(), self)
        outer, c = count(x.shape, 0, axis), x.shape[axis]
        scores = x.reshape(outer, c, -1)
        lab = _labels_like(x, label, axis)
        valid = lab != p.ignore_label if p.HasField("ignore_label") else torch.ones_like(lab, dtype=torch.bool)
        lab = _check_labels(self, lab, c, valid)
        lab0 = torch.where(valid, lab, 0)
        true_score = scores.gather(1, lab0)
        better = (scores >= true_score).sum(1, keepdim=True) - 1
        correct = (better < p.top_k) & valid
        n = valid.sum()
        acc = torch.where(n > 0, correct.sum().to(x.dtype) / n.clamp(min=1), torch.zeros((), dtype=x.dtype,
                                                                                          device=x.device))
        if len(self.param.top) == 1:
            return acc
        totals = torch.zeros(c, dtype=x.dtype, device=x.device).index_add_(
            0, lab0[valid], torch.ones_like(lab0[valid], dtype=x.dtype))
        hits = torch.zeros(c, dtype=x.dtype, device=x.device).index_add_(
            0, lab0[correct], torch.ones_like(lab0[correct], dtype=x.dtype))
        per_class = torch.where(totals > 0, hits / totals.clamp(min=1), torch.zeros_like(totals))
        return acc, per_class
