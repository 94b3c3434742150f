"""Images for Caffe data: decoding (as OpenCV would give them to Caffe), encoding, resizing.

Conventions:
- Arrays handed to the transformer are C×H×W uint8 in Caffe's channel order: BGR for colour
  (OpenCV's ``imread``/``imdecode`` order), one channel for grey.
- Data layers resize as Caffe's ``cv::resize(..., INTER_LINEAR)`` does: bilinear with half-pixel
  centres and no anti-aliasing (``resize_bilinear``).
- The dataset builder resizes as DIGITS does (``digits_resize``: Pillow bilinear, modes squash,
  crop, fill, half_crop; halves rounded up, as DIGITS' Python 2 did).
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import DataError

RESIZE_MODES = ("squash", "crop", "fill", "half_crop")


def _pil_to_caffe(im: Image.Image, color: bool | None) -> np.ndarray:
    """A Pillow image as C×H×W uint8; ``color`` None keeps the native kind (grey stays grey)."""
    if color is None:
        color = im.mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
    if color:
        arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
        return np.ascontiguousarray(arr[:, :, ::-1].transpose(2, 0, 1))  # RGB -> BGR, HWC -> CHW
    if im.mode.startswith("I;16"):
        arr = (np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8)  # 16-bit -> 8-bit like OpenCV
    else:
        arr = np.asarray(im.convert("L"), dtype=np.uint8)
    return np.ascontiguousarray(arr[None])


def decode_image_bytes(data: bytes, force_color: bool = False, force_gray: bool = False,
                       what: str = "image") -> np.ndarray:
    """Decode PNG/JPEG/... bytes to C×H×W uint8 (BGR for colour), like Caffe's DecodeDatumToCVMat."""
    if force_color and force_gray:
        raise DataError("force_color and force_gray cannot both be set")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return _pil_to_caffe(im, True if force_color else (False if force_gray else None))
    except DataError:
        raise
    except Exception as e:
        raise DataError(f"cannot decode {what}: {e}") from None


def datum_to_chw(datum, force_color: bool = False, force_gray: bool = False,
                 what: str = "Datum") -> np.ndarray:
    """A Datum's image as Caffe's Data layer reads it: encoded bytes decoded (C×H×W uint8, colour
    in BGR), raw ``data`` as uint8 C×H×W, or ``float_data`` as float32 C×H×W."""
    if datum.encoded:
        return decode_image_bytes(datum.data, force_color, force_gray, what=what)
    shape = (datum.channels, datum.height, datum.width)
    n = shape[0] * shape[1] * shape[2]
    if len(datum.data):
        if len(datum.data) != n:
            raise DataError(f"{what} has {len(datum.data)} bytes of data for shape {shape}")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape)
    if len(datum.float_data) != n:
        raise DataError(f"{what} has {len(datum.float_data)} float values for shape {shape}")
    return np.asarray(datum.float_data, dtype=np.float32).reshape(shape)


def decode_datum_image(datum, force_color: bool = False, force_gray: bool = False) -> np.ndarray:
    """An encoded Datum's image as C×H×W uint8 (colour in BGR, as Caffe's OpenCV decode gives)."""
    return decode_image_bytes(datum.data, force_color, force_gray, what="encoded Datum")


def load_image_file(path: str, is_color: bool = True, new_height: int = 0, new_width: int = 0) -> np.ndarray:
    """Caffe's ReadImageToCVMat: C×H×W uint8 (BGR or grey), resized bilinearly when both sizes > 0.

    Raises DataError naming the file when it cannot be read.
    """
    try:
        with Image.open(path) as im:
            im.load()
            arr = _pil_to_caffe(im, bool(is_color))
    except FileNotFoundError:
        raise DataError(f"image not found: {path}") from None
    except Exception as e:
        raise DataError(f"cannot read image {path}: {e}") from None
    if new_height > 0 and new_width > 0:
        arr = resize_bilinear(arr, new_height, new_width)
    return arr


def resize_bilinear(chw: np.ndarray, height: int, width: int) -> np.ndarray:
    """cv::resize INTER_LINEAR on a C×H×W uint8 array (half-pixel centres, no anti-aliasing)."""
    if chw.shape[1:] == (height, width):
        return chw
    t = torch.tensor(chw, dtype=torch.float32)[None]
    out = F.interpolate(t, size=(height, width), mode="bilinear", align_corners=False)
    return out[0].round_().clamp_(0, 255).to(torch.uint8).numpy()


