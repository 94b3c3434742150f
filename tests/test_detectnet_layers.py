"""DetectNet's transformation (brewnet.detection.coverage / augment, the DetectNetTransformation
layer), checked against the formulas of DIGITS' documentation of NVCaffe's layer: targets of
hand-made boxes cell by cell, the TEST-phase outputs, the TRAIN augmentations moving images and
boxes alike, reproducible draws, and the errors.

The expected cells and values below are worked out by hand from the rules (coverage rectangle =
box × scale_cvg, bounded per gridbox_type; a cell is covered when the rectangle overlaps it; the
cell's values are the box corners from the cell's origin, 1/w, 1/h, max(m, stride²/area), the
class channel), each written next to the case.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import brewnet
from brewnet.detection import augment, coverage
from brewnet.detection.coverage import GroundTruthParams, coverage_targets, label_rows
from brewnet.errors import DataError, NetError
from brewnet.formats import write_binaryproto
from brewnet.proto import caffe_pb2

from numeric import assert_close_f32


def row(x, y, w, h, cls=1, depth=0.0):
    """One label row: [x, y, w, h, alpha, class, 0, rot_y, truncated, occluded, l, w, h, lx, ly, lz]."""
    r = np.zeros(16)
    r[[0, 1, 2, 3, 5, 15]] = [x, y, w, h, cls, depth]
    return r


def label(*rows, capacity=None):
    """A (1, R, 16) label: row 0 [n, 16, 0...], the rows, zero rows up to ``capacity`` boxes."""
    n = len(rows)
    out = np.zeros((1, 1 + (capacity if capacity is not None else n), 16))
    out[0, 0, :2] = [n, 16]
    for i, r in enumerate(rows):
        out[0, 1 + i] = r
    return out


SMALL = dict(stride=4, image_size_x=32, image_size_y=16)  # an 8×4 grid


def covered(target) -> set[tuple[int, int]]:
    """The (gy, gx) cells whose foreground channel is set."""
    return {(int(a), int(b)) for a, b in zip(*np.nonzero(target[0]))}


# ----- parameters and labels ------------------------------------------------------------------

def test_params_from_proto_defaults_and_the_kitti_example():
    d = GroundTruthParams.from_proto(caffe_pb2.DetectNetGroundTruthParameter())
    assert d == GroundTruthParams()
    assert (d.stride, d.scale_cvg, d.gridbox_type, d.max_cvg_len, d.min_cvg_len) == (4, 0.5, "max", 50, 50)
    assert (d.image_size_x, d.image_size_y, d.obj_norm, d.crop_bboxes, d.class_map) == (1248, 384, False, True,
                                                                                           {1: 0})
    assert d.num_classes == 1 and d.channels == 9 and d.grid == (96, 312)
    p = caffe_pb2.DetectNetGroundTruthParameter()
    text_format.Merge("stride: 16 scale_cvg: 0.4 gridbox_type: GRIDBOX_MIN coverage_type: RECTANGULAR "
                      "min_cvg_len: 20 obj_norm: true image_size_x: 1248 image_size_y: 384 crop_bboxes: false "
                      "object_class: { src: 1 dst: 0 } object_class: { src: 8 dst: 1 }", p)
    k = GroundTruthParams.from_proto(p)
    assert (k.stride, k.gridbox_type, k.min_cvg_len, k.obj_norm, k.crop_bboxes) == (16, "min", 20, True, False)
    assert k.scale_cvg == pytest.approx(0.4) and k.class_map == {1: 0, 8: 1}
    assert k.num_classes == 2 and k.channels == 10 and k.grid == (24, 78)


def test_augmentation_params_from_proto():
    d = augment.AugmentationParams.from_proto(caffe_pb2.DetectNetAugmentationParameter())
    for name, value in vars(augment.AugmentationParams()).items():
        assert getattr(d, name) == pytest.approx(value, rel=1e-6), name    # the proto's float32 defaults
    p = caffe_pb2.DetectNetAugmentationParameter()
    text_format.Merge("crop_prob: 1 shift_x: 32 shift_y: 32 flip_prob: 0.5 rotation_prob: 0 max_rotate_degree: 5 "
                      "scale_prob: 0.4 scale_min: 0.8 scale_max: 1.2 hue_rotation_prob: 0.8 hue_rotation: 30", p)
    k = augment.AugmentationParams.from_proto(p)
    assert (k.shift_x, k.shift_y) == (32, 32) and isinstance(k.shift_x, int)
    assert (k.flip_prob, k.rotation_prob, k.max_rotate_degree, k.hue_rotation) == (0.5, 0, 5, 30)
    assert k.scale_min == pytest.approx(0.8) and k.scale_max == pytest.approx(1.2)
    with pytest.raises(DataError, match="scale_min <= scale_max"):
        augment.AugmentationParams(scale_min=1.2, scale_max=0.8)


def test_label_rows_reads_the_count_in_row_zero():
    lab = label(row(1, 2, 3, 4), row(5, 6, 7, 8), capacity=4)       # (1, 5, 16)
    rows = label_rows(lab)
    assert rows.shape == (2, 16)
    np.testing.assert_array_equal(rows[:, :4], [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(label_rows(lab[0]), rows)
    assert label_rows(label(capacity=3)).shape == (0, 16)
    bad = lab.copy()
    bad[0, 0, 0] = 5
    with pytest.raises(DataError, match="row 0 says 5 boxes, but the label holds 4 box rows"):
        label_rows(bad)
    with pytest.raises(DataError, match=r"got shape \(3, 15\)"):
        label_rows(np.zeros((3, 15)))
    bad = lab.copy()
    bad[0, 2, 2] = np.nan
    with pytest.raises(DataError, match="box row 2 has a value that is not a finite number: x, y, w, h, class = "
                                        "5, 6, nan, 8, 1"):
        label_rows(bad)


def test_pruning_cuts_to_the_image_and_drops_unmapped_classes_and_empty_boxes():
    p = GroundTruthParams(**SMALL)
    r = row(-4, -2, 12, 8)
    r[coverage.TRUNCATED] = 0.5
    cut = coverage.prune_box(r, p)
    # (0, 0, 8, 6): half the area is inside, and half was truncated already: 1 - 0.5 · 0.5
    np.testing.assert_allclose(cut[[0, 1, 2, 3, coverage.TRUNCATED]], [0, 0, 8, 6, 0.75])
    np.testing.assert_array_equal(coverage.prune_box(r, GroundTruthParams(crop_bboxes=False, **SMALL)), r)
    assert coverage.prune_box(row(1, 1, 4, 4, cls=2), p) is None
    assert coverage.prune_box(row(1, 1, 0, 4), p) is None
    assert coverage.prune_box(row(40, 1, 4, 4), p) is None          # cut to nothing


# ----- the targets, cell by cell --------------------------------------------------------------

def test_gridbox_max_one_box_cell_by_cell():
    p = GroundTruthParams(**SMALL)                   # scale_cvg 0.5, max_cvg_len 50
    t = coverage_targets(np.array([row(4, 2, 12, 8)]), p)
    assert t.shape == (9, 4, 8) and t.dtype == np.float32
    # coverage rectangle 6×4 about the centre (10, 6): x 7..13, y 4..8 -> cells x 1, 2, 3 in row y 1
    assert covered(t) == {(1, 1), (1, 2), (1, 3)}
    for gx in (1, 2, 3):
        cx, cy = 4 * gx, 4
        np.testing.assert_allclose(t[:, 1, gx], [1, 4 - cx, 2 - cy, 16 - cx, 10 - cy, 1 / 12, 1 / 8, 1, 1],
                                   rtol=1e-6)
    assert not t[:, [0, 2, 3]].any() and not t[:, 1, [0, 4, 5, 6, 7]].any()
    # obj_norm: channel 7 = stride² / coverage area = 16 / 24
    n = coverage_targets(np.array([row(4, 2, 12, 8)]), GroundTruthParams(obj_norm=True, **SMALL))
    np.testing.assert_allclose(n[7, 1, 1:4], 16 / 24, rtol=1e-6)
    np.testing.assert_array_equal(np.delete(n, 7, axis=0), np.delete(t, 7, axis=0))


def test_gridbox_max_bounds_the_rectangle_by_max_cvg_len():
    p = GroundTruthParams(max_cvg_len=2, obj_norm=True, **SMALL)
    t = coverage_targets(np.array([row(4, 2, 12, 8)]), p)
    # sides min(6, 2) x min(4, 2): x 9..11, y 5..7 -> the one cell (1, 2); obj_norm 16 / 4
    assert covered(t) == {(1, 2)}
    np.testing.assert_allclose(t[:, 1, 2], [1, -4, -2, 8, 6, 1 / 12, 1 / 8, 4, 1], rtol=1e-6)


def test_gridbox_min_raises_the_rectangle_to_min_cvg_len_within_the_box():
    p = GroundTruthParams(gridbox_type="min", min_cvg_len=10, obj_norm=True, **SMALL)
    t = coverage_targets(np.array([row(4, 2, 12, 8)]), p)
    # sides min(max(6, 10), 12) = 10 and min(max(4, 10), 8) = 8: x 5..15, y 2..10 -> 3×3 cells
    assert covered(t) == {(gy, gx) for gy in (0, 1, 2) for gx in (1, 2, 3)}
    np.testing.assert_allclose(t[7][t[0] > 0], 16 / 80, rtol=1e-6)
    np.testing.assert_allclose(t[:, 2, 3], [1, 4 - 12, 2 - 8, 16 - 12, 10 - 8, 1 / 12, 1 / 8, 16 / 80, 1], rtol=1e-6)
    # without obj_norm channel 7 is max(1, 16 / 80) = 1
    plain = coverage_targets(np.array([row(4, 2, 12, 8)]), GroundTruthParams(gridbox_type="min", min_cvg_len=10,
                                                                               **SMALL))
    np.testing.assert_array_equal(plain[7][plain[0] > 0], 1)


def test_a_rectangle_on_cell_edges_covers_only_the_cells_it_overlaps():
    # box 8×8 at (2, 2): rectangle 4×4 about (6, 6) = exactly the cell x 4..8, y 4..8
    t = coverage_targets(np.array([row(2, 2, 8, 8)]), GroundTruthParams(**SMALL))
    assert covered(t) == {(1, 1)}
    # a hair further right and down: the neighbours overlap too
    t = coverage_targets(np.array([row(2.5, 2.5, 8, 8)]), GroundTruthParams(**SMALL))
    assert covered(t) == {(1, 1), (1, 2), (2, 1), (2, 2)}


def test_crop_bboxes_cuts_the_box_to_the_image():
    r = row(-4, -2, 12, 8)
    t = coverage_targets(np.array([r]), GroundTruthParams(**SMALL))
    # cut to (0, 0)..(8, 6): rectangle 4×3 about (4, 3): x 2..6, y 1.5..4.5 -> cells x 0, 1 in rows 0, 1
    assert covered(t) == {(0, 0), (0, 1), (1, 0), (1, 1)}
    # channel 7: max(1, 16 / (4 × 3))
    np.testing.assert_allclose(t[:, 1, 1], [1, 0 - 4, 0 - 4, 8 - 4, 6 - 4, 1 / 8, 1 / 6, 16 / 12, 1], rtol=1e-6)
    uncut = coverage_targets(np.array([r]), GroundTruthParams(crop_bboxes=False, **SMALL))
    # as it is: rectangle 6×4 about (2, 2): x -1..5, y 0..4 -> cells x 0, 1 in row 0
    assert covered(uncut) == {(0, 0), (0, 1)}
    np.testing.assert_allclose(uncut[:, 0, 1], [1, -4 - 4, -2, 8 - 4, 6, 1 / 12, 1 / 8, 1, 1], rtol=1e-6)


def test_a_box_at_the_border_and_one_outside():
    r = row(28, 12, 8, 8)                          # leaves the 32×16 image at the right and bottom
    cut = coverage_targets(np.array([r]), GroundTruthParams(**SMALL))
    # cut to (28, 12)..(32, 16): rectangle 2×2 about (30, 14) -> the corner cell (3, 7); channel 7
    # is max(1, stride² / 4) = 4 (a rectangle smaller than a cell weighs more, even without obj_norm)
    assert covered(cut) == {(3, 7)}
    np.testing.assert_allclose(cut[:, 3, 7], [1, 0, 0, 4, 4, 1 / 4, 1 / 4, 4, 1], rtol=1e-6)
    uncut = coverage_targets(np.array([r]), GroundTruthParams(crop_bboxes=False, **SMALL))
    # rectangle 4×4 about (32, 16): x 30..34, y 14..18, clipped to the grid -> (3, 7) too
    assert covered(uncut) == {(3, 7)}
    np.testing.assert_allclose(uncut[:, 3, 7], [1, 0, 0, 8, 8, 1 / 8, 1 / 8, 1, 1], rtol=1e-6)
    # wholly outside: cut to nothing (dropped), or covering no cell of the grid
    away = np.array([row(40, 4, 8, 8)])
    assert not coverage_targets(away, GroundTruthParams(**SMALL)).any()
    assert not coverage_targets(away, GroundTruthParams(crop_bboxes=False, **SMALL)).any()


def test_class_mapping_sends_classes_to_channels_and_drops_the_others():
    p = GroundTruthParams(class_map={1: 0, 8: 1}, **SMALL)
    rows = np.array([row(0, 0, 8, 8, cls=8), row(16, 0, 8, 8, cls=2), row(24, 8, 8, 8, cls=1),
                     row(8, 8, 0, 8, cls=1)])       # class 2 is not mapped; the last has no area
    t = coverage_targets(rows, p)
    assert t.shape == (10, 4, 8)
    # rectangles 4×4 about the centres: class 8's x 2..6, y 2..6 and class 1's x 26..30, y 10..14
    assert covered(t) == {(0, 0), (0, 1), (1, 0), (1, 1), (2, 6), (2, 7), (3, 6), (3, 7)}
    np.testing.assert_array_equal(t[8][t[0] > 0], [0, 0, 0, 0, 1, 1, 1, 1])   # row-major: class 8 first
    np.testing.assert_array_equal(t[9][t[0] > 0], [1, 1, 1, 1, 0, 0, 0, 0])
    # every box of an unmapped class: nothing at all
    assert not coverage_targets(rows[1:2], p).any()


def test_later_boxes_overwrite_the_cells_they_share():
    p = GroundTruthParams(class_map={1: 0, 2: 1}, **SMALL)
    far = row(0, 0, 16, 8, cls=1, depth=40)         # rectangle x 4..12, y 2..6: cells x 1, 2 in rows 0, 1
    near = row(8, 0, 8, 8, cls=2, depth=10)         # rectangle x 10..14, y 2..6: cells x 2, 3 in rows 0, 1
    t = coverage_targets(np.array([far, near]), p)
    assert covered(t) == {(gy, gx) for gy in (0, 1) for gx in (1, 2, 3)}
    for gy in (0, 1):
        # x 1: the far box alone; x 2: shared, the near (later) box wins; x 3: the near box
        np.testing.assert_allclose(t[:, gy, 1], [1, -4, -4 * gy, 12, 8 - 4 * gy, 1 / 16, 1 / 8, 1, 1, 0], rtol=1e-6)
        np.testing.assert_allclose(t[:, gy, 2], [1, 0, -4 * gy, 8, 8 - 4 * gy, 1 / 8, 1 / 8, 1, 0, 1], rtol=1e-6)
        np.testing.assert_allclose(t[:, gy, 3], [1, -4, -4 * gy, 4, 8 - 4 * gy, 1 / 8, 1 / 8, 1, 0, 1], rtol=1e-6)
    # the other order: the far box wins the shared cells
    t2 = coverage_targets(np.array([near, far]), p)
    np.testing.assert_allclose(t2[:, 0, 2], [1, -8, 0, 8, 8, 1 / 16, 1 / 8, 1, 1, 0], rtol=1e-6)


# ----- the augmentation arithmetic ------------------------------------------------------------

def test_bicubic_resize_is_opencvs_inter_cubic():
    # PyTorch's bicubic (align_corners=False, no antialias) is the same kernel (a = -0.75) with the
    # same pixel-centre mapping and border replication: an independent reference
    x = np.random.default_rng(0).uniform(0, 255, size=(3, 12, 20)).astype(np.float32)
    for w, h in ((40, 24), (13, 7), (20, 12), (31, 12)):
        ref = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=(h, w), mode="bicubic",
                                              align_corners=False)[0].numpy()
        assert_close_f32(augment.resize_bicubic(x, w, h), ref, rtol=1e-5, what=f"{w}x{h}")
    np.testing.assert_array_equal(augment.resize_bicubic(x, 20, 12), x)


def test_recolour_turns_the_hue_and_scales_the_saturation():
    bgr = np.array([[[0.0]], [[0.0]], [[255.0]]])   # pure red, 3×1×1
    np.testing.assert_allclose(augment.recolour(bgr, 120.0, 1.0)[:, 0, 0], [0, 255, 0], atol=1e-3)   # green
    np.testing.assert_allclose(augment.recolour(bgr, -120.0, 1.0)[:, 0, 0], [255, 0, 0], atol=1e-3)  # blue
    np.testing.assert_allclose(augment.recolour(bgr, 0.0, 0.0)[:, 0, 0], [255, 255, 255], atol=1e-3)  # grey
    # half saturation keeps the value (max) and halves the chroma
    np.testing.assert_allclose(augment.recolour(np.array([[[51.0]], [[102.0]], [[204.0]]]), 0.0, 0.5)[:, 0, 0],
                               [127.5, 153, 204], atol=1e-3)
    x = np.random.default_rng(1).uniform(0, 255, size=(3, 5, 6))
    np.testing.assert_allclose(augment.recolour(augment.recolour(x, 37.0, 1.0), -37.0, 1.0), x, atol=1e-2)


def test_flip_moves_boxes_to_w_minus_x_minus_w_minus_1():
    draw = augment.Draw(size=(32, 16), flip=True)
    moved = augment.transform_boxes(np.array([row(4, 2, 12, 8), row(0, 0, 31, 16)]), draw, 32, 16)
    np.testing.assert_array_equal(moved[:, :4], [[32 - 4 - 12 - 1, 2, 12, 8], [0, 0, 31, 16]])
    img = np.random.default_rng(2).uniform(0, 255, size=(3, 16, 32)).astype(np.float32)
    np.testing.assert_array_equal(augment.transform_image(img, draw, 32, 16), img[:, :, ::-1])


def test_scale_scales_the_boxes_and_the_image():
    draw = augment.Draw(size=(64, 24))              # 32×16 -> 64×24, then the 32×16 window at (0, 0)
    moved = augment.transform_boxes(np.array([row(4, 2, 12, 8)]), draw, 32, 16)
    np.testing.assert_allclose(moved[0, :4], [8, 3, 24, 12])
    img = np.random.default_rng(3).uniform(0, 255, size=(3, 16, 32)).astype(np.float32)
    out = augment.transform_image(img, draw, 32, 16)
    np.testing.assert_array_equal(out, augment.resize_bicubic(img, 64, 24)[:, :16, :32])


def test_a_crop_offset_shifts_the_boxes_and_pads_with_zeros():
    draw = augment.Draw(size=(32, 16), offset=(4, -2))
    moved = augment.transform_boxes(np.array([row(4, 2, 12, 8, depth=7)]), draw, 32, 16)
    np.testing.assert_array_equal(moved[0], row(0, 4, 12, 8, depth=7))
    img = np.random.default_rng(4).uniform(1, 255, size=(3, 16, 32)).astype(np.float32)
    out = augment.transform_image(img, draw, 32, 16)
    np.testing.assert_array_equal(out[:, 2:, :28], img[:, :14, 4:])
    assert not out[:, :2].any() and not out[:, :, 28:].any()


def test_rotation_turns_the_image_and_the_box_centres_alike():
    img = np.zeros((3, 21, 31), np.float32)
    img[:, 10, 25] = 255.0                          # one bright pixel right of the centre (15.5, 10.5)
    angle = 30.0
    out = augment.rotate_image(img, angle)
    # the canvas: the turned 31×21 rectangle's bounding box about (15, 10), floor/ceil + 1:
    # 31 cos 30° + 21 sin 30° = 37.35 and 31 sin 30° + 21 cos 30° = 33.69, centred on integers
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    xs = 15 + np.array([-1, 1, 1, -1]) * 15.5 * c - np.array([-1, -1, 1, 1]) * 10.5 * s
    ys = 10 + np.array([-1, 1, 1, -1]) * 15.5 * s + np.array([-1, -1, 1, 1]) * 10.5 * c
    size = (int(np.ceil(xs.max()) - np.floor(xs.min()) + 1), int(np.ceil(ys.max()) - np.floor(ys.min()) + 1))
    assert out.shape == (3, size[1], size[0]) == (3, 35, 39)
    # clockwise on screen for a positive angle (OpenCV's RotatedRect): right of the centre goes down
    m = augment.rotation_matrix((31, 21), angle)
    centre = m @ [15.5, 10.5, 1]
    spot = m @ [25, 10, 1]
    assert spot[1] > centre[1] + 4
    np.testing.assert_allclose(spot - centre, [9.5 * c + 0.5 * s, 9.5 * s - 0.5 * c], atol=1e-9)
    peak = np.unravel_index(np.argmax(out[0]), out.shape[1:])
    assert abs(peak[0] - spot[1]) <= 1 and abs(peak[1] - spot[0]) <= 1
    # the box path moves a box's centre by the same affine and keeps its size
    moved = augment.transform_boxes(np.array([row(24, 9, 2, 2)]), augment.Draw(size=(31, 21), angle=angle), 31, 21)
    np.testing.assert_allclose(moved[0, :4], [spot[0] - 1, spot[1] - 1, 2, 2], atol=1e-9)
    # outside the turned image the canvas stays 0; inside, a constant image stays constant
    flat = augment.rotate_image(np.full((3, 21, 31), 7.0, np.float32), angle)
    assert flat[0, 0, 0] == 0 and flat[0, size[1] // 2, size[0] // 2] == pytest.approx(7.0)
    assert np.all((flat == 0) | np.isclose(flat, 7.0))


def test_draws_follow_the_probabilities_and_the_offset_rule():
    rng = np.random.default_rng(0)
    never = augment.AugmentationParams(crop_prob=0, scale_prob=0, flip_prob=0, rotation_prob=0, hue_rotation_prob=0,
                                       desaturation_prob=0, shift_x=8, shift_y=8)
    d = augment.draw_augmentation(rng, never, 40, 20, 32, 16)
    # no crop draw: px = py = 0.5 and no shift: offset round(0.5 (40 - 32)), round(0.5 (20 - 16))
    assert d == augment.Draw(size=(40, 20), offset=(4, 2))
    always = augment.AugmentationParams(crop_prob=1, scale_prob=1, flip_prob=1, rotation_prob=1, hue_rotation_prob=1,
                                        desaturation_prob=1, scale_min=0.5, scale_max=1.5, shift_x=8, shift_y=6,
                                        max_rotate_degree=3, hue_rotation=30, desaturation_max=0.6)
    for _ in range(50):
        d = augment.draw_augmentation(rng, always, 40, 20, 32, 16)
        assert d.flip and -30 <= d.hue <= 30 and 0.4 <= d.saturation <= 1 and -3 <= d.angle <= 3
        assert 20 <= d.size[0] <= 60 and 10 <= d.size[1] <= 30
        bw, bh = augment.rotated_size(d.size, d.angle)
        # offset = round(px (B - 32 + 8) - 4) with px in [0, 1]
        assert min(-4, bw - 28) <= d.offset[0] <= max(-4, bw - 28)
        assert min(-3, bh - 13) <= d.offset[1] <= max(-3, bh - 13)
    # the order of the draws: hue, saturation, flip, scale, rotation, crop (two values each when taken)
    r = np.random.default_rng(7).random(12)
    d = augment.draw_augmentation(np.random.default_rng(7), always, 40, 20, 32, 16)
    assert d.hue == pytest.approx((r[1] - 0.5) * 60)
    assert d.saturation == pytest.approx(1 - r[3] * 0.6)
    f = 0.5 + r[6]
    assert d.size == (augment.round_half_away(40 * f), augment.round_half_away(20 * f))
    assert d.angle == pytest.approx((r[8] - 0.5) * 6)
    bw, bh = augment.rotated_size(d.size, d.angle)
    assert d.offset == (augment.round_half_away(r[10] * (bw - 32 + 8) - 4),
                        augment.round_half_away(r[11] * (bh - 16 + 6) - 3))
    assert augment.round_half_away(2.5) == 3 and augment.round_half_away(-2.5) == -3


# ----- the layer ------------------------------------------------------------------------------

def transform_net(phase="TEST", data=(2, 3, 16, 32), lab=(2, 1, 4, 16), gt="stride: 4 image_size_x: 32 "
                  "image_size_y: 16", aug="", tp="transform_param { mean_value: 127 }", extra=""):
    text = f"""name: "detectnet-transform"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {' '.join(f'dim: {d}' for d in data)} }} }} }}
layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ {' '.join(f'dim: {d}' for d in lab)} }} }} }}
layer {{ name: "transform" type: "DetectNetTransformation" bottom: "data" bottom: "label"
  top: "transformed_data" top: "transformed_label"
  detectnet_groundtruth_param {{ {gt} }} detectnet_augmentation_param {{ {aug} }} {tp} }}
{extra}"""
    param = caffe_pb2.NetParameter()
    text_format.Merge(text, param)
    return brewnet.Net(param, brewnet.TRAIN if phase == "TRAIN" else brewnet.TEST)


def batch_labels():
    return np.concatenate([label(row(4, 2, 12, 8), row(20, 6, 8, 8), capacity=3),
                           label(row(-2, 8, 10, 10), capacity=3)])[:, None]          # (2, 1, 4, 16)


def test_test_phase_outputs_pixel_minus_mean_and_the_targets():
    net = transform_net()
    images = np.random.default_rng(5).uniform(0, 255, size=(2, 3, 16, 32)).astype(np.float32)
    labels = batch_labels()
    out = net.forward(data=images, label=labels)
    assert out["transformed_data"].shape == (2, 3, 16, 32) and out["transformed_label"].shape == (2, 9, 4, 8)
    assert_close_f32(out["transformed_data"], images - 127, rtol=1e-6)
    p = GroundTruthParams(**SMALL)
    for i in range(2):
        assert_close_f32(out["transformed_label"][i], coverage_targets(label_rows(labels[i, 0]), p), rtol=1e-6)


def test_test_phase_resizes_to_image_size_and_scales_the_boxes():
    net = transform_net(data=(1, 3, 8, 16), lab=(1, 1, 2, 16), tp="transform_param { mean_value: 10 "
                        "mean_value: 20 mean_value: 30 }")
    images = np.random.default_rng(6).uniform(0, 255, size=(1, 3, 8, 16)).astype(np.float32)
    out = net.forward(data=images, label=label(row(2, 1, 6, 4))[None])
    mean = np.array([10, 20, 30], np.float32)[:, None, None]
    ref = torch.nn.functional.interpolate(torch.from_numpy(images[0] - mean)[None], size=(16, 32), mode="bicubic",
                                          align_corners=False)[0].numpy()
    assert_close_f32(out["transformed_data"][0], ref, rtol=1e-5)
    # the box doubled: (4, 2, 12, 8) in the 32×16 frame
    expected = coverage_targets(np.array([row(4, 2, 12, 8)]), GroundTruthParams(**SMALL))
    assert_close_f32(out["transformed_label"][0], expected, rtol=1e-6)
    assert covered(out["transformed_label"][0]) == {(1, 1), (1, 2), (1, 3)}


@pytest.mark.parametrize("mean_size", [(16, 32), (8, 16)], ids=["input-size", "resized"])
def test_a_mean_file_is_subtracted_resized_bicubic_to_the_input(tmp_path, mean_size):
    mean = np.random.default_rng(7).uniform(0, 255, size=(1, 3, *mean_size)).astype(np.float32)
    write_binaryproto(mean, tmp_path / "mean.binaryproto")
    net = transform_net(tp=f'transform_param {{ mean_file: "{tmp_path / "mean.binaryproto"}" }}')
    images = np.random.default_rng(8).uniform(0, 255, size=(2, 3, 16, 32)).astype(np.float32)
    out = net.forward(data=images, label=batch_labels())
    ref = torch.nn.functional.interpolate(torch.from_numpy(mean), size=(16, 32), mode="bicubic",
                                          align_corners=False)[0].numpy()
    if mean_size == (16, 32):
        np.testing.assert_array_equal(ref, mean[0])   # the same size: no resampling at all
    assert_close_f32(out["transformed_data"], images - ref, rtol=1e-5)


ONLY = {"hue": "hue_rotation_prob: 1 hue_rotation: 60", "desaturation": "desaturation_prob: 1 desaturation_max: 0.8"}
NOTHING_ELSE = "crop_prob: 0 scale_prob: 0 flip_prob: 0 rotation_prob: 0"


@pytest.mark.parametrize("kind", sorted(ONLY))
def test_train_recolouring_comes_before_the_mean(kind):
    """Turning the hue keeps each pixel's max and min channel; desaturating keeps the max and
    scales max - min by one factor for the whole image.  Both hold for output + mean only when the
    mean is subtracted after the recolouring, as NVCaffe's image path does."""
    others = {"hue": "desaturation_prob: 0", "desaturation": "hue_rotation_prob: 0"}[kind]
    brewnet.set_random_seed(3)
    net = transform_net("TRAIN", aug=f"{ONLY[kind]} {others} {NOTHING_ELSE}")
    images = np.random.default_rng(15).uniform(20, 235, size=(2, 3, 16, 32)).astype(np.float32)
    back = net.forward(data=images, label=batch_labels())["transformed_data"] + 127
    assert not np.allclose(back, images, atol=1.0)
    np.testing.assert_allclose(back.max(axis=1), images.max(axis=1), atol=1e-2)
    chroma_in, chroma_out = np.ptp(images, axis=1), np.ptp(back, axis=1)
    if kind == "hue":
        np.testing.assert_allclose(back.min(axis=1), images.min(axis=1), atol=1e-2)
    else:
        for i in range(2):
            factor = chroma_out[i].sum() / chroma_in[i].sum()
            assert 0.2 - 1e-6 <= factor <= 1.0
            np.testing.assert_allclose(chroma_out[i], factor * chroma_in[i], atol=2e-2)


