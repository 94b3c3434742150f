"""Box overlap, DetectNet's scoring and "mAP" (digits-other-jobs.md §3.6) and the true average
precision (brewnet.detection.scoring), on cases worked out by hand in the comments."""
from __future__ import annotations

import numpy as np
import pytest

from brewnet.detection.boxes import iou, iou_matrix
from brewnet.detection.scoring import (FALSE_POSITIVE, MISS, TRUE_POSITIVE, AveragePrecision,
                                       all_point_average_precision, detectnet_map, score_detections)


@pytest.mark.parametrize("a, b, expected", [
    ((0, 0, 10, 10), (0, 0, 10, 10), 1.0),
    ((0, 0, 10, 10), (5, 0, 15, 10), 50 / 150),     # half overlap: 50 / (100 + 100 - 50)
    ((0, 0, 10, 10), (0, 0, 5, 10), 0.5),           # contained: 50 / 100
    ((0, 0, 10, 10), (10, 0, 20, 10), 0.0),         # touching edges: no +1 pixel
    ((0, 0, 10, 10), (20, 20, 30, 30), 0.0),
    ((5, 5, 5, 5), (5, 5, 5, 5), 0.0),              # empty union
    ((0, 0, 4, 4), (2, 2, 6, 6), 4 / 28),
])
def test_iou(a, b, expected):
    assert iou(a, b) == pytest.approx(expected)
    assert iou(b, a) == pytest.approx(expected)


def test_iou_matrix_shape_and_values():
    m = iou_matrix([[0, 0, 10, 10], [5, 0, 15, 10]], [[0, 0, 10, 10], [100, 0, 110, 10], [0, 0, 5, 10]])
    np.testing.assert_allclose(m, [[1, 0, 0.5], [1 / 3, 0, 0]])
    with pytest.raises(ValueError, match=r"\(n, 4\)"):
        iou_matrix([[0, 0, 1]], [[0, 0, 1, 1]])


def test_score_tags():
    a, b = [0, 0, 100, 100], [200, 0, 300, 100]
    near_a = [0, 0, 100, 90]        # IoU 0.9 with a
    loose_a = [0, 0, 100, 65]       # IoU 0.65 < 0.7
    far = [400, 0, 500, 100]
    gt = np.array([a, b], float)
    det = np.array([loose_a + [1.0], near_a + [0.5], near_a + [2.0], far + [3.0]])
    scored = score_detections(gt, det)
    # a takes the first free detection at IoU >= 0.7 (the second row), whatever the confidences;
    # the other copy of near_a is a false positive; b is missed
    assert scored[:, 4].tolist() == [FALSE_POSITIVE, TRUE_POSITIVE, FALSE_POSITIVE, FALSE_POSITIVE, MISS]
    np.testing.assert_allclose(scored[:, :4], [loose_a, near_a, near_a, far, b])
    assert score_detections(gt, det, iou_threshold=0.6)[:, 4].tolist() == [1, 2, 2, 2, 3]
    # the first ground-truth box claims a shared detection; the second then misses
    both = score_detections(np.array([a, a], float), np.array([near_a]))
    assert both[:, 4].tolist() == [TRUE_POSITIVE, MISS]
    assert score_detections(np.zeros((0, 5)), np.zeros((0, 5))).shape == (0, 5)


def test_detectnet_map_over_a_batch():
    a, b, c = [0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]
    image1 = score_detections([a, b], [a + [1], b + [1], c + [1]])   # 2 TP, 1 FP
    image2 = score_detections([a, b, c], [a + [1]])                  # 1 TP, 2 misses
    padded = np.zeros((50, 5))
    padded[:len(image2)] = image2                                    # padding rows are not counted
    result = detectnet_map([image1, padded])
    # TP 3, FP 1, misses 2: precision 75 %, recall 60 %, "mAP" = 75 * 60 / 100 = 45
    assert result == pytest.approx({"mAP": 45.0, "precision": 75.0, "recall": 60.0})
    assert detectnet_map([np.zeros((50, 5))]) == {"mAP": 0.0, "precision": 0.0, "recall": 0.0}


def _image(*boxes):
    return np.array(boxes, float).reshape(-1, 5)


