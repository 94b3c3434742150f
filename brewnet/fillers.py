"""Caffe's weight fillers, with its exact fan-in / fan-out rules.

fan_in = count / shape[0] and fan_out = count / shape[1] (count when the blob is 1-D), as in
Caffe's filler.hpp, so a convolution's fan_in is C/group * kh * kw and a Deconvolution's uses its
own (C, num_output/group, kh, kw) layout.  Random numbers come from a torch.Generator that the
net seeds (``random_seed`` of the solver, or ``brewnet.set_random_seed``), so runs repeat.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .errors import NetError
from .proto import caffe_pb2

Shape = tuple[int, ...]

# VarianceNorm enum values of caffe.proto
FAN_IN, FAN_OUT, AVERAGE = 0, 1, 2


def _fan(shape: Shape, variance_norm: int) -> float:
    n = int(np.prod(shape, dtype=np.int64))
    fan_in = n / shape[0]
    fan_out = n / shape[1] if len(shape) > 1 else n
    if variance_norm == AVERAGE:
        return (fan_in + fan_out) / 2.0
    if variance_norm == FAN_OUT:
        return fan_out
    return fan_in


def constant_filler(value: float):
    """A FillerParameter ``constant value`` (Caffe layers build these when the user gives none)."""
    return caffe_pb2.FillerParameter(type="constant", value=value)


def fill(filler, shape: Shape, generator: torch.Generator | None = None) -> torch.Tensor:
    """A float32 tensor of ``shape`` filled as the FillerParameter ``filler`` says.

    ``filler`` None means the schema's default filler (constant 0).
    """
    shape = tuple(int(s) for s in shape)
    if filler is None:
        filler = constant_filler(0.0)
    ftype, value = filler.type, filler.value
    g = generator
    out = torch.empty(shape, dtype=torch.float32)
    if ftype == "constant":
        out.fill_(value)
    elif ftype == "uniform":
        out.uniform_(filler.min, filler.max, generator=g)
    elif ftype == "gaussian":
        out.normal_(filler.mean, filler.std, generator=g)
        if filler.sparse >= 0:
            # Caffe: each weight is kept with probability sparse / num_outputs (= shape[0]).
            if len(shape) < 2:
                raise NetError("sparse gaussian filler needs a blob with at least 2 axes")
            keep = filler.sparse / shape[0]
            out *= torch.bernoulli(torch.full(shape, keep), generator=g)
    elif ftype == "xavier":
        scale = math.sqrt(3.0 / _fan(shape, filler.variance_norm))
        out.uniform_(-scale, scale, generator=g)
    elif ftype == "msra":
        std = math.sqrt(2.0 / _fan(shape, filler.variance_norm))
        out.normal_(0.0, std, generator=g)
    elif ftype == "positive_unitball":
        # uniform in [0, 1], then every output's weights (one row per shape[0]) sum to one
        out.uniform_(0.0, 1.0, generator=g)
        rows = out.view(shape[0], -1)
        rows /= rows.sum(dim=1, keepdim=True)
    elif ftype == "bilinear":
        if len(shape) != 4 or shape[2] != shape[3]:
            raise NetError(f"bilinear filler needs a 4-D blob with square kernels, got {shape}")
        k = shape[3]
        f = math.ceil(k / 2.0)
        c = (2 * f - 1 - f % 2) / (2.0 * f)
        x = torch.arange(k, dtype=torch.float64)
        w1 = 1 - torch.abs(x / f - c)
        out.copy_((w1[:, None] * w1[None, :]).to(torch.float32).expand(shape))
    else:
        raise NetError(f"unknown filler type {ftype!r} (known: constant, uniform, gaussian, "
                       "xavier, msra, positive_unitball, bilinear)")
    return out