def test_train_flip_moves_the_coverage_with_the_boxes():
    only_flip = ("crop_prob: 0 scale_prob: 0 flip_prob: 1 rotation_prob: 0 hue_rotation_prob: 0 "
                 "desaturation_prob: 0")
    net = transform_net("TRAIN", aug=only_flip, tp="")
    images = np.random.default_rng(9).uniform(0, 255, size=(2, 3, 16, 32)).astype(np.float32)
    labels = batch_labels()
    out = net.forward(data=images, label=labels)
    np.testing.assert_array_equal(out["transformed_data"], images[:, :, :, ::-1])
    p = GroundTruthParams(**SMALL)
    flipped = coverage_targets(np.array([row(32 - 4 - 12 - 1, 2, 12, 8), row(32 - 20 - 8 - 1, 6, 8, 8)]), p)
    assert_close_f32(out["transformed_label"][0], flipped, rtol=1e-6)
    assert covered(out["transformed_label"][0]) != covered(coverage_targets(label_rows(labels[0, 0]), p))


def test_train_scale_and_crop_move_the_coverage_with_the_boxes():
    # scale always, to scale_min = scale_max = 2 (64×32), no crop draw: the centred window at (16, 8)
    aug = ("crop_prob: 0 scale_prob: 1 scale_min: 2 scale_max: 2 flip_prob: 0 rotation_prob: 0 "
           "hue_rotation_prob: 0 desaturation_prob: 0")
    net = transform_net("TRAIN", data=(1, 3, 16, 32), lab=(1, 1, 2, 16), aug=aug, tp="")
    images = np.random.default_rng(10).uniform(0, 255, size=(1, 3, 16, 32)).astype(np.float32)
    out = net.forward(data=images, label=label(row(10, 5, 6, 4))[None])
    assert_close_f32(out["transformed_data"][0], augment.resize_bicubic(images[0], 64, 32)[:, 8:24, 16:48],
                     rtol=1e-6)
    # (10, 5, 6, 4) × 2 = (20, 10, 12, 8), minus the offset (16, 8) = (4, 2, 12, 8)
    expected = coverage_targets(np.array([row(4, 2, 12, 8)]), GroundTruthParams(**SMALL))
    assert_close_f32(out["transformed_label"][0], expected, rtol=1e-6)


