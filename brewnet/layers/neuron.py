"""Element-wise ("neuron") layers: one bottom, one top of the same shape.

Each layer states Caffe's forward formula; autograd gives the backward, which equals Caffe's
hand-written backward everywhere except at measure-zero kinks, where the choice of sub-gradient is
pinned to Caffe's (ReLU/PReLU use the slope for x <= 0, AbsVal uses sign(0) = 0, Clip passes the
gradient for min <= x <= max inclusive, BNLL gives 1/2 at 0).  All layers may run in place
(top == bottom); the net rebinds the blob name, so no layer ever writes into its bottom.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Layer, register


class _Neuron(Layer):
    """One bottom, one top of the bottom's shape (Caffe's NeuronLayer)."""

    num_bottoms = (1, 1)
    num_tops = (1, 1)

    def setup(self, bottom_shapes):
        return [tuple(bottom_shapes[0])]


@register("ReLU")
class ReLU(_Neuron):
    """y = x for x > 0, negative_slope * x for x <= 0 (gradient negative_slope at exactly 0)."""

    def forward(self, x):
        # F.relu / F.leaky_relu have Caffe's gradient at 0 (the x <= 0 branch)
        slope = self.param.relu_param.negative_slope
        return F.relu(x) if slope == 0 else F.leaky_relu(x, slope)


@register("PReLU")
class PReLU(_Neuron):
    """ReLU with a learnable slope per channel (axis 1), or one shared slope.

    Blob 0 ``weight``: shape (C,), or (1,) with ``channel_shared``; filled by ``prelu_param.filler``
    or, when none is given, constant 0.25 (Caffe's default).  Works on any bottom with >= 2 axes.
    """

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        if len(shape) < 2:
            self.fail(f"the bottom needs at least 2 axes (num, channels, ...), got shape {shape}")
        p = self.param.prelu_param
        n = 1 if p.channel_shared else shape[1]
        if not self.blob_names:
            filler = p.filler if p.HasField("filler") else None
            self.add_blob("weight", self.fill(filler, (n,), default_value=0.25))
        elif tuple(self.weight.shape) != (n,):
            self.fail(f"slope blob has shape {tuple(self.weight.shape)}, but the bottom {shape} "
                      f"needs ({n},)" + ("" if p.channel_shared else " (one slope per channel)"))
        return [shape]

    def forward(self, x):
        # (C,) -> (1, C, 1, ...) broadcast over axis 1; a shared slope (1,) broadcasts everywhere
        slope = self.weight.view((1, -1) + (1,) * (x.dim() - 2))
        return torch.where(x > 0, x, x * slope)


@register("ELU")
class ELU(_Neuron):
    """y = x for x > 0, alpha * (exp(x) - 1) for x <= 0."""

    def forward(self, x):
        alpha = self.param.elu_param.alpha
        # clamp the exp branch so exp of large x (masked out anyway) cannot give inf * 0 = nan
        return torch.where(x > 0, x, alpha * torch.expm1(torch.clamp(x, max=0)))


@register("Sigmoid")
class Sigmoid(_Neuron):
    """y = 1 / (1 + exp(-x))."""

    def forward(self, x):
        return torch.sigmoid(x)


@register("TanH")
class TanH(_Neuron):
    """y = tanh(x)."""

    def forward(self, x):
        return torch.tanh(x)


@register("AbsVal")
class AbsVal(_Neuron):
    """y = |x|; gradient sign(x), which is 0 at x = 0 as in Caffe."""

    def forward(self, x):
        return torch.abs(x)


@register("BNLL")
class BNLL(_Neuron):
    """Binomial normal log likelihood: y = log(1 + exp(x)), computed stably as Caffe does
    (x > 0 ? x + log(1 + exp(-x)) : log(1 + exp(x))); gradient sigmoid(x)."""

    def forward(self, x):
        # softplus is log1p(exp(x)) with gradient sigmoid(x) (1/2 at 0, as Caffe's BNLL backward);
        # above x = 20 it returns x, where Caffe's x + log(1 + exp(-x)) differs by < 3e-9
        return F.softplus(x)


@register("Power")
class Power(_Neuron):
    """y = (shift + scale * x) ^ power.

    Caffe's special case: when power * scale == 0 the output is the constant 1 (power 0) or
    shift ^ power (scale 0), with zero gradient.
    """

    def forward(self, x):
        p = self.param.power_param
        power, scale, shift = p.power, p.scale, p.shift
        if power * scale == 0:
            value = 1.0 if power == 0 else shift ** power
            # keep x in the graph with a zero gradient (where's gradient is 0 where not selected)
            return torch.where(torch.ones_like(x, dtype=torch.bool), torch.full_like(x, value), x)
        base = x * scale + shift if (scale != 1 or shift != 0) else x
        if power == 1:
            return base if base is not x else x.view_as(x)
        if power == 2:
            return base * base
        return torch.pow(base, power)


@register("Exp")
class Exp(_Neuron):
    """y = base ^ (shift + scale * x); base -1 (the default) means e.  Caffe computes it as
    base^shift * exp(log(base) * scale * x)."""

    def setup(self, bottom_shapes):
        base = self.param.exp_param.base
        if base != -1 and base <= 0:
            self.fail(f"base must be strictly positive (or -1 for e), got {base}")
        return super().setup(bottom_shapes)

    def forward(self, x):
        p = self.param.exp_param
        log_base = 1.0 if p.base == -1 else math.log(p.base)
        inner_scale = log_base * p.scale
        outer_scale = 1.0 if p.shift == 0 else math.exp(log_base * p.shift)
        y = torch.exp(x * inner_scale) if inner_scale != 1 else torch.exp(x)
        return y * outer_scale if outer_scale != 1 else y


@register("Log")
class Log(_Neuron):
    """y = log_base(shift + scale * x); base -1 (the default) means e."""

    def setup(self, bottom_shapes):
        base = self.param.log_param.base
        if base != -1 and base <= 0:
            self.fail(f"base must be strictly positive (or -1 for e), got {base}")
        return super().setup(bottom_shapes)

    def forward(self, x):
        p = self.param.log_param
        base_scale = 1.0 if p.base == -1 else 1.0 / math.log(p.base)
        inner = x * p.scale + p.shift if (p.scale != 1 or p.shift != 0) else x
        y = torch.log(inner)
        return y * base_scale if base_scale != 1 else y


@register("Threshold")
class Threshold(_Neuron):
    """y = 1 if x > threshold else 0.  Caffe implements no backward for it."""

    has_backward = False

    def forward(self, x):
        return (x > self.param.threshold_param.threshold).to(x.dtype)


@register("Clip")
class Clip(_Neuron):
    """y = max(min, min(max, x)); gradient passes where min <= x <= max (bounds included)."""

    def setup(self, bottom_shapes):
        p = self.param.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            self.fail("clip_param needs both min and max")
        if p.min > p.max:
            self.fail(f"clip_param min ({p.min}) is greater than max ({p.max})")
        return super().setup(bottom_shapes)

    def forward(self, x):
        p = self.param.clip_param
        # torch.clamp's gradient mask is (x >= min) & (x <= max), exactly Caffe's ClipLayer
        return torch.clamp(x, min=p.min, max=p.max)


@register("Swish")
class Swish(_Neuron):
    """y = x * sigmoid(beta * x)."""

    def forward(self, x):
        beta = self.param.swish_param.beta
        return x * torch.sigmoid(x * beta if beta != 1 else x)


@register("Dropout")
class Dropout(_Neuron):
    """TRAIN: y = x * mask / (1 - ratio), mask ~ Bernoulli(1 - ratio) drawn anew every forward.
    TEST: y = x (Caffe scales at training time, so inference is the identity)."""

    def setup(self, bottom_shapes):
        ratio = self.param.dropout_param.dropout_ratio
        if not 0.0 < ratio < 1.0:
            self.fail(f"dropout_ratio must be in (0, 1), got {ratio}")
        return super().setup(bottom_shapes)

    def forward(self, x):
        if not self.training_phase:
            return x.view_as(x)
        ratio = self.param.dropout_param.dropout_ratio
        # the mask is drawn on the CPU from the net's generator so runs repeat on any device
        keep = torch.full(tuple(x.shape), 1.0 - ratio, dtype=torch.float32)
        mask = torch.bernoulli(keep, generator=self.generator).to(device=x.device, dtype=x.dtype)
        return x * mask * (1.0 / (1.0 - ratio))