def encode_image(hwc: np.ndarray, fmt: str = "png", quality: int = 90) -> bytes:
    """Encode an H×W×C (RGB) or H×W uint8 array as PNG or JPEG bytes (decoding gives BGR back)."""
    if hwc.ndim == 3 and hwc.shape[2] == 1:
        hwc = hwc[:, :, 0]
    im = Image.fromarray(np.ascontiguousarray(hwc))
    buf = io.BytesIO()
    if fmt in ("jpg", "jpeg"):
        im.save(buf, format="JPEG", quality=quality)
    elif fmt == "png":
        im.save(buf, format="PNG")
    else:
        raise ValueError(f"unknown image encoding {fmt!r} (png or jpg)")
    return buf.getvalue()


def _round_half_up(x: float) -> int:
    """``x >= 0`` to the nearest integer, halves up: Python 2's ``round``, which DIGITS' resize
    arithmetic ran on (Python 3's ``round(2.5)`` is 2, DIGITS' 3)."""
    whole = math.floor(x)
    return int(whole) + (1 if x - whole >= 0.5 else 0)   # x - floor(x) is exact for floats


@dataclass(frozen=True)
class _Fit:
    """How DIGITS fits an image into a width×height box; sizes and axes are (x, y) pairs."""
    size: tuple[int, int]               # the bilinear resize's (width, height)
    cut: tuple[int, int] | None = None  # (axis, first kept pixel) on the axis that overflows
    pad: tuple[int, int] | None = None  # (axis, noise pixels on each side) on the one that falls short


# the scale each mode divides the original by, from its two ratios original / box (one per axis)
_MODE_SCALE = {"crop": min, "fill": max, "half_crop": lambda a, b: (a + b) / 2.0}


def _digits_fit(original: tuple[int, int], box: tuple[int, int], mode: str) -> _Fit:
    """DIGITS' geometry (digits/utils/image.py, resize_image).

    Both axes are divided by one scale taken from the two ratios original/box: the smaller
    (crop: the image covers the box), the larger (fill: it fits inside), their mean (half_crop).
    The axis with the larger ratio then overflows the box and the other falls short: crop and
    half_crop cut the overflow in the middle, fill and half_crop pad the shortfall with noise on
    both sides, first growing the short side by one pixel where its shortfall is odd.  Equal
    ratios, and squash, resize straight to the box.
    """
    ratios = (original[0] / box[0], original[1] / box[1])
    if mode == "squash" or ratios[0] == ratios[1]:
        return _Fit(size=box)
    scale = _MODE_SCALE[mode](*ratios)
    size = [max(1, _round_half_up(n / scale)) for n in original]   # DIGITS fails on a 0 side
    over = 0 if ratios[0] > ratios[1] else 1                        # the axis with the larger ratio
    short = 1 - over
    cut = pad = None
    if mode != "crop":
        size[short] += (box[short] - size[short]) % 2
        pad = (short, (box[short] - size[short]) // 2)
    if mode != "fill":
        cut = (over, _round_half_up((size[over] - box[over]) / 2.0))
    return _Fit(size=(size[0], size[1]), cut=cut, pad=pad)


def _noise_border(arr: np.ndarray, axis: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``arr`` (H×W or H×W×C uint8) with ``n`` rows (axis 0) or columns (axis 1) of uniform noise
    in [0, 255) before and after it."""
    shape = list(arr.shape)
    shape[axis] = n
    before, after = (rng.integers(0, 255, size=shape, dtype=np.uint8) for _ in range(2))
    return np.concatenate([before, arr, after], axis=axis)


def digits_resize(im: Image.Image, width: int, height: int, mode: str = "squash",
                  rng: np.random.Generator | None = None) -> Image.Image:
    """Resize a Pillow image to width×height as DIGITS does (Pillow bilinear).

    - squash: stretch to the size, ignoring the aspect ratio;
    - crop: keep the aspect ratio, cover the size, cut the longer side in the centre;
    - fill: keep the aspect ratio, fit inside, pad the shorter side with random noise;
    - half_crop: resize to the average of the two ratios, crop the long side, pad the short one.

    ``rng`` draws the noise of fill and half_crop.
    """
    if mode not in RESIZE_MODES:
        raise DataError(f"unknown resize mode {mode!r} (one of {', '.join(RESIZE_MODES)})")
    box = (width, height)
    if im.size == box:
        return im
    fit = _digits_fit(im.size, box, mode)
    out = im.resize(fit.size, Image.BILINEAR)
    if fit.cut is not None:
        axis, first = fit.cut
        corner, kept = [0, 0], list(out.size)
        corner[axis], kept[axis] = first, box[axis]
        out = out.crop((corner[0], corner[1], corner[0] + kept[0], corner[1] + kept[1]))
    if fit.pad is None:
        return out
    # an image's x axis is an array's axis 1
    axis, n = fit.pad
    arr = _noise_border(np.asarray(out), 1 - axis, n, rng or np.random.default_rng())
    return Image.fromarray(np.ascontiguousarray(arr))