def test_average_precision_perfect_is_one():
    ap = AveragePrecision()
    ap.update([_image([0, 0, 10, 10, 0.9], [20, 20, 30, 30, 0.8])], [_image([0, 0, 10, 10, 0], [20, 20, 30, 30, 0])])
    ap.update([_image([0, 0, 5, 5, 0.1])], [_image([0, 0, 5, 5, 0])])
    result = ap.result()
    assert result == pytest.approx({"average_precision": 1.0, "precision": 1.0, "recall": 1.0,
                                    "detections": 3, "truths": 3})


def test_average_precision_with_a_false_positive_ranked_first():
    # ranks: FP (0.9), TP (0.8), TP (0.7) against 2 truths:
    # precision 0, 1/2, 2/3 at recall 0, 1/2, 1; the envelope is 2/3 everywhere: AP = 2/3
    ap = AveragePrecision()
    ap.update([_image([0, 0, 10, 10, 0.8], [50, 50, 60, 60, 0.9])], [_image([0, 0, 10, 10, 0])])
    ap.update([_image([20, 0, 30, 10, 0.7])], [_image([20, 0, 30, 10, 0])])
    result = ap.result()
    assert result["average_precision"] == pytest.approx(2 / 3)
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == 1.0


def test_average_precision_counts_misses_and_ignores_trailing_false_positives():
    # 1 TP of 2 truths, then an FP ranked last: recall stops at 1/2 with precision 1: AP = 1/2
    ap = AveragePrecision()
    ap.update([_image([0, 0, 10, 10, 0.9], [80, 80, 90, 90, 0.1])], [_image([0, 0, 10, 10, 0], [40, 40, 50, 50, 0])])
    result = ap.result()
    assert result["average_precision"] == pytest.approx(0.5)
    assert result["recall"] == pytest.approx(0.5) and result["precision"] == pytest.approx(0.5)


def test_average_precision_matching_is_greedy_by_confidence():
    truth = _image([0, 0, 10, 10, 0])
    # two detections of one truth: the better ranked takes it, the other is a false positive
    ap = AveragePrecision()
    ap.update([_image([0, 0, 10, 9, 0.2], [0, 0, 10, 10, 0.7])], [truth])
    assert ap.result()["average_precision"] == pytest.approx(1.0)   # TP first, FP second
    ap = AveragePrecision()
    ap.update([_image([0, 0, 10, 9, 0.9], [0, 0, 10, 10, 0.7])], [truth])
    assert ap.result()["precision"] == pytest.approx(0.5)
    # a detection overlapping two truths takes the one of highest IoU (1, not 0.67), leaving the other
    # free for the next detection (IoU 0.67; with the truth it would have left, only 0.43)
    ap = AveragePrecision()
    ap.update([_image([0, 0, 10, 10, 0.9], [4, 0, 14, 10, 0.8])], [_image([2, 0, 12, 10, 0], [0, 0, 10, 10, 0])])
    assert ap.result()["average_precision"] == pytest.approx(1.0)
    # IoU 0.5 is enough, below is not
    ap = AveragePrecision()
    ap.update([_image([0, 0, 10, 10, 0.9])], [_image([0, 0, 5, 10, 0])])
    assert ap.result()["recall"] == 1.0
    ap = AveragePrecision(iou_threshold=0.51)
    ap.update([_image([0, 0, 10, 10, 0.9])], [_image([0, 0, 5, 10, 0])])
    assert ap.result()["recall"] == 0.0


def test_average_precision_takes_padded_box_lists_and_checks_image_counts():
    ap = AveragePrecision()
    det, gt = np.zeros((50, 5)), np.zeros((50, 5))
    det[0], gt[0] = [0, 0, 10, 10, 1.4], [0, 0, 10, 10, 0]
    ap.update([det], [gt])
    assert ap.result()["detections"] == 1 and ap.result()["truths"] == 1
    assert AveragePrecision().result()["average_precision"] == 0.0
    with pytest.raises(ValueError, match="2 images of detections but 1 of ground truth"):
        ap.update([det, det], [gt])


def test_all_point_interpolation():
    # TP, FP, TP, FP, TP against 4 truths: precision 1, 1/2, 2/3, 1/2, 3/5 at recall 1/4, 1/4, 1/2, 1/2, 3/4
    # envelope at the recall steps: 1 (to 1/4), 2/3 (to 1/2), 3/5 (to 3/4): AP = (1 + 2/3 + 3/5) / 4
    assert all_point_average_precision([1, 0, 1, 0, 1], 4) == pytest.approx((1 + 2 / 3 + 3 / 5) / 4)
    assert all_point_average_precision([], 3) == 0.0
    assert all_point_average_precision([1], 0) == 0.0
