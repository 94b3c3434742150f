"""``digits_resize``: the dataset builder's resize, as DIGITS' image.resize_image does it.

The geometry below is a fact of DIGITS (digits/utils/image.py, Python 2): the image is resized
bilinearly to a size that keeps its aspect ratio, then the long side is cut in the middle and/or
the short side padded with noise.  DIGITS ran on Python 2, whose ``round`` takes halves away from
zero (``round(2.5) == 3``); the odd sizes here hit those halves: 3x2 -> 7x5 crop resizes to
``round(3 / 0.4) = round(7.5) = 8`` wide and cuts from ``round(0.5) = 1``; 12x5 -> 6x6 fill gives
``round(2.5) = 3`` rows, made 4 so that the padding is even.  The expected sizes, offsets and
paddings were worked out by hand from those rules; the pixels of the resized part are Pillow's
bilinear resize of the original (what DIGITS' scipy.misc.imresize called).
"""
import numpy as np
import pytest
from PIL import Image

from brewnet.data.image import digits_resize
from brewnet.errors import DataError


def source(w: int, h: int, color: bool) -> Image.Image:
    shape = (h, w, 3) if color else (h, w)
    return Image.fromarray(np.random.default_rng(w * 100 + h).integers(0, 256, shape, dtype=np.uint8))


# (original w, h) -> (target w, h): (resized w, h), the cut (axis, start) or None,
# the padding (axis, rows or columns on each side) or None.  Axis 0: rows, 1: columns.
CASES = {
    "crop": [
        ((10, 7), (4, 4), (6, 4), (1, 1), None),       # wide, down
        ((7, 10), (4, 4), (4, 6), (0, 1), None),       # tall, down
        ((3, 2), (7, 5), (8, 5), (1, 1), None),        # up: 7.5 -> 8, start 0.5 -> 1
        ((2, 3), (7, 5), (7, 11), (0, 3), None),       # up: 10.5 -> 11, start 2
        ((12, 5), (6, 6), (14, 6), (1, 4), None),
        ((2, 2), (5, 4), (5, 5), (0, 1), None),        # start 0.5 -> 1
    ],
    "fill": [
        ((12, 5), (6, 6), (6, 4), None, (0, 1)),       # 2.5 -> 3, odd padding -> 4
        ((10, 7), (4, 4), (4, 4), None, (0, 0)),       # 2.8 -> 3 -> 4: no padding left
        ((3, 5), (8, 8), (6, 8), None, (1, 1)),        # up
        ((2, 3), (9, 7), (5, 7), None, (1, 2)),
        ((2, 16), (4, 4), (2, 4), None, (1, 1)),       # 0.5 -> 1 -> 2
        ((3, 4), (6, 6), (6, 6), None, (1, 0)),        # 4.5 -> 5 -> 6
    ],
    "half_crop": [
        ((12, 5), (6, 6), (8, 4), (1, 1), (0, 1)),
        ((5, 12), (6, 6), (4, 8), (0, 1), (1, 1)),
        ((20, 9), (5, 4), (6, 4), (1, 1), (0, 0)),      # 2.88 -> 3 -> 4, start 0.5 -> 1
        ((2, 3), (4, 4), (4, 5), (0, 1), (1, 0)),      # start 0.5 -> 1
        ((11, 4), (6, 6), (9, 4), (1, 2), (0, 1)),     # start 1.5 -> 2
    ],
}
PARAMS = [(mode, *case, color) for mode, cases in CASES.items() for case in cases for color in (False, True)]


def expected(src: Image.Image, target, resized, cut, pad, rng_seed: int) -> np.ndarray:
    arr = np.asarray(src.resize(resized, Image.BILINEAR))
    if cut is not None:
        axis, start = cut
        length = target[1] if axis == 0 else target[0]
        arr = np.take(arr, range(start, start + length), axis=axis)
    if pad is not None:
        axis, n = pad
        shape = list(arr.shape)
        shape[axis] = n
        rng = np.random.default_rng(rng_seed)     # brewnet's noise: before, then after
        before = rng.integers(0, 255, size=shape, dtype=np.uint8)
        after = rng.integers(0, 255, size=shape, dtype=np.uint8)
        arr = np.concatenate([before, arr, after], axis=axis)
    return arr


@pytest.mark.parametrize("mode,size,target,resized,cut,pad,color", PARAMS)
def test_digits_geometry_of_odd_sizes(mode, size, target, resized, cut, pad, color):
    src = source(*size, color)
    out = digits_resize(src, *target, mode, np.random.default_rng(5))
    assert out.size == target and out.mode == ("RGB" if color else "L")
    np.testing.assert_array_equal(np.asarray(out), expected(src, target, resized, cut, pad, 5))


@pytest.mark.parametrize("color", [False, True])
def test_padding_is_noise_below_255(color):
    out = np.asarray(digits_resize(source(40, 4, color), 8, 8, "fill", np.random.default_rng(1)))
    noise = np.concatenate([out[:3], out[-3:]])       # 40x4 -> 8x1, odd -> 8x2, 3 rows each side
    assert noise.max() <= 254 and len(np.unique(noise)) > 20


@pytest.mark.parametrize("mode,size,target", [
    ("squash", (10, 7), (4, 4)), ("squash", (3, 2), (7, 5)), ("squash", (4, 9), (6, 6)),
    *[(mode, size, target) for mode in ("squash", "crop", "fill", "half_crop")     # equal ratios
      for size, target in (((8, 4), (4, 2)), ((3, 6), (6, 12)))]])
def test_squash_and_equal_ratios_resize_straight(mode, size, target):
    src = source(*size, True)
    out = digits_resize(src, *target, mode)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(src.resize(target, Image.BILINEAR)))


def test_the_right_size_is_left_alone_and_bad_modes_refused():
    src = source(5, 3, False)
    assert digits_resize(src, 5, 3, "fill") is src
    with pytest.raises(DataError, match=r"unknown resize mode 'stretch' \(one of squash, crop, fill, half_crop\)"):
        digits_resize(src, 4, 4, "stretch")


def test_a_side_that_rounds_to_nothing_keeps_one_pixel():
    """1x40 -> 4x4 fill: 1 / 10 rounds to 0 columns, where DIGITS' resize fails; brewnet keeps
    one column and, the shortfall being odd, two."""
    src = source(1, 40, False)
    out = np.asarray(digits_resize(src, 4, 4, "fill", np.random.default_rng(2)))
    np.testing.assert_array_equal(out, expected(src, (4, 4), (2, 4), None, (1, 1), 2))
