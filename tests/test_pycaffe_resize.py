"""``caffe.io.resize_image``, ``Transformer.preprocess`` and ``caffe.io.oversample`` give pycaffe's
numbers, compared with outputs recorded from BVLC pycaffe itself (tests/pycaffe_io/README.md says
how): float and uint8, grey and colour, up- and down-scaling, odd sizes, nearest and cubic
orders, a constant image, more than three channels, and the image border, where scikit-image's
``mode='constant'`` blends the edge with zero padding.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from brewnet.pycaffe import io as caffe_io
from numeric import assert_close_f32

RECORDED = np.load(Path(__file__).parent / "pycaffe_io" / "pycaffe_io.npz")


def _cases(group: str) -> list[str]:
    return sorted({k.split("/")[1] for k in RECORDED.files if k.startswith(group + "/")})


def _case(group: str, name: str) -> dict[str, np.ndarray]:
    prefix = f"{group}/{name}/"
    return {k[len(prefix):]: RECORDED[k] for k in RECORDED.files if k.startswith(prefix)}


def test_the_recording_has_every_kind_of_case():
    names = _cases("resize")
    for kind in ("float_grey_up", "float_grey_down", "uint8_grey_up", "uint8_grey_down",
                 "uint8_colour_up", "uint8_colour_down", "float_colour_up_odd",
                 "float_colour_down_odd", "float_4ch_up", "float_constant_colour"):
        assert kind in names
    assert len(_cases("preprocess")) == 4 and len(_cases("oversample")) == 3


@pytest.mark.parametrize("name", _cases("resize"))
def test_resize_image_matches_recorded_pycaffe(name):
    case = _case("resize", name)
    got = caffe_io.resize_image(case["in"], tuple(case["dims"]), interp_order=int(case["order"]))
    want = case["out"]
    assert got.dtype == np.float32 and got.shape == want.shape
    assert_close_f32(got, want, what=name)


def test_resize_at_the_border_blends_with_zero_padding_as_pycaffe():
    # the case: 360×480 -> 451×451 of an image that is 0.5 but for one black and one
    # white pixel (pycaffe fills a truly constant image instead of resizing it)
    im = np.full((360, 480, 3), 0.5, np.float32)
    im[100, 100] = 0.0
    im[200, 300] = 1.0
    got = caffe_io.resize_image(im, (451, 451))
    rows, cols = RECORDED["issue/rows"], RECORDED["issue/cols"]
    assert_close_f32(got[rows], RECORDED["issue/out_rows"])
    assert_close_f32(got[:, cols], RECORDED["issue/out_cols"])
    # upscaling the rows, the first and last output rows reach 0.1 pixel into the padding
    for row in (0, 450):
        assert abs(float(got[row, 225, 0]) - 0.4496) < 1e-4
    assert abs(float(got[225, 225, 0]) - 0.5) < 1e-6


def test_a_constant_image_is_filled_with_its_value():
    got = caffe_io.resize_image(np.full((360, 480, 3), 0.5, np.float32), (451, 451))
    assert got.shape == (451, 451, 3) and got.dtype == np.float32
    assert np.all(got == 0.5)
    grey = caffe_io.resize_image(np.full((5, 4, 1), 7, np.uint8), (3, 9))
    assert grey.shape == (3, 9, 1) and np.all(grey == 7.0)


def test_a_resize_to_the_same_size_returns_the_image():
    im = np.random.default_rng(1).random((6, 5, 3), dtype=np.float32)
    np.testing.assert_array_equal(caffe_io.resize_image(im, (6, 5)), im)
    assert caffe_io.resize_image(im.astype(np.float64), (6, 5)).dtype == np.float32


def test_resize_image_needs_an_hwk_image():
    with pytest.raises(ValueError, match=r"needs an H×W×K image, got shape \(4, 5\)"):
        caffe_io.resize_image(np.zeros((4, 5), np.float32), (2, 2))


@pytest.mark.parametrize("name", _cases("preprocess"))
def test_transformer_preprocess_matches_recorded_pycaffe(name):
    case = _case("preprocess", name)
    t = caffe_io.Transformer({"data": tuple(int(v) for v in case["shape"])})
    setters = {"transpose": t.set_transpose, "swap": t.set_channel_swap,
               "raw": t.set_raw_scale, "mean": t.set_mean, "scale": t.set_input_scale}
    for key, setter in setters.items():
        if key in case:
            value = case[key]
            setter("data", tuple(value.tolist()) if key in ("transpose", "swap") else
                   (value if value.ndim else float(value)))
    got = t.preprocess("data", case["in"])
    assert got.dtype == np.float32 and got.shape == case["out"].shape
    assert_close_f32(got, case["out"], what=name)


@pytest.mark.parametrize("name", _cases("oversample"))
def test_oversample_matches_recorded_pycaffe(name):
    case = _case("oversample", name)
    got = caffe_io.oversample(list(case["in"]), tuple(case["crop"]))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, case["out"])  # crops are copies: exact


def test_oversample_refuses_crops_that_do_not_fit_and_images_of_two_shapes():
    images = list(np.random.default_rng(2).random((2, 6, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="crops of 7×4 do not fit in 6×8 images"):
        caffe_io.oversample(images, (7, 4))
    with pytest.raises(ValueError, match="oversample needs images of one shape"):
        caffe_io.oversample([images[0], np.zeros((7, 8, 3), np.float32)], (4, 4))
