"""Layers that produce data without bottoms: Input, DummyData (readers live in brewnet.data)."""
from __future__ import annotations

from .base import DataLayer, register


@register("Input")
class Input(DataLayer):
    """Net inputs: the net reads these tops from blob storage, where scripts write them."""

    reads_blob_storage = True

    def setup(self, bottom_shapes):
        return self.one_per_top([tuple(s.dim) for s in self.param.input_param.shape], "input_param shapes")


@register("DummyData")
class DummyData(DataLayer):
    """Tops filled by fillers; constant fillers once, other fillers anew on every forward."""

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
        shapes = self.one_per_top(shapes, "dummy_data_param shapes")
        fillers = list(p.data_filler)
        self._fillers = self.one_per_top(fillers, "data_fillers") if fillers else [None] * n
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
