"""The layer base class and the registry of Caffe layer types.

Every Caffe layer type is one ``Layer`` subclass registered under its exact Caffe type string
(``@register("Convolution")``).  A layer is an ``nn.Module``: its forward is plain PyTorch and
autograd provides the backward pass.  What Caffe calls the layer's *blobs* (weights, biases,
BatchNorm statistics) are registered on the module in Caffe's order: learnable ones as
``nn.Parameter``, statistics as buffers, so that ``state_dict`` and ``.to(device)`` work while
``layer.blob_tensors`` still lists them exactly as a caffemodel stores them, and ``layer.blobs``
shows them as pycaffe does (``net.layers[i].blobs[j].data[...] = ...`` writes the parameter).
"""
from __future__ import annotations

import difflib
import math
from typing import ClassVar, NoReturn, Sequence

import numpy as np
import torch
from torch import nn

from ..errors import NetError
from ..formats import legacy_shape_equals

Shape = tuple[int, ...]

LAYER_REGISTRY: dict[str, type["Layer"]] = {}


def register(type_name: str):
    """Class decorator: register a Layer subclass under its Caffe type string."""

    def wrap(cls: type[Layer]) -> type[Layer]:
        if type_name in LAYER_REGISTRY:
            raise RuntimeError(f"layer type {type_name!r} registered twice "
                               f"({LAYER_REGISTRY[type_name].__name__} and {cls.__name__})")
        cls.type = type_name
        LAYER_REGISTRY[type_name] = cls
        return cls

    return wrap


def layer_class(type_name: str, layer_name: str = "?") -> type["Layer"]:
    """Look up a registered type; an unknown type names the closest known ones."""
    try:
        return LAYER_REGISTRY[type_name]
    except KeyError:
        close = difflib.get_close_matches(type_name, LAYER_REGISTRY, n=3, cutoff=0.5)
        if not close:  # case-insensitive fallback ("relu" -> "ReLU")
            lower = {k.lower(): k for k in LAYER_REGISTRY}
            close = [lower[k] for k in difflib.get_close_matches(type_name.lower(), lower, n=3, cutoff=0.5)]
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise NetError(f"layer '{layer_name}': unknown layer type {type_name!r}{hint}") from None


def canonical_axis(axis: int, num_axes: int, layer: "Layer", what: str = "axis") -> int:
    """Caffe's Blob::CanonicalAxisIndex: negative axes count from the end."""
    if not -num_axes <= axis < num_axes:
        layer.fail(f"{what} {axis} out of range for a {num_axes}-D bottom")
    return axis % num_axes


def count(shape: Sequence[int], start: int = 0, end: int | None = None) -> int:
    return int(math.prod(int(d) for d in shape[start:end]))


