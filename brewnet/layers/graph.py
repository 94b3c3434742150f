"""Layers that only route blobs: Split (inserted by the net, as Caffe does) and Silence."""
from __future__ import annotations

from .base import Layer, register


@register("Split")
class Split(Layer):
    """Copies its bottom to every top; gradients of the tops add up (autograd sums them).

    Each top is a distinct view (no copy), so every branch's diff is its own, as in Caffe.
    """

    num_tops = (1, None)

    def setup(self, bottom_shapes):
        return [bottom_shapes[0]] * len(self.param.top)

    def forward(self, x):
        return tuple(x.view_as(x) for _ in self.param.top)


@register("Silence")
class Silence(Layer):
    """Consumes bottoms so they are not net outputs; produces nothing."""

    num_bottoms = (1, None)
    num_tops = (0, 0)

    def setup(self, bottom_shapes):
        return []

    def forward(self, *bottoms):
        return ()
