"""pycaffe's ``caffe.io``: blob and datum conversions, image loading and the Transformer.

Images are handled as pycaffe handles them: ``load_image`` gives H×W×C float RGB in [0, 1]; a
``Transformer`` turns that into the net's C×H×W input (transpose, channel swap to BGR, raw scale,
mean subtraction, input scale) and back.  Resizing is pycaffe's: scikit-image's ``resize`` in
``mode='constant'`` (scipy's ``zoom`` for channel counts other than 1 and 3).
"""
from __future__ import annotations

import operator

import numpy as np

from ..formats import array_to_blob, blob_to_array
from ..proto import caffe_pb2


# ----- blobs ---------------------------------------------------------------------------------
def blobproto_to_array(blob, return_diff: bool = False) -> np.ndarray:
    """A BlobProto as an array of its shape (legacy num/channels/height/width too)."""
    return blob_to_array(blob, diff=return_diff)


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None):
    return array_to_blob(np.asarray(arr), diff=None if diff is None else np.asarray(diff))


def arraylist_to_blobprotovector_str(arraylist) -> bytes:
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend(array_to_blobproto(a) for a in arraylist)
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(text: bytes) -> list[np.ndarray]:
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(text)
    return [blobproto_to_array(b) for b in vec.blobs]


# ----- datums --------------------------------------------------------------------------------
def array_to_datum(arr: np.ndarray, label: int | None = None):
    """A C×H×W array as a Datum: uint8 arrays as bytes in ``data``, others as ``float_data``."""
    if arr.ndim != 3:
        raise ValueError(f"array_to_datum needs a 3-D C×H×W array, got shape {arr.shape}")
    datum = caffe_pb2.Datum()
    datum.channels, datum.height, datum.width = arr.shape
    if arr.dtype == np.uint8:
        datum.data = arr.tobytes()
    else:
        datum.float_data.extend(arr.astype(np.float32).flat)
    if label is not None:
        datum.label = int(label)
    return datum


def datum_to_array(datum) -> np.ndarray:
    """A raw Datum's values as a C×H×W array (uint8 from ``data``, float from ``float_data``).

    Encoded (PNG/JPEG) datums are decoded with Pillow (colour comes back in the stored order).
    """
    if datum.encoded:
        from ..data.image import decode_datum_image  # imports torch: caffe.io loads without it
        return decode_datum_image(datum)
    shape = (datum.channels, datum.height, datum.width)
    if len(datum.data):  # a writable copy, as pycaffe's np.fromstring gives
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(shape).copy()
    return np.array(datum.float_data, dtype=np.float64).reshape(shape)  # pycaffe: .astype(float)


# ----- images --------------------------------------------------------------------------------
def load_image(filename: str, color: bool = True) -> np.ndarray:
    """An image file as H×W×3 (or H×W×1 when ``color`` is False) float32 RGB in [0, 1].

    As pycaffe (scikit-image's ``imread`` + ``img_as_float``): grey files are tiled to three
    channels when ``color``; alpha is dropped; colour files read with ``color=False`` become
    luminance 0.2125 R + 0.7154 G + 0.0721 B; 16-bit files are divided by 65535.
    """
    from PIL import Image

    with Image.open(filename) as im:
        im.load()
        if im.mode.startswith("I;16") or im.mode == "I":
            arr = np.asarray(im, dtype=np.float32) / 65535.0
            arr = arr[:, :, None]
        elif im.mode in ("1", "L", "LA"):
            arr = np.asarray(im.convert("L"), dtype=np.float32)[:, :, None] / 255.0
        else:
            arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    if color:
        if arr.shape[2] == 1:
            arr = np.tile(arr, (1, 1, 3))
    elif arr.shape[2] == 3:
        arr = (arr @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32))[:, :, None]
    return np.ascontiguousarray(arr, dtype=np.float32)


#: the channel counts pycaffe resizes with scikit-image; it hands every other count to scipy
SKIMAGE_CHANNELS = (1, 3)


