"""DIGITS' DetectNet clustering layers, which DetectNet prototxts name as
``python_param { module: "caffe.layers.detectnet.clustering" layer: "ClusterDetections" }`` (and
``"ClusterGroundtruth"``); :mod:`brewnet.layers.python` maps that module name to this module.

Written by us over :mod:`brewnet.detection.clustering` (DIGITS 0.17's behaviour, digits-other-jobs.md
§3.5).  Each top is one class's box list, (N, 50, 5) rows ``[x1, y1, x2, y2, value]`` zero-padded;
more than 50 boxes for one image and class is an error, as in DIGITS.  No backward: boxes are
not differentiable (the layers run in the TEST phase only).
"""
from __future__ import annotations

import numpy as np

from ...detection.boxes import MAX_BOXES, to_bbox_list
from ...detection.clustering import (cluster_detections, cluster_groundtruth, parse_cluster_param_str,
                                     parse_groundtruth_param_str)
from ...errors import NetError
from ..python import Layer


class _ClusterLayer(Layer):
    """What both cluster layers share: param_str, the (coverage, bboxes) bottoms, one top per class."""

    kind = ""        # the DIGITS class name, for messages
    parse = None     # str -> ClusterParams
    hint = ""        # what to change when an image has too many boxes

    def setup(self, bottom, top):
        try:
            self.params = type(self).parse(self.param_str)
        except ValueError as e:
            raise NetError(str(e)) from None
        k = self.params.num_classes
        if len(bottom) != 2:
            raise NetError(f"{self.kind} takes 2 bottoms (coverage, bboxes), got {len(bottom)}")
        if len(top) != k:
            raise NetError(f"{self.kind}: param_str {self.param_str!r} has num_classes {k}, so the layer needs "
                           f"{k} top(s) (one box list per class), got {len(top)}")
        coverage, bboxes = bottom[0].shape, bottom[1].shape
        if len(coverage) != 4 or len(bboxes) != 4 or coverage[1] != k or bboxes[1] != 4 \
                or coverage[0] != bboxes[0] or coverage[2:] != bboxes[2:]:
            raise NetError(f"{self.kind}: expected coverage (N, {k}, Gy, Gx) and bboxes (N, 4, Gy, Gx), "
                           f"got {coverage} and {bboxes}")

    def reshape(self, bottom, top):
        for t in top:
            t.reshape(bottom[0].shape[0], MAX_BOXES, 5)

    def forward(self, bottom, top):
        coverage, bboxes = bottom[0].data, bottom[1].data   # (N, K, Gy, Gx), (N, 4, Gy, Gx)
        for n in range(coverage.shape[0]):
            try:
                per_class = self.cluster(coverage[n], bboxes[n])
            except ValueError as e:
                raise NetError(f"{self.kind}: {e}") from None
            for k, boxes in enumerate(per_class):
                if len(boxes) > MAX_BOXES:
                    raise NetError(f"{self.kind}: image {n} of the batch, class {k}: {len(boxes)} boxes, more "
                                   f"than a box list holds (MAX_BOXES = {MAX_BOXES}); {self.hint}")
                top[k].data[n] = to_bbox_list(boxes)

    def cluster(self, coverage: np.ndarray, bboxes: np.ndarray) -> list[np.ndarray]:
        raise NotImplementedError



class ClusterDetections(_ClusterLayer):
    """Bottoms ``coverage`` (N, K, Gy, Gx) and ``bboxes`` (N, 4, Gy, Gx); param_str ``image_size_x,
    image_size_y, stride, gridbox_cvg_threshold, gridbox_rect_thresh, gridbox_rect_eps,
    min_height[, num_classes]``; K tops (N, 50, 5) of ``[x1, y1, x2, y2, ln(votes)]``."""

    kind = "ClusterDetections"
    parse = staticmethod(parse_cluster_param_str)
    hint = "raise gridbox_cvg_threshold or gridbox_rect_thresh (an untrained net covers everything)"

    def cluster(self, coverage, bboxes):
        return cluster_detections(coverage, bboxes, **self.params.detection_options())


class ClusterGroundtruth(_ClusterLayer):
    """Bottoms ``coverage-label`` (N, K, Gy, Gx) and ``bbox-label`` (N, 4, Gy, Gx); param_str
    ``image_size_x, image_size_y, stride[, num_classes]``; K tops (N, 50, 5) of ``[x1, y1, x2, y2,
    0]``, each ground-truth box once."""

    kind = "ClusterGroundtruth"
    parse = staticmethod(parse_groundtruth_param_str)
    hint = "the dataset has more objects in one image than DetectNet's box lists hold"

    def cluster(self, coverage, bboxes):
        return cluster_groundtruth(coverage, bboxes, **self.params.groundtruth_options())


#: DIGITS' own spelling is ClusterGroundtruth; the issue and some of its docs write GroundTruth
ClusterGroundTruth = ClusterGroundtruth
