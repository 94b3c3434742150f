"""BatchNorm statistics over the global batch of every process.

PyTorch's ``SyncBatchNorm`` refuses CPU tensors ("expected input tensor to be on GPU ..."), so
brewnet's BatchNorm reduces its statistics itself, with a differentiable all-reduce: a sum whose
backward all-reduces the gradients, which is exactly the gradient of the sum of every rank's loss
through the shared statistics (torch.distributed.nn's own is deprecated in torch 2.13, and the
functional collectives that replace it do not differentiate).  Two reductions, as a two-pass variance:

1. per channel, the sum of x and the element count → the global mean
2. per channel, the sum of (x − mean)² → the global biased variance

Two passes cost a second all-reduce of C values but give the variance with the accuracy of a
single process's (a one-pass E[x²] − mean² loses digits when the mean is large against the
spread).  The work is a handful of elementwise ops; the all-reduces carry C + 1 and C values.
"""
from __future__ import annotations

import torch
import torch.distributed as dist


class _SumOverRanks(torch.autograd.Function):
    """y = Σ_ranks x; dL/dx = Σ_ranks dL/dy (every rank's loss reaches every rank's input)."""

    @staticmethod
    def forward(ctx, tensor, group):
        ctx.group = group
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out, group=group)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def all_reduce(tensor: torch.Tensor, group=None) -> torch.Tensor:
    return _SumOverRanks.apply(tensor, group)


def global_moments(x: torch.Tensor, group=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(centred x, mean, biased variance, count) per channel (axis 1) over every process's
    ``x``; differentiable.  Half-precision inputs are reduced in float32."""
    c = x.shape[1]
    dims = [0] + list(range(2, x.dim()))
    xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    local = xs.sum(dims)
    sums = all_reduce(torch.cat([local, local.new_full((1,), float(xs.numel() // c))]), group=group)
    count = sums[c].detach()
    mean = sums[:c] / count
    shape = [1, c] + [1] * (x.dim() - 2)
    centred = xs - mean.view(shape)
    var = all_reduce(centred.square().sum(dims), group=group) / count
    return centred, mean, var, count


def normalize(x: torch.Tensor, weight, bias, eps: float, group=None):
    """Batch normalisation with the global batch's statistics: (y, mean, biased variance, count)."""
    centred, mean, var, count = global_moments(x, group)
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    y = centred * torch.rsqrt(var + eps).view(shape)
    if weight is not None:
        y = y * weight.view(shape).to(y.dtype)
    if bias is not None:
        y = y + bias.view(shape).to(y.dtype)
    return y.to(x.dtype), mean, var, count
