"""Training-time image augmentation for Caffe nets: DIGITS' model-form augmentations.

This is brewnet's addition, not Caffe's: real Caffe has no such step, and DIGITS offered these
fields to its Torch and TensorFlow back ends only.  Nothing in the prototxt changes (real Caffe
loads it as before); the augmentation is a JSON file given to ``brewnet train -augment FILE``
(the server writes ``augment.json`` beside a model job's solver).  It is off unless given, and
only the TRAIN-phase ``Data`` and ``ImageData`` layers apply it; test phases see the images as
they are.

The file (every key optional; the defaults are "off")::

    {"flip": "none|fliplr|flipud|fliplrud",    # each flip with probability 1/2
     "quad_rot": "none|rot90|rot180|rotall",   # quarter turns {0,1,3}, {0,2} or {0,1,2,3}
     "rotation": 0..180,                       # degrees: angle uniform in [-r, r]
     "scale": 0..1,                            # zoom s ~ N(0, scale); shift uniform in [-|s|, |s|]
     "noise": 0..1,                            # Gaussian noise, std in [0, 1] pixel units
     "contrast": 0..5,                         # factor uniform in [1 - c, 1 + c]
     "hsv_h": 0..0.5, "hsv_s": 0..0.5, "hsv_v": 0..0.5}   # HSV shifts, std in [0, 1] units

The ranges, choices and meanings are those of DIGITS' model form (``aug_*``); pixel values are
taken to be 0..255, as Caffe's decoded images are.  Per image, on the decoded C×H×W image and
before ``transform_param`` (mean, crop, mirror and scale then apply exactly as in Caffe):

1. HSV (colour images only; Caffe's BGR order): hue shifted by ``N(0, hsv_h)`` (wrapping around),
   saturation and value by ``N(0, hsv_s)`` / ``N(0, hsv_v)`` (clipped to [0, 1]).
2. Noise: ``N(0, 255 * noise)`` added to every value.
3. Contrast: per channel, ``(x - mean) * f + mean`` with the channel's own mean.
4. Flip: left-right and/or up-down.
5. Quarter turns (90 and 270 degrees need square images).
6. Rotation and scale, in one bilinear warp about the image centre: the output pixel at offset
   ``d`` from the centre takes the source at ``centre + (1 + s) R(angle) d + shift * (size-1)/2``,
   coordinates outside the image clamped to its border (the border pixels repeat).

DIGITS' Torch loader (digits/tools/torch/data.lua) used this order for the pixel shifts (HSV, then
noise) and for flip, quarter turn and warp (with border clamping), but between them it subtracted
the mean; here the mean is subtracted afterwards by transform_param, so with a mean *image* the
mean is not flipped, rotated or warped along with the picture.  That loader drew the hue shift
with the saturation's deviation; brewnet uses ``hsv_h``.  Contrast follows DIGITS' TensorFlow
loader (``aug_contrast``).  Draws come from the data layer's own generator: reproducible under a
solver ``random_seed``, distinct per data-parallel rank.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import DataError

FLIPS = ("none", "fliplr", "flipud", "fliplrud")
#: quad_rot mode -> the quarter turns it draws from (uniformly)
QUAD_TURNS = {"none": (0,), "rot90": (0, 1, 3), "rot180": (0, 2), "rotall": (0, 1, 2, 3)}
#: numeric keys -> (low, high) as DIGITS' form bounds them
RANGES = {"rotation": (0.0, 180.0), "scale": (0.0, 1.0), "noise": (0.0, 1.0), "contrast": (0.0, 5.0),
          "hsv_h": (0.0, 0.5), "hsv_s": (0.0, 0.5), "hsv_v": (0.0, 0.5)}
FILE_NAME = "augment.json"


@dataclass(frozen=True)
class Augmentation:
    flip: str = "none"
    quad_rot: str = "none"
    rotation: float = 0.0
    scale: float = 0.0
    noise: float = 0.0
    contrast: float = 0.0
    hsv_h: float = 0.0
    hsv_s: float = 0.0
    hsv_v: float = 0.0

    # ----- reading and writing ----------------------------------------------------------------
    @classmethod
    def from_json(cls, d, where: str = "augmentation") -> "Augmentation":
        """Validate a dict of the file's keys (unknown keys, bad choices and values outside the
        ranges are a DataError naming the key)."""
        if not isinstance(d, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - {"flip", "quad_rot", *RANGES})
        if unknown:
            raise DataError(f"{where}: unknown key(s) {', '.join(unknown)} (known: flip, quad_rot, "
                            f"{', '.join(RANGES)})")
        values = {}
        for key, choices in (("flip", FLIPS), ("quad_rot", tuple(QUAD_TURNS))):
            v = d.get(key, "none")
            if v not in choices:
                raise DataError(f"{where}: {key} must be one of {', '.join(choices)}, got {v!r}")
            values[key] = v
        for key, (lo, hi) in RANGES.items():
            v = d.get(key, 0.0)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not lo <= v <= hi:
                raise DataError(f"{where}: {key} must be a number in [{lo:g}, {hi:g}], got {v!r}")
            values[key] = float(v)
        return cls(**values)

    @classmethod
    def load(cls, path: str) -> "Augmentation":
        try:
            with open(path, encoding="utf-8") as f:
                d = json.load(f)
        except FileNotFoundError:
            raise DataError(f"augmentation file not found: {path}") from None
        except (OSError, ValueError) as e:
            raise DataError(f"augmentation file {path}: not readable JSON: {e}") from None
        return cls.from_json(d, where=f"augmentation file {path}")

    def to_json(self) -> dict:
        """The keys that differ from "off" (an empty dict: no augmentation)."""
        off = Augmentation()
        return {k: v for k, v in asdict(self).items() if v != getattr(off, k)}

    @property
    def active(self) -> bool:
        return bool(self.to_json())

    @property
    def uses_hsv(self) -> bool:
        return bool(self.hsv_h or self.hsv_s or self.hsv_v)

    def describe(self) -> str:
        return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in self.to_json().items()) or "none"

    # ----- shapes -----------------------------------------------------------------------------
    def check_input(self, c: int, h: int, w: int, where: str = "augmentation") -> None:
        if self.uses_hsv and c != 3:
            raise DataError(f"{where}: HSV shifts need colour images (3 channels), the data has {c}")
        if self.quad_rot in ("rot90", "rotall") and h != w:
            raise DataError(f"{where}: quad_rot {self.quad_rot} turns images by 90 degrees and needs "
                            f"square images, the data is {h}x{w} (use rot180, or resize to a square)")

    # ----- drawing and applying ---------------------------------------------------------------
    def draw(self, rng: np.random.Generator, shape: tuple[int, int, int]) -> "Draw":
        """The random choices for one C×H×W image."""
        c, h, w = shape
        flip_lr = self.flip in ("fliplr", "fliplrud") and bool(rng.integers(0, 2))
        flip_ud = self.flip in ("flipud", "fliplrud") and bool(rng.integers(0, 2))
        turns = QUAD_TURNS[self.quad_rot]
        quarter = int(turns[rng.integers(0, len(turns))]) if len(turns) > 1 else 0
        angle = float(rng.uniform(-self.rotation, self.rotation)) if self.rotation else 0.0
        zoom = float(rng.normal(0.0, self.scale)) if self.scale else 0.0
        shift = (float(rng.uniform(-abs(zoom), abs(zoom))), float(rng.uniform(-abs(zoom), abs(zoom)))) \
            if zoom else (0.0, 0.0)
        noise = (rng.standard_normal((c, h, w)).astype(np.float32) * np.float32(255.0 * self.noise)) \
            if self.noise else None
        factor = float(rng.uniform(1.0 - self.contrast, 1.0 + self.contrast)) if self.contrast else 1.0
        hsv = tuple(float(rng.normal(0.0, s)) if s else 0.0 for s in (self.hsv_h, self.hsv_s, self.hsv_v))
        return Draw(flip_lr, flip_ud, quarter, angle, zoom, shift, noise, factor, hsv)

    def apply(self, batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """N×C×H×W (uint8 or float, 0..255) -> float32 N×C×H×W, each image augmented anew."""
        self.check_input(*batch.shape[1:])
        out = np.empty(batch.shape, dtype=np.float32)
        for i in range(batch.shape[0]):
            out[i] = self.draw(rng, batch.shape[1:]).apply(batch[i])
        return out


@dataclass
class Draw:
    """One image's random choices; ``apply`` does the steps in the module's order."""
    flip_lr: bool = False
    flip_ud: bool = False
    quarter_turns: int = 0
    angle: float = 0.0                      # degrees
    zoom: float = 0.0                       # s: the sampled area is (1 + s) times the image
    shift: tuple[float, float] = (0.0, 0.0)  # (y, x), in half-sizes
    noise: np.ndarray | None = None         # added as it is (0..255 units)
    contrast: float = 1.0
    hsv: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def apply(self, image: np.ndarray) -> np.ndarray:
        x = np.asarray(image, dtype=np.float32)
        if any(self.hsv):
            x = shift_hsv(x, *self.hsv)
        if self.noise is not None:
            x = x + self.noise
        if self.contrast != 1.0:
            x = scale_contrast(x, self.contrast)
        if self.flip_lr:
            x = x[:, :, ::-1]
        if self.flip_ud:
            x = x[:, ::-1, :]
        if self.quarter_turns:
            x = np.rot90(x, self.quarter_turns, axes=(1, 2))
        if self.angle or self.zoom:
            x = warp(x, self.angle, self.zoom, self.shift)
        return np.ascontiguousarray(x, dtype=np.float32)


# ----- the operations (one image, C×H×W float32) ----------------------------------------------

def scale_contrast(x: np.ndarray, factor: float) -> np.ndarray:
    """Each channel's values moved away from (factor > 1) or towards its mean."""
    mean = x.mean(axis=(1, 2), keepdims=True, dtype=np.float64).astype(np.float32)
    return (x - mean) * np.float32(factor) + mean