def resize_image(im: np.ndarray, new_dims, interp_order: int = 1) -> np.ndarray:
    """An H×W×K image resized to ``new_dims`` (H', W'), as float32, with pycaffe's numbers.

    ``interp_order`` is the spline order (0 nearest, 1 bilinear, 3 cubic).  As pycaffe's
    ``caffe.io.resize_image``: a 1- or 3-channel image is scaled to [0, 1] by its minimum and
    maximum, resized by scikit-image's ``resize`` with ``mode='constant'`` (so the border rows
    and columns blend with zero padding, i.e. towards the image's minimum, and a downscale is
    anti-aliased as scikit-image does by default), and scaled back; a constant image comes back
    filled with its value; any other channel count is resized by ``scipy.ndimage.zoom`` (whose
    output size is the rounded product of the shape and the zoom).  An image already of
    ``new_dims`` comes back as it is (pycaffe's round trip through [0, 1] would move such pixels
    by an ulp or two).
    """
    pixels = np.asarray(im)
    if pixels.ndim != 3:
        raise ValueError(f"resize_image needs an H×W×K image, got shape {pixels.shape}")
    target = (int(new_dims[0]), int(new_dims[1]))
    if pixels.shape[:2] == target:
        return pixels.astype(np.float32)
    if pixels.shape[2] not in SKIMAGE_CHANNELS:
        return _zoom_planes(pixels, target, interp_order)
    low, high = pixels.min(), pixels.max()
    if not high > low:
        return np.full(target + pixels.shape[2:], low, dtype=np.float32)
    from skimage.transform import resize

    span = high - low
    unit = resize((pixels - low) / span, target, order=interp_order, mode="constant")
    return (unit * span + low).astype(np.float32)


def _zoom_planes(pixels: np.ndarray, target: tuple[int, int], order: int) -> np.ndarray:
    """Resize rows and columns by scipy's spline zoom, the channel axis left alone."""
    from scipy.ndimage import zoom

    factors = [t / float(n) for t, n in zip(target, pixels.shape[:2])] + [1.0]
    return zoom(pixels, factors, order=order).astype(np.float32)


