"""pycaffe's Blob: a named array with ``data`` and ``diff`` that scripts read and write.

A Blob holds the latest tensor the net computed for its name.  Nothing is copied while the net
runs: the numpy view a user sees is made when ``.data`` / ``.diff`` is first read (zero-copy on
the CPU).  Once handed out, that array is the blob's storage: the next pycaffe ``forward`` copies
new values into it (so arrays kept by a script stay live, as in Caffe), and the net reads it back
as the blob's value (so writes into ``net.blobs[...].data`` are seen by the next forward).
Parameter blobs wrap the layer's own tensors, so on float32/float64 CPU nets their arrays are
always live; elsewhere (CUDA, half precision) they are host copies synced as Caffe syncs its CPU
and GPU memory (see ParamBlob).
"""
from __future__ import annotations

import numpy as np
import torch

from .memory import MemoryBudget, available_device_bytes


def _host_view(t: torch.Tensor) -> np.ndarray | None:
    """A numpy array sharing memory with ``t``, or None when that is impossible."""
    if t.device.type == "cpu" and t.is_contiguous() and t.dtype in (torch.float32, torch.float64):
        return t.detach().numpy()
    return None


def _host_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 stays float64; everything else is shown as float32 (Caffe's Dtype)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class _BlobSurface:
    """What Blob and ParamBlob share: pycaffe's shape accessors and the data/diff setters.

    Subclasses provide ``data``/``diff`` getters and ``_shape_source`` (the tensor whose shape
    the blob has)."""

    name: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._shape_source.shape)

    @property
    def count(self) -> int:
        return int(self._shape_source.numel())

    def _legacy(self, axis: int) -> int:
        shape = self.shape
        if len(shape) > 4:
            raise ValueError(f"blob '{self.name}' has {len(shape)} axes; num/channels/height/width need at most 4")
        return shape[axis] if axis < len(shape) else 1  # Caffe's LegacyShape: missing axes are 1

    num = property(lambda self: self._legacy(0))
    channels = property(lambda self: self._legacy(1))
    height = property(lambda self: self._legacy(2))
    width = property(lambda self: self._legacy(3))

    def _set_data(self, value) -> None:
        self.data[...] = value

    def _set_diff(self, value) -> None:
        self.diff[...] = value

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} shape={self.shape}>"


class Blob(_BlobSurface):
    """An activation (or input) blob of a net."""

    def __init__(self, name: str, tensor: torch.Tensor):
        self.name = name
        self._tensor = tensor.detach()  # value used when the net reads this blob
        self._grad: torch.Tensor | None = None
        self._data_buf: np.ndarray | None = None  # handed out to the user
        self._diff_buf: np.ndarray | None = None

    # ----- what the net uses ---------------------------------------------------------------
    def _set_value(self, t: torch.Tensor) -> None:
        t = t.detach()
        buf = self._data_buf
        if buf is not None and tuple(buf.shape) == tuple(t.shape):
            if t.device.type != "cpu" or buf.ctypes.data != t.data_ptr():
                torch.from_numpy(buf).copy_(t)  # arrays a script holds stay live
        else:
            self._data_buf = None  # reshaped (Caffe reallocates too): old arrays go stale
        self._tensor = t

    def _set_grad(self, g: torch.Tensor | None) -> None:
        if g is None:
            g = torch.zeros_like(self._tensor)
        g = g.detach()
        buf = self._diff_buf
        if buf is not None and tuple(buf.shape) == tuple(g.shape):
            buf[...] = g.to("cpu", torch.float32).numpy()
            self._grad = torch.from_numpy(buf)
            return
        self._diff_buf = None
        self._grad = g

    def _value(self, device=None) -> torch.Tensor:
        """The tensor the net should read: the user's array when one was handed out."""
        t = self._tensor
        buf = self._data_buf
        if buf is not None and (t.device.type != "cpu" or buf.ctypes.data != t.data_ptr()):
            t = torch.from_numpy(buf)
        if device is not None and t.device != torch.device(device):
            t = t.to(device)
        return t

    def _diff_value(self, device=None) -> torch.Tensor:
        """The diff a script put on this blob (top diffs of outputs before backward)."""
        g = self._grad
        if self._diff_buf is not None:
            g = torch.from_numpy(self._diff_buf)
        if g is None or tuple(g.shape) != self.shape:
            g = torch.zeros_like(self._tensor)
        return g if device is None else g.to(device)

    # ----- pycaffe surface -----------------------------------------------------------------
    @property
    def data(self) -> np.ndarray:
        if self._data_buf is None or tuple(self._data_buf.shape) != tuple(self._tensor.shape):
            view = _host_view(self._tensor)
            self._data_buf = view if view is not None else \
                self._tensor.to("cpu", _host_dtype(self._tensor)).contiguous().numpy().copy()
        return self._data_buf

    data = data.setter(_BlobSurface._set_data)

    @property
    def diff(self) -> np.ndarray:
        if self._diff_buf is None or tuple(self._diff_buf.shape) != tuple(self._tensor.shape):
            g = self._grad if self._grad is not None and self._grad.shape == self._tensor.shape \
                else torch.zeros(self._tensor.shape, dtype=torch.float32)
            view = _host_view(g)
            self._diff_buf = view if view is not None else g.to("cpu", torch.float32).contiguous().numpy().copy()
            self._grad = torch.from_numpy(self._diff_buf)
        return self._diff_buf

    diff = diff.setter(_BlobSurface._set_diff)

    @property
    def _shape_source(self) -> torch.Tensor:
        return self._tensor

    def reshape(self, *shape: int) -> None:
        """Give the blob a new shape (contents undefined until written), as pycaffe does."""
        shape = tuple(int(s) for s in (shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape))
        if shape == self.shape:
            return
        if any(d < 0 for d in shape):
            raise ValueError(f"blob '{self.name}': negative dimension in shape {shape}")
        MemoryBudget(available_device_bytes(self._tensor.device)).claim(
            f"blob '{self.name}'", shape, self._tensor.element_size())
        self._tensor = torch.zeros(shape, dtype=self._tensor.dtype, device=self._tensor.device)
        self._data_buf = None
        self._diff_buf = None
        self._grad = None


