"""An image (file, bytes or LMDB Datum) becomes the deploy net's input exactly as validation saw it.

The steps are those ``preprocess.json`` defines (see :mod:`brewnet.inference.bundle`):

1. decode with Pillow and convert to the bundle's kind (``channels`` 1: ``L``; 3: ``RGB``, then
   stored BGR as Caffe holds colour);
2. resize as the dataset did (``resize`` mode with :func:`brewnet.data.image.digits_resize`; an
   ImageData layer's new_height/new_width, ``interpolation`` "opencv_bilinear", as
   :func:`brewnet.data.image.load_image_file` does), or, when the dataset did not resize, squash
   an image of another size to ``stored_size`` (with a warning);
3. Caffe's DataTransformer in the TEST phase on the uint8 C×H×W array.

Steps 1-2 repeat what ``brewnet dataset create`` did to the file (``DatasetBuilder.load``: open,
``convert("RGB"|"L")``, ``digits_resize``, RGB -> BGR), so a PNG file and the Datum the builder
made from it give identical uint8 arrays.  Encoded Datums decode as the Data layer decodes them
(:func:`brewnet.data.image.decode_image_bytes` with the transform's force_color/force_gray).

An image of the other kind (grey for a colour net, colour for a grey one) or of another size is
converted rather than refused; :class:`Preprocessor` counts each kind of conversion in
``conversions`` and logs a warning the first time each happens (once per Preprocessor).
"""
from __future__ import annotations

import io
import logging
import threading

import numpy as np
from PIL import Image

from ..errors import DataError
from ..formats import parse_text
from ..proto import caffe_pb2
from .bundle import OPENCV_BILINEAR, PILLOW_BILINEAR, Bundle, BundleError

log = logging.getLogger("brewnet")

# Pillow modes that hold one grey channel (the rest, P/RGB/RGBA/CMYK/..., are colour)
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")

#: conversion kinds counted in ``Preprocessor.conversions``
CHANNELS = "channels"
SIZE = "size"


