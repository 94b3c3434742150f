"""pycaffe's ``caffe.io``: blob and datum conversions, image loading and the Transformer.

Images are handled as pycaffe handles them: ``load_image`` gives H×W×C float RGB in [0, 1]; a
``Transformer`` turns that into the net's C×H×W input (transpose, channel swap to BGR, raw scale,
mean subtraction, input scale) and back.  Resizing is pycaffe's: scikit-image's ``resize`` in
``mode='constant'`` (scipy's ``zoom`` for channel counts other than 1 and 3).
"""
from __future__ import annotations

import numpy as np

from .proto import caffe_pb2


# ----- blobs ---------------------------------------------------------------------------------
def blobproto_to_array(blob, return_diff: bool = False) -> np.ndarray:
    """A BlobProto as an array of its shape (legacy num/channels/height/width too)."""
    from .fileio import blob_to_array
    return blob_to_array(blob, diff=return_diff)


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None):
    from .fileio import array_to_blob
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
        from .data.image import decode_datum_image
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


def oversample(images, crop_dims) -> np.ndarray:
    """Ten crops per image: four corners and the centre, and their mirrors (pycaffe's order)."""
    im_shape = np.array(images[0].shape)
    crop_dims = np.array(crop_dims)
    im_center = im_shape[:2] / 2.0
    h_idx = (0, im_shape[0] - crop_dims[0])
    w_idx = (0, im_shape[1] - crop_dims[1])
    crops_ix = [(i, j, i + crop_dims[0], j + crop_dims[1]) for i in h_idx for j in w_idx]
    c = np.tile(im_center, (1, 2)) + np.concatenate([-crop_dims / 2.0, crop_dims / 2.0])
    crops_ix.append(tuple(int(v) for v in c[0]))
    crops = np.empty((10 * len(images), crop_dims[0], crop_dims[1], im_shape[-1]), dtype=np.float32)
    ix = 0
    for im in images:
        for y0, x0, y1, x1 in crops_ix:
            crops[ix] = im[int(y0):int(y1), int(x0):int(x1), :]
            ix += 1
        crops[ix:ix + 5] = crops[ix - 5:ix, :, ::-1, :]  # then the same five, mirrored
        ix += 5
    return crops


class Transformer:
    """pycaffe's Transformer: preprocess H×W×C images into a net input, and deprocess back.

    ``inputs`` maps input blob names to their shapes (N, C, H, W).
    """

    def __init__(self, inputs: dict):
        self.inputs = {k: tuple(v) for k, v in inputs.items()}
        self.transpose: dict = {}
        self.channel_swap: dict = {}
        self.raw_scale: dict = {}
        self.mean: dict = {}
        self.input_scale: dict = {}

    def _check(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise ValueError(f"{in_!r} is not one of the net inputs: {list(self.inputs)}")

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        self._check(in_)
        caffe_in = np.asarray(data, dtype=np.float32)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != tuple(in_dims):
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_]), :, :]
        if in_ in self.raw_scale:
            caffe_in = caffe_in * self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in = caffe_in - self.mean[in_]
        if in_ in self.input_scale:
            caffe_in = caffe_in * self.input_scale[in_]
        return np.ascontiguousarray(caffe_in, dtype=np.float32)

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        self._check(in_)
        decaf_in = np.array(data, dtype=np.float32).squeeze()
        if in_ in self.input_scale:
            decaf_in = decaf_in / self.input_scale[in_]
        if in_ in self.mean:
            decaf_in = decaf_in + self.mean[in_]
        if in_ in self.raw_scale:
            decaf_in = decaf_in / self.raw_scale[in_]
        if in_ in self.channel_swap:
            decaf_in = decaf_in[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            decaf_in = decaf_in.transpose(np.argsort(self.transpose[in_]))
        return decaf_in

    def set_transpose(self, in_: str, order) -> None:
        self._check(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise ValueError("transpose order needs to have the same number of dimensions as the input")
        self.transpose[in_] = tuple(order)

    def set_channel_swap(self, in_: str, order) -> None:
        self._check(in_)
        if len(order) != self.inputs[in_][1]:
            raise ValueError("channel swap needs to have the same number of dimensions as the input channels")
        self.channel_swap[in_] = tuple(order)

    def set_raw_scale(self, in_: str, scale: float) -> None:
        self._check(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """Mean per channel (C,) or a full mean image (C, H, W) (cropped/checked like pycaffe)."""
        self._check(in_)
        mean = np.asarray(mean, dtype=np.float32)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError(f"mean channels {ms[0]} incompatible with input {self.inputs[in_]}")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ValueError("mean shape invalid")
            if ms != tuple(self.inputs[in_][1:]):
                raise ValueError(f"mean shape {ms} incompatible with input shape {self.inputs[in_][1:]}")
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        self._check(in_)
        self.input_scale[in_] = scale