class Layer(nn.Module):
    """One Caffe layer.

    Subclasses set the class attributes below and implement ``setup`` and ``forward``.

    - ``setup(bottom_shapes)`` runs once when the net is built (and again on reshape): it checks
      the bottom shapes, creates the blobs on the first call, and returns the top shapes.
    - ``forward(*bottoms)`` returns one tensor or a tuple of tensors (one per top).
    """

    type: ClassVar[str] = "?"
    #: (min, max) number of bottoms and tops; max None means unbounded.
    num_bottoms: ClassVar[tuple[int, int | None]] = (1, 1)
    num_tops: ClassVar[tuple[int, int | None]] = (1, 1)
    #: loss layers get loss_weight 1 on their first top by default (Caffe's LossLayer).
    is_loss: ClassVar[bool] = False
    #: layers whose tops are computed without any backward (Accuracy, ArgMax, data layers).
    has_backward: ClassVar[bool] = True
    #: layers that read no bottoms and produce data (Input, DummyData, Data, ...).
    is_data: ClassVar[bool] = False

    def __init__(self, param, phase: int):
        super().__init__()
        self.param = param  # caffe_pb2.LayerParameter
        self.name: str = param.name
        self.phase = phase  # caffe_pb2.TRAIN or caffe_pb2.TEST
        self._blob_names: list[str] = []
        self.generator: torch.Generator | None = None  # set by the net; seeds fillers

    # ----- blobs ---------------------------------------------------------------------------
    def add_blob(self, attr: str, value: torch.Tensor, learnable: bool = True) -> torch.Tensor:
        """Register a Caffe blob (in Caffe's order): a Parameter if learnable, else a buffer."""
        if learnable:
            value = nn.Parameter(value)
            self.register_parameter(attr, value)
        else:
            self.register_buffer(attr, value)
        self._blob_names.append(attr)
        return value

    @property
    def blob_names(self) -> list[str]:
        return list(self._blob_names)

    @property
    def blob_tensors(self) -> list[torch.Tensor]:
        """The blobs' tensors, in Caffe's order (parameters and statistics)."""
        return [getattr(self, n) for n in self._blob_names]

    @property
    def blobs(self) -> list:
        """pycaffe's ``layer.blobs``: each blob with live ``data`` / ``diff`` arrays."""
        from ..blob import ParamBlob
        return [ParamBlob(self, i) for i in range(len(self._blob_names))]

    def blob_is_learnable(self, index: int) -> bool:
        return self._blob_names[index] in self._parameters

    def replace_blob(self, index: int, tensor: torch.Tensor) -> None:
        """Make blob ``index`` the given tensor object (parameter sharing between layers/nets)."""
        attr = self._blob_names[index]
        if attr in self._parameters:
            self._parameters[attr] = tensor
        else:
            self._buffers[attr] = tensor

    def param_spec(self, index: int):
        """The ParamSpec (lr_mult, decay_mult, name) of blob ``index``: the user's param block."""
        from ..proto import caffe_pb2
        specs = self.param.param
        return specs[index] if index < len(specs) else caffe_pb2.ParamSpec()

    def caffe_blob_arrays(self) -> list[np.ndarray]:
        """The blobs as a caffemodel stores them (float32, Caffe's shapes)."""
        return [b.detach().to("cpu", torch.float32).numpy().copy() for b in self.blob_tensors]

    def load_caffe_blobs(self, arrays: list[np.ndarray], source_param=None) -> list[str]:
        """Copy blobs read from a caffemodel into this layer, checking count and shapes.

        Returns notes about conversions (layers with several on-disk layouts, like BatchNorm,
        override this).  Raises NetError on a count or shape mismatch.
        """
        mine = self.blob_tensors
        if len(arrays) != len(mine):
            self.fail(f"caffemodel has {len(arrays)} blobs, this layer has {len(mine)}")
        for i, (arr, blob) in enumerate(zip(arrays, mine)):
            if tuple(arr.shape) != tuple(blob.shape):
                if legacy_shape_equals(arr.shape, blob.shape):
                    arr = arr.reshape(blob.shape)  # Caffe accepts legacy 4-D (1,1,N,K) shapes
                else:
                    self.fail(f"blob {i} shape mismatch: caffemodel has {tuple(arr.shape)}, "
                              f"the net expects {tuple(blob.shape)}")
            with torch.no_grad():
                blob.copy_(torch.as_tensor(arr, dtype=blob.dtype))
        return []

    # ----- helpers for subclasses -----------------------------------------------------------
    def fail(self, message: str) -> NoReturn:
        raise NetError(f"layer '{self.name}' ({self.type}): {message}")

    def fill(self, filler_param, shape: Shape, default_value: float = 0.0) -> torch.Tensor:
        """Fill a new blob; with no FillerParameter given, constant ``default_value``."""
        from ..fillers import constant_filler, fill
        if filler_param is None:
            filler_param = constant_filler(default_value)
        budget = getattr(self, "memory_budget", None)
        if budget is not None:
            budget.claim(f"layer '{self.name}' ({self.type}): parameter blob", shape)
        return fill(filler_param, shape, generator=self.generator)

    @property
    def training_phase(self) -> bool:
        return self.phase == 0  # caffe_pb2.TRAIN

    def setup(self, bottom_shapes: list[Shape]) -> list[Shape]:
        raise NotImplementedError

    def reshape(self, bottom, top) -> None:
        """pycaffe's ``layer.reshape(bottom, top)``: give the top Blobs the shapes this layer
        computes from the bottom Blobs' shapes."""
        shapes = self.setup([tuple(b.shape) for b in bottom])
        if len(shapes) != len(top):
            self.fail(f"reshape(): computes {len(shapes)} tops, {len(top)} given")
        for blob, shape in zip(top, shapes):
            blob.reshape(*shape)

    def allow_force_backward(self, bottom_index: int) -> bool:
        """Caffe's Layer::AllowForceBackward (loss layers refuse it for their labels)."""
        return True

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class DataLayer(Layer):
    """A layer that reads no bottoms and produces data (Input, DummyData, the readers)."""

    num_bottoms = (0, 0)
    num_tops = (1, None)
    is_data = True
    has_backward = False

    def one_per_top(self, values: list, what: str) -> list:
        """Caffe's rule for per-top settings: one value serves every top, else one per top."""
        n = len(self.param.top)
        if len(values) == 1:
            return values * n
        if len(values) != n:
            self.fail(f"gives {len(values)} {what} for {n} tops (give 1 or {n})")
        return values


def layer_type_list() -> list[str]:
    """Every registered Caffe layer type, sorted (pycaffe's ``caffe.layer_type_list()``)."""
    import brewnet.layers  # noqa: F401  (importing the families registers them)
    return sorted(LAYER_REGISTRY)
