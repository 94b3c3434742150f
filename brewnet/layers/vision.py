"""Vision layers: Convolution, Deconvolution, Pooling, LRN — with Caffe's exact shape rules.

Caffe quirks pinned here:
- Convolution/Deconvolution read ``pad``/``kernel_size``/``stride``/``dilation`` as repeated
  fields (given once, or once per spatial axis) or ``*_h``/``*_w`` (2-D only, never both forms).
- Pooling rounds the output size UP by default (``round_mode: CEIL``) and then, when padded,
  drops the last window if it would start inside the padding.  AVE pooling divides by the window
  clipped to ``in + pad`` (padding counts, the overhang beyond it does not); MAX ignores padding,
  gives the gradient to the first maximum of the clipped window in row-major order, and leaves a
  window with nothing above -FLT_MAX at -FLT_MAX (mask -1, no gradient) — on the explicit path
  (padding beyond half the kernel, windows past the input, or the mask top); PyTorch's fused
  kernel keeps -inf for a window of only -inf inputs.
- LRN WITHIN_CHANNEL is Caffe's internal net: AVE pooling of x² (pad (n-1)/2, so always n² in the
  divisor), then (1 + alpha * avg)^(-beta); ``k`` is not used there.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Layer, canonical_axis, register

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _spatial_values(layer: Layer, p, name: str, num: int, default: int | None) -> list[int]:
    """Caffe's BaseConvolutionLayer rule for one of pad/kernel_size/stride(/dilation)."""
    h, w = f"{name}_h", f"{name}_w"
    repname = "kernel_size" if name == "kernel" else name
    rep = list(getattr(p, repname))
    if name != "dilation" and (p.HasField(h) or p.HasField(w)):
        if num != 2:
            layer.fail(f"{h} & {w} can only be used for 2-D convolution ({num} spatial axes here)")
        if rep:
            layer.fail(f"give either {repname} or {h}/{w}, not both")
        if name == "kernel" and not (p.HasField(h) and p.HasField(w)):
            layer.fail("give both kernel_h and kernel_w")
        return [getattr(p, h), getattr(p, w)]
    if not rep:
        if default is None:
            layer.fail("kernel_size (or kernel_h and kernel_w) is required")
        return [default] * num
    if len(rep) not in (1, num):
        layer.fail(f"{repname} must be given once, or once per spatial axis ({num}), "
                   f"got {len(rep)} values")
    return [int(rep[0 if len(rep) == 1 else i]) for i in range(num)]


