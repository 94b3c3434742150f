"""The rest of pycaffe's ``caffe.Net`` surface, on top of the Net's core (brewnet/net.py).

pycaffe exposes the C++ net's index-based internals (``_blob_names``, ``_top_ids``, ``_forward``,
...), layer callbacks (``before_forward`` ...) and Python conveniences written over them
(``forward_all``, ``forward_backward_all``, ``set_input_arrays``).  Scripts and tools written for
pycaffe use all of them; they live here so that net.py stays about running the net.
"""
from __future__ import annotations

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
        names = _each_once(self.outputs, blobs)
        passes = [_copies(self.forward(blobs=blobs, **feed), names) for feed in self._batch(kwargs)]
        return _stack_rows(passes, names, _item_count(kwargs))

    def forward_backward_all(self, blobs: list[str] | None = None, diffs: list[str] | None = None,
                             **kwargs) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Forward and backward in batches (pycaffe's forward_backward_all): kwargs give inputs
        (forward) and output diffs (backward); returns ({blob: data}, {blob: diff})."""
        data_names, diff_names = _each_once(self.outputs, blobs), _each_once(self.inputs, diffs)
        feeds = list(self._batch({k: v for k, v in kwargs.items() if k in self.inputs}))
        top_diffs = list(self._batch({k: v for k, v in kwargs.items() if k in self.outputs}))
        data, grads = [], []
        for step in range(max(len(feeds), len(top_diffs))):     # the shorter list: nothing given
            data.append(_copies(self.forward(blobs=blobs, **_nth(feeds, step)), data_names))
            grads.append(_copies(self.backward(diffs=diffs, **_nth(top_diffs, step)), diff_names))
        count = _item_count(kwargs)
        return _stack_rows(data, data_names, count), _stack_rows(grads, diff_names, count)


def _each_once(names: Iterable[str], extra: Iterable[str] | None) -> list[str]:
    """``names`` then ``extra``, without repeats."""
    return list(dict.fromkeys([*names, *(extra or [])]))


def _copies(arrays: dict[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """Copies of ``arrays[name]``: the net's blobs are overwritten by the next batch."""
    return {name: np.array(arrays[name]) for name in names}


def _nth(batches: list[dict], step: int) -> dict:
    return batches[step] if step < len(batches) else {}


def _item_count(kwargs: dict) -> int | None:
    """The number of items given (that of the first argument), None for none."""
    return len(next(iter(kwargs.values()))) if kwargs else None


def _stack_rows(passes: list[dict[str, np.ndarray]], names: list[str],
                count: int | None) -> dict[str, np.ndarray]:
    """Each name's arrays of all passes one after the other, the first ``count`` rows kept."""
    stacked = {}
    for name in names:
        parts = [p[name] for p in passes]
        rows = np.concatenate(parts) if parts else np.zeros((0,), np.float32)
        stacked[name] = rows if count is None else rows[:count]
    return stacked
