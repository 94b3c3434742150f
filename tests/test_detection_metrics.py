"""DetectionMetrics (brewnet/solver/task_metrics.py): the true average precision at IoU 0.5 that
a test phase reports beside DetectNet's "mAP", on hand-made box lists."""
from __future__ import annotations

import numpy as np
import pytest

from brewnet.solver.task_metrics import DetectionMetrics, merge_close_boxes


def lists(*images):
    """(N, 50, 5) box lists, the given rows first, zero padding after."""
    out = np.zeros((len(images), 50, 5))
    for n, rows in enumerate(images):
        if rows:
            out[n, :len(rows)] = rows
    return out


def test_one_hit_one_false_positive_of_two_objects():
    m = DetectionMetrics()
    m.update(lists([[10, 10, 50, 40, 0], [100, 10, 140, 60, 0]]),
             lists([[11, 10, 50, 41, 3.0], [200, 10, 240, 40, 2.0]]))
    # rank 1 a hit (precision 1 at recall 0.5), rank 2 a false positive: AP = 0.5
    assert m.result()["average_precision"] == pytest.approx(0.5)


def test_a_low_confidence_false_positive_costs_nothing_ranked_last():
    m = DetectionMetrics()
    m.update(lists([[10, 10, 50, 40, 0]]), lists([[200, 10, 240, 40, 1.0], [10, 10, 50, 40, 2.0]]))
    assert m.result()["average_precision"] == pytest.approx(1.0)


def test_batches_accumulate():
    m = DetectionMetrics()
    m.update(lists([[10, 10, 50, 40, 0]]), lists([[10, 10, 50, 40, 2.0]]))
    m.update(lists([[10, 10, 50, 40, 0]]), lists([]))  # a missed object in the second batch
    assert m.result()["average_precision"] == pytest.approx(0.5)


def test_float32_copies_of_one_ground_truth_box_are_merged():
    # ClusterGroundtruth rebuilds a box from each of its cells: float32 offsets give near copies
    box = np.array([10, 10, 50, 40, 0], dtype=np.float64)
    copy = box + np.array([1e-5, -1e-5, 0, 2e-6, 0])
    assert len(merge_close_boxes(np.stack([box, copy]))) == 1
    assert len(merge_close_boxes(np.stack([box, box + [0.5, 0, 0, 0, 0]]))) == 2
    m = DetectionMetrics()
    m.update(lists([box.tolist(), copy.tolist()]), lists([[10, 10, 50, 40, 1.0]]))
    assert m.result()["average_precision"] == pytest.approx(1.0)  # not 0.5: one object, found


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="box lists"):
        DetectionMetrics().update(np.zeros((1, 50, 4)), np.zeros((1, 50, 5)))