def test_train_draws_repeat_under_the_same_seed():
    aug = ("crop_prob: 1 shift_x: 8 shift_y: 4 scale_prob: 0.5 scale_min: 0.8 scale_max: 1.2 flip_prob: 0.5 "
           "rotation_prob: 0.5 max_rotate_degree: 5 hue_rotation_prob: 0.8 hue_rotation: 30 desaturation_prob: 0.8 "
           "desaturation_max: 0.8")
    images = np.random.default_rng(11).uniform(0, 255, size=(2, 3, 16, 32)).astype(np.float32)
    labels = batch_labels()

    def run(seed):
        brewnet.set_random_seed(seed)
        net = transform_net("TRAIN", aug=aug)
        return [{k: v.copy() for k, v in net.forward(data=images, label=labels).items()} for _ in range(3)]

    a, b, c = run(5), run(5), run(6)
    for x, y in zip(a, b):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    assert any(not np.array_equal(x["transformed_data"], y["transformed_data"]) for x, y in zip(a, c))
    assert not np.array_equal(a[0]["transformed_data"], a[1]["transformed_data"])   # each pass draws anew


def test_no_gradient_reaches_the_bottoms():
    net = transform_net()
    assert net.layers[-1].has_backward is False
    data = torch.rand(2, 3, 16, 32, dtype=torch.float32, requires_grad=True)
    image, target = net.layers[-1](data, torch.from_numpy(batch_labels()).float())
    assert not image.requires_grad and not target.requires_grad