def warp(x: np.ndarray, angle_deg: float, zoom: float, shift: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Rotate by ``angle_deg`` and scale the sampled area by ``1 + zoom`` about the centre, moved
    by ``shift`` (y, x) half-sizes; bilinear, coordinates clamped to the border."""
    _, h, w = x.shape
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    dy, dx = np.meshgrid(np.arange(h, dtype=np.float64) - cy, np.arange(w, dtype=np.float64) - cx,
                         indexing="ij")
    r = math.radians(angle_deg)
    cos, sin, k = math.cos(r), math.sin(r), 1.0 + zoom
    sy = cy + shift[0] * cy + k * (cos * dy - sin * dx)
    sx = cx + shift[1] * cx + k * (sin * dy + cos * dx)
    return bilinear(x, sy, sx)


def bilinear(x: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """``x`` (C×H×W) sampled at the float positions (sy, sx), each clamped into the image."""
    _, h, w = x.shape
    sy = np.clip(sy, 0.0, h - 1)
    sx = np.clip(sx, 0.0, w - 1)
    y0 = np.floor(sy).astype(np.intp)
    x0 = np.floor(sx).astype(np.intp)
    y1 = np.minimum(y0 + 1, h - 1)
    x1 = np.minimum(x0 + 1, w - 1)
    fy = (sy - y0).astype(np.float32)
    fx = (sx - x0).astype(np.float32)
    top = x[:, y0, x0] * (1 - fx) + x[:, y0, x1] * fx
    bottom = x[:, y1, x0] * (1 - fx) + x[:, y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def bgr_to_hsv(x: np.ndarray) -> np.ndarray:
    """3×H×W BGR in [0, 1] -> 3×H×W (hue in [0, 1), saturation, value)."""
    b, g, r = x[0], x[1], x[2]
    v = np.maximum(np.maximum(r, g), b)
    span = v - np.minimum(np.minimum(r, g), b)
    safe = np.where(span > 0, span, 1)
    s = np.where(v > 0, span / np.where(v > 0, v, 1), 0)
    sector = np.where(v == r, (g - b) / safe % 6, np.where(v == g, (b - r) / safe + 2, (r - g) / safe + 4))
    hue = np.where(span > 0, sector / 6.0, 0) % 1.0
    return np.stack([hue, s, v])


def hsv_to_bgr(hsv: np.ndarray) -> np.ndarray:
    """The inverse of :func:`bgr_to_hsv`."""
    hue, s, v = hsv[0] % 1.0, hsv[1], hsv[2]
    # each channel rises, holds and falls over the hue circle: f(n) = v - v s clip(min(k, 4 - k), 0, 1)
    def channel(n):
        k = (n + hue * 6) % 6
        return v - v * s * np.clip(np.minimum(k, 4 - k), 0, 1)
    r, g, b = channel(5), channel(3), channel(1)
    return np.stack([b, g, r])


def shift_hsv(x: np.ndarray, dh: float, ds: float, dv: float) -> np.ndarray:
    """A 0..255 BGR image with its hue turned by ``dh`` (a fraction of the circle) and its
    saturation and value moved by ``ds`` / ``dv`` (clipped to [0, 1])."""
    hsv = bgr_to_hsv(x.astype(np.float64) / 255.0)
    hsv[0] = (hsv[0] + dh) % 1.0
    hsv[1] = np.clip(hsv[1] + ds, 0, 1)
    hsv[2] = np.clip(hsv[2] + dv, 0, 1)
    return (hsv_to_bgr(hsv) * 255.0).astype(np.float32)


# ----- the data layers' side ------------------------------------------------------------------

class AugmentedTransformer:
    """A DataTransformer that augments each image first (the data sources call it as they call
    the transformer)."""

    def __init__(self, transformer, augmentation: Augmentation, rng: np.random.Generator,
                 where: str = "augmentation"):
        self.transformer = transformer
        self.augmentation = augmentation
        self.rng = rng
        self.where = where

    @property
    def force_color(self) -> bool:
        return self.transformer.force_color

    @property
    def force_gray(self) -> bool:
        return self.transformer.force_gray

    def output_shape(self, c: int, h: int, w: int) -> tuple[int, int, int]:
        self.augmentation.check_input(c, h, w, self.where)
        return self.transformer.output_shape(c, h, w)

    def __call__(self, batch: np.ndarray, records=None) -> np.ndarray:
        return self.transformer(self.augmentation.apply(batch, self.rng), records)


_train = {"augmentation": None}


def set_train_augmentation(augmentation: Augmentation | None) -> None:
    """Augment the images of TRAIN-phase Data/ImageData layers of nets built from now on in this
    process (``brewnet train -augment FILE`` calls it); None turns it off."""
    _train["augmentation"] = augmentation if augmentation is not None and augmentation.active else None


def train_augmentation() -> Augmentation | None:
    return _train["augmentation"]
