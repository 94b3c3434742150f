"""Python layers (``type: "Python"``), as pycaffe runs them.

``python_param { module: "m" layer: "Cls" param_str: "..." }`` names a class derived from
``brewnet.Layer`` (pycaffe's ``caffe.Layer``) with ``setup(bottom, top)``, ``reshape(bottom,
top)``, ``forward(bottom, top)`` and ``backward(top, propagate_down, bottom)`` working on lists of
Blobs (numpy ``data``/``diff``).  The user's layer runs on the host in float32 inside a
torch.autograd.Function, so it composes with the rest of the net.
"""
from __future__ import annotations

import importlib

import numpy as np
import torch

from ..blob import Blob, ParamBlob
from ..errors import NetError
from .base import Layer as _Layer
from .base import register

#: python_param modules naming DIGITS' DetectNet layers (NVCaffe's ``caffe.layers.detectnet``),
#: answered by brewnet's own modules: the one copy of brewnet, whether or not a ``caffe`` exists
DIGITS_MODULES = {
    "caffe.layers.detectnet.clustering": "brewnet.layers.detectnet.clustering",
    "caffe.layers.detectnet.mean_ap": "brewnet.layers.detectnet.mean_ap",
}


class Layer:
    """Base class of user Python layers (pycaffe's ``caffe.Layer``)."""

    param_str: str = ""
    phase: int = 0

    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        raise NotImplementedError

    def backward(self, top, propagate_down, bottom):
        pass


class _BlobList(list):
    """pycaffe's layer.blobs: a list with add_blob(*shape).

    Each blob is a learnable parameter of the owning net layer (so the solver trains it, it is
    saved in caffemodels and shared by ``param { name }``), seen by the user's code as a Blob
    whose ``data``/``diff`` are live views of the parameter and its gradient.
    """

    def __init__(self, owner: "Python"):
        super().__init__()
        self._owner = owner

    def add_blob(self, *shape):
        index = len(self._owner.blob_names)
        self._owner.add_blob(f"blob{index}", torch.zeros(shape, dtype=torch.float32))
        self.append(ParamBlob(self._owner, index))


def _blobs_for(tensors, names):
    blobs = []
    for t, n in zip(tensors, names):
        b = Blob(n, t.detach().to("cpu", torch.float32).contiguous().clone())
        blobs.append(b)
    return blobs


class _PythonFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, owner, num_bottoms, *inputs):
        bottoms, params = inputs[:num_bottoms], inputs[num_bottoms:]
        ctx.num_params = len(params)
        user = owner.user
        bottom = _blobs_for(bottoms, owner.param.bottom)
        top = [Blob(n, torch.zeros(0)) for n in owner.param.top]
        shard = getattr(owner, "shard", None)
        if shard is None:
            try:
                user.reshape(bottom, top)
                user.forward(bottom, top)
            except NetError as e:  # say which layer of the net
                owner.fail(str(e))
        else:  # a data layer under data-parallel training: this rank's slice of the global batch
            rank, count = shard
            for k in range(count):
                produced = [Blob(n, torch.zeros(0)) for n in owner.param.top]
                user.reshape(bottom, produced)
                user.forward(bottom, produced)
                if k == rank:
                    top = produced
        ctx.owner, ctx.bottom, ctx.top = owner, bottom, top
        ctx.meta = [(b.device, b.dtype) for b in bottoms]
        dev, dtype = ctx.meta[0] if ctx.meta else ("cpu", torch.float32)
        return tuple(torch.as_tensor(np.array(t.data), device=dev, dtype=dtype) for t in top)

    @staticmethod
    def backward(ctx, *grads):
        for t, g in zip(ctx.top, grads):
            t.diff[...] = 0 if g is None else g.detach().to("cpu", torch.float32).numpy()
        num_bottoms = len(ctx.bottom)
        propagate_down = [bool(n) for n in ctx.needs_input_grad[2:2 + num_bottoms]]
        # The user's backward writes parameter diffs into the parameters' .grad (pycaffe's
        # blob.diff); hand autograd what it added and put .grad back, so autograd accumulates it.
        params = ctx.owner.blob_tensors[:ctx.num_params]
        before = [None if p.grad is None else p.grad.clone() for p in params]
        ctx.owner.user.backward(ctx.top, propagate_down, ctx.bottom)
        param_grads = []
        for p, b in zip(params, before):
            after = p.grad if p.grad is not None else torch.zeros_like(p)
            param_grads.append(after - (0 if b is None else b))
            with torch.no_grad():
                if b is None:
                    p.grad = None
                else:
                    p.grad.copy_(b)
        outs = [None, None]
        for b, (dev, dtype), need in zip(ctx.bottom, ctx.meta, propagate_down):
            outs.append(torch.as_tensor(np.array(b.diff), device=dev, dtype=dtype) if need else None)
        return tuple(outs) + tuple(param_grads)


@register("Python")
class Python(_Layer):
    num_bottoms = (0, None)
    num_tops = (0, None)

    def setup(self, bottom_shapes):
        p = self.param.python_param
        if not hasattr(self, "user"):
            if not p.module or not p.layer:
                self.fail("python_param needs both module and layer")
            try:
                module = importlib.import_module(DIGITS_MODULES.get(p.module, p.module))
            except ImportError as e:
                self.fail(f"cannot import python module '{p.module}': {e}")
            cls = getattr(module, p.layer, None)
            if cls is None:
                self.fail(f"module '{p.module}' has no class '{p.layer}'")
            self.user = cls()
            self.user.param_str = p.param_str
            self.user.phase = self.phase
            self.user.blobs = _BlobList(self)
            bottom = [Blob(n, torch.zeros(s)) for n, s in zip(self.param.bottom, bottom_shapes)]
            top = [Blob(n, torch.zeros(0)) for n in self.param.top]
            try:
                self.user.setup(bottom, top)
            except NetError as e:  # say which layer of the net
                self.fail(str(e))
            # A Python data layer (no bottoms) under data-parallel training runs `count` times per
            # forward and keeps its rank's batch: the ranks then see, slice by slice, what one
            # process with `count` times the batch would.  A layer that reads
            # caffe.solver_rank() and shards itself says so with `shards_itself = True`.
            from .datalayers import data_shard
            self.shard = None if (self.param.bottom or getattr(cls, "shards_itself", False)) \
                else data_shard(self)
        bottom = [Blob(n, torch.zeros(s)) for n, s in zip(self.param.bottom, bottom_shapes)]
        top = [Blob(n, torch.zeros(0)) for n in self.param.top]
        self.user.reshape(bottom, top)
        return [t.shape for t in top]

    def forward(self, *bottoms):
        return _PythonFunction.apply(self, len(bottoms), *bottoms, *self.blob_tensors)

    def __getattr__(self, name: str):
        # pycaffe's net.layers[i] is the user's own object for a Python layer, so scripts call
        # their layer's methods through the net (py-faster-rcnn: net.layers[0].set_roidb(...)):
        # what this layer does not have, its user object answers
        try:
            return super().__getattr__(name)
        except AttributeError:
            user = self.__dict__.get("user")
            if user is None:
                raise
            return getattr(user, name)