@pytest.mark.parametrize("data,lab,message", [
    ((2, 1, 16, 32), (2, 1, 4, 16), r"bottom 0 \(image\) must be N×3×H×W \(3 channels\), got \(2, 1, 16, 32\)"),
    ((2, 3, 16, 32), (3, 1, 4, 16), r"different batch sizes: image \(2, 3, 16, 32\), label \(3, 1, 4, 16\)"),
    ((2, 3, 16, 32), (2, 1, 4, 15), r"bottom 1 \(label\) must be N×1×R×16 .* got \(2, 1, 4, 15\)"),
])
def test_bad_bottom_shapes_name_the_layer_and_the_shapes(data, lab, message):
    with pytest.raises(NetError, match=r"layer 'transform' \(DetectNetTransformation\): .*" + message):
        transform_net(data=data, lab=lab)


def test_a_bad_label_count_names_the_layer_and_the_image():
    net = transform_net()
    labels = batch_labels()
    labels[1, 0, 0, 0] = 9
    with pytest.raises(NetError, match=r"layer 'transform' .*image 1 of the batch: .*says 9 boxes"):
        net.forward(data=np.zeros((2, 3, 16, 32), np.float32), label=labels)


def test_bad_parameters_are_clear_errors():
    with pytest.raises(NetError, match="mean_file and mean_value"):
        transform_net(tp='transform_param { mean_value: 1 mean_file: "m.binaryproto" }')
    with pytest.raises(NetError, match="2 mean_value entries"):
        transform_net(tp="transform_param { mean_value: 1 mean_value: 2 }")
    with pytest.raises(NetError, match="smaller than one grid cell"):
        transform_net(gt="stride: 64 image_size_x: 32 image_size_y: 16")
    with pytest.raises(NetError, match="mean file not found"):
        transform_net(tp='transform_param { mean_file: "/nonexistent/mean.binaryproto" }').forward(
            data=np.zeros((2, 3, 16, 32), np.float32), label=batch_labels())


