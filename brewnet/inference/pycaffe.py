"""pycaffe's inference helpers: ``caffe.Classifier`` and ``caffe.Detector``.

Both are TEST-phase nets (subclasses of :class:`brewnet.Net`, as pycaffe's are of
``caffe.Net``) with a :class:`brewnet.io.Transformer` on their first input, configured as pycaffe
configures it: H×W×K images (``caffe.io.load_image``'s RGB floats in [0, 1]) are transposed to
K×H×W, then channel-swapped, multiplied by ``raw_scale``, the ``mean`` (given in that swapped,
raw-scaled K×H×W space) subtracted, and multiplied by ``input_scale``.

``Classifier.predict`` resizes every image to ``image_dims`` and either averages the
predictions of ten crops of the net's input size (four corners, centre and their mirrors) or
takes the centre crop.  ``Detector.detect_windows`` crops windows out of image files (with
R-CNN's context padding when ``context_pad`` is set) and warps each to the net's input size.

``Classifier.from_bundle(DIR)`` is brewnet's own: a classifier for a deploy bundle
(``brewnet deploy``) that turns image files or PIL images into the net's input exactly as
validation did (the bundle's ``preprocess.json``, run by ``brewnet.inference.preprocess``),
instead of the Transformer settings above.

Where pycaffe's code breaks or silently misbehaves under Python 3 this module does what pycaffe
meant: the context-padded crop uses integer pixel boxes (pycaffe sliced with floats),
``detect_windows`` accepts a one-shot iterator such as ``zip`` (pycaffe walked it twice and
returned no detections), and impossible requests (an empty window, ``image_dims`` smaller than
the crop, a missing selective-search module) raise a clear :class:`BrewnetError`.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from .. import io as caffe_io
from ..errors import BrewnetError, NetError
from ..net import TEST, Net

#: the module Caffe's Detector.detect_selective_search imports (Sergey Karayev's MATLAB wrapper)
SELECTIVE_SEARCH_MODULE = "selective_search_ijcv_with_python"


def _check_files(model_file, pretrained_file) -> None:
    """Name a missing file before the net is built (Net names the model, not the weights)."""
    if not os.path.isfile(os.fspath(model_file)):
        raise NetError(f"network definition not found: {os.fspath(model_file)}")
    if pretrained_file is not None and not os.path.isfile(os.fspath(pretrained_file)):
        raise NetError(f"pretrained weights not found: {os.fspath(pretrained_file)}")


def _configure_transformer(net: Net, mean, input_scale, raw_scale,
                           channel_swap) -> caffe_io.Transformer:
    """pycaffe's preprocessing for the net's first input: H×W×K -> K×H×W, then channel swap,
    raw scale, mean subtraction, input scale (the order Transformer.preprocess applies)."""
    if not net.inputs:
        raise NetError("the net has no input blob to feed images to (give it an Input layer)")
    in_ = net.inputs[0]
    transformer = caffe_io.Transformer({in_: net.blobs[in_].data.shape})
    transformer.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        transformer.set_mean(in_, mean)
    if input_scale is not None:
        transformer.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        transformer.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        transformer.set_channel_swap(in_, channel_swap)
    return transformer


def _as_images(inputs: Iterable[np.ndarray]) -> list[np.ndarray]:
    """The inputs as a list of H×W×K arrays with one K, or a clear error."""
    images = [np.asarray(im) for im in inputs]
    for i, im in enumerate(images):
        if im.ndim != 3:
            raise BrewnetError(f"predict(): input {i} has shape {im.shape}; pycaffe's Classifier "
                               "takes H×W×K images (caffe.io.load_image gives H×W×3)")
        if im.shape[2] != images[0].shape[2]:
            raise BrewnetError(f"predict(): input {i} has {im.shape[2]} channels, input 0 has "
                               f"{images[0].shape[2]}")
    return images


class Classifier(Net):
    """pycaffe's ``caffe.Classifier``: a TEST-phase net that classifies H×W×K images by scaling,
    centre cropping or oversampling.

    Args:
        model_file: the deploy prototxt (its first input takes the images).
        pretrained_file: the caffemodel (or Caffe HDF5 weights).
        image_dims: (H, W) every image is resized to before cropping; default the net's input
            size (the whole image, no crop).
        mean: the mean to subtract, per channel (K,) or an image (K, H, W) of the net's input
            size, in the net's channel order and raw scale (after ``channel_swap`` and
            ``raw_scale``).
        input_scale: multiplies the input after the mean is subtracted.
        raw_scale: multiplies the [0, 1] image before the mean is subtracted (255 for nets
            trained on 0–255 pixels).
        channel_swap: the order the image's channels are taken in, e.g. (2, 1, 0) to turn
            ``load_image``'s RGB into Caffe's BGR.
    """

    def __init__(self, model_file, pretrained_file, image_dims: Sequence[int] | None = None,
                 mean: np.ndarray | None = None, input_scale: float | None = None,
                 raw_scale: float | None = None, channel_swap: Sequence[int] | None = None):
        _check_files(model_file, pretrained_file)
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = _configure_transformer(self, mean, input_scale, raw_scale,
                                                  channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].data.shape[2:])  # (H, W)
        if image_dims is None or len(image_dims) == 0:
            image_dims = self.crop_dims
        self.image_dims = image_dims
        #: set by from_bundle: the bundle and its validation preprocessing
        self.bundle = None
        self.preprocessor = None

    # ----- pycaffe ----------------------------------------------------------------------------
    def predict(self, inputs: Iterable, oversample: bool | None = None) -> np.ndarray:
        """Class probabilities (the net's first output) for each input, as an (N, ...) array.

        ``inputs`` are H×W×K images (pycaffe's Classifier) or, for a classifier made by
        :meth:`from_bundle`, image file paths or PIL images.

        ``oversample`` (pycaffe's default: True) averages the predictions of ten crops of the
        net's input size taken from the image resized to ``image_dims``: the four corners and
        the centre, and their horizontal mirrors; False predicts on the centre crop alone.  A
        bundle classifier always applies validation's own transform (its centre crop), so
        ``oversample=True`` is refused there.
        """
        if self.preprocessor is not None:
            if oversample:
                raise BrewnetError("predict(): a bundle classifier applies the validation "
                                   "transform (one centre crop); oversample=True would not give "
                                   "validation's numbers")
            return self._predict_bundle(inputs)
        oversample = True if oversample is None else bool(oversample)
        images = _as_images(inputs)
        in_ = self.inputs[0]
        out_name = self.outputs[0]
        if not images:
            return np.zeros((0,) + tuple(self.blobs[out_name].data.shape[1:]), np.float32)
        image_dims = np.array(self.image_dims).astype(int)
        if np.any(image_dims < self.crop_dims):
            raise BrewnetError(f"image_dims {tuple(image_dims.tolist())} is smaller than the net's "
                               f"input {tuple(self.crop_dims.tolist())}: crops would not fit")
        # Every image to image_dims: (N, H', W', K)
        resized = np.zeros((len(images), image_dims[0], image_dims[1], images[0].shape[2]),
                           dtype=np.float32)
        for ix, im in enumerate(images):
            resized[ix] = caffe_io.resize_image(im, image_dims)
        if oversample:
            crops = caffe_io.oversample(resized, self.crop_dims)  # (10N, h, w, K)
        else:
            # pycaffe's centre crop: [centre - crop/2, centre + crop/2), truncated to ints
            center = image_dims / 2.0
            box = (np.concatenate([center - self.crop_dims / 2.0,
                                   center + self.crop_dims / 2.0])).astype(int)
            crops = resized[:, box[0]:box[2], box[1]:box[3], :]  # (N, h, w, K)
        caffe_in = np.zeros((len(crops), crops.shape[3]) + tuple(crops.shape[1:3]),
                            dtype=np.float32)  # (M, K, h, w)
        for ix, crop in enumerate(crops):
            caffe_in[ix] = self.transformer.preprocess(in_, crop)
        predictions = self.forward_all(**{in_: caffe_in})[out_name]
        if oversample:  # the ten crops of one image are consecutive
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions

    # ----- brewnet: deploy bundles ------------------------------------------------------------
    @classmethod
    def from_bundle(cls, path: str | os.PathLike) -> "Classifier":
        """A classifier for the deploy bundle in ``path`` (``brewnet deploy``): ``predict``
        takes image file paths or PIL images and applies the bundle's ``preprocess.json``
        (the dataset's resize, then validation's crop, mean and scale, in Caffe's BGR order),
        so its probabilities are those validation computed.  ``labels`` holds the class names.
        """
        from .bundle import Bundle, BundleError
        from .preprocess import Preprocessor

        bundle = Bundle.load(path)
        preprocessor = Preprocessor.from_bundle(bundle)
        clf = cls(bundle.deploy_prototxt, bundle.weights)
        in_ = bundle.preprocess["input"]
        where = f"{bundle.path}/preprocess.json"
        if in_ not in clf.inputs:
            raise BundleError(f"{where}: input {in_!r} is not an input of deploy.prototxt (its "
                              f"inputs: {', '.join(clf.inputs)})")
        net_shape = tuple(clf.blobs[in_].data.shape[1:])  # (C, h, w)
        if tuple(preprocessor.input_shape) != net_shape:
            raise BundleError(f"{where}: the preprocessing makes {list(preprocessor.input_shape)} "
                              f"inputs, deploy.prototxt's {in_!r} takes {list(net_shape)}")
        clf.bundle = bundle
        clf.preprocessor = preprocessor
        return clf

    @property
    def labels(self) -> list[str] | None:
        """The bundle's class names (from_bundle), else None."""
        return None if self.bundle is None else list(self.bundle.labels)

    #: images preprocessed and held in memory at once by a bundle classifier's predict
    BUNDLE_CHUNK = 256

    def _predict_bundle(self, inputs: Iterable) -> np.ndarray:
        """Bundle prediction, streaming: ``BUNDLE_CHUNK`` images are decoded at a time, each
        through the dataset's decode and resize (uint8 C×H×W, as stored), then the chunk through
        validation's transform (float32 C×h×w) and the net."""
        from PIL import Image

        in_ = self.bundle.preprocess["input"]
        out_name = self.outputs[0]
        pre = self.preprocessor
        chunks: list[np.ndarray] = []
        pending: list[np.ndarray] = []

        def flush() -> None:
            batch = pre.transform(np.stack(pending))  # (n, C, H, W) uint8 -> (n, C, h, w) float32
            chunks.append(self.forward_all(**{in_: batch})[out_name])
            pending.clear()

        for item in inputs:
            if isinstance(item, Image.Image):
                pending.append(pre.from_pil(item))
            elif isinstance(item, (str, os.PathLike)):
                pending.append(pre.load_file(os.fspath(item)))
            else:
                raise BrewnetError(f"predict(): a bundle classifier takes image file paths or PIL "
                                   f"images, got {type(item).__name__}")
            if len(pending) == self.BUNDLE_CHUNK:
                flush()
        if pending:
            flush()
        if not chunks:
            return np.zeros((0,) + tuple(self.blobs[out_name].data.shape[1:]), np.float32)
        return np.concatenate(chunks)


class Detector(Net):
    """pycaffe's ``caffe.Detector``: windowed detection, classifying crops of images warped to
    the net's input size (R-CNN's feature extraction).

    Args:
        model_file, pretrained_file, mean, input_scale, raw_scale, channel_swap: as
            :class:`Classifier`.
        context_pad: when set, each window is enlarged so that a border of ``context_pad``
            pixels of the net's (square) input shows the window's surroundings, as R-CNN does;
            where that border falls outside the image it is filled with the mean (so it
            becomes 0 after preprocessing).  Unset: the window alone is warped.
    """

    def __init__(self, model_file, pretrained_file, mean: np.ndarray | None = None,
                 input_scale: float | None = None, raw_scale: float | None = None,
                 channel_swap: Sequence[int] | None = None, context_pad: int | None = None):
        _check_files(model_file, pretrained_file)
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = _configure_transformer(self, mean, input_scale, raw_scale,
                                                  channel_swap)
        self.configure_crop(context_pad)

    @property
    def crop_mode(self) -> str:
        """How windows are cropped: "warp" (the window alone, warped to the input size) or
        "context" (the window with ``context_pad`` pixels of surroundings, then warped)."""
        return "context" if self.context_pad else "warp"

    def detect_windows(self, images_windows) -> list[dict]:
        """Classify windows of image files: ``images_windows`` is an iterable of
        ``(image filename, windows)``, each window ``(ymin, xmin, ymax, xmax)`` in pixels.

        Each window is cropped (:meth:`crop`), warped to the net's input size and preprocessed;
        returns ``[{"window", "prediction", "filename"}]`` in the order given.
        """
        images_windows = [(fname, [np.asarray(w) for w in windows])
                          for fname, windows in images_windows]
        window_inputs = []
        for fname, windows in images_windows:
            image = caffe_io.load_image(fname).astype(np.float32)  # (H, W, 3) RGB in [0, 1]
            for window in windows:
                window_inputs.append(self.crop(image, window))
        if not window_inputs:
            return []
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(window_inputs), window_inputs[0].shape[2])
                            + tuple(self.blobs[in_].data.shape[2:]), dtype=np.float32)
        for ix, window_in in enumerate(window_inputs):  # preprocess warps to (h, w)
            caffe_in[ix] = self.transformer.preprocess(in_, window_in)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        detections = []
        ix = 0
        for fname, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[ix],
                                   "filename": fname})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames: Iterable[str]) -> list[dict]:
        """Classify Selective Search proposals of image files (as :meth:`detect_windows`).

        Needs Caffe's external proposal module ``selective_search_ijcv_with_python``
        (https://github.com/sergeyk/selective_search_ijcv_with_python, which runs MATLAB).
        """
        try:
            import selective_search_ijcv_with_python as selective_search
        except ImportError:
            raise BrewnetError(
                f"detect_selective_search needs the '{SELECTIVE_SEARCH_MODULE}' module (as "
                "Caffe's does), which is not installed: get it from "
                "https://github.com/sergeyk/selective_search_ijcv_with_python (it needs MATLAB), "
                "or compute windows yourself and call detect_windows") from None
        # absolute paths, because the proposals are computed by MATLAB in another directory
        image_fnames = [os.path.abspath(f) for f in image_fnames]
        windows_list = selective_search.get_windows(image_fnames, cmd="selective_search_rcnn")
        return self.detect_windows(zip(image_fnames, windows_list))

    def crop(self, im: np.ndarray, window) -> np.ndarray:
        """The window ``(ymin, xmin, ymax, xmax)`` of the H×W×K image ``im``.

        Without context padding: ``im[ymin:ymax, xmin:xmax]`` (the end rows/columns excluded,
        as Caffe slices).  With ``context_pad``: the window is treated as inclusive, grown about
        its centre by ``crop / (crop - 2 * context_pad)`` (``crop`` the net's input width),
        rounded, cut at the image border and resized into a crop-sized canvas filled with the
        mean, the part outside the image left as mean; returns (crop_h, crop_w, K).
        """
        window = np.asarray(window)
        if not self.context_pad:
            crop = im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
            if crop.shape[0] < 1 or crop.shape[1] < 1:
                raise BrewnetError(f"window {tuple(int(v) for v in window)} (ymin, xmin, ymax, "
                                   f"xmax) is empty in a {im.shape[0]}×{im.shape[1]} image")
            return crop
        box = window.astype(np.float64)
        crop_size = self.blobs[self.inputs[0]].data.shape[3]  # Caffe assumes a square input
        scale = crop_size / (1.0 * crop_size - self.context_pad * 2)
        # the window (inclusive) grown about its centre
        half_h = (box[2] - box[0] + 1) / 2.0
        half_w = (box[3] - box[1] + 1) / 2.0
        center = (box[0] + half_h, box[1] + half_w)
        scaled_dims = scale * np.array((-half_h, -half_w, half_h, half_w))
        box = np.round(np.tile(center, 2) + scaled_dims)  # numpy rounds halves to even
        full_h = box[2] - box[0] + 1
        full_w = box[3] - box[1] + 1
        scale_h = crop_size / full_h
        scale_w = crop_size / full_w
        # what lies above/left of the image becomes mean padding, in input pixels
        pad_y = int(round(max(0.0, -box[0]) * scale_h))
        pad_x = int(round(max(0.0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0.0, [im_h, im_w, im_h, im_w])
        clip_h = box[2] - box[0] + 1
        clip_w = box[3] - box[1] + 1
        if not (clip_h > 0 and clip_w > 0):
            raise BrewnetError(f"window {tuple(int(v) for v in window)} lies outside the "
                               f"{im_h}×{im_w} image")
        crop_h = int(round(clip_h * scale_h))
        crop_w = int(round(clip_w * scale_w))
        if pad_y + crop_h > crop_size:
            crop_h = crop_size - pad_y
        if pad_x + crop_w > crop_size:
            crop_w = crop_size - pad_x
        y0, x0, y1, x1 = (int(v) for v in box)
        context_crop = im[y0:y1, x0:x1]
        if context_crop.shape[0] < 1 or context_crop.shape[1] < 1:
            raise BrewnetError(f"window {tuple(int(v) for v in window)} lies outside the "
                               f"{im_h}×{im_w} image")
        context_crop = caffe_io.resize_image(context_crop, (crop_h, crop_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean  # (h, w, K)
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context_crop
        return crop

    def configure_crop(self, context_pad: int | None) -> None:
        """Set ``crop_dims`` (the net's input as H×W×K) and the context padding; with padding,
        ``crop_mean``: the mean in the image's own space (before channel swap and raw scale), so
        that padding preprocesses to zero."""
        in_ = self.inputs[0]
        tpose = self.transformer.transpose[in_]
        inv_tpose = list(np.argsort(tpose))
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_tpose]  # (h, w, K)
        self.context_pad = context_pad
        if not self.context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
            return
        crop_mean = np.array(mean, dtype=np.float32).transpose(inv_tpose)  # (1|h, 1|w, K)
        channel_order = self.transformer.channel_swap.get(in_)
        if channel_order is not None:
            crop_mean = crop_mean[:, :, list(np.argsort(channel_order))]
        raw_scale = self.transformer.raw_scale.get(in_)
        if raw_scale is not None:
            crop_mean = crop_mean / raw_scale
        self.crop_mean = crop_mean
