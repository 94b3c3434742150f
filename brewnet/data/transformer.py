"""Caffe's DataTransformer: ``transform_param`` applied to a batch of C×H×W images.

Caffe's exact order and arithmetic (float32), per image:

1. ``mirror`` (TRAIN only) draws a coin; ``crop_size`` picks offsets — random
   ``h_off = Rand(H - crop + 1)``, ``w_off = Rand(W - crop + 1)`` in TRAIN, centred
   ``(H - crop) / 2`` (integer division) in TEST; no crop means offsets 0.
2. For each output element ``(c, h, w)`` the source is ``x[c, h_off + h, w_off + w]`` and
   ``out = (x - mean[c, h_off + h, w_off + w]) * scale`` with a mean file — the mean image is the
   full image size and is indexed at the *cropped* position — or ``(x - mean_value[c]) * scale``
   (one value for every channel, or one per channel), or ``x * scale``.
3. A mirrored image writes column ``w`` to ``width - 1 - w`` (after the mean is subtracted).

Random draws come from a numpy Generator, so a seeded run repeats exactly, or, when the caller
gives each image's record ordinal and the transformer has :class:`RecordDraws`, from a pure
function of (key, ordinal): two transformers with the same key, crop_size and mirror then crop
and mirror the same record alike (an image and its label image, read by two Data layers).
"""
from __future__ import annotations

import os

import numpy as np

from .. import formats
from ..errors import DataError
from . import resolve_path


_U64 = np.uint64