def test_detectnet_label_blocks_run_forward_in_a_net():
    """Data-free Input layers feeding the transformation and DetectNet's label Slice, as the
    prototxt wires them (foreground, bbox, size, obj, coverage)."""
    extra = """layer { name: "slice-label" type: "Slice" bottom: "transformed_label"
  top: "foreground-label" top: "bbox-label" top: "size-label" top: "obj-label" top: "coverage-label"
  slice_param { slice_dim: 1 slice_point: 1 slice_point: 5 slice_point: 7 slice_point: 8 } }"""
    net = transform_net(extra=extra, gt="stride: 4 image_size_x: 32 image_size_y: 16 object_class { src: 1 dst: 0 } "
                        "object_class { src: 2 dst: 1 }")
    labels = batch_labels()
    labels[0, 0, 2, 5] = 2                              # the second box of image 0 is class 2
    out = net.forward(data=np.full((2, 3, 16, 32), 200, np.float32), label=labels)
    assert {k: out[k].shape for k in ("foreground-label", "bbox-label", "size-label", "obj-label",
                                      "coverage-label")} == {
        "foreground-label": (2, 1, 4, 8), "bbox-label": (2, 4, 4, 8), "size-label": (2, 2, 4, 8),
        "obj-label": (2, 1, 4, 8), "coverage-label": (2, 2, 4, 8)}
    np.testing.assert_array_equal(out["coverage-label"].sum(axis=1), out["foreground-label"][:, 0])
    assert out["coverage-label"][0, 1].sum() > 0 and out["coverage-label"][1, 1].sum() == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (a GPU machine)")