class _ConvBase(Layer):
    """Caffe's BaseConvolutionLayer: geometry, blobs and shape checks shared by both layers.

    Bottom i gives top i (any number of bottoms of one shape, all through the same weights).
    Only ``axis`` with 1 to 3 spatial axes after it is supported; axes before ``axis`` are batch.
    """

    num_bottoms = (1, None)
    num_tops = (1, None)
    reverse = False  # Deconvolution swaps the roles of input and output channels
    #: set by Net.channels_last: 2-D convolutions run on a channels-last copy of the weight, so
    #: PyTorch picks its channels-last kernels even when the input's layout is ambiguous (one
    #: channel, as in MNIST, reads as NCHW), and the output stays channels-last for what follows
    channels_last = False

    def _weight(self):
        if self.channels_last and self.nsp == 2:
            # clone, not contiguous(): a one-input-channel weight is already "contiguous" in both
            # layouts and contiguous() would return it with strides PyTorch reads as NCHW
            return self.weight.clone(memory_format=torch.channels_last)
        return self.weight

    def setup(self, bottom_shapes):
        p = self.param.convolution_param
        if len(bottom_shapes) != len(self.param.top):
            self.fail(f"needs one top per bottom, got {len(bottom_shapes)} bottoms and "
                      f"{len(self.param.top)} tops")
        shape = tuple(bottom_shapes[0])
        for i, s in enumerate(bottom_shapes[1:], 1):
            if tuple(s) != shape:
                self.fail(f"all bottoms must have one shape: bottom 0 is {shape}, bottom {i} is {tuple(s)}")
        axis = canonical_axis(p.axis, len(shape), self)
        nsp = len(shape) - axis - 1
        if nsp not in _CONV:
            self.fail(f"supports 1 to 3 spatial axes after axis {axis}; bottom shape {shape} has {nsp}")
        self.axis, self.nsp = axis, nsp
        self.kernel = _spatial_values(self, p, "kernel", nsp, None)
        self.pad = _spatial_values(self, p, "pad", nsp, 0)
        self.stride = _spatial_values(self, p, "stride", nsp, 1)
        self.dilation = _spatial_values(self, p, "dilation", nsp, 1)
        if any(k <= 0 for k in self.kernel):
            self.fail(f"kernel dimensions must be nonzero, got {self.kernel}")
        if any(s <= 0 for s in self.stride):
            self.fail(f"stride must be nonzero, got {self.stride} (stride_h and stride_w have no "
                      "default: give both)")
        if any(d <= 0 for d in self.dilation):
            self.fail(f"dilation must be nonzero, got {self.dilation}")
        channels, num_output, group = shape[axis], p.num_output, p.group
        if num_output <= 0:
            self.fail("num_output must be given and positive")
        if group <= 0 or channels % group:
            self.fail(f"the bottom's {channels} channels (shape {shape}) are not a multiple of group {group}")
        if num_output % group:
            self.fail(f"num_output {num_output} is not a multiple of group {group}")
        in_ch, out_ch = (num_output, channels) if self.reverse else (channels, num_output)
        wshape = (out_ch, in_ch // group, *self.kernel)  # Caffe: (conv_out, conv_in / group, k...)
        if not self.blob_names:
            self.add_blob("weight", self.fill(p.weight_filler if p.HasField("weight_filler") else None, wshape))
            if p.bias_term:
                self.add_blob("bias", self.fill(p.bias_filler if p.HasField("bias_filler") else None,
                                                (num_output,)))
        elif tuple(self.weight.shape) != wshape:
            self.fail(f"weight shape {tuple(self.weight.shape)} does not fit the bottom {shape}: "
                      f"expected {wshape}")
        spatial = shape[axis + 1:]
        out = [self._out_size(i, n) for i, n in enumerate(spatial)]
        top = shape[:axis] + (num_output,) + tuple(out)
        return [top] * len(bottom_shapes)

    def forward(self, *bottoms):
        p = self.param.convolution_param
        bias = self.bias if p.bias_term else None
        if self.axis == 1:  # (N, C, spatial...): no reshapes, no extra autograd nodes
            tops = [self._conv(x, bias) for x in bottoms]
            return tops[0] if len(tops) == 1 else tuple(tops)
        tops = []
        for x in bottoms:
            lead = x.shape[:self.axis]
            xb = x.reshape((-1,) + tuple(x.shape[self.axis:]))  # (N*, C, spatial...)
            y = self._conv(xb, bias)
            tops.append(y.reshape(tuple(lead) + tuple(y.shape[1:])))
        return tops[0] if len(tops) == 1 else tuple(tops)


@register("Convolution")
class Convolution(_ConvBase):
    """Caffe's Convolution: weight (num_output, C/group, k...), bias (num_output,), both filled by
    the given fillers or constant 0.  Output size (in + 2p - (d(k-1)+1)) / s + 1, rounded down."""

    def _out_size(self, i, n):
        ext = self.dilation[i] * (self.kernel[i] - 1) + 1
        if n + 2 * self.pad[i] < ext:
            self.fail(f"kernel extent {ext} (kernel {self.kernel[i]}, dilation {self.dilation[i]}) "
                      f"is larger than the padded input {n} + 2*{self.pad[i]} on spatial axis {i}")
        return (n + 2 * self.pad[i] - ext) // self.stride[i] + 1

    def _conv(self, x, bias):
        return _CONV[self.nsp](x, self._weight(), bias, stride=self.stride, padding=self.pad,
                               dilation=self.dilation, groups=self.param.convolution_param.group)


@register("Deconvolution")
class Deconvolution(_ConvBase):
    """Caffe's Deconvolution (the convolution's backward pass): weight (C, num_output/group, k...).
    Output size s(in - 1) + d(k-1) + 1 - 2p."""

    reverse = True

    def _out_size(self, i, n):
        ext = self.dilation[i] * (self.kernel[i] - 1) + 1
        out = self.stride[i] * (n - 1) + ext - 2 * self.pad[i]
        if out <= 0:
            self.fail(f"output size {out} on spatial axis {i} is not positive (input {n}, kernel "
                      f"extent {ext}, stride {self.stride[i]}, pad {self.pad[i]})")
        return out

    def _conv(self, x, bias):
        return _DECONV[self.nsp](x, self._weight(), bias, stride=self.stride, padding=self.pad,
                                 dilation=self.dilation, groups=self.param.convolution_param.group)


# ----- Pooling ---------------------------------------------------------------------------------
MAX, AVE, STOCHASTIC = 0, 1, 2  # PoolingParameter.PoolMethod
CEIL, FLOOR = 0, 1              # PoolingParameter.RoundMode


def pooled_size(n: int, k: int, p: int, s: int, ceil_mode: bool = True) -> int:
    """Caffe's pooled size: ceil (or floor) of (n + 2p - k) / s, plus 1; then, when padded, the
    last window is dropped if it would start in the padding ((out - 1) * s >= n + p)."""
    r = (n + 2 * p - k) / s
    out = (math.ceil(r) if ceil_mode else math.floor(r)) + 1
    if p > 0 and (out - 1) * s >= n + p:
        out -= 1
    return out


def ave_window_sizes(n: int, k: int, p: int, s: int, out: int) -> list[int]:
    """Caffe's AVE divisor along one axis: the window [o*s - p, o*s - p + k) clipped on the right
    to n + p (so padding counts but the overhang beyond the padding does not)."""
    return [min(o * s - p + k, n + p) - (o * s - p) for o in range(out)]


def _pad_for_windows(x: torch.Tensor, k, p, s, out, value: float) -> torch.Tensor:
    """Pad (N, C, H, W) so that window o covers rows [o*s - p, o*s - p + k) of the input."""
    pads = []
    for d in (1, 0):  # F.pad wants the last axis first
        n = x.shape[2 + d]
        right = max(0, (out[d] - 1) * s[d] + k[d] - p[d] - n)
        pads += [p[d], right]
    return F.pad(x, pads, value=value)


#: Caffe's MAX pooling starts every window at -FLT_MAX, in float and double alike (in half and
#: bfloat16, where -FLT_MAX does not exist, that is -inf)
_CAFFE_MAX_START = {torch.float32: -float(torch.finfo(torch.float32).max)}
_CAFFE_MAX_START[torch.float64] = _CAFFE_MAX_START[torch.float32]


def _caffe_max_start(y: torch.Tensor, inplace: bool = False) -> tuple[torch.Tensor, float]:
    """Caffe's MAX pooling takes an element only when it is strictly greater than the running
    maximum, which starts at -FLT_MAX: a window with nothing above -FLT_MAX (all -inf, padding,
    or -FLT_MAX itself) keeps -FLT_MAX, mask -1, and passes no gradient.  Returns (top, the start
    value); NaN passes unchanged.  Ties among larger values need nothing here: PyTorch's max
    pooling kernels also take the first maximum of the clipped window in row-major order (strictly
    greater, like Caffe; CPU NCHW and channels-last checked, AVX2 and default kernels) and their
    backward routes through that index; tests/test_pool_ties.py pins this."""
    lo = _CAFFE_MAX_START.get(y.dtype, float("-inf"))
    if torch.jit.is_tracing():  # export (ONNX has no threshold operator)
        return torch.where(y <= lo, lo, y), lo
    if y.device.type == "cpu" and y.numel():
        # the usual case, found with one read of the top, needs no copy and no autograd node (on
        # other devices the check would wait for the device, so they always take the threshold)
        flat = y.permute(0, 2, 3, 1) if y.is_contiguous(memory_format=torch.channels_last) else y
        if flat.reshape(-1).min().item() > lo:  # reshape: a view when contiguous (fast reduction)
            return y, lo
    return F.threshold(y, lo, lo, inplace=inplace), lo  # y <= lo ? lo : y, gradient only where y > lo


def _torch_pool_mode(x, method, k, p, s, out, want_mask) -> bool | None:
    """PyTorch's max/avg pooling compute Caffe's windows (the same ceil rule and last-window
    clip, and for AVE the same divisor clipped to in + pad) when the padding is at most half the
    kernel.  Returns the ceil_mode that gives Caffe's ``out``, or None (use the explicit path)."""
    if want_mask or method not in (MAX, AVE):
        return None
    for ceil_mode in (False, True):  # floor first: when both give Caffe's size, it is the faster kernel
        ok = True
        for d in range(2):
            n = x.shape[2 + d]
            if p[d] > k[d] // 2:
                return None
            r = n + 2 * p[d] - k[d]
            o = (-(-r // s[d]) if ceil_mode else r // s[d]) + 1
            if ceil_mode and (o - 1) * s[d] >= n + p[d]:
                o -= 1
            ok = ok and o == out[d]
        if ok:
            return ceil_mode
    return None


def caffe_pool(x: torch.Tensor, method: int, k, p, s, out, want_mask: bool = False):
    """Pooling of (N, C, H, W) with Caffe's windows; returns the top, and for MAX optionally
    Caffe's argmax mask (flat index h * W + w into the unpadded plane, as float)."""
    H, W = x.shape[2], x.shape[3]
    fast = _torch_pool_mode(x, method, k, p, s, out, want_mask)
    if fast is not None:  # PyTorch's kernels use Caffe's rules here: one fused pass
        if method == MAX:
            # Every window here holds input elements, so Caffe's -FLT_MAX start matters only for
            # windows of -inf / -FLT_MAX inputs, which keep PyTorch's -inf and route their
            # gradient to their first element: checking for them cost ~10% of LeNet's inference
            # forward (a reduction and a sync per pool), for inputs no trained net produces.
            return F.max_pool2d(x, k, s, p, ceil_mode=fast), None
        return F.avg_pool2d(x, k, s, p, ceil_mode=fast, count_include_pad=True), None
    if method == MAX:
        xp = _pad_for_windows(x, k, p, s, out, float("-inf"))  # padding never wins the max
        y, idx = F.max_pool2d(xp, k, s, return_indices=True)
        # windows past the input (unpadded CEIL with stride > kernel) hold only padding: -FLT_MAX
        y, lo = _caffe_max_start(y[:, :, :out[0], :out[1]])
        if not want_mask:
            return y, None
        idx = idx[:, :, :out[0], :out[1]]
        wp = xp.shape[3]
        mask = (idx // wp - p[0]) * W + (idx % wp - p[1])
        return y, torch.where(y == lo, -1, mask).to(x.dtype)  # mask -1: no element was taken
    xp = _pad_for_windows(x, k, p, s, out, 0.0)
    total = F.avg_pool2d(xp, k, s, divisor_override=1)[:, :, :out[0], :out[1]]  # window sums
    if method == AVE:
        hs = torch.tensor(ave_window_sizes(H, k[0], p[0], s[0], out[0]), dtype=x.dtype, device=x.device)
        ws = torch.tensor(ave_window_sizes(W, k[1], p[1], s[1], out[1]), dtype=x.dtype, device=x.device)
        return total / (hs[:, None] * ws[None, :]), None
    # STOCHASTIC at test time (Caffe's GPU kernel): the activation-weighted average
    # sum(x^2) / sum(x) over the window, sum(x) starting from FLT_MIN
    sq = F.avg_pool2d(_pad_for_windows(x * x, k, p, s, out, 0.0), k, s, divisor_override=1)
    return sq[:, :, :out[0], :out[1]] / (total + torch.finfo(torch.float32).tiny), None


@register("Pooling")
class Pooling(Layer):
    """Caffe's Pooling on (N, C, H, W): MAX (optional 2nd top: the argmax mask), AVE, and
    STOCHASTIC in the TEST phase only (Caffe has no CPU version; its GPU TEST pass is the
    activation-weighted average)."""

    num_tops = (1, 2)

    def setup(self, bottom_shapes):
        p = self.param.pooling_param
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            self.fail(f"input must have 4 axes (num, channels, height, width), got shape {shape}")
        if len(self.param.top) > 1 and p.pool != MAX:
            self.fail("only MAX pooling has a second top (the argmax mask)")
        if p.pool == STOCHASTIC and self.training_phase:
            self.fail("STOCHASTIC pooling is supported only in the TEST phase "
                      "(its TRAIN pass samples, and Caffe has no CPU implementation of it)")
        if p.global_pooling:
            if p.HasField("kernel_size") or p.HasField("kernel_h") or p.HasField("kernel_w"):
                self.fail("with global_pooling: true the kernel size cannot be specified")
            k = [shape[2], shape[3]]
        else:
            if p.HasField("kernel_size") == (p.HasField("kernel_h") and p.HasField("kernel_w")):
                self.fail("give kernel_size OR kernel_h and kernel_w; not both"
                          if p.HasField("kernel_size") else
                          "kernel_size (or both kernel_h and kernel_w) is required")
            k = [p.kernel_size] * 2 if p.HasField("kernel_size") else [p.kernel_h, p.kernel_w]
        for name in ("pad", "stride"):
            h, w = p.HasField(f"{name}_h"), p.HasField(f"{name}_w")
            if (h or w) and (p.HasField(name) or not (h and w)):
                self.fail(f"give {name} OR both {name}_h and {name}_w")
        pad = [p.pad_h, p.pad_w] if p.HasField("pad_h") else [p.pad] * 2
        stride = [p.stride_h, p.stride_w] if p.HasField("stride_h") else [p.stride] * 2
        if any(v <= 0 for v in k):
            self.fail(f"kernel dimensions cannot be zero, got {k}")
        if any(v <= 0 for v in stride):
            self.fail(f"stride cannot be zero, got {stride}")
        if p.global_pooling and (any(pad) or any(v != 1 for v in stride)):
            self.fail("with global_pooling: true only pad = 0 and stride = 1 are allowed")
        if any(pad):
            if p.pool not in (MAX, AVE):
                self.fail("padding is implemented only for average and max pooling")
            if pad[0] >= k[0] or pad[1] >= k[1]:
                self.fail(f"pad {pad} must be smaller than the kernel {k}")
        out = [pooled_size(shape[2 + d], k[d], pad[d], stride[d], p.round_mode == CEIL) for d in (0, 1)]
        if any(o <= 0 for o in out):
            self.fail(f"output size {out} is not positive: kernel {k} with pad {pad} does not fit "
                      f"the input {shape}")
        top = (shape[0], shape[1], out[0], out[1])
        return [top] * len(self.param.top)

    def _geometry(self, x):
        """(kernel, pad, stride, out) for this bottom (global pooling follows its size)."""
        p = self.param.pooling_param
        H, W = x.shape[2], x.shape[3]
        if p.global_pooling:
            return [H, W], [0, 0], [1, 1], [1, 1]
        k = [p.kernel_size] * 2 if p.HasField("kernel_size") else [p.kernel_h, p.kernel_w]
        pad = [p.pad_h, p.pad_w] if p.HasField("pad_h") else [p.pad] * 2
        s = [p.stride_h, p.stride_w] if p.HasField("stride_h") else [p.stride] * 2
        out = [pooled_size(n, k[d], pad[d], s[d], p.round_mode == CEIL) for d, n in enumerate((H, W))]
        return k, pad, s, out

    def forward(self, x):
        k, pad, s, out = self._geometry(x)
        want_mask = len(self.param.top) > 1
        y, mask = caffe_pool(x, self.param.pooling_param.pool, k, pad, s, out, want_mask)
        return (y, mask) if want_mask else y


# ----- LRN -------------------------------------------------------------------------------------
ACROSS_CHANNELS, WITHIN_CHANNEL = 0, 1


@register("LRN")
class LRN(Layer):
    """Local response normalisation of (N, C, H, W).

    ACROSS_CHANNELS: y = x * (k + alpha/n * sum of x^2 over n channels centred on c, zero padded)^(-beta).
    WITHIN_CHANNEL: y = x * (1 + alpha * AVE-pool_{n x n, pad (n-1)/2}(x^2))^(-beta) — Caffe builds
    it from Pooling and Power layers, so the divisor is n^2 everywhere and ``k`` is ignored.
    """

    def setup(self, bottom_shapes):
        p = self.param.lrn_param
        shape = tuple(bottom_shapes[0])
        if len(shape) != 4:
            self.fail(f"input must have 4 axes (num, channels, height, width), got shape {shape}")
        if p.local_size % 2 != 1:
            self.fail(f"local_size must be odd, got {p.local_size}")
        if p.norm_region not in (ACROSS_CHANNELS, WITHIN_CHANNEL):
            self.fail(f"unknown norm_region {p.norm_region}")
        return [shape]

    def forward(self, x):
        p = self.param.lrn_param
        n, half = p.local_size, (p.local_size - 1) // 2
        sq = x * x
        if p.norm_region == ACROSS_CHANNELS:
            padded = F.pad(sq, (0, 0, 0, 0, half, half))   # (N, C + n - 1, H, W)
            window = padded.unfold(1, n, 1).sum(-1)        # (N, C, H, W)
            scale = window * (p.alpha / n) + p.k
        else:
            H, W = x.shape[2], x.shape[3]
            out = [pooled_size(H, n, half, 1), pooled_size(W, n, half, 1)]
            avg, _ = caffe_pool(sq, AVE, [n, n], [half, half], [1, 1], out)
            scale = avg * p.alpha + 1.0
        return x * torch.pow(scale, -p.beta)
