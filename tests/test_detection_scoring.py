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


# -- DIGITS' four Python layers in one net -----------------------------------------------------------

def _input(name, shape):
    return f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ ' + \
        " ".join(f"dim: {d}" for d in shape) + " } } }\n"


def _python(name, module, layer, bottoms, tops, param_str=None):
    param = f' param_str: "{param_str}"' if param_str is not None else ""
    return (f'layer {{ name: "{name}" type: "Python" ' + "".join(f'bottom: "{b}" ' for b in bottoms)
            + "".join(f'top: "{t}" ' for t in tops)
            + f'python_param {{ module: "caffe.layers.detectnet.{module}" layer: "{layer}"{param} }} }}\n')


# DetectNet's val-phase tail (as in detectnet_network.prototxt) over a 128 x 64 image at stride 16
TAIL = (_input("coverage", (2, 1, 4, 8)) + _input("bboxes", (2, 4, 4, 8))
        + _input("coverage-label", (2, 1, 4, 8)) + _input("bbox-label", (2, 4, 4, 8))
        + _python("cluster", "clustering", "ClusterDetections", ["coverage", "bboxes"], ["bbox-list"],
                  "128, 64, 16, 0.6, 2, 0.2, 12, 1")
        + _python("cluster_gt", "clustering", "ClusterGroundtruth", ["coverage-label", "bbox-label"],
                  ["bbox-list-label"], "128, 64, 16, 1")
        + _python("score", "mean_ap", "ScoreDetections", ["bbox-list-label", "bbox-list"], ["bbox-list-scored"])
        + _python("mAP", "mean_ap", "mAP", ["bbox-list-scored"], ["mAP", "precision", "recall"], "128, 64, 16"))


def _cover(coverage, bboxes, cells, box):
    for gy, gx in cells:
        coverage[0, gy, gx] = 1
        bboxes[:, gy, gx] = np.asarray(box, float) - [gx * 16, gy * 16, gx * 16, gy * 16]


def test_digits_python_layers_run_in_a_net(tmp_path):
    import brewnet
    import brewnet.layers.detectnet.clustering as clustering
    import brewnet.layers.detectnet.mean_ap as mean_ap
    path = tmp_path / "tail.prototxt"
    path.write_text(TAIL)
    net = brewnet.Net(str(path), brewnet.TEST)
    assert type(net.layer_dict["cluster"].user) is clustering.ClusterDetections  # brewnet's one copy
    assert type(net.layer_dict["mAP"].user) is mean_ap.mAP
    assert net.outputs == ["mAP", "precision", "recall"]
    cvg, box = np.zeros((2, 1, 4, 8), np.float32), np.zeros((2, 4, 4, 8), np.float32)
    cvg_label, box_label = np.zeros_like(cvg), np.zeros_like(box)
    a, b, c = (16, 8, 64, 56), (80, 0, 112, 40), (96, 24, 128, 64)
    # image 0: a detected (3 votes) and in the ground truth; b in the ground truth only (a miss)
    _cover(cvg[0], box[0], [(0, 1), (1, 1), (1, 2)], a)
    _cover(cvg_label[0], box_label[0], [(1, 2), (2, 2)], a)
    _cover(cvg_label[0], box_label[0], [(0, 5), (1, 6)], b)
    # image 1: c detected (3 votes) but not in the ground truth (a false positive)
    _cover(cvg[1], box[1], [(2, 6), (2, 7), (3, 7)], c)
    for name, value in (("coverage", cvg), ("bboxes", box), ("coverage-label", cvg_label), ("bbox-label", box_label)):
        net.blobs[name].data[...] = value
    out = net.forward()
    assert {k: v.shape for k, v in out.items()} == {"mAP": (1,), "precision": (1,), "recall": (1,)}
    # TP 1, FP 1, miss 1: precision 50, recall 50, "mAP" 25
    np.testing.assert_allclose([out["mAP"][0], out["precision"][0], out["recall"][0]], [25, 50, 50], rtol=1e-6)
    scored = net.blobs["bbox-list-scored"].data
    assert scored.shape == (2, 100, 5)
    np.testing.assert_allclose(scored[0, :2], [[*a, TRUE_POSITIVE], [*b, MISS]], rtol=1e-6)
    np.testing.assert_allclose(scored[1, :1], [[*c, FALSE_POSITIVE]], rtol=1e-6)
    assert not scored[0, 2:].any() and not scored[1, 1:].any()


def test_scoring_layers_check_their_wiring(tmp_path):
    import brewnet
    from brewnet.errors import NetError
    text = (_input("gt", (2, 50, 5)) + _input("det", (3, 50, 5))
            + _python("score", "mean_ap", "ScoreDetections", ["gt", "det"], ["scored"]))
    path = tmp_path / "bad.prototxt"
    path.write_text(text)
    with pytest.raises(NetError, match=r"layer 'score' \(Python\): ScoreDetections: 2 images of ground truth but 3"):
        brewnet.Net(str(path), brewnet.TEST)
    path.write_text(_input("scored", (2, 100, 5)) + _python("mAP", "mean_ap", "mAP", ["scored"], ["m", "p"]))
    with pytest.raises(NetError, match=r"layer 'mAP' \(Python\): mAP takes 1 bottom .* and 3 tops .*got 1 and 2"):
        brewnet.Net(str(path), brewnet.TEST)