def test_the_layer_runs_on_cuda_tensors():
    param = transform_net().net_param
    cpu = brewnet.Net(param, brewnet.TEST)
    gpu = brewnet.Net(param, brewnet.TEST, device="cuda")
    images = np.random.default_rng(12).uniform(0, 255, size=(2, 3, 16, 32)).astype(np.float32)
    a = cpu.forward(data=images, label=batch_labels())
    b = gpu.forward(data=images, label=batch_labels())
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-4)
    layer = gpu.layers[-1]
    tops = layer(torch.zeros(2, 3, 16, 32, device="cuda"), torch.from_numpy(batch_labels()).float().cuda())
    assert all(t.device.type == "cuda" for t in tops)


def test_a_kitti_dataset_feeds_the_layer_through_data_layers(tmp_path):
    """The label LMDB layout of brewnet.data.detection is what the layer reads: Data layers over a
    generated KITTI set give the targets of the dataset's own label rows."""
    from brewnet.data.detection import create_detection_dataset, read_detection_labels
    from brewnet.data.detection.synthetic import make_kitti_dataset
    from brewnet.data.image import decode_datum_image
    from brewnet.data.lmdb_io import iter_records, parse_datum

    folders = make_kitti_dataset(str(tmp_path / "kitti"), train_count=3, val_count=0, width=64, height=48, seed=1)
    out = tmp_path / "ds"
    summary = create_detection_dataset(str(out), train_image_folder=folders["train_images"],
                                       train_label_folder=folders["train_labels"], padding_image_width=64,
                                       padding_image_height=48, seed=0)
    stage = summary["stages"]["train"]
    rows_per_image = stage["label_shape"][1]
    ids = {name: i for i, name in enumerate(summary["class_names"])}
    mapping = " ".join(f"object_class {{ src: {ids[c]} dst: {k} }}" for k, c in
                       enumerate(("car", "pedestrian", "cyclist")))
    data_layers = "".join(
        f'layer {{ name: "{top}" type: "Data" top: "{top}" data_param {{ source: "{out / "train_db" / sub}" '
        f'batch_size: 3 backend: LMDB }} }}\n' for top, sub in (("data", "features"), ("label", "labels")))
    text = (data_layers + 'layer { name: "transform" type: "DetectNetTransformation" bottom: "data" bottom: "label" '
            'top: "image" top: "target" detectnet_groundtruth_param { stride: 4 image_size_x: 64 image_size_y: 48 '
            f'{mapping} }} transform_param {{ mean_value: 127 }} }}')
    param = caffe_pb2.NetParameter()
    text_format.Merge(text, param)
    net = brewnet.Net(param, brewnet.TEST)
    assert net.blobs["label"].shape == (3, 1, rows_per_image, 16)
    got = net.forward()
    p = GroundTruthParams(stride=4, image_size_x=64, image_size_y=48, class_map={ids["car"]: 0,
                          ids["pedestrian"]: 1, ids["cyclist"]: 2})
    images = [decode_datum_image(parse_datum(v)) for _, v in iter_records(str(out / "train_db" / "features"))]
    labels = [read_detection_labels(v) for _, v in iter_records(str(out / "train_db" / "labels"))]
    assert sum(len(r) for r in labels) > 0
    for i in range(3):
        assert_close_f32(got["image"][i], images[i].astype(np.float32) - 127, rtol=1e-6)
        assert_close_f32(got["target"][i], coverage_targets(labels[i], p), rtol=1e-6)
    assert got["target"][:, 0].sum() > 0
