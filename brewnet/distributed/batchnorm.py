"""BatchNorm statistics over the global batch of every process.

PyTorch's ``SyncBatchNorm`` refuses CPU tensors ("expected input tensor to be on GPU ..."), so
brewnet's BatchNorm reduces its statistics itself, with a differentiable all-reduce: a sum whose
backward all-reduces the gradients, which is exactly the gradient of the sum of every rank's loss
through the shared statistics (torch.distributed.nn's own is deprecated in torch 2.13, and the
functional collectives that replace it do not differentiate).  One all-reduce per layer and pass
(forward, and its backward): per channel Σ(x − K) and Σ(x − K)² with the element count, 2C + 1
values, where the shift K is the layer's running mean (identical on every rank, since the
statistics are synchronised): the variance
E[(x − K)²] − E[x − K]² then keeps the digits a one-pass E[x²] − mean² would cancel when the
mean is large against the spread.  (A two-pass variance would need a second all-reduce, and
every all-reduce is a point where the ranks wait for each other.)
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


def global_moments(x: torch.Tensor, shift: torch.Tensor | None = None, group=None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, biased variance, count) per channel (axis 1) over every process's ``x``, in one
    differentiable all-reduce of [Σ(x−K), Σ(x−K)², n].  ``shift`` K (per channel, the same on
    every rank: the layer's running mean) keeps E[(x−K)²] − E[x−K]² from cancelling digits when
    the mean is large against the spread; it is a constant for autograd.  Half-precision inputs
    are reduced in float32."""
    c = x.shape[1]
    dims = [0] + list(range(2, x.dim()))
    shape = [1, c] + [1] * (x.dim() - 2)
    xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    d = xs if shift is None else xs - shift.detach().to(xs.dtype).view(shape)
    n = float(xs.numel() // c)
    sums = all_reduce(torch.cat([d.sum(dims), d.square().sum(dims), d.new_full((1,), n)]), group=group)
    count = sums[2 * c].detach()
    mean_d = sums[:c] / count
    var = (sums[c:2 * c] / count - mean_d.square()).clamp(min=0)
    mean = mean_d if shift is None else mean_d + shift.detach().to(xs.dtype)
    return mean, var, count


def normalize(x: torch.Tensor, weight, bias, eps: float, shift: torch.Tensor | None = None, group=None):
    """Batch normalisation with the global batch's statistics: (y, mean, biased variance, count)."""
    mean, var, count = global_moments(x, shift, group)
    shape = [1, x.shape[1]] + [1] * (x.dim() - 2)
    xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    scale = torch.rsqrt(var + eps)
    if weight is not None:
        scale = scale * weight.to(scale.dtype)
    offset = -mean * scale
    if bias is not None:
        offset = offset + bias.to(scale.dtype)
    y = torch.addcmul(offset.view(shape), xs, scale.view(shape))
    return y.to(x.dtype), mean, var, count