#: host copies of parameter blobs handed out where no zero-copy view exists (CUDA, or a dtype
#: numpy cannot share), waiting to be written back: (layer, index, "data" | "diff") -> array
_pending_host_writes: dict[tuple, np.ndarray] = {}


def push_host_writes() -> None:
    """Write host copies of parameter blobs a script may have changed back to their tensors.

    Caffe's SyncedMemory does this on the next device use after ``mutable_cpu_data``; nets call
    it before they run, back-propagate, update or save.  The copies become stale afterwards and
    are refreshed from the device on the next ``.data`` / ``.diff`` read (into the same array)."""
    if not _pending_host_writes:
        return
    with torch.no_grad():
        for (layer, index, what), array in list(_pending_host_writes.items()):
            t = layer.blob_tensors[index]
            if what == "diff":
                if t.grad is None:
                    t.grad = torch.zeros_like(t)
                t = t.grad
            if tuple(t.shape) == array.shape:
                t.copy_(torch.from_numpy(array))
    _pending_host_writes.clear()


class ParamBlob(_BlobSurface):
    """A parameter blob: wraps the layer's own tensor, so arrays stay live across updates.

    On float32/float64 CPU nets ``data`` and ``diff`` are views of the tensors themselves.
    Elsewhere (CUDA, half precision) they are float32 host copies kept per layer and blob:
    read from the device when handed out, written back before the net next uses the tensor
    (see push_host_writes), as Caffe syncs its CPU and GPU memory.  As in pycaffe, read
    ``.data`` again after the net has run: an array kept from before is not written back."""

    def __init__(self, layer, index: int):
        self._layer = layer
        self._index = index

    @property
    def tensor(self) -> torch.Tensor:
        return self._layer.blob_tensors[self._index]

    def _host_copy(self, t: torch.Tensor, what: str) -> np.ndarray:
        key = (self._layer, self._index, what)
        mirrors = self._layer.__dict__.setdefault("_host_mirrors", {})
        array = mirrors.get((self._index, what))
        if array is None or array.shape != tuple(t.shape):
            array = mirrors[(self._index, what)] = np.empty(tuple(t.shape), dtype=np.float32)
            _pending_host_writes.pop(key, None)
        if key not in _pending_host_writes:  # the device may have changed since: refresh
            array[...] = t.detach().to("cpu", torch.float32).numpy()
            _pending_host_writes[key] = array
        return array

    @property
    def data(self) -> np.ndarray:
        t = self.tensor
        view = _host_view(t)
        return view if view is not None else self._host_copy(t, "data")

    data = data.setter(_BlobSurface._set_data)

    @property
    def diff(self) -> np.ndarray:
        t = self.tensor
        if t.grad is None:
            t.grad = torch.zeros_like(t)
        view = _host_view(t.grad)
        return view if view is not None else self._host_copy(t.grad, "diff")

    diff = diff.setter(_BlobSurface._set_diff)

    @property
    def _shape_source(self) -> torch.Tensor:
        return self.tensor

    @property
    def name(self) -> str:
        return f"{self._layer.name}[{self._index}]"

    def reshape(self, *shape: int) -> None:
        raise ValueError("parameter blobs keep the shape their layer gives them")
