"""pycaffe's ``caffe.detector``: ``Detector``, windowed detection (R-CNN's feature extraction).

A TEST-phase net whose first input gets pycaffe's Transformer, set up as the Classifier's
(:func:`brewnet.pycaffe.classifier.configure_transformer`).  ``Detector.detect_windows`` crops
windows out of image files (with R-CNN's context padding when ``context_pad`` is set) and warps
each to the net's input size.

Where pycaffe's code breaks or silently misbehaves under Python 3 this module does what pycaffe
meant: the context-padded crop uses integer pixel boxes (pycaffe sliced with floats),
``detect_windows`` accepts a one-shot iterator such as ``zip`` (pycaffe walked it twice and
returned no detections), and impossible requests (an empty window, a missing selective-search
module) raise a clear :class:`BrewnetError`.
"""
from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from . import io as caffe_io
from ..errors import BrewnetError
from ..net import TEST, Net
from .classifier import check_files, configure_transformer

#: the module Caffe's Detector.detect_selective_search imports (Sergey Karayev's MATLAB wrapper)
SELECTIVE_SEARCH_MODULE = "selective_search_ijcv_with_python"


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
        check_files(model_file, pretrained_file)
        super().__init__(model_file, TEST, weights=pretrained_file)
        self.transformer = configure_transformer(self, mean, input_scale, raw_scale,
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
        in_ = self.inputs[0]
        origins: list[tuple[str, np.ndarray]] = []  # (file, window) of each row of the batch
        rows: list[np.ndarray] = []
        for fname, windows in images_windows:  # one pass: a one-shot iterator is fine
            image = caffe_io.load_image(fname)  # (H, W, 3) float32 RGB in [0, 1]
            for window in windows:
                window = np.asarray(window)
                rows.append(self.transformer.preprocess(in_, self.crop(image, window)))
                origins.append((fname, window))
        if not rows:
            return []
        scores = self.forward_all(**{in_: np.stack(rows)})[self.outputs[0]]
        return [{"window": window, "prediction": score, "filename": fname}
                for (fname, window), score in zip(origins, scores)]

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
        paths = [os.path.abspath(name) for name in image_fnames]
        proposals = selective_search.get_windows(paths, cmd="selective_search_rcnn")
        return self.detect_windows(zip(paths, proposals))

    def crop(self, im: np.ndarray, window) -> np.ndarray:
        """The window ``(ymin, xmin, ymax, xmax)`` of the H×W×K image ``im``.

        Without context padding: ``im[ymin:ymax, xmin:xmax]`` (the end rows/columns excluded,
        as Caffe slices).  With ``context_pad``: the window is treated as inclusive, grown about
        its centre by ``crop / (crop - 2 * context_pad)`` (``crop`` the net's input width),
        rounded, cut at the image border and resized into a crop-sized canvas filled with the
        mean, the part outside the image left as mean; returns (crop_h, crop_w, K).
        """
        window = np.asarray(window)
        if self.context_pad:
            return self._context_crop(im, window)
        crop = im[int(window[0]):int(window[2]), int(window[1]):int(window[3])]
        if crop.shape[0] < 1 or crop.shape[1] < 1:
            raise BrewnetError(f"window {tuple(int(v) for v in window)} (ymin, xmin, ymax, "
                               f"xmax) is empty in a {im.shape[0]}×{im.shape[1]} image")
        return crop

    def _context_crop(self, im: np.ndarray, window: np.ndarray) -> np.ndarray:
        """R-CNN's context crop (see :meth:`crop`), rows and columns computed together as
        (y, x) pairs."""
        side = self.blobs[self.inputs[0]].data.shape[3]  # the input's width; Caffe assumes square
        grow = side / (side - 2.0 * self.context_pad)
        first, last = window[:2].astype(np.float64), window[2:].astype(np.float64)
        half = (last - first + 1) / 2.0  # the window counted inclusively
        middle = first + half
        lo, hi = np.round(middle - grow * half), np.round(middle + grow * half)  # halves to even
        per_pixel = side / (hi - lo + 1)  # input pixels per image pixel, (y, x)
        lead = np.round(np.maximum(0.0, -lo) * per_pixel).astype(int)  # mean rows/cols before
        bounds = np.array(im.shape[:2], np.float64)
        lo, hi = np.clip(lo, 0.0, bounds), np.clip(hi, 0.0, bounds)
        outside = BrewnetError(f"window {tuple(int(v) for v in window)} lies outside the "
                               f"{im.shape[0]}×{im.shape[1]} image")
        if np.any(hi - lo + 1 <= 0):
            raise outside
        size = np.minimum(np.round((hi - lo + 1) * per_pixel).astype(int), side - lead)
        (y0, x0), (y1, x1) = lo.astype(int), hi.astype(int)
        visible = im[y0:y1, x0:x1]
        if visible.shape[0] < 1 or visible.shape[1] < 1:
            raise outside
        canvas = np.broadcast_to(self.crop_mean, tuple(self.crop_dims)).astype(np.float32)
        canvas[lead[0]:lead[0] + size[0], lead[1]:lead[1] + size[1]] = \
            caffe_io.resize_image(visible, tuple(size))
        return canvas

    def configure_crop(self, context_pad: int | None) -> None:
        """Set ``crop_dims`` (the net's input as H×W×K) and the context padding; with padding,
        ``crop_mean``: the mean in the image's own space (before channel swap and raw scale), so
        that padding preprocesses to zero."""
        in_ = self.inputs[0]
        to_image = np.argsort(self.transformer.transpose[in_])  # the net's axes back to H×W×K
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[to_image]  # (h, w, K)
        self.context_pad = context_pad
        if not self.context_pad:
            return
        mean = self.transformer.mean.get(in_)
        if mean is None:
            self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
        else:  # the mean taken back through raw scale, channel swap and transpose
            self.crop_mean = self.transformer.undo_settings(
                in_, np.array(mean, dtype=np.float32), ("transpose", "channel_swap", "raw_scale"))
