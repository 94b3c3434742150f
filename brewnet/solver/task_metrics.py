"""Task metrics of the test phase, computed by brewnet over all test batches (DIGITS' generic
jobs graph them): segmentation — a confusion matrix, pixel accuracy, per-class IoU, mean IoU;
regression — RMSE and MAE; detection — a true average precision at IoU 0.5.  ``brewnet infer
-evaluate`` uses the same classes, so the number the training log shows and the one inference gives
are computed one way.

Which layers give them (``trackers_for``): in a TEST-phase net, an ``Accuracy`` or
``SoftmaxWithLoss`` whose prediction has spatial size > 1 (segmentation; its ``ignore_label``
honoured, classes = the size of its class axis), and an ``EuclideanLoss`` or ``L1Loss``
(regression: bottom 0 − bottom 1), and DIGITS' ``ScoreDetections`` Python layer (detection: its
bottoms are the ground-truth and the detection box lists, (N, 50, 5) each; DetectNet's
EuclideanLoss and L1Loss are then training losses, not a regression task, and give no metrics).
Layers reading the same two blobs count once; with several, each name gets the prefix
``<layer name>/``.
"""
from __future__ import annotations

import math

import numpy as np

from ..detection.boxes import from_bbox_list
from ..detection.scoring import AveragePrecision

SEGMENTATION_LAYERS = ("Accuracy", "SoftmaxWithLoss")
REGRESSION_LAYERS = ("EuclideanLoss", "L1Loss")
#: the python_param modules of DIGITS' ScoreDetections layer (as prototxts name it, and ours)
SCORE_DETECTIONS_MODULES = ("caffe.layers.detectnet.mean_ap", "brewnet.layers.detectnet.mean_ap")
#: ground-truth boxes whose corners all lie within this many pixels are one box
GT_MERGE_PX = 0.01


def _array(x, dtype=None) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


class SegmentationMetrics:
    """A confusion matrix over batches of class scores and label maps.

    ``update(scores, labels)``: scores N×C×H×W (any spatial rank after the class axis 1),
    labels N×1×H×W or N×H×W (class indices; floats are truncated like Caffe's labels).  Pixels
    whose label is ``ignore_label`` are left out; another label outside 0..C-1 is an error.
    ``result()``: ``pixel_accuracy`` (correct / counted pixels), ``iou[k]`` = TP / (TP + FP + FN)
    for each class k that occurs in the labels or the predictions, ``mean_iou`` = their mean;
    fractions 0..1.  A class in neither has no ``iou[k]`` (its IoU is undefined)."""

    def __init__(self, num_classes: int, ignore_label: int | None = None):
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_label = None if ignore_label is None else int(ignore_label)
        self.confusion = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)  # [true, predicted]

    def update(self, scores, labels) -> None:
        scores = _array(scores)
        c = self.num_classes
        if scores.ndim < 2 or scores.shape[1] != c:
            raise ValueError(f"scores of shape {scores.shape}: expected N×{c}×... (class axis 1)")
        predicted = scores.argmax(axis=1).reshape(-1)
        truth = _array(labels).astype(np.int64).reshape(-1)  # truncation toward 0, as static_cast
        if truth.size != predicted.size:
            raise ValueError(f"labels of shape {_array(labels).shape} do not match scores {scores.shape} "
                             f"({truth.size} labels for {predicted.size} predictions)")
        keep = truth != self.ignore_label if self.ignore_label is not None else np.ones(truth.size, bool)
        truth, predicted = truth[keep], predicted[keep]
        bad = (truth < 0) | (truth >= c)
        if bad.any():
            raise ValueError(f"label {int(truth[bad][0])} is outside 0..{c - 1} "
                             f"(ignore_label {self.ignore_label})")
        self.confusion += np.bincount(truth * c + predicted, minlength=c * c).reshape(c, c)

    def result(self) -> dict[str, float]:
        m = self.confusion.astype(np.float64)
        total = m.sum()
        out: dict[str, float] = {"pixel_accuracy": float(np.trace(m) / total) if total else 0.0}
        tp = np.diag(m)
        union = m.sum(axis=0) + m.sum(axis=1) - tp
        ious = [float(tp[k] / union[k]) for k in range(self.num_classes) if union[k] > 0]
        out["mean_iou"] = float(np.mean(ious)) if ious else 0.0
        for k in range(self.num_classes):
            if union[k] > 0:
                out[f"iou[{k}]"] = float(tp[k] / union[k])
        return out


class RegressionMetrics:
    """RMSE and MAE of prediction − target over every element of every batch (float64 sums)."""

    def __init__(self):
        self.count = 0
        self.sum_sq = 0.0
        self.sum_abs = 0.0

    def update(self, pred, target) -> None:
        p = _array(pred, np.float64)
        t = _array(target, np.float64)
        if p.size != t.size:
            raise ValueError(f"prediction {p.shape} and target {t.shape} differ in size")
        d = p.reshape(-1) - t.reshape(-1)
        self.count += d.size
        self.sum_sq += float(np.dot(d, d))
        self.sum_abs += float(np.abs(d).sum())

    def result(self) -> dict[str, float]:
        if not self.count:
            return {"rmse": 0.0, "mae": 0.0}
        return {"rmse": math.sqrt(self.sum_sq / self.count), "mae": self.sum_abs / self.count}


