"""Images for Caffe data: decoding (as OpenCV would give them to Caffe), encoding, resizing.

Conventions:
- Arrays handed to the transformer are C×H×W uint8 in Caffe's channel order: BGR for colour
  (OpenCV's ``imread``/``imdecode`` order), one channel for grey.
- Data layers resize as Caffe's ``cv::resize(..., INTER_LINEAR)`` does: bilinear with half-pixel
  centres and no anti-aliasing (``resize_bilinear``).
- The dataset builder resizes as DIGITS does (``digits_resize``: Pillow bilinear, modes squash,
  crop, fill, half_crop).
"""
from __future__ import annotations

import io

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


def digits_resize(im: Image.Image, width: int, height: int, mode: str = "squash",
                  rng: np.random.Generator | None = None) -> Image.Image:
    """Resize a Pillow image to width×height as DIGITS does.

    - squash: stretch to the size, ignoring the aspect ratio;
    - crop: keep the aspect ratio, cover the size, cut the longer side in the centre;
    - fill: keep the aspect ratio, fit inside, pad the shorter side with random noise;
    - half_crop: resize to the average of the two ratios, crop the long side, pad the short one.
    """
    if mode not in RESIZE_MODES:
        raise DataError(f"unknown resize mode {mode!r} (one of {', '.join(RESIZE_MODES)})")
    w0, h0 = im.size
    if (w0, h0) == (width, height):
        return im
    wr, hr = w0 / width, h0 / height
    if mode == "squash" or wr == hr:
        return im.resize((width, height), Image.BILINEAR)
    if mode == "crop":
        if wr > hr:
            rw, rh = int(round(w0 / hr)), height
        else:
            rw, rh = width, int(round(h0 / wr))
        im = im.resize((rw, rh), Image.BILINEAR)
        if wr > hr:
            s = int(round((rw - width) / 2.0))
            return im.crop((s, 0, s + width, height))
        s = int(round((rh - height) / 2.0))
        return im.crop((0, s, width, s + height))
    if mode == "fill":
        if wr > hr:
            rw, rh = width, int(round(h0 / wr))
            rh += (height - rh) % 2  # even padding on both sides
        else:
            rw, rh = int(round(w0 / hr)), height
            rw += (width - rw) % 2
        arr = np.asarray(im.resize((rw, rh), Image.BILINEAR))
    else:  # half_crop
        r = (wr + hr) / 2.0
        rw, rh = int(round(w0 / r)), int(round(h0 / r))
        if wr > hr and (height - rh) % 2 == 1:
            rh += 1
        elif wr < hr and (width - rw) % 2 == 1:
            rw += 1
        arr = np.asarray(im.resize((rw, rh), Image.BILINEAR))
        if wr > hr:
            s = int(round((rw - width) / 2.0))
            arr = arr[:, s:s + width]
        else:
            s = int(round((rh - height) / 2.0))
            arr = arr[s:s + height, :]
    rng = rng or np.random.default_rng()
    # pad the short dimension on both sides with uniform noise (DIGITS' fill)
    if wr > hr:
        pad = (height - arr.shape[0]) // 2
        noise_shape = (pad, arr.shape[1]) + arr.shape[2:]
        axis = 0
    else:
        pad = (width - arr.shape[1]) // 2
        noise_shape = (arr.shape[0], pad) + arr.shape[2:]
        axis = 1
    noise = lambda: rng.integers(0, 255, size=noise_shape, dtype=np.uint8)  # noqa: E731
    arr = np.concatenate([noise(), arr, noise()], axis=axis)
    return Image.fromarray(np.ascontiguousarray(arr))
