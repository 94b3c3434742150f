"""DataTransformer semantics against hand-computed values (Caffe's order: crop, mean, scale, mirror)."""
from __future__ import annotations

import numpy as np
import pytest

from brewnet import formats
from brewnet.data import DataError
from brewnet.data.transformer import DataTransformer
from brewnet.proto import caffe_pb2

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST


def tp(**kw):
    p = caffe_pb2.TransformationParameter()
    for k, v in kw.items():
        if k == "mean_value":
            p.mean_value.extend(v)
        else:
            setattr(p, k, v)
    return p


class FixedRng:
    """Stands in for the Generator: mirror coins and crop offsets given by the test."""

    def __init__(self, values):
        self.values = list(values)

    def integers(self, lo, hi, size):
        out = np.array(self.values[:size])
        del self.values[:size]
        assert np.all((out >= lo) & (out < hi))
        return out


IMG = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(1, 2, 3, 4)  # N=1, C=2, H=3, W=4


def test_scale_only():
    out = DataTransformer(tp(scale=0.5), TEST)(IMG)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, IMG.astype(np.float32) * 0.5)


def test_center_crop_in_test_uses_integer_division():
    # H=3, W=4, crop 2: h_off = (3-2)//2 = 0, w_off = (4-2)//2 = 1
    out = DataTransformer(tp(crop_size=2), TEST)(IMG)
    np.testing.assert_array_equal(out[0, 0], [[1, 2], [5, 6]])
    np.testing.assert_array_equal(out[0, 1], [[13, 14], [17, 18]])


def test_mean_file_is_indexed_at_the_cropped_position(tmp_path):
    mean = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4) * 0.25
    path = tmp_path / "m.binaryproto"
    formats.write_binaryproto(mean, str(path))
    t = DataTransformer(tp(crop_size=2, mean_file=str(path), scale=2.0), TEST)
    out = t(IMG)
    # element (c=0, h=0, w=0) comes from x[0, 0, 1] = 1 and mean[0, 0, 1] = 0.25
    assert out[0, 0, 0, 0] == (1 - 0.25) * 2
    expected = (IMG[0, :, 0:2, 1:3] - mean[0, :, 0:2, 1:3]) * 2
    np.testing.assert_array_equal(out[0], expected)


def test_mean_values_one_or_per_channel():
    out = DataTransformer(tp(mean_value=[3]), TEST)(IMG)
    np.testing.assert_array_equal(out, IMG.astype(np.float32) - 3)
    out = DataTransformer(tp(mean_value=[1, 10], scale=0.1), TEST)(IMG)
    np.testing.assert_array_equal(out[0, 0], (IMG[0, 0] - np.float32(1)) * np.float32(0.1))
    np.testing.assert_array_equal(out[0, 1], (IMG[0, 1] - np.float32(10)) * np.float32(0.1))
    with pytest.raises(DataError, match="mean_value"):
        DataTransformer(tp(mean_value=[1, 2, 3]), TEST)(IMG)


def test_random_crop_and_mirror_in_train():
    # draws: mirror coin (1), then h_off (1), w_off (2)
    t = DataTransformer(tp(crop_size=2, mirror=True, mean_value=[1]), TRAIN, rng=FixedRng([1, 1, 2]))
    out = t(IMG)
    crop = IMG[0, :, 1:3, 2:4].astype(np.float32) - 1
    np.testing.assert_array_equal(out[0], crop[:, :, ::-1])  # mirrored after the mean
    t = DataTransformer(tp(crop_size=2, mirror=True), TRAIN, rng=FixedRng([0, 0, 0]))
    np.testing.assert_array_equal(t(IMG)[0], IMG[0, :, 0:2, 0:2])


def test_mirror_is_off_in_test():
    out = DataTransformer(tp(mirror=True), TEST)(np.repeat(IMG, 20, axis=0))
    np.testing.assert_array_equal(out, np.repeat(IMG, 20, axis=0).astype(np.float32))


def test_seeded_generator_repeats():
    batch = np.random.default_rng(0).integers(0, 255, size=(8, 3, 10, 10), dtype=np.uint8)
    a = DataTransformer(tp(crop_size=7, mirror=True), TRAIN, rng=np.random.default_rng(5))(batch)
    b = DataTransformer(tp(crop_size=7, mirror=True), TRAIN, rng=np.random.default_rng(5))(batch)
    np.testing.assert_array_equal(a, b)
    # each output is some crop of its input, possibly mirrored
    for i in range(8):
        found = any(np.array_equal(a[i], batch[i, :, h:h + 7, w:w + 7][..., ::m])
                    for h in range(4) for w in range(4) for m in (1, -1))
        assert found


def test_errors():
    with pytest.raises(DataError, match="larger than the image"):
        DataTransformer(tp(crop_size=5), TEST)(IMG)
    with pytest.raises(DataError, match="at the same time"):
        DataTransformer(tp(mean_file="x", mean_value=[1]), TEST)
    with pytest.raises(DataError, match="not found"):
        DataTransformer(tp(mean_file="/nonexistent/mean.binaryproto"), TEST)


def test_mean_file_shape_must_match(tmp_path):
    path = tmp_path / "m.binaryproto"
    formats.write_binaryproto(np.zeros((1, 2, 5, 5), np.float32), str(path))
    with pytest.raises(DataError, match="full, uncropped"):
        DataTransformer(tp(mean_file=str(path)), TEST)(IMG)
