"""A deploy bundle loaded for inference: its net built with the weights and its
:class:`~brewnet.inference.preprocess.Preprocessor`, ready to score batches
(:class:`LoadedBundle`; ``brewnet classify``, the server's inference worker and the web pages
keep one).

torch is imported where used, so that importing this module does not.
"""
from __future__ import annotations

import numpy as np

from ..errors import BrewnetError
from .bundle import Bundle, BundleError
from .preprocess import Preprocessor

#: the default batch when the deploy Input holds a single image
DEFAULT_BATCH = 64


class LoadedBundle:
    """A bundle with its net built and weights loaded, ready to score batches (reuse it across
    :func:`classify` calls: the web app's worker keeps one).

    ``batch``: images per forward (default: the deploy Input's batch, the shape validation ran
    in, or 64 when that is 1).  ``scores(x)`` returns class probabilities.  Whoever reshapes
    the net's input otherwise (a visualisation forward) calls :meth:`input_reshaped` after.
    """

    def __init__(self, bundle: Bundle | str, device=None, batch: int | None = None):
        import torch

        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        if self.bundle.info.get("task") == "generic":
            raise BundleError(f"{self.bundle.path}: a generic bundle (its outputs are not class scores): "
                              "run it with brewnet infer (brewnet.inference.infer), not classify")
        self.preprocessor = Preprocessor.from_bundle(self.bundle)
        self.device = torch.device(device) if device is not None else None
        self.net = self.bundle.net(device=self.device)
        spec = self.bundle.preprocess
        self.input = spec["input"]
        where = f"{self.bundle.path}/deploy.prototxt"
        if self.input not in self.net.inputs:
            raise BundleError(f"{where}: preprocess.json's input blob '{self.input}' is not an input of the net "
                              f"(inputs: {', '.join(self.net.inputs) or 'none'})")
        shape = tuple(self.net.blobs[self.input].shape)
        if tuple(shape[1:]) != self.preprocessor.input_shape:
            raise BundleError(f"{where}: the net's input '{self.input}' is {list(shape[1:])} per image, "
                              f"preprocess.json makes {list(self.preprocessor.input_shape)}")
        if batch is not None and batch < 1:
            raise BrewnetError(f"batch must be at least 1, got {batch}")
        self.batch = int(batch or (shape[0] if shape[0] > 1 else DEFAULT_BATCH))
        self.output, self.apply_softmax = self._pick_output()
        self._batch_now = 0
        labels = list(self.bundle.labels)
        self._reshape(1)
        k = int(np.prod(self.net.blobs[self.output].shape[1:]))
        if labels and len(labels) != k:
            raise BundleError(f"{self.bundle.path}/labels.txt has {len(labels)} labels but the net's output "
                              f"'{self.output}' has {k} scores per image: mismatched label file")
        self.labels = labels or [str(i) for i in range(k)]

    def _pick_output(self) -> tuple[str, bool]:
        """The probabilities: the top of a Softmax that is a net output; else the only output,
        with a softmax applied here."""
        producer = {t: layer for layer in self.net.layers for t in layer.param.top}
        soft = [o for o in self.net.outputs if o in producer and producer[o].type == "Softmax"]
        if soft:
            return soft[-1], False
        if len(self.net.outputs) == 1:
            return self.net.outputs[0], True
        raise BundleError(f"{self.bundle.path}/deploy.prototxt: several outputs ({', '.join(self.net.outputs)}) "
                          "and none made by a Softmax layer; which one holds the class scores?")

    def _reshape(self, n: int) -> None:
        if n != self._batch_now:
            c, h, w = self.preprocessor.input_shape
            self.net.blobs[self.input].reshape(n, c, h, w)
            self.net.reshape()
            self._batch_now = n

    def input_reshaped(self) -> None:
        """The net's input was reshaped elsewhere: the next :meth:`scores` reshapes it again."""
        self._batch_now = 0

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(n, C, h, w) transformed input -> (n, K) float32 probabilities.

        Runs the net on min(``self.batch``, n) images at a time; a short last batch is padded with
        zeros (images do not mix in a TEST net), so every forward of a call has the same shape.
        """
        import torch

        n = x.shape[0]
        out = np.empty((n, len(self.labels)), dtype=np.float32)
        for s in range(0, n, self.batch):
            part = x[s:s + self.batch]
            self._reshape(min(self.batch, n))
            blob = self.net.blobs[self.input].data  # (B, C, h, w), the blob's own storage
            blob[:part.shape[0]] = part
            blob[part.shape[0]:] = 0
            with torch.inference_mode():
                res = self.net.forward()[self.output]
            probs = res.reshape(res.shape[0], -1)[:part.shape[0]]  # (n_part, K)
            if self.apply_softmax:
                probs = torch.softmax(torch.from_numpy(np.array(probs, dtype=np.float32)), dim=1).numpy()
            out[s:s + part.shape[0]] = probs
        return out

    def input_of(self, path: str) -> np.ndarray:
        """One image file as the net's float32 (C, h, w) input."""
        return self.preprocessor(path)
