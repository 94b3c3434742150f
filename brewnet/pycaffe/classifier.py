"""pycaffe's ``caffe.classifier``: ``Classifier``, and the set-up it shares with ``caffe.detector``.

``Classifier`` is a TEST-phase net (a subclass of :class:`brewnet.Net`, as pycaffe's is of
``caffe.Net``) with a :class:`brewnet.pycaffe.io.Transformer` on its first input, configured as
pycaffe configures it (:func:`configure_transformer`, which the Detector uses too): H×W×K images
(``caffe.io.load_image``'s RGB floats in [0, 1]) are transposed to K×H×W, then channel-swapped,
multiplied by ``raw_scale``, the ``mean`` (given in that swapped, raw-scaled K×H×W space)
subtracted, and multiplied by ``input_scale``.

``Classifier.predict`` resizes every image to ``image_dims`` and either averages the
predictions of ten crops of the net's input size (four corners, centre and their mirrors) or
takes the centre crop.

``Classifier.from_bundle(DIR)`` is brewnet's own: a classifier for a deploy bundle
(``brewnet deploy``) that turns image files or PIL images into the net's input exactly as
validation did (the bundle's ``preprocess.json``, run by ``brewnet.inference.preprocess``),
instead of the Transformer settings above.

Where pycaffe's code misbehaves under Python 3 this module does what pycaffe meant: impossible
requests (``image_dims`` smaller than the crop, inputs that are not H×W×K) raise a clear
:class:`BrewnetError`.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from . import io as caffe_io
from ..errors import BrewnetError, NetError
from ..inference.bundle import Bundle, BundleError
from ..inference.preprocess import Preprocessor
from ..net import TEST, Net


def check_files(model_file, pretrained_file) -> None:
    """Name a missing file before the net is built (Net names the model, not the weights)."""
    if not os.path.isfile(os.fspath(model_file)):
        raise NetError(f"network definition not found: {os.fspath(model_file)}")
    if pretrained_file is not None and not os.path.isfile(os.fspath(pretrained_file)):
        raise NetError(f"pretrained weights not found: {os.fspath(pretrained_file)}")


def configure_transformer(net: Net, mean, input_scale, raw_scale,
                          channel_swap) -> caffe_io.Transformer:
    """pycaffe's preprocessing for the net's first input: H×W×K -> K×H×W, then channel swap,
    raw scale, mean subtraction, input scale (the order Transformer.preprocess applies)."""
    if not net.inputs:
        raise NetError("the net has no input blob to feed images to (give it an Input layer)")
    in_ = net.inputs[0]
    transformer = caffe_io.Transformer({in_: net.blobs[in_].data.shape})
    settings = {"transpose": (2, 0, 1), "channel_swap": channel_swap, "raw_scale": raw_scale,
                "mean": mean, "input_scale": input_scale}
    for setting, value in settings.items():
        if value is not None:
            getattr(transformer, f"set_{setting}")(in_, value)
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
        check_files(model_file, pretrained_file)
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale,
                                                 channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].data.shape[2:])  # (H, W)
        no_dims = image_dims is None or len(image_dims) == 0
        self.image_dims = self.crop_dims if no_dims else image_dims  # (H, W) before cropping
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
        ten_crops = True if oversample is None else bool(oversample)
        images = _as_images(inputs)
        in_, out_name = self.inputs[0], self.outputs[0]
        if not images:
            return np.zeros((0,) + tuple(self.blobs[out_name].data.shape[1:]), np.float32)
        dims = tuple(int(v) for v in np.asarray(self.image_dims))
        crop_hw = tuple(int(v) for v in self.crop_dims)
        if dims[0] < crop_hw[0] or dims[1] < crop_hw[1]:
            raise BrewnetError(f"image_dims {dims} is smaller than the net's input {crop_hw}: "
                               "crops would not fit")
        scaled = np.stack([caffe_io.resize_image(im, dims) for im in images])  # (N, H, W, K)
        if ten_crops:
            crops = caffe_io.oversample(scaled, crop_hw)  # (10 N, h, w, K)
        else:
            top, left = caffe_io.crop_origins(dims, crop_hw)[-1]  # the centre's
            crops = scaled[:, top:top + crop_hw[0], left:left + crop_hw[1]]
        batch = np.stack([self.transformer.preprocess(in_, crop) for crop in crops])
        scores = self.forward_all(**{in_: batch})[out_name]
        if not ten_crops:
            return scores
        return scores.reshape(len(images), 10, -1).mean(axis=1)  # each image's ten, averaged

    # ----- brewnet: deploy bundles ------------------------------------------------------------
    @classmethod
    def from_bundle(cls, path: str | os.PathLike) -> "Classifier":
        """A classifier for the deploy bundle in ``path`` (``brewnet deploy``): ``predict``
        takes image file paths or PIL images and applies the bundle's ``preprocess.json``
        (the dataset's resize, then validation's crop, mean and scale, in Caffe's BGR order),
        so its probabilities are those validation computed.  ``labels`` holds the class names.
        """
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
