"""DetectNet's box clustering (brewnet.detection.clustering and the Python layers of
caffe.layers.detectnet.clustering), on hand-made rectangles and grids whose answers are worked
out in the comments (rules: digits-other-jobs.md §3.5, OpenCV groupRectangles)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from brewnet.errors import NetError
from brewnet.detection.boxes import MAX_BOXES, from_bbox_list, to_bbox_list
from brewnet.detection.clustering import (ClusterParams, cluster_detections, cluster_groundtruth, group_rectangles,
                                          parse_cluster_param_str, parse_groundtruth_param_str)


# -- group_rectangles ---------------------------------------------------------------------------

def test_similar_rectangles_merge_into_their_mean_and_a_lone_one_is_dropped():
    rects = [[10, 10, 20, 30], [11, 10, 20, 30], [10, 12, 21, 30], [12, 11, 20, 29],
             [200, 200, 20, 30]]  # four alike, one far away
    out, weights = group_rectangles(rects, 1, 0.2)
    np.testing.assert_allclose(out, [[10.75, 10.75, 20.25, 29.75]])
    assert weights.tolist() == [4]


def test_clusters_with_at_most_threshold_members_are_dropped():
    rects = [[0, 0, 10, 10]] * 3 + [[50, 50, 10, 10]] * 4
    out, weights = group_rectangles(rects, 3, 0.2)
    np.testing.assert_allclose(out, [[50, 50, 10, 10]])
    assert weights.tolist() == [4]
    out, weights = group_rectangles(rects, 2, 0.2)
    np.testing.assert_allclose(out, [[0, 0, 10, 10], [50, 50, 10, 10]])  # in order of first member
    assert weights.tolist() == [3, 4]


def test_eps_boundary_is_inclusive():
    # delta = eps * (min w + min h) / 2 = 0.25 * (8 + 8) / 2 = 2 pixels
    at_boundary = [[0, 0, 8, 8], [2, 0, 8, 8]]     # left and right edges 2 apart: alike
    beyond = [[0, 0, 8, 8], [2.5, 0, 8, 8]]        # 2.5 apart: not alike, two clusters of one
    out, weights = group_rectangles(at_boundary, 1, 0.25)
    np.testing.assert_allclose(out, [[1, 0, 8, 8]])
    assert weights.tolist() == [2]
    out, weights = group_rectangles(beyond, 1, 0.25)
    assert out.shape == (0, 4) and weights.shape == (0,)


def test_similarity_is_transitive_through_chains():
    # a~b and b~c (2 px apart, delta 2) but a and c are 4 px apart: still one cluster
    rects = [[0, 0, 8, 8], [2, 0, 8, 8], [4, 0, 8, 8]]
    out, weights = group_rectangles(rects, 2, 0.25)
    np.testing.assert_allclose(out, [[2, 0, 8, 8]])
    assert weights.tolist() == [3]


def test_threshold_zero_groups_nothing():
    rects = [[0, 0, 8, 8], [0, 0, 8, 8], [100, 0, 8, 8]]
    out, weights = group_rectangles(rects, 0, 0.2)
    np.testing.assert_allclose(out, rects)
    assert weights.tolist() == [1, 1, 1]


def test_small_cluster_inside_a_stronger_one_is_dropped():
    big = [[0, 0, 100, 100]] * 5
    # 4 members inside a 5-member cluster: 5 > max(3, 4), dropped
    out, weights = group_rectangles(big + [[40, 40, 10, 10]] * 4, 1, 0.2)
    assert weights.tolist() == [5]
    np.testing.assert_allclose(out, [[0, 0, 100, 100]])
    # 2 members (fewer than 3) inside: dropped too
    out, weights = group_rectangles(big + [[40, 40, 10, 10]] * 2, 1, 0.2)
    assert weights.tolist() == [5]
    # 5 members inside 5: neither rule holds, both kept
    out, weights = group_rectangles(big + [[40, 40, 10, 10]] * 5, 1, 0.2)
    assert weights.tolist() == [5, 5]
    # inside only thanks to the widening by eps * w of the big one (left edge at -15 > -20)
    out, weights = group_rectangles(big + [[-15, 40, 10, 10]] * 4, 1, 0.2)
    assert weights.tolist() == [5]
    out, weights = group_rectangles(big + [[-25, 40, 10, 10]] * 4, 1, 0.2)
    assert weights.tolist() == [5, 4]


# -- cluster_detections ---------------------------------------------------------------------------

def _proposing(coverage, bboxes, cells, box, value=0.9, channel=0):
    """Make each (gy, gx) cell of ``cells`` (stride 16) cover ``box`` (x1, y1, x2, y2)."""
    for gy, gx in cells:
        coverage[channel, gy, gx] = value
        bboxes[:, gy, gx] = np.asarray(box, float) - [gx * 16, gy * 16, gx * 16, gy * 16]


OPTIONS = {"image_size_x": 128, "image_size_y": 64, "stride": 16, "cvg_threshold": 0.6, "rect_threshold": 2,
           "rect_eps": 0.2, "min_height": 12}


def test_cluster_detections_on_a_hand_made_grid():
    coverage, bboxes = np.zeros((2, 4, 8), np.float32), np.zeros((4, 4, 8), np.float32)
    _proposing(coverage, bboxes, [(0, 1), (0, 2), (1, 1), (1, 2), (2, 1), (2, 2)], (16, 8, 64, 56))  # 6 votes
    _proposing(coverage, bboxes, [(1, 6), (1, 7)], (96, 16, 120, 40))            # 2 votes: <= threshold 2
    _proposing(coverage, bboxes, [(3, 5), (3, 6), (3, 7)], (80, 50, 126, 60))    # 3 votes but 10 px high
    _proposing(coverage, bboxes, [(0, 4), (0, 5), (1, 4)], (70, 2, 90, 30), value=0.5)  # below cvg threshold
    _proposing(coverage, bboxes, [(0, 5), (0, 6), (1, 5)], (80, 0, 100, 30), channel=1)  # class 1: 3 votes
    per_class = cluster_detections(coverage, bboxes, **OPTIONS)
    assert len(per_class) == 2
    np.testing.assert_allclose(per_class[0], [[16, 8, 64, 56, math.log(6)]], rtol=1e-6)
    np.testing.assert_allclose(per_class[1], [[80, 0, 100, 30, math.log(3)]], rtol=1e-6)
    # the votes are averaged: jitter one proposal of the 6 by +6 px in x1
    bboxes[0, 0, 1] += 6
    np.testing.assert_allclose(cluster_detections(coverage, bboxes, **OPTIONS)[0],
                               [[17, 8, 64, 56, math.log(6)]], rtol=1e-6)


def test_min_height_is_tested_on_the_cluster_height():
    coverage, bboxes = np.zeros((1, 4, 8), np.float32), np.zeros((4, 4, 8), np.float32)
    _proposing(coverage, bboxes, [(3, 5), (3, 6), (3, 7)], (80, 50, 126, 60))  # h = 10
    assert cluster_detections(coverage, bboxes, **{**OPTIONS, "min_height": 10})[0].shape == (1, 5)
    assert cluster_detections(coverage, bboxes, **{**OPTIONS, "min_height": 11})[0].shape == (0, 5)


def test_only_image_size_over_stride_rows_are_read():
    # DIGITS' KITTI prototxt clusters 352 of 384 rows: rows at and past image_size_y / stride are ignored
    coverage, bboxes = np.zeros((1, 4, 8), np.float32), np.zeros((4, 4, 8), np.float32)
    _proposing(coverage, bboxes, [(3, 1), (3, 2), (3, 3)], (16, 48, 64, 64))
    assert cluster_detections(coverage, bboxes, **OPTIONS)[0].shape == (1, 5)
    assert cluster_detections(coverage, bboxes, **{**OPTIONS, "image_size_y": 48})[0].shape == (0, 5)


def test_cluster_detections_names_mismatched_maps():
    with pytest.raises(ValueError, match=r"\(2, 4, 8\) and \(4, 3, 8\)"):
        cluster_detections(np.zeros((2, 4, 8)), np.zeros((4, 3, 8)), **OPTIONS)
    with pytest.raises(ValueError, match="needs 4x8"):
        cluster_detections(np.zeros((1, 2, 8)), np.zeros((4, 2, 8)), **OPTIONS)


# -- cluster_groundtruth --------------------------------------------------------------------------

def test_groundtruth_clustering_dedupes_cell_boxes():
    coverage, bboxes = np.zeros((1, 4, 8), np.float32), np.zeros((4, 4, 8), np.float32)
    _proposing(coverage, bboxes, [(1, 5), (1, 6)], (80, 16, 110, 40), value=1)   # first cell (1, 5)
    _proposing(coverage, bboxes, [(0, 1), (0, 2), (1, 1), (1, 2)], (16, 8, 64, 56), value=1)  # first (0, 1)
    boxes, = cluster_groundtruth(coverage, bboxes, image_size_x=128, image_size_y=64, stride=16)
    np.testing.assert_allclose(boxes, [[16, 8, 64, 56, 0], [80, 16, 110, 40, 0]])


# -- parameters -----------------------------------------------------------------------------------

def test_param_str_parsing():
    assert parse_cluster_param_str("1248, 352, 16, 0.6, 3, 0.02, 22, 1") == ClusterParams(
        1248, 352, 16, 0.6, 3, 0.02, 22, 1)
    assert parse_cluster_param_str("1248,352,16,0.6,3,0.02,22").num_classes == 1
    assert parse_groundtruth_param_str("1248, 352, 16, 2") == ClusterParams(1248, 352, 16, num_classes=2)
    with pytest.raises(ValueError, match=r"field 5 \(gridbox_rect_thresh\) is '3.5', not an integer"):
        parse_cluster_param_str("1248, 352, 16, 0.6, 3.5, 0.02, 22")
    with pytest.raises(ValueError, match=r"field 4 \(gridbox_cvg_threshold\) is 'high', not a number"):
        parse_cluster_param_str("1248, 352, 16, high, 3, 0.02, 22")
    with pytest.raises(ValueError, match="7 to 8 comma-separated values\\), got 3"):
        parse_cluster_param_str("1248, 352, 16")
    with pytest.raises(ValueError, match="stride must be at least 1, got 0"):
        parse_groundtruth_param_str("1248, 352, 0")


def test_box_lists_hold_fifty_rows():
    rows = to_bbox_list([[1, 2, 3, 4, 0.5]])
    assert rows.shape == (MAX_BOXES, 5) and rows.dtype == np.float32
    np.testing.assert_allclose(from_bbox_list(rows), [[1, 2, 3, 4, 0.5]])
    assert not to_bbox_list(np.zeros((0, 5))).any()
    with pytest.raises(ValueError, match="51 boxes in one image"):
        to_bbox_list(np.ones((51, 5)))
    with pytest.raises(ValueError, match=r"\(m, 5\) rows .* got shape \(5, 4\)"):
        to_bbox_list(np.ones((5, 4)))


# -- the Python layers, under DIGITS' module names ------------------------------------------------

def _cluster_net(tmp_path, param_str="128, 64, 16, 0.6, 2, 0.2, 12, 2", tops=("list0", "list1"),
                 layer="ClusterDetections", coverage=(2, 2, 4, 8)):
    import brewnet
    top_lines = "".join(f'top: "{t}" ' for t in tops)
    offsets = (coverage[0], 4, *coverage[2:])
    text = (f'layer {{ name: "c" type: "Input" top: "coverage" input_param {{ shape {{ {_dims(coverage)} }} }} }}\n'
            f'layer {{ name: "b" type: "Input" top: "bboxes" input_param {{ shape {{ {_dims(offsets)} }} }} }}\n'
            f'layer {{ name: "cluster" type: "Python" bottom: "coverage" bottom: "bboxes" {top_lines}\n'
            f'  python_param {{ module: "caffe.layers.detectnet.clustering" layer: "{layer}" '
            f'param_str: "{param_str}" }} }}\n')
    path = tmp_path / "cluster.prototxt"
    path.write_text(text)
    return brewnet.Net(str(path), brewnet.TEST)


def _dims(shape):
    return " ".join(f"dim: {d}" for d in shape)


def test_cluster_detections_layer_writes_fifty_row_lists_per_class(tmp_path):
    net = _cluster_net(tmp_path)
    coverage, bboxes = np.zeros((2, 2, 4, 8), np.float32), np.zeros((2, 4, 4, 8), np.float32)
    _proposing(coverage[1], bboxes[1], [(0, 1), (0, 2), (1, 1), (1, 2)], (16, 8, 64, 56))
    _proposing(coverage[1], bboxes[1], [(2, 5), (2, 6), (3, 5)], (80, 32, 100, 60), channel=1)
    net.blobs["coverage"].data[...] = coverage
    net.blobs["bboxes"].data[...] = bboxes
    out = net.forward()
    assert out["list0"].shape == out["list1"].shape == (2, MAX_BOXES, 5)
    assert not out["list0"][0].any() and not out["list1"][0].any()       # image 0 has nothing
    np.testing.assert_allclose(out["list0"][1, 0], [16, 8, 64, 56, math.log(4)], rtol=1e-6)
    np.testing.assert_allclose(out["list1"][1, 0], [80, 32, 100, 60, math.log(3)], rtol=1e-6)
    assert not out["list0"][1, 1:].any() and not out["list1"][1, 1:].any()


def test_cluster_groundtruth_layer(tmp_path):
    from brewnet.layers.detectnet.clustering import ClusterGroundTruth, ClusterGroundtruth
    assert ClusterGroundTruth is ClusterGroundtruth
    net = _cluster_net(tmp_path, "128, 64, 16", ("gt",), "ClusterGroundtruth", coverage=(2, 1, 4, 8))
    coverage, bboxes = np.zeros((2, 1, 4, 8), np.float32), np.zeros((2, 4, 4, 8), np.float32)
    _proposing(coverage[0], bboxes[0], [(0, 1), (1, 1)], (16, 8, 40, 30), value=1)
    net.blobs["coverage"].data[...] = coverage
    net.blobs["bboxes"].data[...] = bboxes
    gt = net.forward()["gt"]
    assert gt.shape == (2, MAX_BOXES, 5)
    np.testing.assert_allclose(from_bbox_list(gt[0]), [[16, 8, 40, 30, 0]])
    assert not gt[1].any()


def test_more_than_fifty_detections_raise_naming_the_layer(tmp_path):
    # rect threshold 0: every covered cell is its own detection, 64 of them in an 8 x 8 grid
    net = _cluster_net(tmp_path, "128, 128, 16, 0.5, 0, 0.2, 0, 1", ("list",), coverage=(2, 1, 8, 8))
    net.blobs["coverage"].data[...] = 0
    net.forward()
    net.blobs["coverage"].data[...] = 1
    with pytest.raises(NetError, match=r"layer 'cluster' \(Python\): ClusterDetections: image 0 of the batch, "
                                       r"class 0: 64 boxes, more than a box list holds \(MAX_BOXES = 50\)"):
        net.forward()


@pytest.mark.parametrize("param_str, tops, coverage, message", [
    ("128, 64, 16, 0.6, 3, 0.02", ("a",), (2, 1, 4, 8), r"expected image_size_x, .* got 6"),
    ("128, 64, 16, 0.6, 3, x, 10", ("a",), (2, 1, 4, 8), r"field 6 \(gridbox_rect_eps\) is 'x', not a number"),
    ("128, 64, 16, 0.6, 3, 0.02, 10, 2", ("a",), (2, 2, 4, 8), r"num_classes 2, so the layer needs 2 top"),
    ("128, 64, 16, 0.6, 3, 0.02, 10", ("a",), (2, 2, 4, 8), r"coverage \(N, 1, Gy, Gx\).*\(2, 2, 4, 8\)"),
])
def test_cluster_layer_setup_errors(tmp_path, param_str, tops, coverage, message):
    with pytest.raises(NetError, match=r"layer 'cluster' \(Python\): ClusterDetections.*" + message):
        _cluster_net(tmp_path, param_str, tops, coverage=coverage)


def test_kitti_prototxt_parameters_on_its_24_by_78_grid():
    # param_str of the cluster layers in NVCaffe's examples/kitti/detectnet_network.prototxt (data)
    params = parse_cluster_param_str("1248, 352, 16, 0.6, 3, 0.02, 22, 1")
    coverage, bboxes = np.zeros((1, 24, 78), np.float32), np.zeros((4, 24, 78), np.float32)
    car = (320, 160, 400, 208)
    cells = [(gy, gx) for gy in range(10, 13) for gx in range(20, 25)]   # 15 votes
    for gy, gx in cells:
        coverage[0, gy, gx] = 0.8
        bboxes[:, gy, gx] = np.asarray(car, float) - [gx * 16, gy * 16, gx * 16, gy * 16]
    # eps 0.02: alike when edges differ by <= 0.02 * (min w + min h) / 2, about 1.27 px here
    bboxes[0, 10, 20] += 1.5      # left edge 1.5 px off: a cluster of its own, of 1 vote, dropped
    bboxes[2, 10, 21] += 1.2      # right edge 1.2 px off: joins the car's 13 others
    for gy in (22, 23):           # rows 22 and 23 (y >= 352) are never read
        for gx in range(40, 45):
            coverage[0, gy, gx] = 0.9
            bboxes[:, gy, gx] = np.asarray((640, 352, 720, 380), float) - [gx * 16, gy * 16, gx * 16, gy * 16]
    detections, = cluster_detections(coverage, bboxes, **params.detection_options())
    np.testing.assert_allclose(detections, [[320, 160, 400 + 1.2 / 14, 208, math.log(14)]], rtol=1e-6)
    truth, = cluster_groundtruth((coverage > 0.85).astype(np.float32), bboxes,
                                 **parse_groundtruth_param_str("1248, 352, 16, 1").groundtruth_options())
    assert truth.shape == (0, 5)   # the only cells above 0.85 are in the unread rows
