"""DIGITS' DetectNet scoring layers, which DetectNet prototxts name as
``python_param { module: "caffe.layers.detectnet.mean_ap" layer: "ScoreDetections" }`` (and
``"mAP"``); :mod:`brewnet.layers.python` maps that module name to this module.

Written by us over :mod:`brewnet.detection.scoring` (digits-other-jobs.md §3.6): ``ScoreDetections``
tags each image's detections against its ground truth (IoU >= 0.7), ``mAP`` counts the tags of
the batch into DetectNet's precision, recall and "mAP" (precision x recall / 100, percentages).
No backward (TEST phase only).
"""
from __future__ import annotations

from ...detection.boxes import MAX_BOXES, from_bbox_list
from ...detection.scoring import detectnet_map, score_detections
from ...errors import NetError
from ..python import Layer

#: rows of a scored list: up to MAX_BOXES detections and MAX_BOXES missed ground-truth boxes.
#: (DIGITS' top has MAX_BOXES rows, which an image with many false positives and misses overflows.)
SCORED_ROWS = 2 * MAX_BOXES

#: DIGITS' match threshold of ScoreDetections
DETECTNET_IOU = 0.7


def _box_lists(blob, what: str):
    if len(blob.shape) != 3 or blob.shape[2] != 5:
        raise NetError(f"{what}: expected box lists (N, rows, 5), got {blob.shape}")


class ScoreDetections(Layer):
    """Bottoms: the ground-truth list (N, 50, 5) (ClusterGroundtruth's top) and the detection list
    (N, 50, 5) (ClusterDetections'); top (N, 100, 5) of ``[x1, y1, x2, y2, tag]``, tag 1 a true
    positive, 2 a false positive, 3 a missed ground-truth box, zero rows after."""

    def setup(self, bottom, top):
        if len(bottom) != 2 or len(top) != 1:
            raise NetError(f"ScoreDetections takes 2 bottoms (ground-truth list, detection list) and 1 top, "
                           f"got {len(bottom)} and {len(top)}")
        _box_lists(bottom[0], "ScoreDetections (ground truth)")
        _box_lists(bottom[1], "ScoreDetections (detections)")
        if bottom[0].shape[0] != bottom[1].shape[0]:
            raise NetError(f"ScoreDetections: {bottom[0].shape[0]} images of ground truth but "
                           f"{bottom[1].shape[0]} of detections")

    def reshape(self, bottom, top):
        top[0].reshape(bottom[0].shape[0], SCORED_ROWS, 5)

    def forward(self, bottom, top):
        gt, det = bottom[0].data, bottom[1].data
        out = top[0].data
        out[...] = 0
        for n in range(gt.shape[0]):
            scored = score_detections(from_bbox_list(gt[n]), from_bbox_list(det[n]), DETECTNET_IOU)
            if len(scored) > SCORED_ROWS:
                raise NetError(f"ScoreDetections: image {n} of the batch has {len(scored)} scored boxes, "
                               f"more than {SCORED_ROWS}")
            out[n, :len(scored)] = scored



class mAP(Layer):  # noqa: N801  (DIGITS' class name, as prototxts spell it)
    """Bottom: ScoreDetections' top; three tops of shape (1,): DetectNet's "mAP", precision and
    recall of the batch, in percent.  param_str is accepted and unused, as in DIGITS."""

    def setup(self, bottom, top):
        if len(bottom) != 1 or len(top) != 3:
            raise NetError(f"mAP takes 1 bottom (the scored list) and 3 tops (mAP, precision, recall), "
                           f"got {len(bottom)} and {len(top)}")
        _box_lists(bottom[0], "mAP")

    def reshape(self, bottom, top):
        for t in top:
            t.reshape(1)

    def forward(self, bottom, top):
        result = detectnet_map(list(bottom[0].data))
        for t, key in zip(top, ("mAP", "precision", "recall")):
            t.data[0] = result[key]

