"""A deploy bundle: everything needed to run a trained net on new images with the numbers
validation showed, in one directory of readable files (``brewnet deploy`` writes it).

    DIR/deploy.prototxt      the net for the deploy NetState (net-level ``input`` +
                             ``input_shape`` of the validation shape, as DIGITS writes it; no
                             loss or accuracy, a Softmax output); real BVLC Caffe loads it
    DIR/weights.caffemodel   the deploy net's layers only
    DIR/labels.txt           one class name per line, in class-index order
    DIR/preprocess.json      what the validation data path did (below)
    DIR/mean.binaryproto     the mean image, when validation subtracted one (legacy
                             num/channels/height/width dims, as DIGITS and Caffe's
                             compute_image_mean write it)
    DIR/info.json            name, iteration, creation time, brewnet version, source prototxt,
                             the accuracy logged at that iteration when known

``brewnet deploy -tar`` puts these files at the root of DIR.tar.gz (no folder), as DIGITS'
model download does, so that DIGITS' examples/classification scripts (use_archive.py,
example.py) run on it unchanged. Bundles written before that are read as well: an Input layer
instead of net-level inputs, a mean with ``shape`` instead of the legacy dims, and a directory
holding the one folder an older tarball extracted to.

``preprocess.json`` (version 1) — an image becomes the net's input in this order:

1. decode (any format Pillow reads); ``channels`` 1 → greyscale, 3 → colour in
   ``channel_order`` "BGR" (Caffe's order; colour input is never fed RGB);
2. resize to ``stored_size`` [height, width] as the dataset did: ``resize`` is
   ``{"width", "height", "mode"}`` with DIGITS' modes (squash, crop, fill, half_crop) from the
   dataset's ``summary.json``, or null when the dataset did not resize (then an image of another
   size is squashed to ``stored_size``, with a warning);
3. ``transform_param``: the validation Data layer's TransformationParameter (prototxt text), run
   by the same ``brewnet.data.transformer.DataTransformer`` as validation in the TEST phase
   (centre ``crop``, ``mean`` image at the cropped position or ``mean_value`` per channel, times
   ``scale``); its ``mean_file`` names ``mean.binaryproto`` in the bundle.

Human-readable copies of step 3 sit beside it: ``crop`` ({"height", "width"} or null), ``mean``
({"image": "mean.binaryproto"}, {"values": [...]} or null), ``scale``; ``input`` is the input
blob's name, ``input_shape`` [C, H, W] what the net takes, ``input_range`` [0, 255] the pixel
range before the transform, ``source`` where the values were read from, ``baked`` true when
``brewnet deploy -bake`` folded step 3 into the net (the transform is then the identity and
the net takes raw 0–255 pixels).

Added within version 1 (readers may ignore them): ``resize.interpolation`` says which bilinear
resized the stored images, "pillow_bilinear" (``brewnet dataset create``'s
``brewnet.data.image.digits_resize``) or "opencv_bilinear" (an ImageData layer's
``new_height``/``new_width``: ``brewnet.data.image.resize_bilinear``, as Caffe's cv::resize);
a baked bundle's transform keeps only the crop (and force_color/force_gray), and
``baked_from`` holds the ``transform_param``, ``mean`` and ``scale`` the net now applies itself
and ``how`` (folded into the first layer, or the Bias/Power layers inserted).
"""
from __future__ import annotations

import json
import os
import tarfile
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ..data.labels import read_labels
from ..data.transformer import load_mean
from ..errors import BrewnetError

PREPROCESS_VERSION = 1
FILES = ("deploy.prototxt", "weights.caffemodel", "labels.txt", "preprocess.json", "info.json")
REQUIRED_KEYS = ("version", "input", "input_shape", "channels", "channel_order", "stored_size",
                 "resize", "transform_param", "crop", "mean", "scale", "input_range")


#: ``resize.interpolation``: how the stored images were resized
PILLOW_BILINEAR = "pillow_bilinear"  # brewnet.data.image.digits_resize (brewnet dataset create)
OPENCV_BILINEAR = "opencv_bilinear"  # brewnet.data.image.resize_bilinear (ImageData new_height/width)


class BundleError(BrewnetError):
    """A deploy bundle is missing a file or holds something inconsistent."""


class DeployError(BrewnetError):
    """A deploy bundle cannot be made from these files (the message says why and what to do)."""


@dataclass
class Bundle:
    """A deploy bundle read from its directory (``Bundle.load``)."""

    path: str
    preprocess: dict
    labels: list[str]
    info: dict = field(default_factory=dict)
    mean: np.ndarray | None = None

    @property
    def deploy_prototxt(self) -> str:
        return os.path.join(self.path, "deploy.prototxt")

    @property
    def weights(self) -> str:
        return os.path.join(self.path, "weights.caffemodel")

    @classmethod
    def load(cls, path: str) -> "Bundle":
        path = _bundle_dir(os.fspath(path))
        missing = [f for f in FILES if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise BundleError(f"{path}: the bundle is missing {', '.join(missing)} "
                              "(write it again with brewnet deploy)")
        pre = _read_json(os.path.join(path, "preprocess.json"))
        absent = [k for k in REQUIRED_KEYS if k not in pre]
        if absent:
            raise BundleError(f"{path}/preprocess.json: missing key(s) {', '.join(absent)}")
        if pre["version"] != PREPROCESS_VERSION:
            raise BundleError(f"{path}/preprocess.json: version {pre['version']!r}, this brewnet reads "
                              f"version {PREPROCESS_VERSION}")
        labels = read_labels(os.path.join(path, "labels.txt"))
        mean = None
        if isinstance(pre.get("mean"), dict) and "image" in pre["mean"]:
            mean_path = os.path.join(path, pre["mean"]["image"])
            if not os.path.isfile(mean_path):
                raise BundleError(f"{path}: preprocess.json names the mean image "
                                  f"{pre['mean']['image']}, which is not in the bundle")
            mean = load_mean(mean_path, where=f"{path}/preprocess.json mean")
        return cls(path=path, preprocess=pre, labels=labels,
                   info=_read_json(os.path.join(path, "info.json")), mean=mean)

    def net(self, device=None):
        """The deploy net with the bundle's weights (TEST phase)."""
        from ..net import TEST, Net  # torch: importing this module does not import it
        return Net(self.deploy_prototxt, self.weights, TEST, device=device)


def _bundle_dir(path: str) -> str:
    """The directory holding the bundle's files: ``path``, or the one folder in it that holds
    them (an older ``brewnet deploy -tar`` archive extracted there had one top folder)."""
    if os.path.isfile(path):
        if tarfile.is_tarfile(path) or zipfile.is_zipfile(path):
            raise BundleError(f"{path}: an archive, not a deploy bundle directory; extract it "
                              "(tar xf / unzip) and give the folder its files are in")
    if not os.path.isdir(path):
        raise BundleError(f"{path}: not a deploy bundle directory (brewnet deploy writes one)")
    if any(os.path.exists(os.path.join(path, f)) for f in FILES):
        return path
    folders = [e for e in os.scandir(path) if e.is_dir() and not e.name.startswith(".")]
    if len(folders) == 1 and os.path.isfile(os.path.join(folders[0].path, "preprocess.json")):
        return folders[0].path
    return path


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except json.JSONDecodeError as e:
        raise BundleError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return value