def mix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64's output function over a uint64 array (a bijection that spreads every input bit
    over the output; constants from Steele, Lea and Flood, "Fast splittable pseudorandom number
    generators", 2014).  Arithmetic wraps modulo 2**64, as numpy's uint64 arrays do."""
    x = np.array(x, dtype=_U64, ndmin=1)
    x ^= x >> _U64(30)
    x *= _U64(0xBF58476D1CE4E5B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


class RecordDraws:
    """Counter-based random draws for the transformer: the value for one record and one purpose
    (``MIRROR``, ``CROP_H``, ``CROP_W``) is a hash of (key, record ordinal, purpose), whatever was
    drawn before.  Layers that share the key and read the same record draw the same crop and coin."""

    MIRROR, CROP_H, CROP_W = 0, 1, 2

    def __init__(self, key: int):
        self.key = mix64(np.array([key & 0xFFFFFFFFFFFFFFFF], dtype=_U64))

    def integers(self, ordinals, purpose: int, high) -> np.ndarray:
        """One integer in [0, high) per ordinal (``high`` a number or one per ordinal)."""
        ords = np.array(ordinals, dtype=_U64, ndmin=1)
        h = mix64(mix64(ords * _U64(4) + _U64(purpose)) ^ self.key)
        unit = (h >> _U64(11)).astype(np.float64) * (1.0 / (1 << 53))  # [0, 1), 53 bits
        return np.minimum((unit * high).astype(np.int64), np.asarray(high, dtype=np.int64) - 1)


class DataTransformer:
    def __init__(self, tp, phase: int, rng: np.random.Generator | None = None,
                 model_dir: str | None = None, where: str = "transform_param",
                 draws: RecordDraws | None = None):
        self.where = where
        #: with ``records`` given to __call__, crops and mirrors come from these (see RecordDraws)
        self.draws = draws
        self.train = phase == 0
        self.scale = np.float32(tp.scale)
        self.mirror = bool(tp.mirror)
        self.crop_size = int(tp.crop_size)
        self.force_color = bool(tp.force_color)
        self.force_gray = bool(tp.force_gray)
        if self.force_color and self.force_gray:
            raise DataError(f"{where}: force_color and force_gray cannot both be set")
        self.rng = rng if rng is not None else np.random.default_rng()
        self.mean: np.ndarray | None = None
        self.mean_values = np.asarray(list(tp.mean_value), dtype=np.float32)
        if tp.mean_file:
            if len(self.mean_values):
                raise DataError(f"{where}: cannot specify mean_file and mean_value at the same time")
            self.mean = load_mean(resolve_path(tp.mean_file, model_dir), where)
        self._checked: tuple | None = None

    # ----- shapes ---------------------------------------------------------------------------
    def check_input(self, c: int, h: int, w: int) -> None:
        """Caffe's CHECKs for an input image shape (cached per shape)."""
        if self._checked == (c, h, w):
            return
        cs = self.crop_size
        if cs and (h < cs or w < cs):
            raise DataError(f"{self.where}: crop_size {cs} is larger than the image ({h}x{w})")
        if self.mean is not None and self.mean.shape != (c, h, w):
            raise DataError(f"{self.where}: the mean file has shape {self.mean.shape} but the data is "
                            f"{(c, h, w)} (the mean must be the full, uncropped image size)")
        if len(self.mean_values) not in (0, 1, c):
            raise DataError(f"{self.where}: {len(self.mean_values)} mean_value entries for {c} channels "
                            f"(give 1 or {c})")
        self._checked = (c, h, w)

    def output_shape(self, c: int, h: int, w: int) -> tuple[int, int, int]:
        self.check_input(c, h, w)
        cs = self.crop_size
        return (c, cs, cs) if cs else (c, h, w)

    # ----- the transform --------------------------------------------------------------------
    def __call__(self, batch: np.ndarray, records=None) -> np.ndarray:
        """Transform N×C×H×W (uint8 or float) into float32 N×C×h×w.  ``records``: the N images'
        record ordinals; with :class:`RecordDraws` set, the random crops and mirrors are theirs."""
        n, c, h, w = batch.shape
        oc, oh, ow = self.output_shape(c, h, w)
        keyed = self.draws if records is not None else None
        if keyed is not None and len(records) != n:
            raise ValueError(f"{n} images but {len(records)} record ordinals")
        mirrors = None
        if self.mirror and self.train:
            mirrors = (keyed.integers(records, keyed.MIRROR, 2) if keyed is not None
                       else self.rng.integers(0, 2, size=n)).astype(bool)
        if self.crop_size and self.train and keyed is not None:
            h_offs = keyed.integers(records, keyed.CROP_H, h - oh + 1)
            w_offs = keyed.integers(records, keyed.CROP_W, w - ow + 1)
        elif self.crop_size and self.train:
            h_offs = self.rng.integers(0, h - oh + 1, size=n)
            w_offs = self.rng.integers(0, w - ow + 1, size=n)
        else:
            h_offs = np.full(n, (h - oh) // 2)
            w_offs = np.full(n, (w - ow) // 2)
        if self.mean is not None:
            mean = self.mean
        elif len(self.mean_values):
            mv = self.mean_values if len(self.mean_values) == c else np.repeat(self.mean_values, c)
            mean = mv[:, None, None]
        else:
            mean = None
        out = np.empty((n, oc, oh, ow), dtype=np.float32)
        same = bool(np.all(h_offs == h_offs[0]) and np.all(w_offs == w_offs[0])) if n else True
        if same and n:
            ho, wo = int(h_offs[0]), int(w_offs[0])
            np.copyto(out, batch[:, :, ho:ho + oh, wo:wo + ow], casting="unsafe")
            if mean is not None:
                out -= mean[:, ho:ho + oh, wo:wo + ow] if mean.shape[1] > 1 or mean.shape[2] > 1 else mean
        else:
            for i in range(n):
                ho, wo = int(h_offs[i]), int(w_offs[i])
                np.copyto(out[i], batch[i, :, ho:ho + oh, wo:wo + ow], casting="unsafe")
                if mean is not None:
                    out[i] -= mean[:, ho:ho + oh, wo:wo + ow] if mean.shape[1] > 1 or mean.shape[2] > 1 else mean
        if self.scale != 1:
            out *= self.scale
        if mirrors is not None and mirrors.any():
            out[mirrors] = out[mirrors][..., ::-1]
        return out


def load_mean(path: str, where: str = "mean_file") -> np.ndarray:
    """A mean ``.binaryproto`` as float32 C×H×W (Caffe writes 1×C×H×W)."""
    if not os.path.exists(path):
        raise DataError(f"{where}: mean file not found: {path}")
    try:
        arr = formats.read_binaryproto(path)
    except Exception as e:
        raise DataError(f"{where}: cannot read mean file {path}: {e}") from None
    arr = np.asarray(arr, dtype=np.float32)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise DataError(f"{where}: mean file {path} has shape {arr.shape}; expected (1, C, H, W)")
    return np.ascontiguousarray(arr)
