"""brewnet.solver.task_metrics' detection tracker: a true average precision at IoU 0.5 over
DetectNet's box lists, found from DIGITS' ScoreDetections layer; hand-made cases."""
from __future__ import annotations

import numpy as np
import pytest

from brewnet.solver.task_metrics import DetectionMetrics, merge_close_boxes


def lists(*images, rows=50):
    out = np.zeros((len(images), rows, 5), dtype=np.float32)
    for n, boxes in enumerate(images):
        for r, b in enumerate(boxes):
            out[n, r, :len(b)] = b
    return out


def test_perfect_detections_give_ap_one():
    gt = lists([(10, 10, 40, 30)], [(50, 20, 90, 60), (0, 0, 20, 20)])
    det = lists([(11, 10, 40, 31, 5.0)], [(50, 20, 90, 60, 3.0), (1, 0, 20, 20, 2.0)])
    m = DetectionMetrics()
    m.update(gt, det)
    assert m.result()["average_precision"] == pytest.approx(1.0)


def test_ranked_false_positive_and_miss():
    # image 0: a true positive (conf 3) and a false positive (conf 2); image 1: one object missed
    gt = lists([(10, 10, 40, 30)], [(50, 20, 90, 60)])
    det = lists([(10, 10, 40, 30, 3.0), (100, 100, 120, 120, 2.0)], [])
    m = DetectionMetrics()
    m.update(gt, det)
    # ranked: TP (recall 0.5, precision 1), FP: AP = 0.5 * 1
    assert m.result()["average_precision"] == pytest.approx(0.5)


def test_batches_accumulate():
    m = DetectionMetrics()
    m.update(lists([(10, 10, 40, 30)]), lists([(10, 10, 40, 30, 1.0)]))
    m.update(lists([(10, 10, 40, 30)]), lists([]))
    assert m.result()["average_precision"] == pytest.approx(0.5)


def test_float32_copies_of_one_ground_truth_box_are_merged():
    # ClusterGroundtruth rebuilds one box per covered cell; float32 offsets differ in the last bits
    a = np.float32(37.3)
    copies = [(float(a), 10, 60, 30), (float(np.nextafter(a, np.float32(99))), 10, 60, 30)]
    assert len(merge_close_boxes(np.array(copies))) == 1
    m = DetectionMetrics()
    m.update(lists(copies), lists([(37.3, 10, 60, 30, 1.0)]))
    assert m.result()["average_precision"] == pytest.approx(1.0)  # not 0.5: the copy is no missed object
    assert len(merge_close_boxes(np.array([(0, 0, 10, 10), (0.5, 0, 10, 10)]))) == 2


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"\(N, rows, 5\)"):
        DetectionMetrics().update(np.zeros((1, 50, 4)), np.zeros((1, 50, 5)))
