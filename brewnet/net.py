"""The Net: a Caffe network for one phase, built from a NetParameter and run with PyTorch.

Construction follows Caffe's Net::Init: layers are filtered by the NetState rules (net_state.py),
a blob read by several layers gets a Split layer (net_splits.py), each layer is set up in order
with the shapes of its bottoms (so wiring and shape mistakes are reported before anything runs),
parameters are shared by ``param { name }``, loss weights are assigned.

Running has two paths:

- ``forward_loss()`` is the training path: one pass that returns the weighted loss as a tensor,
  with nothing retained beyond what autograd needs; the solver calls ``backward()`` on it.
- ``forward()`` / ``backward()`` are pycaffe's: they keep every blob's value and compute every
  blob's diff, so scripts can read ``net.blobs[name].data`` and ``.diff``.

Blobs are named tensors; an in-place layer (top == bottom) rebinds the name to a new tensor, so
autograd never sees a value overwritten.  A blob name that was rebound keeps its *last* value as
its data and the diff with respect to its *first* value as its diff, as Caffe's shared memory does.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict
from typing import Iterable

import numpy as np
import torch
from torch import nn

from . import formats, runtime, weights
from .blob import Blob, ParamBlob, push_host_writes
from .errors import NetError
from .net_pycaffe import PycaffeNetMixin
from .net_splits import insert_splits
from .net_state import filter_net, state_for
from .layers import layer_class
from .layers.base import Layer
from .layers.loss import raise_deferred_label_errors
from .memory import MemoryBudget, available_device_bytes
from .proto import caffe_pb2
from .weights import LoadReport

log = logging.getLogger("brewnet")


def _call(layer: Layer):
    """layer.forward itself (nn.Module.__call__ costs more than some small layers) unless a
    hook is registered on it, e.g. by ``brewnet doctor``."""
    return layer if (layer._forward_pre_hooks or layer._forward_hooks) else layer.forward


# how _run treats a layer (Net._plan)
_REGULAR, _READS_STORAGE, _SOURCE, _NO_BACKWARD = range(4)

#: default of Net.channels_last (see benchmarks/bench_train_step.py for the measured effect)
CHANNELS_LAST_DEFAULT = True

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST


def _load_net_param(model) -> caffe_pb2.NetParameter:
    if isinstance(model, caffe_pb2.NetParameter):
        return formats.upgrade_net(model)
    model = os.fspath(model)
    if not os.path.exists(model):
        raise NetError(f"network definition not found: {model}")
    return formats.read_net(model)


class Net(PycaffeNetMixin):
    """A Caffe network for one phase (pycaffe's ``caffe.Net``).

    Accepted like pycaffe: ``Net(model, phase)``, ``Net(model, weights, phase)`` and
    ``Net(model, phase, weights=...)``.  ``model`` is a prototxt path or a NetParameter.
    """

    def __init__(self, model, *args, weights: str | None = None, phase: int | None = None,
                 level: int = 0, stages: Iterable[str] = (), device=None,
                 dtype: torch.dtype = torch.float32):
        for a in args:  # pycaffe's positional forms
            if isinstance(a, (str, os.PathLike)):
                weights = a
            elif isinstance(a, int):
                phase = a
            else:
                raise TypeError(f"Net(): unexpected argument {a!r}")
        net_param = _load_net_param(model)
        state = state_for(net_param, phase, level, stages)
        self.phase: int = state.phase
        self.state = state
        self.name: str = net_param.name
        self.device = torch.device(device if device is not None else runtime.default_device())
        self.dtype = dtype
        self.force_backward: bool = net_param.force_backward
        self._generator = runtime.new_generator()
        # data layers resolve relative paths against the CWD, then the prototxt's directory
        self.model_dir = None if isinstance(model, caffe_pb2.NetParameter) else \
            os.path.dirname(os.path.abspath(os.fspath(model)))
        self.net_param = insert_splits(filter_net(net_param, state))
        self._build()
        if weights is not None:
            self.copy_from(weights)

    # ----- construction --------------------------------------------------------------------
    def _build(self) -> None:
        self.module = nn.ModuleList()
        self._layers: list[Layer] = []
        self._layer_names: list[str] = []
        self.bottom_names: OrderedDict[str, list[str]] = OrderedDict()
        self.top_names: OrderedDict[str, list[str]] = OrderedDict()
        self.blobs: OrderedDict[str, Blob] = OrderedDict()
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._loss_weights: dict[str, float] = {}  # top name -> weight
        self._detach: list[list[bool]] = []
        self._param_owner: dict[str, tuple[Layer, int, caffe_pb2.ParamSpec]] = {}
        self.caffe_params: list[ParamEntry] = []
        self._input_blobs: list[str] = []
        #: what the blobs need, against the memory available (a typo'd shape is refused, not killed)
        self._budget = MemoryBudget()
        consumed: set[str] = set()
        for lp in self.net_param.layer:
            self._setup_layer(lp)
            consumed.update(lp.bottom)
            for t in lp.top:  # a top consumed in place is still an output if nothing reads it later
                consumed.discard(t)  # (Caffe: bottoms leave available_blobs, then tops enter it)
        # Caffe's net outputs: blobs produced and not consumed by any later layer
        self.outputs: list[str] = [n for n in self.blobs if n not in consumed]
        self.inputs: list[str] = list(self._input_blobs)
        self.to(self.device, self.dtype)
        self._last: dict[str, list[torch.Tensor]] | None = None
        #: the training path runs BatchNorm + Scale pairs as one fused op (set False to compare)
        self.fuse = True
        #: 4-D data enters the net channels-last (NHWC in memory; shapes and values unchanged),
        #: which PyTorch's CPU and CUDA convolutions run faster; set False for NCHW throughout
        self.channels_last = CHANNELS_LAST_DEFAULT
        self._fused_bn_scale = self._find_fusions()
        self._plan = self._make_plan()
        self._storage_reads: dict[str, torch.Tensor] = {}  # input tops as _run last read them
        #: pycaffe's layer callbacks (before_forward, ...): when -> [callback(layer_index)]
        self._layer_callbacks: dict[str, list] = {}
        #: mixed precision (``brewnet train -amp on``): the dtype PyTorch's autocast runs eligible
        #: ops in (float16 on CUDA, bfloat16 on the CPU), or None for float32 throughout, the
        #: default: autocast results are not within float32 tolerance of Caffe's
        self.autocast: torch.dtype | None = None

    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    @property
    def channels_last(self) -> bool:
        return self._channels_last

    @channels_last.setter
    def channels_last(self, on: bool) -> None:
        self._channels_last = bool(on)
        for layer in self._layers:
            if hasattr(layer, "channels_last"):
                layer.channels_last = self._channels_last

    def _setup_layer(self, lp) -> Layer:
        cls = layer_class(lp.type, lp.name)
        if lp.name in self._layer_names:
            raise NetError(f"two layers are named '{lp.name}' in this phase; layer names must be unique")
        if not lp.HasField("phase"):
            lp.phase = self.phase  # as Caffe's Net::Init; saved caffemodels carry it too
        layer = cls(lp, lp.phase)
        layer.generator = self._generator
        layer.memory_budget = self._budget
        layer.model_dir = getattr(self, "model_dir", None)
        where = f"layer '{lp.name}' ({lp.type})"
        for what, n, (lo, hi) in (("bottoms", len(lp.bottom), cls.num_bottoms), ("tops", len(lp.top), cls.num_tops)):
            if n < lo or (hi is not None and n > hi):
                want = f"{lo}" if lo == hi else (f"at least {lo}" if hi is None else f"{lo} to {hi}")
                raise NetError(f"{where}: takes {want} {what}, got {n}")
        for b in lp.bottom:
            if b not in self._shapes:
                known = ", ".join(self._shapes) or "none"
                raise NetError(f"{where}: unknown bottom blob '{b}' (no earlier layer produces it; "
                               f"blobs so far: {known})")
        bottom_shapes = [self._shapes[b] for b in lp.bottom]
        top_shapes = [tuple(int(d) for d in s) for s in layer.setup(bottom_shapes)]
        if len(top_shapes) != len(lp.top):
            raise NetError(f"{where}: produced {len(top_shapes)} tops for {len(lp.top)} top names")
        for top, shape in zip(lp.top, top_shapes):
            if top in self._shapes and top not in lp.bottom:
                raise NetError(f"{where}: top blob '{top}' is produced by more than one layer")
            if any(d < 0 for d in shape):
                raise NetError(f"{where}: computed a negative top shape {shape} from bottoms {bottom_shapes}")
            self._shapes[top] = shape
            if top in self.blobs and tuple(self.blobs[top].shape) == shape:
                continue
            self._budget.claim(f"{where}: top blob '{top}'", shape, self._itemsize)
            self.blobs[top] = Blob(top, torch.zeros(shape, dtype=self.dtype))
        if getattr(cls, "reads_blob_storage", False):
            self._input_blobs.extend(lp.top)
        # loss weights (Caffe's Layer::SetLossWeights)
        weights = list(lp.loss_weight)
        if weights and len(weights) != len(lp.top):
            raise NetError(f"{where}: {len(weights)} loss_weight values for {len(lp.top)} tops")
        if not weights and cls.is_loss:
            weights = [1.0] + [0.0] * (len(lp.top) - 1)
            lp.loss_weight.append(1.0)  # Caffe's LossLayer::LayerSetUp records it in the layer
        for top, w in zip(lp.top, weights):
            if w != 0:
                self._loss_weights[top] = float(w)
        # which bottoms get no gradient: propagate_down false, or labels of loss layers
        if lp.propagate_down and len(lp.propagate_down) != len(lp.bottom):
            raise NetError(f"{where}: propagate_down must be given once per bottom "
                           f"({len(lp.propagate_down)} values for {len(lp.bottom)} bottoms)")
        self._detach.append([
            (bool(lp.propagate_down) and not lp.propagate_down[j]) or not layer.allow_force_backward(j)
            for j in range(len(lp.bottom))])
        self._setup_params(layer, lp)
        self._layers.append(layer)
        self.module.append(layer)
        self._layer_names.append(lp.name)
        self.bottom_names[lp.name] = list(lp.bottom)
        self.top_names[lp.name] = list(lp.top)
        return layer

    @property
    def _itemsize(self) -> int:
        return torch.finfo(self.dtype).bits // 8

    def _setup_params(self, layer: Layer, lp, first: int = 0) -> None:
        """Register the layer's blobs from index ``first`` on: sharing by ``param { name }``,
        Caffe's parameter order in ``caffe_params``, and which ones require gradients."""
        blobs = layer.blob_tensors
        if first == 0 and len(lp.param) > len(blobs) and not getattr(layer, "accepts_extra_param_specs", False):
            raise NetError(f"layer '{lp.name}' ({lp.type}): {len(lp.param)} param blocks given "
                           f"but the layer has {len(blobs)} blobs")
        # this layer's entries go after those of the layers up to it (Caffe's order)
        upto = set(map(id, self._layers[:self._layers.index(layer) + 1])) if layer in self._layers else None
        pos = len(self.caffe_params) if upto is None else \
            sum(1 for e in self.caffe_params if id(e.layer) in upto)
        for i, blob in enumerate(blobs):
            if i < first:
                continue
            spec = layer.param_spec(i)
            learnable = layer.blob_is_learnable(i)
            if learnable and spec.name:
                if spec.name in self._param_owner:
                    owner, oi, ospec = self._param_owner[spec.name]
                    theirs = owner.blob_tensors[oi]
                    strict = spec.share_mode != caffe_pb2.ParamSpec.PERMISSIVE
                    if (strict and tuple(theirs.shape) != tuple(blob.shape)) or theirs.numel() != blob.numel():
                        raise NetError(
                            f"layer '{lp.name}': cannot share param '{spec.name}' with layer '{owner.name}': "
                            f"shapes {tuple(blob.shape)} and {tuple(theirs.shape)} differ"
                            + ("" if strict else " in count"))
                    if not strict and tuple(theirs.shape) != tuple(blob.shape):
                        raise NetError(f"layer '{lp.name}': PERMISSIVE sharing of '{spec.name}' with "
                                       "different shapes is not supported")
                    layer.replace_blob(i, theirs)
                    continue
                self._param_owner[spec.name] = (layer, i, spec)
            # Caffe's learnable_params_ order: every owned blob, statistics included (their
            # solver history exists, always zero); the solver updates only `learnable` ones.
            self.caffe_params.insert(pos, ParamEntry(layer, i, spec.lr_mult if learnable else 0.0,
                                                     spec.decay_mult if learnable else 0.0, learnable))
            pos += 1
            if learnable:
                blob.requires_grad_(spec.lr_mult != 0)

    def register_loaded_blobs(self, layer: Layer, first: int) -> None:
        """Blobs ``first``.. that a layer added while loading weights (a BatchNorm taking the
        scale/bias its prototxt left implicit from an NVCaffe file) become parameters of the
        net like the others: in ``caffe_params`` for solvers, shared by name, with gradients."""
        self._setup_params(layer, layer.param, first)
        self._fused_bn_scale = self._find_fusions()

    @property
    def learnable(self) -> list["ParamEntry"]:
        """The blobs the solver updates (owners only; statistics never)."""
        return [p for p in self.caffe_params if p.learnable]

    # ----- device and dtype ----------------------------------------------------------------
    def to(self, device=None, dtype: torch.dtype | None = None) -> "Net":
        """Move parameters and blobs (e.g. ``net.to('cuda')`` or ``net.to(dtype=torch.float64)``)."""
        if device is not None:
            self.device = torch.device(device)
            if self.device.type == "cuda":
                runtime.apply_cuda_math()
        if dtype is not None:
            self.dtype = dtype
        if self.device.type == "cuda":  # does the net fit on the device?
            budget = MemoryBudget(available_device_bytes(self.device))
            for name, b in self.blobs.items():
                budget.claim(f"moving to {self.device}: blob '{name}'", b.shape, self._itemsize)
            for p in self.module.parameters():
                budget.claim(f"moving to {self.device}: a parameter", p.shape, self._itemsize)
        # Parameters keep their identity (nn.Module.to swaps .data); buffers are replaced, so
        # move nets before sharing statistics between them.
        self.module.to(device=self.device, dtype=self.dtype)
        for b in self.blobs.values():
            b._tensor = b._tensor.to(self.device, self.dtype)
            b._data_buf = b._diff_buf = None
            b._grad = None
        return self

    # ----- pycaffe surface -----------------------------------------------------------------
    @property
    def layers(self) -> list[Layer]:
        return self._layers

    @property
    def layer_dict(self) -> "OrderedDict[str, Layer]":
        return OrderedDict(zip(self._layer_names, self._layers))

    @property
    def params(self) -> "OrderedDict[str, list[ParamBlob]]":
        return OrderedDict((layer.name, [ParamBlob(layer, i) for i in range(len(layer.blob_tensors))])
                           for layer in self._layers if layer.blob_tensors)

    @property
    def blob_loss_weights(self) -> "OrderedDict[str, float]":
        return OrderedDict((n, self._loss_weights.get(n, 0.0)) for n in self.blobs)

    def _layer_index(self, name: str | None, default: int) -> int:
        if name is None:
            return default
        try:
            return self._layer_names.index(name)
        except ValueError:
            raise NetError(f"no layer named '{name}' in this net") from None

    def _run(self, start: int, end: int, keep_versions: bool, feed: dict | None = None):
        """Run layers start..end; return (env of latest tensors, versions per blob, loss).

        ``feed`` maps input blob names to tensors used as they are (gradient checks use it).
        """
        env: dict[str, torch.Tensor] = {}
        versions: dict[str, list[torch.Tensor]] = {}
        self._storage_reads = {}
        grad = torch.is_grad_enabled()
        loss = None
        # fused pairs run as one call, so layer callbacks would miss the Scale: not with callbacks
        fused = self._fused_bn_scale if (self.fuse and not keep_versions and not self._layer_callbacks) else {}
        skip = -1
        plan = self._plan
        callbacks = self._layer_callbacks  # pycaffe's before_forward / after_forward, if any
        for i in range(start, end + 1):
            if i == skip:
                continue
            if callbacks:
                self._run_callbacks("before_forward", (i,))
            layer, bottom, top, detach, kind, loss_w = plan[i]
            scale = fused.get(i) if i < end else None
            if scale is not None:
                # BatchNorm + Scale as one fused batch norm with the Scale's γ, β: the same
                # arithmetic, one pass instead of three; the Scale's top gets the result.
                x = env.get(bottom[0])
                if x is None:
                    x = env[bottom[0]] = self.blobs[bottom[0]]._value(self.device)
                bias = scale.bias if scale.param.scale_param.bias_term else None
                outs = (_call(layer)(x.detach() if detach[0] else x, affine=(scale.weight, bias)),)
                _, _, top, _, _, loss_w = plan[i + 1]
                skip = i + 1
            elif kind == _READS_STORAGE:
                outs = []
                for t in top:
                    if feed is not None and t in feed:
                        outs.append(feed[t])
                        continue
                    v = self.blobs[t]._value(self.device)
                    if v.dtype != self.dtype:
                        v = v.to(self.dtype)
                    if self.channels_last and v.dim() == 4:
                        v = v.contiguous(memory_format=torch.channels_last)
                    if grad and self.force_backward:
                        v = v.detach().requires_grad_()
                    self._storage_reads[t] = v
                    outs.append(v)
            else:
                bottoms = []
                for j, b in enumerate(bottom):
                    t = env.get(b)
                    if t is None:  # read from storage (forward(start=...) or inputs)
                        t = self.blobs[b]._value(self.device)
                        if grad and keep_versions:
                            t = t.detach().requires_grad_()
                        env[b] = t
                        if keep_versions:
                            versions.setdefault(b, []).append(t)
                    bottoms.append(t.detach() if detach[j] else t)
                outs = _call(layer)(*bottoms)
                if isinstance(outs, torch.Tensor):
                    outs = (outs,)
                if kind == _SOURCE:  # data layers make tensors on the CPU in float32
                    outs = [o.to(self.device, self.dtype) for o in outs]
                    if self.channels_last:
                        outs = [o.contiguous(memory_format=torch.channels_last) if o.dim() == 4 else o
                                for o in outs]
                    if grad and self.force_backward:
                        # Caffe's force_backward: a layer fed by a data layer still writes the
                        # diff of that bottom (e.g. the gradient of the loss w.r.t. the images);
                        # a top already in the graph (Parameter's blob) keeps its gradient path
                        outs = [o if o.requires_grad or not o.is_floating_point()
                                else o.detach().requires_grad_() for o in outs]
                elif kind == _NO_BACKWARD:  # Accuracy, ArgMax, Threshold: Caffe has no backward
                    outs = [o.detach() for o in outs]
            if callbacks:
                self._run_callbacks("after_forward", (i,))
            for name, t, w in zip(top, outs, loss_w):
                env[name] = t
                if keep_versions:
                    versions.setdefault(name, []).append(t)
                if w is not None:
                    if t.dim() == 0 and w == 1.0:
                        term = t
                    else:
                        term = t.sum() * w if t.numel() != 1 else t.reshape(()) * w
                    loss = term if loss is None else loss + term
        return env, versions, loss

    def _make_plan(self) -> list[tuple]:
        """Per layer, what _run needs without protobuf lookups: (layer, bottoms, tops, detach
        flags, kind, loss weight per top or None)."""
        plan = []
        for layer, detach in zip(self._layers, self._detach):
            lp = layer.param
            kind = (_READS_STORAGE if getattr(layer, "reads_blob_storage", False) else
                    _SOURCE if not lp.bottom else _NO_BACKWARD if not layer.has_backward else _REGULAR)
            plan.append((layer, tuple(lp.bottom), tuple(lp.top), tuple(detach), kind,
                         tuple(self._loss_weights.get(t) for t in lp.top)))
        return plan

    def _find_fusions(self) -> dict[int, Layer]:
        """BVLC BatchNorm directly followed by the Scale that alone reads its top (the usual
        BatchNorm + Scale pair): index of the BatchNorm -> the Scale layer."""
        readers: dict[str, int] = {}
        for lp in self.net_param.layer:
            for b in lp.bottom:
                readers[b] = readers.get(b, 0) + 1
        out = {}
        for i, (bn, sc) in enumerate(zip(self._layers, self._layers[1:])):
            if bn.type != "BatchNorm" or sc.type != "Scale" or getattr(bn, "scale_bias", True):
                continue
            top = bn.param.top[0]
            p = sc.param.scale_param
            if (len(sc.param.bottom) != 1 or sc.param.bottom[0] != top or p.axis != 1 or p.num_axes != 1
                    or top in self._loss_weights or any(self._detach[i + 1])
                    or (readers.get(top, 0) != 1 and sc.param.top[0] != top)):
                continue
            out[i] = sc
        return out

    @contextlib.contextmanager
    def frozen_statistics(self):
        """Within this block, forward passes leave every layer's running statistics as they are
        (BatchNorm's moving averages, its factor s and NVCaffe's average weight), while the
        passes themselves still run as in TRAIN: batch statistics normalise, and synchronised
        BatchNorm still takes part in its collectives on every rank.  Flags a caller set
        (e.g. `brewnet doctor`'s) are restored on exit."""
        layers = [layer for layer in self._layers if hasattr(layer, "update_statistics")]
        saved = [layer.update_statistics for layer in layers]
        for layer in layers:
            layer.update_statistics = False
        try:
            yield self
        finally:
            for layer, flag in zip(layers, saved):
                layer.update_statistics = flag

    def _check_input_shapes(self) -> None:
        if any(self.blobs[n].shape != self._shapes[n] for n in self._input_blobs):
            self.reshape()

    def forward_loss(self, outputs: Iterable[str] = ()) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Training path: run the whole net and return (weighted loss, requested output tensors).

        Blob storage is updated by reference (no copies) so pycaffe reads still work afterwards.
        """
        push_host_writes()  # parameter arrays a script changed on a CUDA/half net
        self._check_input_shapes()
        with self._autocast():
            env, _, loss = self._run(0, len(self._layers) - 1, keep_versions=False)
        read = self._storage_reads
        for name, t in env.items():
            if read.get(name) is not t:  # an input read from its own storage needs no copy back
                self.blobs[name]._set_value(t)
        self._last = None
        return loss, {n: env[n] for n in outputs}

    def forward(self, blobs: Iterable[str] | None = None, start: str | None = None,
                end: str | None = None, **kwargs) -> dict[str, np.ndarray]:
        """pycaffe's Net.forward: set inputs from kwargs, run, return {output: array}."""
        push_host_writes()  # parameter arrays a script changed on a CUDA/half net
        for name, value in kwargs.items():
            if name not in self.blobs:
                raise NetError(f"forward(): no blob named '{name}' (inputs: {self.inputs})")
            value = np.asarray(value)
            if value.shape != self.blobs[name].shape:
                raise NetError(f"forward(): input '{name}' has shape {value.shape}, "
                               f"the blob has {self.blobs[name].shape} (reshape the blob first)")
            self.blobs[name].data[...] = value
        self._check_input_shapes()
        s = self._layer_index(start, 0)
        e = self._layer_index(end, len(self._layers) - 1)
        record = self.force_backward or bool(self._loss_weights)
        with torch.set_grad_enabled(record), self._autocast():
            env, versions, loss = self._run(s, e, keep_versions=record)
        for name, t in env.items():
            self.blobs[name]._set_value(t)
        self._last = versions if record else None
        self._last_range = (s, e)
        raise_deferred_label_errors()  # the outputs are read back anyway
        # pycaffe: the net's outputs, or with ``end`` that layer's tops; plus ``blobs``
        ends = self.top_names[self._layer_names[e]] if end is not None else self.outputs
        outs = list(dict.fromkeys(list(ends) + list(blobs or [])))
        return {n: self.blobs[n].data for n in outs}

    def backward(self, diffs: Iterable[str] | None = None, start: str | None = None,
                 end: str | None = None, **kwargs) -> dict[str, np.ndarray]:
        """pycaffe's Net.backward: gradients of the last forward, into blob and param diffs.

        Loss tops start with their loss weight; other outputs with the diff a script put on them
        (kwargs set those).  Parameter diffs accumulate, as in Caffe (clear_param_diffs zeroes).
        """
        push_host_writes()  # parameter arrays a script changed on a CUDA/half net
        for name, value in kwargs.items():
            if name not in self.outputs:
                raise NetError(f"backward(): '{name}' is not an output of the net ({self.outputs})")
            self.blobs[name].diff[...] = value
        if not (self.force_backward or self._loss_weights):
            raise NetError("backward(): this net has no loss and no 'force_backward: true', so no "
                           "layer needs a backward (Caffe leaves every diff unchanged)")
        # the layers the last forward() ran, first to last (all of them when none ran)
        first, last = self._last_range if self._last is not None else (0, len(self._layers) - 1)
        s = self._layer_index(start, last)   # backward runs from layer s down to layer e
        e = self._layer_index(end, first)
        if s < e:
            raise NetError(f"backward(): start layer '{self._layer_names[s]}' comes before "
                           f"end layer '{self._layer_names[e]}'")
        if self._last is not None and first <= e and s <= last:
            versions = self._last
        else:
            # No forward() recorded these layers (Caffe's BackwardFromTo needs none: it reads the
            # blobs' stored data and diffs); rebuild their graph from the stored blobs.
            versions = self._replay(e, s)
        # tops where the gradient starts: outputs of the net (or the tops of layer `start`)
        tops = self.top_names[self._layer_names[s]] if start is not None else \
            [n for n in self.blobs if n in versions and (n in self.outputs or n in self._loss_weights)]
        roots, grads = [], []
        for n in dict.fromkeys(tops):
            t = versions[n][-1]
            if not t.requires_grad:
                continue
            w = self._loss_weights.get(n)
            g = torch.full_like(t, w) if w is not None else self.blobs[n]._diff_value(t.device).to(t.dtype)
            roots.append(t)
            grads.append(g)
        names = [n for n in versions]
        wrt = [versions[n][0] for n in names]
        layer_range = self._layers[e:s + 1]
        params = [p for layer in layer_range for p in layer.parameters() if p.requires_grad]
        params = list(dict.fromkeys(params))  # shared params once
        targets = [t for t in wrt if t.requires_grad] + params
        self._run_callbacks("before_backward", range(s, e - 1, -1))
        result = torch.autograd.grad(roots, targets, grads, allow_unused=True, retain_graph=True) \
            if roots and targets else \
            [None] * len(targets)
        it = iter(result)
        for n, t in zip(names, wrt):
            if n in self.inputs and not t.requires_grad:
                self.blobs[n]._set_grad(None)
                continue
            if t.requires_grad:
                self.blobs[n]._set_grad(next(it))
            elif n not in self.outputs:
                self.blobs[n]._set_grad(None)
        for p in params:
            g = next(it)
            if g is None:
                continue
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.add_(g)
        self._run_callbacks("after_backward", range(s, e - 1, -1))
        # pycaffe: the net's inputs, or with ``end`` that layer's bottoms; plus ``diffs``
        ends = self.bottom_names[self._layer_names[e]] if end is not None else self.inputs
        outs = list(dict.fromkeys(list(ends) + list(diffs or [])))
        return {n: self.blobs[n].diff for n in outs}

    def _replay(self, first: int, last: int) -> dict[str, list[torch.Tensor]]:
        """Run layers first..last again from the blobs' stored data, recording the graph for
        backward(), with no effect on the net: blob data and layer statistics (e.g. BatchNorm's
        moving averages) stay as they were, and data-reading layers are not run again (their
        tops keep the batch they hold).  Layers that draw random numbers (Dropout) draw anew."""
        while first <= last and self._plan[first][4] == _SOURCE:
            first += 1
        if first > last:
            return {}
        layers = self._layers[first:last + 1]
        saved = [(b, b.detach().clone()) for layer in layers for b in layer.buffers()]
        try:
            with torch.enable_grad(), self._autocast():
                _, versions, _ = self._run(first, last, keep_versions=True)
        finally:
            with torch.no_grad():
                for b, value in saved:
                    b.copy_(value)
        return versions

    def reshape(self) -> None:
        """Propagate input blob shapes through every layer (pycaffe's Net.reshape)."""
        shapes = {n: self.blobs[n].shape for n in self._input_blobs}
        for layer in self._layers:
            lp = layer.param
            if getattr(layer, "reads_blob_storage", False):
                continue
            tops = layer.setup([shapes[b] for b in lp.bottom])
            for name, shape in zip(lp.top, tops):
                shapes[name] = tuple(int(d) for d in shape)
        budget = MemoryBudget(available_device_bytes(self.device))
        for name, shape in shapes.items():
            if tuple(self.blobs[name].shape) != shape:
                budget.claim(f"reshape: blob '{name}'", shape, self._itemsize)
        self._shapes.update(shapes)
        for name, shape in shapes.items():
            self.blobs[name].reshape(*shape)

    def clear_param_diffs(self) -> None:
        push_host_writes()  # parameter arrays a script changed on a CUDA/half net
        grads = [p.grad for layer in self._layers
                 for p in (layer.parameters() if layer._modules else layer._parameters.values())
                 if p is not None and p.grad is not None]
        if grads:
            torch._foreach_zero_(grads)

    def share_with(self, other: "Net") -> None:
        """Use ``other``'s parameter and statistics tensors for layers of the same name."""
        push_host_writes()  # parameter arrays a script changed on a CUDA/half net
        theirs = other.layer_dict
        for layer in self._layers:
            src = theirs.get(layer.name)
            if src is None or not layer.blob_tensors:
                continue
            if len(src.blob_tensors) != len(layer.blob_tensors):
                raise NetError(f"share_with: layer '{layer.name}' has {len(layer.blob_tensors)} blobs here and "
                               f"{len(src.blob_tensors)} in the other net")
            for i, (mine, t) in enumerate(zip(layer.blob_tensors, src.blob_tensors)):
                if tuple(mine.shape) != tuple(t.shape):
                    raise NetError(f"share_with: layer '{layer.name}' blob {i} has shape {tuple(mine.shape)} "
                                   f"here and {tuple(t.shape)} in the other net")
                layer.replace_blob(i, t)

    # ----- weights ---------------------------------------------------------------------------
    def copy_from(self, path: str) -> LoadReport:
        """Load weights (pycaffe's copy_from / CopyTrainedLayersFrom), matching layers by name:
        a caffemodel, or Caffe's HDF5 weights when the file is HDF5 (as Caffe decides)."""
        push_host_writes()  # parameter arrays a script changed on a CUDA/half net
        path = os.fspath(path)
        if weights.is_hdf5(path):
            return weights.load_weights_hdf5(self, path)
        return weights.load_weights(self, formats.read_caffemodel(path), source=path)

    def save_hdf5(self, path: str, write_diff: bool = False) -> None:
        """Write the weights as Caffe's HDF5 file (pycaffe's save_hdf5, Net::ToHDF5)."""
        push_host_writes()  # parameter arrays a script changed on a CUDA/half net
        weights.save_weights_hdf5(self, path, write_diff=write_diff)

    def load_hdf5(self, path: str) -> LoadReport:
        """Load Caffe's HDF5 weights (pycaffe's load_hdf5, CopyTrainedLayersFromHDF5)."""
        push_host_writes()  # parameter arrays a script changed on a CUDA/half net
        return weights.load_weights_hdf5(self, path)

    def to_proto(self, write_diff: bool = False) -> caffe_pb2.NetParameter:
        """This net with its blobs, as Caffe's Net::ToProto writes it (name and layers only)."""
        push_host_writes()  # parameter arrays a script changed on a CUDA/half net
        out = caffe_pb2.NetParameter(name=self.net_param.name)
        for src, layer in zip(self.net_param.layer, self._layers):
            lp = out.layer.add()
            lp.CopyFrom(src)
            del lp.blobs[:]
            for i, arr in enumerate(layer.caffe_blob_arrays()):
                diff = None
                if write_diff:
                    g = layer.blob_tensors[i].grad
                    diff = np.zeros_like(arr) if g is None else g.detach().cpu().float().numpy()
                formats.array_to_blob(arr, lp.blobs.add(), diff=diff)
        return out

    def save(self, path: str) -> None:
        """Write a caffemodel (binary NetParameter) that real Caffe loads."""
        formats.write_caffemodel(self.to_proto(), os.fspath(path))

    def __repr__(self) -> str:
        return f"<brewnet.Net '{self.name}' phase={'TRAIN' if self.phase == TRAIN else 'TEST'} " \
               f"layers={len(self._layers)}>"


class ParamEntry:
    """One owned parameter blob of a net, in Caffe's learnable_params_ order."""

    __slots__ = ("layer", "index", "lr_mult", "decay_mult", "learnable")

    def __init__(self, layer: Layer, index: int, lr_mult: float, decay_mult: float, learnable: bool):
        self.layer, self.index = layer, index
        self.lr_mult, self.decay_mult, self.learnable = float(lr_mult), float(decay_mult), learnable

    @property
    def tensor(self) -> torch.Tensor:
        return self.layer.blob_tensors[self.index]

    @property
    def name(self) -> str:
        return f"{self.layer.name}[{self.index}]"

    def __repr__(self) -> str:
        return f"<ParamEntry {self.name} lr_mult={self.lr_mult} decay_mult={self.decay_mult}>"