def merge_close_boxes(boxes, tol: float = GT_MERGE_PX) -> np.ndarray:
    """The rows of ``boxes`` (m, >=4) less those whose four corners lie within ``tol`` pixels of an
    earlier kept row's, in order.

    ClusterGroundtruth rebuilds each ground-truth box from every cell the box covers (cell origin
    + float32 offsets), so one object's cells give corners that differ in float32's last bits and
    its exact-duplicate removal keeps several copies of one box; each copy after the first would
    count as a missed object.  DIGITS' ClusterGroundtruth has the same flaw (it removes exact
    duplicates only); the average precision here merges them."""
    boxes = np.asarray(boxes, dtype=np.float64)
    boxes = boxes.reshape(-1, boxes.shape[-1] if boxes.size else 5)
    keep = [i for i, row in enumerate(boxes)
            if not any(np.all(np.abs(row[:4] - boxes[k, :4]) <= tol) for k in range(i))]
    return boxes[keep]


class DetectionMetrics:
    """A true average precision (all-point, PASCAL VOC 2010+) at IoU 0.5 over batches of DetectNet's
    box lists.

    ``update(truths, detections)``: both (N, rows, 5), ``[x1, y1, x2, y2, ·]`` per row, all-zero
    rows padding (ClusterGroundtruth's and ClusterDetections' tops); a detection's confidence is
    its fifth column.  Ground-truth boxes of one image within GT_MERGE_PX are merged first
    (merge_close_boxes).  ``result()``: ``average_precision`` (0..1) — beside DIGITS' own "mAP",
    which is precision × recall at IoU 0.7, not an average precision."""

    IOU_THRESHOLD = 0.5

    def __init__(self):
        self.ap = AveragePrecision(self.IOU_THRESHOLD)

    def update(self, truths, detections) -> None:
        truths, detections = _array(truths, np.float64), _array(detections, np.float64)
        if truths.ndim != 3 or detections.ndim != 3 or truths.shape[2] != 5 or detections.shape[2] != 5 \
                or truths.shape[0] != detections.shape[0]:
            raise ValueError(f"detection metrics: expected ground-truth and detection box lists (N, rows, 5) "
                             f"of one batch, got {truths.shape} and {detections.shape}")
        gts = [merge_close_boxes(from_bbox_list(t)) for t in truths]
        self.ap.update(list(detections), gts)

    def result(self) -> dict[str, float]:
        return {"average_precision": float(self.ap.result()["average_precision"])}


class _Tracker:
    """One metric source of a net: the layer, its two bottoms, a fresh metrics object per test."""

    def __init__(self, layer, kind: str, prefix: str = ""):
        self.layer, self.kind, self.prefix = layer, kind, prefix
        self.bottoms = (layer.param.bottom[0], layer.param.bottom[1])
        self.axis = 1
        if kind == "segmentation":
            p = layer.param
            self.ignore = (p.accuracy_param.ignore_label if p.type == "Accuracy" and
                           p.accuracy_param.HasField("ignore_label") else
                           p.loss_param.ignore_label if p.type == "SoftmaxWithLoss" and
                           p.loss_param.HasField("ignore_label") else None)
            self.axis = int(p.accuracy_param.axis if p.type == "Accuracy" else p.softmax_param.axis)
        self.metrics = None

    def update(self, pred, other) -> None:
        if self.kind == "detection":  # bottoms: ground truth, detections
            if self.metrics is None:
                self.metrics = DetectionMetrics()
            self.metrics.update(pred, other)
            return
        if self.kind == "regression":
            if self.metrics is None:
                self.metrics = RegressionMetrics()
            self.metrics.update(pred, other)
            return
        axis = self.axis % pred.dim()
        if axis != 1:  # the class axis where SegmentationMetrics expects it
            pred = pred.reshape(int(np.prod(pred.shape[:axis])), pred.shape[axis], -1)
        if self.metrics is None:
            self.metrics = SegmentationMetrics(int(pred.shape[1]), self.ignore)
        self.metrics.update(pred, other)

    def result(self) -> dict[str, float]:
        if self.metrics is None:
            return {}
        return {self.prefix + k: v for k, v in self.metrics.result().items()}


def trackers_for(net) -> list[_Tracker]:
    """The task-metric sources of a (TEST-phase) net, from its layers and blob shapes."""
    found = []
    seen = set()
    origin: dict[str, str] = {}  # a Split layer's tops are its bottom (the net inserts Splits)
    for layer in net.layers:
        p = layer.param
        if p.type == "Split":
            for top in p.top:
                origin[top] = origin.get(p.bottom[0], p.bottom[0])
        if len(p.bottom) < 2:
            continue
        if p.type in SEGMENTATION_LAYERS:
            shape = tuple(net.blobs[p.bottom[0]].shape)
            axis = int(p.accuracy_param.axis if p.type == "Accuracy" else p.softmax_param.axis) % max(1, len(shape))
            if int(np.prod(shape[axis + 1:])) <= 1:
                continue  # classification: one prediction per image
            kind = "segmentation"
        elif p.type in REGRESSION_LAYERS:
            kind = "regression"
        elif p.type == "Python" and p.python_param.module in SCORE_DETECTIONS_MODULES \
                and p.python_param.layer == "ScoreDetections":
            kind = "detection"
        else:
            continue
        key = (kind, origin.get(p.bottom[0], p.bottom[0]), origin.get(p.bottom[1], p.bottom[1]))
        if key in seen:
            continue
        seen.add(key)
        found.append(_Tracker(layer, kind))
    if any(t.kind == "detection" for t in found):  # DetectNet: its losses are no regression task
        found = [t for t in found if t.kind != "regression"]
    if len(found) > 1:
        for t in found:
            t.prefix = f"{t.layer.name}/"
    return found
