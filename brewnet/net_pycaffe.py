"""The rest of pycaffe's ``caffe.Net`` surface, on top of the Net's core (brewnet/net.py).

pycaffe exposes the C++ net's index-based internals (``_blob_names``, ``_top_ids``, ``_forward``,
...), layer callbacks (``before_forward`` ...) and Python conveniences written over them
(``forward_all``, ``forward_backward_all``, ``set_input_arrays``).  Scripts and tools written for
pycaffe use all of them; they live here so that net.py stays about running the net.
"""
from __future__ import annotations

from collections import OrderedDict
from itertools import zip_longest
from typing import Callable, Iterable, Iterator

import numpy as np

from .errors import NetError


class PycaffeNetMixin:
    """Mixed into ``brewnet.Net``; relies on its ``blobs``, ``_layers``, ``_layer_names``,
    ``top_names``, ``bottom_names``, ``inputs``, ``outputs``, ``forward`` and ``backward``."""

    # ----- index-based views of the C++ net ----------------------------------------------
    @property
    def _blob_names(self) -> list[str]:
        return list(self.blobs)

    @property
    def _blobs(self) -> list:
        return list(self.blobs.values())

    def _blob_index(self, name: str) -> int:
        return self._blob_names.index(name)

    @property
    def _inputs(self) -> list[int]:
        return [self._blob_index(n) for n in self.inputs]

    @property
    def _outputs(self) -> list[int]:
        return [self._blob_index(n) for n in self.outputs]

    @property
    def _blob_loss_weights(self) -> list[float]:
        return list(self.blob_loss_weights.values())

    def _top_ids(self, layer_index: int) -> list[int]:
        return [self._blob_index(n) for n in self.top_names[self._layer_names[layer_index]]]

    def _bottom_ids(self, layer_index: int) -> list[int]:
        return [self._blob_index(n) for n in self.bottom_names[self._layer_names[layer_index]]]

    def _forward(self, start: int, end: int) -> float:
        """Caffe's ForwardFromTo by layer index; returns the loss of the layers run."""
        self.forward(start=self._layer_names[start], end=self._layer_names[end])
        return float(sum(self.blobs[t].data.sum() * w for t, w in self._loss_weights.items()
                         if t in self.blobs))

    def _backward(self, start: int, end: int) -> None:
        """Caffe's BackwardFromTo by layer index (start is the later layer)."""
        self.backward(start=self._layer_names[start], end=self._layer_names[end])

    # ----- layer callbacks (Caffe's Net::Callback) ----------------------------------------
    def before_forward(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(layer_index)`` before each layer's forward (training included)."""
        self._add_layer_callback("before_forward", callback)

    def after_forward(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(layer_index)`` after each layer's forward (training included).
        ``net.blobs`` show the new values once the whole forward has run."""
        self._add_layer_callback("after_forward", callback)

    def before_backward(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(layer_index)`` for each layer, last first, before the backward pass.

        PyTorch's autograd runs the whole backward pass at once, so every ``before_backward``
        call comes before it and every ``after_backward`` call after it; each call still sees
        what Caffe guarantees: nothing of its layer computed yet, or all of it."""
        self._add_layer_callback("before_backward", callback)

    def after_backward(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(layer_index)`` for each layer, last first, after the backward pass
        (its parameter diffs are ready; see before_backward)."""
        self._add_layer_callback("after_backward", callback)

    def _add_layer_callback(self, when: str, callback: Callable[[int], None]) -> None:
        if not callable(callback):
            raise TypeError(f"{when}(): the callback must be callable, got {callback!r}")
        self._layer_callbacks.setdefault(when, []).append(callback)

    def _run_callbacks(self, when: str, layer_indices: Iterable[int]) -> None:
        callbacks = self._layer_callbacks.get(when)
        if callbacks:
            for i in layer_indices:
                for cb in callbacks:
                    cb(i)

    # ----- pycaffe's Python helpers ---------------------------------------------------------
    def set_input_arrays(self, data, labels) -> None:
        """Give the first layer, a MemoryData layer, its arrays (pycaffe's set_input_arrays):
        data (N, C, H, W) float32, labels (N,) or (N, 1, 1, 1)."""
        first = self._layers[0] if self._layers else None
        if first is None or first.type != "MemoryData":
            raise NetError("set_input_arrays(): the net's first layer must be a MemoryData layer"
                           + (f" (it is '{first.name}' ({first.type}))" if first is not None else ""))
        labels = np.asarray(labels)
        if labels.ndim == 1:
            labels = labels[:, None, None, None]
        from .data import set_input_arrays
        set_input_arrays(self, data, labels, layer=first.name)

    _set_input_arrays = set_input_arrays

    def _batch(self, blobs: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        """Split ``{input name: array}`` into batches of the net's batch size, the last one
        padded with zeros (pycaffe's Net._batch)."""
        if not blobs:
            return
        lengths = {len(v) for v in blobs.values()}
        if len(lengths) != 1:
            raise NetError(f"forward_all(): inputs have different numbers of items: "
                           f"{ {k: len(v) for k, v in blobs.items()} }")
        total = lengths.pop()
        batch = self.blobs[next(iter(blobs))].shape[0]
        for start in range(0, total, batch):
            out = {}
            for name, value in blobs.items():
                chunk = np.asarray(value[start:start + batch])
                if len(chunk) < batch:
                    pad = np.zeros((batch - len(chunk),) + chunk.shape[1:], dtype=chunk.dtype)
                    chunk = np.concatenate([chunk, pad])
                out[name] = chunk
            yield out

    def forward_all(self, blobs: list[str] | None = None, **kwargs) -> dict[str, np.ndarray]:
        """Forward any number of items in batches (pycaffe's forward_all): ``{blob: array}``
        for the outputs and ``blobs``, one row per input item (batch padding dropped)."""
        names = list(dict.fromkeys(list(self.outputs) + list(blobs or [])))
        collected: dict[str, list[np.ndarray]] = OrderedDict((n, []) for n in names)
        for batch in self._batch(kwargs):
            outs = self.forward(blobs=blobs, **batch)
            for n in names:
                collected[n].append(outs[n].copy())
        return self._unpad(collected, kwargs)

    def forward_backward_all(self, blobs: list[str] | None = None, diffs: list[str] | None = None,
                             **kwargs) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Forward and backward in batches (pycaffe's forward_backward_all): kwargs give inputs
        (forward) and output diffs (backward); returns ({blob: data}, {blob: diff})."""
        out_names = list(dict.fromkeys(list(self.outputs) + list(blobs or [])))
        diff_names = list(dict.fromkeys(list(self.inputs) + list(diffs or [])))
        outs: dict[str, list] = OrderedDict((n, []) for n in out_names)
        grads: dict[str, list] = OrderedDict((n, []) for n in diff_names)
        forward_batches = self._batch({n: kwargs[n] for n in self.inputs if n in kwargs})
        backward_batches = self._batch({n: kwargs[n] for n in self.outputs if n in kwargs})
        for fb, bb in zip_longest(forward_batches, backward_batches, fillvalue={}):
            batch_outs = self.forward(blobs=blobs, **fb)
            batch_diffs = self.backward(diffs=diffs, **bb)
            for n in out_names:
                outs[n].append(batch_outs[n].copy())
            for n in diff_names:
                grads[n].append(batch_diffs[n].copy())
        return self._unpad(outs, kwargs), self._unpad(grads, kwargs)

    @staticmethod
    def _unpad(collected: dict[str, list[np.ndarray]], kwargs: dict) -> dict[str, np.ndarray]:
        total = len(next(iter(kwargs.values()))) if kwargs else None
        out = {}
        for name, chunks in collected.items():
            value = np.concatenate(chunks) if chunks else np.zeros((0,), np.float32)
            out[name] = value[:total] if total is not None else value
        return out
