"""Layers that produce data without bottoms: Input, DummyData (readers live in brewnet.data)."""
from __future__ import annotations

import torch

from .base import Layer, register


@register("Input")
class Input(Layer):
    """Net inputs: the net reads these tops from blob storage, where scripts write them."""

    num_bottoms = (0, 0)
    num_tops = (1, None)
    is_data = True
    has_backward = False
    reads_blob_storage = True

    def setup(self, bottom_shapes):
        shapes = [tuple(s.dim) for s in self.param.input_param.shape]
        n = len(self.param.top)
        if len(shapes) == 1:
            shapes = shapes * n  # Caffe: one shape is used for every top
        if len(shapes) != n:
            self.fail(f"input_param gives {len(shapes)} shapes for {n} tops (give 1 or {n})")
        return shapes


@register("DummyData")
class DummyData(Layer):
    """Tops filled by fillers; constant fillers once, other fillers anew on every forward."""

    num_bottoms = (0, 0)
    num_tops = (1, None)
    is_data = True
    has_backward = False

    def setup(self, bottom_shapes):
        p = self.param.dummy_data_param
        n = len(self.param.top)
        if p.shape:
            shapes = [tuple(s.dim) for s in p.shape]
        else:  # legacy num/channels/height/width lists
            legacy = [p.num, p.channels, p.height, p.width]
            if len({len(v) for v in legacy}) != 1:
                self.fail("num, channels, height and width must be given the same number of times")
            shapes = [tuple(int(v[i]) for v in legacy) for i in range(len(p.num))]
        if len(shapes) == 1:
            shapes = shapes * n
        if len(shapes) != n:
            self.fail(f"dummy_data_param gives {len(shapes)} shapes for {n} tops")
        fillers = list(p.data_filler)
        if len(fillers) == 1:
            fillers = fillers * n
        if fillers and len(fillers) != n:
            self.fail(f"dummy_data_param gives {len(fillers)} data_fillers for {n} tops (give 0, 1 or {n})")
        self._fillers = fillers or [None] * n
        self._shapes = shapes
        self._constant = [f is None or f.type == "constant" for f in self._fillers]
        self._cache = [None] * n
        return shapes

    def forward(self):
        outs = []
        for i, shape in enumerate(self._shapes):
            if self._constant[i] and self._cache[i] is not None and self._cache[i].shape == shape:
                outs.append(self._cache[i])
                continue
            t = self.fill(self._fillers[i], shape)
            if self._constant[i]:
                self._cache[i] = t
            outs.append(t)
        return tuple(outs)
