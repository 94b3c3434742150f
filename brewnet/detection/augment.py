"""DetectNet's image and box transformation: NVCaffe's ``detectnet_augmentation_param`` (TRAIN)
and the plain resize of the TEST phase, applied to an image and its label rows alike.

The facts (the draws, their order, the image path of NVCaffe's CPU code and the box path) are
those of DIGITS' documentation of ``DetectNetTransformation``; the code is ours, numpy only.

**Draws** (one image, TRAIN; each ``r`` is a fresh uniform [0, 1) draw, and a value is drawn only
when its test passed — our reading of "a fresh r each time"):

1. hue: if r <= hue_rotation_prob, hue = (r - 0.5)·2·hue_rotation degrees, clamped to ±180;
2. saturation: if r <= desaturation_prob, s = 1 - r·desaturation_max (else 1);
3. flip = r <= flip_prob;
4. scale: if r <= scale_prob, f = scale_min + (scale_max - scale_min)·r and the image becomes
   (round(W·f), round(H·f)) (C's rounding, half away from zero);
5. rotation: if r <= rotation_prob, angle = (r - 0.5)·2·max_rotate_degree degrees;
6. crop: B = the scaled size, or the bounding size of the rotated scaled image.  If r <= crop_prob,
   px = r, py = r and the shift is (shift_x, shift_y), else px = py = 0.5 and no shift; offset_x =
   round(px·(B_w - image_size_x + shift_x) - shift_x // 2), the same in y.

TEST: no augmentation; the image is resized to (image_size_x, image_size_y) and the offset is 0.

**Image path** (values 0..255, BGR as Caffe decodes them; NVCaffe divides by 255 first and
multiplies back at the end, which changes nothing here but the HSV step's scale): hue and
saturation in HSV (hue in degrees, when hue != 0 or s < 1 - 1/255) -> minus the mean (given at the
input's size) -> horizontal flip -> bicubic resize to the drawn size (OpenCV's INTER_CUBIC: Keys'
kernel with a = -0.75, pixel centres aligned, borders replicated, no antialiasing) -> rotation
about the centre onto a zero canvas of the bounding size (bilinear, zeros outside; see the
geometry section below) -> the crop window at the offset, zeros where it leaves the image.  The
output is pixel - mean.

**Box path**: flip x' = W - x - w - 1 (the input's width) -> x, y, w, h scaled by new/old size ->
the box's centre moved by the rotation (the size kept) -> minus the crop offset.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .coverage import LABEL_WIDTH

#: Keys' cubic convolution parameter OpenCV's INTER_CUBIC uses
CUBIC_A = -0.75


@dataclass(frozen=True)
class AugmentationParams:
    """``detectnet_augmentation_param`` with NVCaffe's defaults (angles in degrees)."""
    crop_prob: float = 1.0
    shift_x: int = 0
    shift_y: int = 0
    scale_prob: float = 0.33
    scale_min: float = 0.7
    scale_max: float = 1.0
    flip_prob: float = 0.33
    rotation_prob: float = 0.33
    max_rotate_degree: float = 1.0
    hue_rotation_prob: float = 0.33
    hue_rotation: float = 15.0
    desaturation_prob: float = 0.33
    desaturation_max: float = 0.5

    def __post_init__(self):
        if not 0 < self.scale_min <= self.scale_max:
            raise DataError(f"detectnet_augmentation_param: need 0 < scale_min <= scale_max, got "
                            f"scale_min {self.scale_min:g}, scale_max {self.scale_max:g}")

    @classmethod
    def from_proto(cls, p) -> "AugmentationParams":
        """From a ``DetectNetAugmentationParameter`` message (SSD's sub-messages are not used)."""
        # each field as the type of its default (the proto's uint32 shifts stay ints)
        return cls(**{name: type(getattr(cls, name))(getattr(p, name)) for name in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Draw:
    """One image's choices: what :func:`transform_image` and :func:`transform_boxes` apply."""
    size: tuple[int, int]            # (width, height) after scaling
    offset: tuple[int, int] = (0, 0)  # (x, y) of the crop window in the (rotated) scaled image
    hue: float = 0.0                 # degrees
    saturation: float = 1.0          # factor
    flip: bool = False
    angle: float = 0.0               # degrees, clockwise on screen (OpenCV RotatedRect's sense)

    @property
    def desaturates(self) -> bool:
        """NVCaffe leaves the saturation alone unless the factor is noticeably below 1."""
        return self.saturation < 1.0 - 1.0 / 255.0

    @property
    def recolours(self) -> bool:
        return self.hue != 0.0 or self.desaturates


def round_half_away(v: float) -> int:
    """C's ``round``: halves go away from zero (Python's ``round`` goes to even)."""
    return int(math.copysign(math.floor(abs(v) + 0.5), v))


def plain_draw(out_width: int, out_height: int) -> Draw:
    """The TEST phase: resize to the output size, no crop offset, nothing else."""
    return Draw(size=(int(out_width), int(out_height)))


def draw_augmentation(rng: np.random.Generator, params: AugmentationParams, width: int, height: int,
                      out_width: int, out_height: int) -> Draw:
    """The TRAIN choices for one ``width`` × ``height`` image cropped to ``out_width`` ×
    ``out_height``, drawn from ``rng`` in the module docstring's order."""
    p = params
    hue = 0.0
    if rng.random() <= p.hue_rotation_prob:
        hue = min(max((rng.random() - 0.5) * 2.0 * p.hue_rotation, -180.0), 180.0)
    saturation = 1.0
    if rng.random() <= p.desaturation_prob:
        saturation = 1.0 - rng.random() * p.desaturation_max
    flip = bool(rng.random() <= p.flip_prob)
    size = (int(width), int(height))
    if rng.random() <= p.scale_prob:
        f = p.scale_min + (p.scale_max - p.scale_min) * rng.random()
        size = (max(round_half_away(width * f), 1), max(round_half_away(height * f), 1))
    angle = 0.0
    if rng.random() <= p.rotation_prob:
        angle = (rng.random() - 0.5) * 2.0 * p.max_rotate_degree
    bound_w, bound_h = rotated_size(size, angle)
    if rng.random() <= p.crop_prob:
        px, py, shift_x, shift_y = rng.random(), rng.random(), int(p.shift_x), int(p.shift_y)
    else:
        px, py, shift_x, shift_y = 0.5, 0.5, 0, 0
    offset = (round_half_away(px * (bound_w - out_width + shift_x) - shift_x // 2),
              round_half_away(py * (bound_h - out_height + shift_y) - shift_y // 2))
    return Draw(size=size, offset=offset, hue=hue, saturation=saturation, flip=flip, angle=angle)


# ----- geometry ---------------------------------------------------------------------------------
# NVCaffe turns the image as OpenCV's RotatedRect turns a rectangle: the width axis goes to
# (cos, sin) in image coordinates (y down), so a positive angle turns clockwise on screen.  The
# canvas is that rotated rectangle's integer bounding rectangle (OpenCV's boundingRect: floor of
# the smallest corner, ceil of the largest, + 1), and the affine takes the image's corners onto the
# rotated rectangle's corners moved into the canvas.

def _turn(angle: float) -> np.ndarray:
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return np.array([[c, -s], [s, c]])


def _bounds(centre: tuple[float, float], size: tuple[int, int], angle: float) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the integer bounding rectangle of the ``size`` rectangle
    centred on ``centre`` and turned by ``angle``."""
    w, h = size
    half = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], dtype=np.float64) / 2.0   # (4, 2)
    corners = half @ _turn(angle).T + np.asarray(centre, dtype=np.float64)
    # rounded to 1e-6 first so that float noise never adds a row or a column
    lo = np.floor(np.round(corners.min(axis=0), 6)).astype(int)
    hi = np.ceil(np.round(corners.max(axis=0), 6)).astype(int)
    return int(lo[0]), int(lo[1]), int(hi[0] - lo[0] + 1), int(hi[1] - lo[1] + 1)


def rotated_size(size: tuple[int, int], angle: float) -> tuple[int, int]:
    """(width, height) of the canvas that holds a ``size`` image turned by ``angle`` degrees (the
    size itself for angle 0).  NVCaffe measures it about the integer centre (w // 2, h // 2)."""
    if angle == 0.0:
        return size
    _, _, bw, bh = _bounds((size[0] // 2, size[1] // 2), size, angle)
    return bw, bh


def rotation_matrix(size: tuple[int, int], angle: float) -> np.ndarray:
    """The 2×3 affine that maps pixel (x, y) of a ``size`` image to its place on the rotated
    canvas: turned by ``angle`` about the centre (w/2, h/2), then moved so that the bounding
    rectangle's top-left is the canvas' origin."""
    w, h = size
    centre = np.array([w / 2.0, h / 2.0])
    left, top, _, _ = _bounds((centre[0], centre[1]), size, angle)
    turn = _turn(angle)
    return np.concatenate([turn, (centre - np.array([left, top]) - turn @ centre)[:, None]], axis=1)


# ----- the image --------------------------------------------------------------------------------

def cubic_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV INTER_CUBIC along one axis: for each output index, the 4 source indices (n_out, 4)
    (clamped to the border) and their weights (n_out, 4).  Source position (d + 0.5)·n_in/n_out -
    0.5; Keys' kernel with a = -0.75."""
    pos = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(pos)
    taps = np.arange(-1, 3, dtype=np.float64)                       # (4,)
    dist = np.abs(pos[:, None] - (base[:, None] + taps[None, :]))   # (n_out, 4), in [0, 2]
    a = CUBIC_A
    near = ((a + 2.0) * dist - (a + 3.0)) * dist * dist + 1.0       # |d| <= 1
    far = ((a * dist - 5.0 * a) * dist + 8.0 * a) * dist - 4.0 * a  # 1 < |d| < 2
    weights = np.where(dist <= 1.0, near, np.where(dist < 2.0, far, 0.0))
    index = np.clip(base[:, None].astype(np.int64) + taps[None, :].astype(np.int64), 0, n_in - 1)
    return index, weights


def resize_bicubic(x: np.ndarray, width: int, height: int) -> np.ndarray:
    """C×H×W float -> C×``height``×``width`` float32 (OpenCV's INTER_CUBIC; the same size is a copy)."""
    _, h, w = x.shape
    out = np.asarray(x, dtype=np.float32)
    if w != width:
        index, weights = cubic_taps(w, width)
        out = np.einsum("chok,ok->cho", out[:, :, index], weights.astype(np.float32))
    if h != height:
        index, weights = cubic_taps(h, height)
        out = np.einsum("cokw,ok->cow", out[:, index, :], weights.astype(np.float32))
    return np.ascontiguousarray(out, dtype=np.float32)


def rotate_image(x: np.ndarray, angle: float) -> np.ndarray:
    """C×H×W -> C×Bh×Bw: turned by ``angle`` degrees onto a zero canvas of the bounding size
    (:func:`rotated_size`, :func:`rotation_matrix`).  Bilinear; a canvas pixel whose source lies
    outside the image stays 0 (our reading of OpenCV's BORDER_TRANSPARENT onto zeros)."""
    c, h, w = x.shape
    bw, bh = rotated_size((w, h), angle)
    back = np.linalg.inv(np.vstack([rotation_matrix((w, h), angle), [0.0, 0.0, 1.0]]))[:2]  # canvas -> source
    u, v = np.meshgrid(np.arange(bw, dtype=np.float64), np.arange(bh, dtype=np.float64))
    sx = back[0, 0] * u + back[0, 1] * v + back[0, 2]
    sy = back[1, 0] * u + back[1, 1] * v + back[1, 2]
    inside = (sx >= -1e-9) & (sx <= w - 1 + 1e-9) & (sy >= -1e-9) & (sy <= h - 1 + 1e-9)
    sx = np.clip(sx, 0.0, w - 1.0)
    sy = np.clip(sy, 0.0, h - 1.0)
    x0 = np.floor(sx).astype(np.int64)
    y0 = np.floor(sy).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx = (sx - x0).astype(np.float32)
    fy = (sy - y0).astype(np.float32)
    src = np.asarray(x, dtype=np.float32)
    top = src[:, y0, x0] * (1 - fx) + src[:, y0, x1] * fx
    bottom = src[:, y1, x0] * (1 - fx) + src[:, y1, x1] * fx
    return np.where(inside, top * (1 - fy) + bottom * fy, np.float32(0.0)).astype(np.float32)


def crop_window(x: np.ndarray, offset: tuple[int, int], width: int, height: int) -> np.ndarray:
    """The ``width`` × ``height`` window of C×H×W ``x`` whose top-left is at ``offset`` (x, y),
    zeros where it lies outside ``x``."""
    c, h, w = x.shape
    ox, oy = offset
    out = np.zeros((c, height, width), dtype=np.float32)
    x0, x1 = max(ox, 0), min(ox + width, w)
    y0, y1 = max(oy, 0), min(oy + height, h)
    if x0 < x1 and y0 < y1:
        out[:, y0 - oy:y1 - oy, x0 - ox:x1 - ox] = x[:, y0:y1, x0:x1]
    return out


def recolour(x: np.ndarray, hue: float, saturation: float) -> np.ndarray:
    """A 3×H×W BGR image (0..255) with its HSV hue turned by ``hue`` degrees and its saturation
    multiplied by ``saturation`` (value kept), as OpenCV's float HSV conversion defines them:
    V = max, S = (max - min) / max, H in degrees from the channel that holds the max."""
    bgr = np.asarray(x, dtype=np.float32) / np.float32(255.0)
    b, g, r = bgr
    value = bgr.max(axis=0)
    chroma = value - bgr.min(axis=0)
    safe = np.where(chroma > 0, chroma, 1.0)
    h = np.where(value == r, 60.0 * (g - b) / safe,
                 np.where(value == g, 120.0 + 60.0 * (b - r) / safe, 240.0 + 60.0 * (r - g) / safe))
    h = np.where(chroma > 0, h, 0.0)
    sat = np.where(value > 0, chroma / np.where(value > 0, value, 1.0), 0.0) * saturation
    h = np.mod(h + hue, 360.0)
    # back: each channel is value minus the chroma times how far the hue is from that channel's
    # arc (k the distance in sixths of the circle, full inside 1..3 sixths of its opposite side)
    chroma = value * sat
    out = []
    for n in (1.0, 3.0, 5.0):  # blue, green, red
        k = np.mod(n + h / 60.0, 6.0)
        out.append(value - chroma * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0))
    return (np.stack(out) * np.float32(255.0)).astype(np.float32)


def transform_image(image: np.ndarray, draw: Draw, out_width: int, out_height: int,
                    mean: np.ndarray | None = None) -> np.ndarray:
    """One C×H×W image (0..255) through the image path -> float32 C×``out_height``×``out_width``.
    ``mean``: broadcastable to the input (C×H×W, or C×1×1 / 1×1×1 values), subtracted after the
    recolouring and before the flip."""
    x = np.asarray(image, dtype=np.float32)
    if draw.recolours:
        if x.shape[0] != 3:
            raise DataError(f"hue and saturation need 3-channel images, got {x.shape[0]} channels")
        x = recolour(x, draw.hue, draw.saturation if draw.desaturates else 1.0)
    if mean is not None:
        x = x - mean
    if draw.flip:
        x = x[:, :, ::-1]
    x = resize_bicubic(x, *draw.size)
    if draw.angle:
        x = rotate_image(x, draw.angle)
    return crop_window(x, draw.offset, out_width, out_height)


# ----- the boxes --------------------------------------------------------------------------------

def transform_boxes(rows: np.ndarray, draw: Draw, width: int, height: int) -> np.ndarray:
    """Label rows (n, 16) of a ``width`` × ``height`` image through the box path (columns x, y,
    w, h; the others as they are)."""
    out = np.array(rows, dtype=np.float64).reshape(-1, LABEL_WIDTH)
    if not len(out):
        return out
    if draw.flip:
        out[:, 0] = width - out[:, 0] - out[:, 2] - 1.0
    sx, sy = draw.size[0] / width, draw.size[1] / height
    out[:, [0, 2]] *= sx
    out[:, [1, 3]] *= sy
    if draw.angle:
        m = rotation_matrix(draw.size, draw.angle)
        centres = out[:, [0, 1]] + out[:, [2, 3]] / 2.0              # (n, 2)
        moved = centres @ m[:, :2].T + m[:, 2]
        out[:, [0, 1]] = moved - out[:, [2, 3]] / 2.0
    out[:, 0] -= draw.offset[0]
    out[:, 1] -= draw.offset[1]
    return out