def crop_origins(image_hw, crop_hw) -> list[tuple[int, int]]:
    """Top-left corners of pycaffe's five crops of ``crop_hw`` in an image of ``image_hw``: the
    corners in row-major order (top left, top right, bottom left, bottom right), then the
    centre, whose box is [size/2 - crop/2, size/2 + crop/2) truncated, i.e. offset
    floor((size - crop) / 2)."""
    rows, cols = (int(v) for v in image_hw)
    h, w = (int(v) for v in crop_hw)
    if h > rows or w > cols:
        raise ValueError(f"crops of {h}×{w} do not fit in {rows}×{cols} images")
    far_y, far_x = rows - h, cols - w
    return [(0, 0), (0, far_x), (far_y, 0), (far_y, far_x), (far_y // 2, far_x // 2)]


def oversample(images, crop_dims) -> np.ndarray:
    """Ten crops of ``crop_dims`` (H, W) per H×W×K image, as pycaffe takes them: the four
    corners and the centre, then those five mirrored left to right; (10 N, H, W, K) float32,
    the ten of each image consecutive."""
    try:
        batch = np.stack([np.asarray(im) for im in images])  # (N, rows, cols, K)
    except ValueError:
        raise ValueError("oversample needs images of one shape") from None
    h, w = int(crop_dims[0]), int(crop_dims[1])
    five = np.stack([batch[:, y:y + h, x:x + w] for y, x in crop_origins(batch.shape[1:3],
                                                                          (h, w))], axis=1)
    ten = np.concatenate([five, five[:, :, :, ::-1]], axis=1)  # (N, 10, h, w, K)
    return ten.reshape((-1,) + ten.shape[2:]).astype(np.float32)


#: The Transformer's settings in the order preprocess applies them, each with how it is applied
#: to a K×H×W (after the transpose) image and how it is undone.
_STEPS = (
    ("transpose", lambda x, order: x.transpose(order),
     lambda x, order: x.transpose(np.argsort(order))),
    ("channel_swap", lambda x, order: x[list(order)], lambda x, order: x[np.argsort(order)]),
    ("raw_scale", operator.mul, operator.truediv),
    ("mean", operator.sub, operator.add),
    ("input_scale", operator.mul, operator.truediv),
)


class Transformer:
    """pycaffe's Transformer: preprocess H×W×C images into a net input, and deprocess back.

    ``inputs`` maps input blob names to their shapes (N, C, H, W).  Each setting is kept per
    input in the attribute of its name (``transpose``, ``channel_swap``, ``raw_scale``,
    ``mean``, ``input_scale``), as pycaffe keeps them.  ``preprocess`` resizes to the input's
    H×W (``resize_image``), then transposes, swaps channels, multiplies by ``raw_scale``,
    subtracts the mean and multiplies by ``input_scale``; ``deprocess`` undoes those steps in
    reverse (the channel swap and transpose by their inverse permutations).
    """

    def __init__(self, inputs: dict):
        self.inputs = {name: tuple(shape) for name, shape in inputs.items()}
        for setting, _, _ in _STEPS:
            setattr(self, setting, {})

    def _check(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise ValueError(f"{in_!r} is not one of the net inputs: {list(self.inputs)}")

    def _settings(self, in_: str, which=None):
        """(value, apply, undo) for each setting of ``in_`` in preprocessing order; ``which``
        names the settings to take (default all)."""
        self._check(in_)
        for setting, apply, undo in _STEPS:
            value = getattr(self, setting).get(in_)
            if value is not None and (which is None or setting in which):
                yield value, apply, undo

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """An H'×W'×K image as input ``in_`` takes it (K×H×W float32 with the usual
        transpose): resized to H×W when it is of another size, then the settings applied."""
        self._check(in_)
        x = np.asarray(data, dtype=np.float32)
        if x.shape[:2] != self.inputs[in_][2:]:
            x = resize_image(x, self.inputs[in_][2:])
        for value, apply, _ in self._settings(in_):
            x = apply(x, value)
        return np.ascontiguousarray(x, dtype=np.float32)

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """A blob of input ``in_`` (size-1 axes dropped) back as an image: every setting undone,
        the last first (no resize)."""
        return self.undo_settings(in_, np.array(data, dtype=np.float32).squeeze())

    def undo_settings(self, in_: str, x: np.ndarray, which=None) -> np.ndarray:
        """``x`` with the settings of ``in_`` (those in ``which``, default all) undone."""
        for value, _, undo in reversed(list(self._settings(in_, which))):
            x = undo(x, value)
        return x

    def set_transpose(self, in_: str, order) -> None:
        self._check(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ValueError("transpose order needs to have the same number of dimensions as "
                             "the input")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order) -> None:
        self._check(in_)
        if len(order) != self.inputs[in_][1]:
            raise ValueError("channel swap needs to have the same number of dimensions as the "
                             "input channels")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale: float) -> None:
        self._check(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """Mean per channel (C,) or a mean image (C, H, W) (or (H, W) for one channel) of the
        input's size."""
        self._check(in_)
        values = np.asarray(mean, dtype=np.float32)
        chw = self.inputs[in_][1:]
        if values.ndim == 1:
            if values.shape[0] != chw[0]:
                raise ValueError(f"mean channels {values.shape[0]} incompatible with input "
                                 f"{self.inputs[in_]}")
            values = values.reshape(-1, 1, 1)
        else:
            shape = (1,) + values.shape if values.ndim == 2 else values.shape
            if len(shape) != 3:
                raise ValueError("mean shape invalid")
            if shape != chw:
                raise ValueError(f"mean shape {shape} incompatible with input shape {chw}")
        self.mean[in_] = values

    def set_input_scale(self, in_: str, scale: float) -> None:
        self._check(in_)
        self.input_scale[in_] = scale