class Preprocessor:
    """``preprocess.json`` as code: raw images to the uint8 C×H×W the dataset stored, and batches
    of those to the float32 net input.

    ``spec`` is the parsed ``preprocess.json``; ``mean`` the mean image (C×H×W float32) when the
    transform subtracts one (``Bundle.mean``).  Thread-safe: decode from several threads at once.
    """

    def __init__(self, spec: dict, mean: np.ndarray | None = None, where: str = "preprocess.json",
                 warn: bool = True, keep_size: bool = False):
        from ..data.transformer import DataTransformer

        self.where = where
        self.spec, self.mean = spec, mean  # kept to build the same Preprocessor in a worker process
        #: DIGITS' "do not resize": images keep their size (only the channels are converted) and a
        #: mean image is resized to each image's size (brewnet infer -dont_resize)
        self.keep_size = bool(keep_size)
        self._sized_means: dict[tuple[int, int], np.ndarray] = {}
        #: log the first conversion of each kind (classify turns this off and reports per run)
        self.warn = warn
        self.channels = int(spec["channels"])
        if self.channels not in (1, 3):
            raise BundleError(f"{where}: channels must be 1 or 3, got {self.channels}")
        order = spec.get("channel_order")
        if self.channels == 3 and str(order).upper() != "BGR":
            raise BundleError(f"{where}: channel_order {order!r}; brewnet bundles store colour as BGR")
        if not spec.get("stored_size") or spec.get("input_range") is None:
            raise BundleError(f"{where}: this bundle's net does not take images (no stored_size / "
                              "input_range: its validation data was not a Data or ImageData layer)")
        self.height, self.width = (int(x) for x in spec["stored_size"])
        self.resize: dict | None = spec.get("resize")
        self.interpolation = PILLOW_BILINEAR
        if self.resize is not None:
            try:
                size = (int(self.resize["height"]), int(self.resize["width"]))
                self.resize_mode = str(self.resize.get("mode") or "squash")
            except (KeyError, TypeError, ValueError):
                raise BundleError(f"{where}: resize must be null or {{\"width\", \"height\", \"mode\"}}, "
                                  f"got {self.resize!r}") from None
            self.interpolation = str(self.resize.get("interpolation") or PILLOW_BILINEAR)
            if self.interpolation not in (PILLOW_BILINEAR, OPENCV_BILINEAR):
                raise BundleError(f"{where}: resize interpolation {self.interpolation!r} (one of "
                                  f"{PILLOW_BILINEAR}, {OPENCV_BILINEAR})")
            if size != (self.height, self.width):
                raise BundleError(f"{where}: resize {size[1]}x{size[0]} (WxH) disagrees with stored_size "
                                  f"{self.height}x{self.width} (HxW)")
        text = spec.get("transform_param") or ""
        try:
            tp = parse_text(text, caffe_pb2.TransformationParameter, filename=f"{where} transform_param")
        except Exception as e:  # CaffeFormatError names the place
            raise BundleError(f"{where}: transform_param is not a TransformationParameter: {e}") from None
        mean_spec = spec.get("mean")
        names_image = isinstance(mean_spec, dict) and "image" in mean_spec
        if bool(tp.mean_file) != names_image:
            raise BundleError(f"{where}: transform_param {'has' if tp.mean_file else 'has no'} mean_file but "
                              f"'mean' is {mean_spec!r}; the two must agree")
        if tp.mean_file and mean is None:
            raise BundleError(f"{where}: transform_param subtracts a mean image but none was given "
                              "(Bundle.load reads it from mean.binaryproto)")
        self.force_color, self.force_gray = bool(tp.force_color), bool(tp.force_gray)
        # the bundle's mean image replaces mean_file's path (it is the same file, already read)
        tp.ClearField("mean_file")
        self.transformer = DataTransformer(tp, phase=1, where=f"{where} transform_param")
        if mean is not None and names_image:
            self.transformer.mean = np.ascontiguousarray(mean, dtype=np.float32)
        self.input_shape = self.transformer.output_shape(self.channels, self.height, self.width)
        if "input_shape" in spec and tuple(int(x) for x in spec["input_shape"]) != self.input_shape:
            raise BundleError(f"{where}: the transform makes {list(self.input_shape)} from stored images of "
                              f"{[self.channels, self.height, self.width]}, but input_shape is "
                              f"{list(spec['input_shape'])}")
        self.conversions: dict[str, int] = {CHANNELS: 0, SIZE: 0}
        self.messages: dict[str, str] = {}  # the latest conversion message of each kind
        self._lock = threading.Lock()
        self._local = threading.local()  # a thread's own counts (see counting())

    @classmethod
    def from_bundle(cls, bundle: Bundle | str) -> "Preprocessor":
        """The preprocessing of a bundle (a Bundle or its directory)."""
        if not isinstance(bundle, Bundle):
            bundle = Bundle.load(bundle)
        return cls(bundle.preprocess, bundle.mean, where=f"{bundle.path}/preprocess.json")

    # ----- steps 1-2: one image to the stored uint8 C×H×W ---------------------------------------
    @property
    def stored_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def load_file(self, path: str) -> np.ndarray:
        """An image file as uint8 C×H×W (BGR or grey) at the stored size.  DataError if unreadable."""
        try:
            with Image.open(path) as im:
                im.load()
                return self.from_pil(im, what=path)
        except FileNotFoundError:
            raise DataError(f"image not found: {path}") from None
        except DataError:
            raise
        except Exception as e:  # Pillow's UnidentifiedImageError, truncated files, OSError...
            raise DataError(f"cannot decode {path}: {e}") from None

    def load_bytes(self, data: bytes, what: str = "image") -> np.ndarray:
        """Encoded image bytes (PNG, JPEG, ...) as :meth:`load_file` gives them."""
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                return self.from_pil(im, what=what)
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"cannot decode {what}: {e}") from None

    def from_pil(self, im: Image.Image, what: str = "image") -> np.ndarray:
        """A decoded Pillow image through steps 1-2 (as ``brewnet dataset create`` stored it)."""
        grey = im.mode in _GREY_MODES
        if grey != (self.channels == 1):
            self._count(CHANNELS, what, f"{'grey' if grey else 'colour'} image where the bundle takes "
                        f"{self.channels} channel(s): converted to {'grey' if self.channels == 1 else 'colour'}")
        if self.interpolation == OPENCV_BILINEAR:
            return self._imagedata_path(im, what)
        im = im.convert("L" if self.channels == 1 else "RGB")
        im = self._resize(im, what)
        return _to_chw(np.asarray(im, dtype=np.uint8))

    def _imagedata_path(self, im: Image.Image, what: str) -> np.ndarray:
        """What an ImageData layer with new_height/new_width reads (load_image_file): decoded as
        OpenCV gives it (16-bit grey keeps its high byte), then cv::resize's bilinear."""
        from ..data.image import resize_bilinear

        if self.channels == 1 and im.mode.startswith("I;16"):
            chw = (np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8)[None]
        else:
            chw = _to_chw(np.asarray(im.convert("L" if self.channels == 1 else "RGB"), dtype=np.uint8))
        if self.keep_size:
            return chw
        return resize_bilinear(chw, self.height, self.width)  # (C, H, W) uint8

    def _resize(self, im: Image.Image, what: str) -> Image.Image:
        from ..data.image import digits_resize

        if im.size == (self.width, self.height) or self.keep_size:
            return im
        if self.resize is not None:
            # the dataset resized every image this way; doing it again is not a conversion.
            # fill pads with noise: seeded, so one image gives one input
            return digits_resize(im, self.width, self.height, self.resize_mode, np.random.default_rng(0))
        self._count(SIZE, what, f"image of {im.size[0]}x{im.size[1]} where the dataset stored "
                    f"{self.width}x{self.height} (WxH) without resizing: squashed to that size")
        return digits_resize(im, self.width, self.height, "squash")

    def datum_to_input(self, datum: caffe_pb2.Datum, what: str = "Datum") -> np.ndarray:
        """An LMDB Datum's image as the Data layer reads it: uint8 C×H×W (float32 for float_data),
        converted to the stored kind and size when it differs (with a warning)."""
        from ..data.image import datum_to_chw

        arr = datum_to_chw(datum, self.force_color, self.force_gray, what=what)
        if arr.shape == self.stored_shape or (self.keep_size and arr.shape[0] == self.channels):
            return arr
        if arr.dtype != np.uint8:
            raise DataError(f"{what}: float Datum of shape {arr.shape}; the bundle takes {self.stored_shape} "
                            "(float data cannot be converted)")
        if arr.shape[0] not in (1, 3):
            raise DataError(f"{what}: {arr.shape[0]} channels; only grey (1) or BGR (3) images convert")
        # back to a Pillow image in its own kind, then the same steps a file takes
        hwc = arr[0] if arr.shape[0] == 1 else arr[::-1].transpose(1, 2, 0)  # BGR CHW -> RGB HWC
        return self.from_pil(Image.fromarray(np.ascontiguousarray(hwc)), what=what)

    # ----- step 3: the validation transform ------------------------------------------------------
    def transform(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) stored images -> (N, C, h, w) float32 net input (TEST-phase transform).
        With ``keep_size``, a mean image is first resized to the batch's H×W (as DIGITS does)."""
        if self.keep_size and self.mean is not None and self.transformer.mean is not None:
            self.transformer.mean = self._mean_at(int(batch.shape[2]), int(batch.shape[3]))
        return self.transformer(batch)

    def _mean_at(self, height: int, width: int) -> np.ndarray:
        """The mean image at ``height``×``width``: as it is, or each channel resized bilinearly."""
        if (height, width) == self.mean.shape[1:]:
            return self.mean
        if (height, width) not in self._sized_means:
            planes = [np.asarray(Image.fromarray(np.ascontiguousarray(ch, dtype=np.float32), mode="F")
                                 .resize((width, height), Image.BILINEAR), dtype=np.float32) for ch in self.mean]
            self._sized_means[(height, width)] = np.stack(planes)
        return self._sized_means[(height, width)]

    def __call__(self, path: str) -> np.ndarray:
        """One image file -> the float32 (C, h, w) net input."""
        return self.transform(self.load_file(path)[None])[0]

    # ----- warnings -------------------------------------------------------------------------------
    def counting(self) -> dict[str, int]:
        """Start counting this thread's conversions into a fresh dict (returned; it fills as this
        thread converts images), so that concurrent decoders each know their own."""
        self._local.sink = {}
        return self._local.sink

    def _count(self, kind: str, what: str, message: str) -> None:
        sink = getattr(self._local, "sink", None)
        if sink is not None:
            sink[kind] = sink.get(kind, 0) + 1
        with self._lock:
            self.conversions[kind] += 1
            first = self.conversions[kind] == 1
            self.messages[kind] = f"{what}: {message}"
        if first and self.warn:  # once per kind; the count is in conversions
            log.warning("warning: %s (further such images are converted and counted, not logged)",
                        self.messages[kind])


def _to_chw(hwc: np.ndarray) -> np.ndarray:
    """Pillow's H×W (grey) or H×W×3 (RGB) as Caffe's C×H×W (grey or BGR)."""
    if hwc.ndim == 2:
        return np.ascontiguousarray(hwc[None])  # (1, H, W)
    return np.ascontiguousarray(hwc[:, :, ::-1].transpose(2, 0, 1))  # RGB HWC -> BGR CHW


def datum_to_input(datum: caffe_pb2.Datum, preprocessor: Preprocessor, what: str = "Datum") -> np.ndarray:
    """Module-level form of :meth:`Preprocessor.datum_to_input`."""
    return preprocessor.datum_to_input(datum, what)
