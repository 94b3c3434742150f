"""Common layers: InnerProduct, Eltwise, shape operations, Reduction, ArgMax, Softmax, Embed,
Parameter, Scale, Bias and MVN, with BVLC Caffe's exact shape rules, parameters and defaults.

Shape checks follow Caffe's ``LayerSetUp`` / ``Reshape`` CHECKs; each failure names the layer
and the shapes involved.  Gradients come from autograd unless a comment says Caffe differs.
"""
from __future__ import annotations

import torch

from .base import Layer, canonical_axis, count, register


def _axis_or_legacy(layer: Layer, p, legacy: str, ndim: int) -> int:
    """``axis``, or the legacy non-negative ``concat_dim``/``slice_dim`` (not both)."""
    if p.HasField("axis") and p.HasField(legacy):
        layer.fail(f"either axis or {legacy} should be specified, not both")
    if p.HasField(legacy):
        value = getattr(p, legacy)
        if value >= ndim:
            layer.fail(f"{legacy} {value} out of range for a {ndim}-D bottom")
        return value
    return canonical_axis(p.axis, ndim, layer)


def _filler(p, field: str):
    """The FillerParameter ``field`` of ``p`` if given, else None (constant default)."""
    return getattr(p, field) if p.HasField(field) else None


@register("InnerProduct")
class InnerProduct(Layer):
    """y = x·Wᵀ + b with x flattened from ``axis`` (K = count(axis:)).

    Weight (num_output, K), or (K, num_output) with ``transpose``; bias (num_output).  Fillers
    default to constant 0 (Caffe's FillerParameter default).  K must not change on reshape.
    """

    def setup(self, bottom_shapes):
        p = self.param.inner_product_param
        shape = bottom_shapes[0]
        axis = canonical_axis(p.axis, len(shape), self)
        k = count(shape, axis)
        n = p.num_output
        if not self.blob_names:
            if n <= 0:
                self.fail("inner_product_param.num_output must be given and positive")
            wshape = (k, n) if p.transpose else (n, k)
            self.add_blob("weight", self.fill(_filler(p, "weight_filler"), wshape, 0.0))
            if p.bias_term:
                self.add_blob("bias", self.fill(_filler(p, "bias_filler"), (n,), 0.0))
            self._k = k
        elif k != self._k:
            self.fail(f"input size incompatible with inner product parameters: bottom shape {shape} "
                      f"flattened from axis {axis} has K = {k}, the weights expect K = {self._k}")
        return [tuple(shape[:axis]) + (n,)]

    def forward(self, x):
        p = self.param.inner_product_param
        axis = canonical_axis(p.axis, x.dim(), self)
        flat = x if axis == x.dim() - 1 else x.reshape(x.shape[:axis] + (-1,))
        w = self.weight.t() if p.transpose else self.weight
        return torch.nn.functional.linear(flat, w, self.bias if p.bias_term else None)


@register("Eltwise")
class Eltwise(Layer):
    """Element-wise PROD, SUM (with one ``coeff`` per bottom) or MAX over same-shaped bottoms.

    Caffe's MAX: the winner starts as bottom 1 unless bottom 0 is strictly greater, then a later
    bottom wins only when strictly greater; the whole gradient goes to the winner.
    """

    num_bottoms = (2, None)

    def setup(self, bottom_shapes):
        p = self.param.eltwise_param
        if p.coeff and len(p.coeff) != len(bottom_shapes):
            self.fail(f"takes one coeff per bottom: {len(p.coeff)} coeffs for {len(bottom_shapes)} bottoms")
        if p.coeff and p.operation != p.SUM:
            self.fail("coeff is only supported for operation SUM")
        for i, s in enumerate(bottom_shapes[1:], 1):
            if tuple(s) != tuple(bottom_shapes[0]):
                self.fail(f"all bottoms must have the same shape: bottom 0 is {tuple(bottom_shapes[0])}, "
                          f"bottom {i} is {tuple(s)}")
        return [bottom_shapes[0]]

    def forward(self, *xs):
        p = self.param.eltwise_param
        if p.operation == p.SUM:
            coeffs = list(p.coeff) or [1.0] * len(xs)
            out = xs[0] * coeffs[0] if coeffs[0] != 1 else xs[0]
            for c, x in zip(coeffs[1:], xs[1:]):
                out = out + (x * c if c != 1 else x)
            return out
        if p.operation == p.PROD:
            out = xs[0]
            for x in xs[1:]:
                out = out * x
            return out
        # MAX, with Caffe's argmax rule (see the class docstring)
        with torch.no_grad():
            best = torch.where(xs[0] > xs[1], xs[0], xs[1])
            mask = (xs[0] <= xs[1]).to(torch.int64)
            for i, x in enumerate(xs[2:], 2):
                win = x > best
                best = torch.where(win, x, best)
                mask = torch.where(win, torch.full_like(mask, i), mask)
        out = torch.zeros_like(xs[0])
        for i, x in enumerate(xs):
            out = torch.where(mask == i, x, out)
        return out


@register("Concat")
class Concat(Layer):
    """Concatenates along ``axis`` (or legacy ``concat_dim``); other axes must agree."""

    num_bottoms = (1, None)

    def _axis(self, ndim):
        return _axis_or_legacy(self, self.param.concat_param, "concat_dim", ndim)

    def setup(self, bottom_shapes):
        first = tuple(bottom_shapes[0])
        axis = self._axis(len(first))
        total = 0
        for i, s in enumerate(bottom_shapes):
            s = tuple(s)
            if len(s) != len(first) or s[:axis] != first[:axis] or s[axis + 1:] != first[axis + 1:]:
                self.fail(f"all bottoms must have the same shape except on the concat axis {axis}: "
                          f"bottom 0 is {first}, bottom {i} is {s}")
            total += s[axis]
        return [first[:axis] + (total,) + first[axis + 1:]]

    def forward(self, *xs):
        if len(xs) == 1:
            return xs[0].view_as(xs[0])
        return torch.cat(xs, dim=self._axis(xs[0].dim()))


@register("Slice")
class Slice(Layer):
    """Splits along ``axis`` (or legacy ``slice_dim``) at ``slice_point``s, or into equal parts."""

    num_tops = (1, None)

    def _sizes(self, shape):
        p = self.param.slice_param
        axis = _axis_or_legacy(self, p, "slice_dim", len(shape))
        dim, n = shape[axis], len(self.param.top)
        if p.slice_point:
            if len(p.slice_point) != n - 1:
                self.fail(f"{len(p.slice_point)} slice_points for {n} tops (give one fewer than tops)")
            if n > dim:
                self.fail(f"{n} tops but the slice axis {axis} of bottom {tuple(shape)} has only {dim}")
            sizes, prev = [], 0
            for pt in p.slice_point:
                if pt <= prev:
                    self.fail(f"slice_points must be strictly increasing and positive, got {list(p.slice_point)}")
                sizes.append(pt - prev)
                prev = pt
            if prev > dim:
                self.fail(f"slice_point {prev} beyond the slice axis {axis} of bottom {tuple(shape)}")
            sizes.append(dim - prev)
        else:
            if dim % n:
                self.fail(f"number of tops ({n}) should evenly divide the slice axis {axis} "
                          f"of bottom {tuple(shape)} ({dim})")
            sizes = [dim // n] * n
        return axis, sizes

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis, sizes = self._sizes(shape)
        return [shape[:axis] + (s,) + shape[axis + 1:] for s in sizes]

    def forward(self, x):
        axis, sizes = self._sizes(tuple(x.shape))
        return tuple(torch.split(x, sizes, dim=axis))


@register("Flatten")
class Flatten(Layer):
    """Merges axes ``axis``..``end_axis`` (default 1..-1) into one."""

    def _shape(self, shape):
        p = self.param.flatten_param
        a = canonical_axis(p.axis, len(shape), self)
        e = canonical_axis(p.end_axis, len(shape), self, "end_axis")
        if e < a:
            self.fail(f"end_axis {p.end_axis} comes before axis {p.axis} for bottom {tuple(shape)}")
        return tuple(shape[:a]) + (count(shape, a, e + 1),) + tuple(shape[e + 1:])

    def setup(self, bottom_shapes):
        return [self._shape(bottom_shapes[0])]

    def forward(self, x):
        return x.reshape(self._shape(tuple(x.shape)))


@register("Reshape")
class Reshape(Layer):
    """Caffe's Reshape: ``shape`` replaces bottom axes [axis, axis+num_axes); a dim 0 copies the
    bottom's dim at that position, a single -1 is inferred from the count."""

    def _shape(self, shape):
        p = self.param.reshape_param
        dims = [int(d) for d in p.shape.dim]
        if sum(d == -1 for d in dims) > 1:
            self.fail(f"new shape {dims} contains multiple -1 dims; at most one may be inferred")
        if any(d < -1 for d in dims):
            self.fail(f"new shape {dims} contains a negative dim other than -1")
        nd = len(shape)
        start = p.axis if p.axis >= 0 else nd + p.axis + 1
        if not 0 <= start <= nd:
            self.fail(f"axis {p.axis} out of range for a {nd}-D bottom {tuple(shape)}")
        if p.num_axes < -1:
            self.fail(f"num_axes must be >= 0, or -1 for all (got {p.num_axes})")
        end = nd if p.num_axes == -1 else start + p.num_axes
        if end > nd:
            self.fail(f"axis {p.axis} + num_axes {p.num_axes} extend past the {nd}-D bottom {tuple(shape)}")
        new = list(dims)
        for i, d in enumerate(dims):
            if d == 0:
                if start + i >= nd:
                    self.fail(f"new shape {dims} has a 0 at position {i} but bottom {tuple(shape)} "
                              f"has no axis {start + i} to copy")
                new[i] = shape[start + i]
        total = count(shape)
        if -1 in dims:
            known = count(shape, 0, start) * count(shape, end) * count([d for d in new if d != -1])
            if known == 0 or total % known:
                self.fail(f"bottom count {total} (shape {tuple(shape)}) is not divisible by the product "
                          f"of the specified dimensions ({known}) of new shape {dims}")
            new[dims.index(-1)] = total // known
        top = tuple(shape[:start]) + tuple(new) + tuple(shape[end:])
        if count(top) != total:
            self.fail(f"output count {count(top)} (shape {top}) must match input count {total} "
                      f"(shape {tuple(shape)}) for new shape {dims}")
        return top

    def setup(self, bottom_shapes):
        return [self._shape(tuple(bottom_shapes[0]))]

    def forward(self, x):
        return x.reshape(self._shape(tuple(x.shape)))


@register("Crop")
class Crop(Layer):
    """Crops bottom 0 to bottom 1's shape on axes >= ``axis`` (default 2) at ``offset``s (one
    for every cropped axis, or one for all).  Bottom 1 only gives the shape: no gradient."""

    num_bottoms = (2, 2)

    def _window(self, s0, s1):
        p = self.param.crop_param
        if len(s0) != len(s1):
            self.fail(f"bottoms must have the same number of axes: {tuple(s0)} and {tuple(s1)}")
        start = canonical_axis(p.axis, len(s0), self)
        n = len(s0) - start
        offs = list(p.offset)
        if len(offs) > 1 and len(offs) != n:
            self.fail(f"{len(offs)} offsets given; give one, or one per cropped axis ({n}: axes {start}..)")
        offs = [0] * n if not offs else (offs * n if len(offs) == 1 else offs)
        window = []
        for i in range(len(s0)):
            if i < start:
                window.append((0, s0[i]))
                continue
            o = offs[i - start]
            if s0[i] - o < s1[i]:
                self.fail(f"invalid crop in axis {i}: bottom 0 {tuple(s0)} at offset {o} is smaller "
                          f"than the reference bottom 1 {tuple(s1)}")
            window.append((o, s1[i]))
        return window

    def setup(self, bottom_shapes):
        return [tuple(n for _, n in self._window(bottom_shapes[0], bottom_shapes[1]))]

    def allow_force_backward(self, bottom_index):
        return bottom_index == 0

    def forward(self, x, ref):
        for i, (o, n) in enumerate(self._window(tuple(x.shape), tuple(ref.shape))):
            if o != 0 or n != x.shape[i]:
                x = x.narrow(i, o, n)
        return x.contiguous()


@register("Tile")
class Tile(Layer):
    """Repeats the block of axes from ``axis`` on ``tiles`` times (top.shape[axis] *= tiles)."""

    def setup(self, bottom_shapes):
        p = self.param.tile_param
        shape = tuple(bottom_shapes[0])
        axis = canonical_axis(p.axis, len(shape), self)
        if p.tiles <= 0:
            self.fail(f"number of tiles must be positive (got {p.tiles})")
        return [shape[:axis] + (shape[axis] * p.tiles,) + shape[axis + 1:]]

    def forward(self, x):
        p = self.param.tile_param
        reps = [1] * x.dim()
        reps[canonical_axis(p.axis, x.dim(), self)] = p.tiles
        return x.repeat(*reps)


@register("Reduction")
class Reduction(Layer):
    """SUM, ASUM, SUMSQ or MEAN over all axes from ``axis`` on (default 0), times ``coeff``;
    top shape = bottom.shape[:axis] (a scalar for axis 0)."""

    def setup(self, bottom_shapes):
        shape = tuple(bottom_shapes[0])
        axis = canonical_axis(self.param.reduction_param.axis, len(shape), self)
        return [shape[:axis]]

    def forward(self, x):
        p = self.param.reduction_param
        axis = canonical_axis(p.axis, x.dim(), self)
        flat = x.reshape(tuple(x.shape[:axis]) + (-1,))
        op = p.operation
        if op == p.SUM:
            r = flat.sum(-1)
        elif op == p.ASUM:
            r = flat.abs().sum(-1)
        elif op == p.SUMSQ:
            r = (flat * flat).sum(-1)
        elif op == p.MEAN:
            r = flat.sum(-1) / max(flat.shape[-1], 1)
        else:
            self.fail(f"unknown reduction operation {op}")
        return r * p.coeff if p.coeff != 1 else r


@register("ArgMax")
class ArgMax(Layer):
    """Indices (and with ``out_max_val`` the values) of the ``top_k`` largest entries.

    With ``axis``: top shape = bottom shape with shape[axis] = top_k, and ``out_max_val`` gives
    the values only.  Without: Caffe flattens each num and outputs shape (N, 1 or 2, top_k)
    padded with 1s to the bottom's rank (>= 3); row 1 holds the values.  Ties: Caffe sorts
    (value, index) pairs descending, so the larger index comes first.  No backward.
    """

    has_backward = False

    def setup(self, bottom_shapes):
        p = self.param.argmax_param
        shape = tuple(bottom_shapes[0])
        if p.top_k < 1:
            self.fail("top_k must be at least 1")
        if p.HasField("axis"):
            axis = canonical_axis(p.axis, len(shape), self)
            if shape[axis] < p.top_k:
                self.fail(f"top_k {p.top_k} must be <= the dimension {shape[axis]} of axis {axis} "
                          f"of bottom {shape}")
            return [shape[:axis] + (p.top_k,) + shape[axis + 1:]]
        if count(shape, 1) < p.top_k:
            self.fail(f"top_k {p.top_k} must be <= the flattened dimension {count(shape, 1)} per "
                      f"instance of bottom {shape}")
        top = [1] * max(3, len(shape))
        top[0], top[2] = shape[0], p.top_k
        if p.out_max_val:
            top[1] = 2
        return [tuple(top)]

    @staticmethod
    def _topk(x, k, dim):
        # descending by value, ties by larger index first (std::greater on (value, index))
        flipped = x.flip(dim)
        vals, idx = torch.sort(flipped, dim=dim, descending=True, stable=True)
        idx = x.shape[dim] - 1 - idx
        return vals.narrow(dim, 0, k), idx.narrow(dim, 0, k)

    def forward(self, x):
        p = self.param.argmax_param
        x = x.detach()
        if p.HasField("axis"):
            axis = canonical_axis(p.axis, x.dim(), self)
            vals, idx = self._topk(x, p.top_k, axis)
            return vals if p.out_max_val else idx.to(x.dtype)
        vals, idx = self._topk(x.reshape(x.shape[0], -1), p.top_k, 1)
        out = torch.stack([idx.to(x.dtype), vals], 1) if p.out_max_val else idx.to(x.dtype)[:, None]
        return out.reshape(self.setup([tuple(x.shape)])[0])


@register("Softmax")
class Softmax(Layer):
    """Softmax over ``axis`` (default 1)."""

    def setup(self, bottom_shapes):
        canonical_axis(self.param.softmax_param.axis, len(bottom_shapes[0]), self)
        return [bottom_shapes[0]]

    def forward(self, x):
        return torch.softmax(x, dim=canonical_axis(self.param.softmax_param.axis, x.dim(), self))


@register("Embed")
class Embed(Layer):
    """Looks up rows of the weight (input_dim, num_output) by the integer values of the bottom;
    top shape = bottom shape + (num_output,).  Caffe cannot backpropagate to the indices."""

    def setup(self, bottom_shapes):
        p = self.param.embed_param
        if not self.blob_names:
            if p.num_output <= 0 or p.input_dim <= 0:
                self.fail("embed_param.num_output and input_dim must be given and positive")
            self.add_blob("weight", self.fill(_filler(p, "weight_filler"), (p.input_dim, p.num_output)))
            if p.bias_term:
                self.add_blob("bias", self.fill(_filler(p, "bias_filler"), (p.num_output,)))
        return [tuple(bottom_shapes[0]) + (p.num_output,)]

    def allow_force_backward(self, bottom_index):
        return False

    def forward(self, x):
        p = self.param.embed_param
        idx = x.detach().long()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= p.input_dim):
            self.fail(f"index out of range [0, {p.input_dim}): min {int(idx.min())}, max {int(idx.max())}")
        out = self.weight[idx]
        return out + self.bias if p.bias_term else out


@register("Parameter")
class Parameter(Layer):
    """Outputs its single learnable blob of ``parameter_param.shape`` (zero-initialised, as
    Caffe allocates it without a filler)."""

    num_bottoms = (0, 0)

    def setup(self, bottom_shapes):
        shape = tuple(int(d) for d in self.param.parameter_param.shape.dim)
        if not self.blob_names:
            self.add_blob("weight", torch.zeros(shape, dtype=torch.float32))
        return [shape]

    def forward(self):
        return self.weight.view(self.weight.shape)


def _broadcast_axis(layer: Layer, shape, other_shape, what: str) -> int:
    """Scale/Bias Reshape: where the ``other_shape`` blob applies to ``shape`` (0 for a scalar)."""
    p = layer.param.scale_param if layer.type == "Scale" else layer.param.bias_param
    axis = 0 if len(other_shape) == 0 else canonical_axis(p.axis, len(shape), layer)
    if len(shape) < axis + len(other_shape) or tuple(shape[axis:axis + len(other_shape)]) != tuple(other_shape):
        layer.fail(f"{what} shape {tuple(other_shape)} does not match bottom[0] shape {tuple(shape)} "
                   f"starting at axis {axis}")
    return axis


def _param_shape(layer: Layer, shape, num_axes: int, what: str):
    """The learnable blob's shape: bottom.shape[axis:axis+num_axes] (num_axes -1: to the end)."""
    p = layer.param.scale_param if layer.type == "Scale" else layer.param.bias_param
    axis = canonical_axis(p.axis, len(shape), layer)
    if num_axes < -1:
        layer.fail(f"num_axes must be non-negative, or -1 to extend to the end (got {num_axes})")
    if num_axes >= 0 and len(shape) < axis + num_axes:
        layer.fail(f"{what} blob's shape extends past bottom[0]'s shape {tuple(shape)} when applied "
                   f"starting with axis {axis} and num_axes {num_axes}")
    return tuple(shape[axis:]) if num_axes == -1 else tuple(shape[axis:axis + num_axes])


def _apply(x, other, axis, op):
    view = (1,) * axis + tuple(other.shape) + (1,) * (x.dim() - axis - other.dim())
    return op(x, other.reshape(view))


@register("Bias")
class Bias(Layer):
    """Adds a bias of shape bottom.shape[axis:axis+num_axes] (learnable, filler default
    constant 0) or bottom 1 (whose shape decides), broadcast over the other axes."""

    num_bottoms = (1, 2)

    def setup(self, bottom_shapes):
        p = self.param.bias_param
        if len(bottom_shapes) == 1 and not self.blob_names:
            bshape = _param_shape(self, bottom_shapes[0], p.num_axes, "bias")
            self.add_blob("bias", self.fill(_filler(p, "filler"), bshape, 0.0))
        other = bottom_shapes[1] if len(bottom_shapes) > 1 else tuple(self.bias.shape)
        _broadcast_axis(self, bottom_shapes[0], other, "bias")
        return [bottom_shapes[0]]

    def forward(self, x, b=None):
        b = self.bias if b is None else b
        return _apply(x, b, _broadcast_axis(self, x.shape, b.shape, "bias"), torch.add)


@register("Scale")
class Scale(Layer):
    """Multiplies by a scale of shape bottom.shape[axis:axis+num_axes] (axis 1, num_axes 1; -1 =
    to the end; 0 = a scalar), learnable or from bottom 1 (whose shape decides).  Without a
    ``filler`` the scale starts at 1 (a given filler without value means 0).  ``bias_term`` adds
    a bias of the same shape (``bias_filler``, default constant 0).  Blobs: [scale, bias]."""

    num_bottoms = (1, 2)

    def setup(self, bottom_shapes):
        p = self.param.scale_param
        if not self.blob_names and not getattr(self, "_made", False):
            self._made = True
            if len(bottom_shapes) == 1:
                sshape = _param_shape(self, bottom_shapes[0], p.num_axes, "scale")
                filler = p.filler if p.HasField("filler") else None
                self.add_blob("weight", self.fill(filler, sshape, 1.0))
            if p.bias_term:
                # Caffe's internal Bias layer: num_axes from bottom 1's rank when it gives the scale
                if len(bottom_shapes) > 1:
                    bshape = tuple(bottom_shapes[1])
                else:
                    bshape = _param_shape(self, bottom_shapes[0], p.num_axes, "bias")
                self.add_blob("bias", self.fill(_filler(p, "bias_filler"), bshape, 0.0))
        other = bottom_shapes[1] if len(bottom_shapes) > 1 else tuple(self.weight.shape)
        _broadcast_axis(self, bottom_shapes[0], other, "scale")
        if self.param.scale_param.bias_term:
            _broadcast_axis(self, bottom_shapes[0], tuple(self.bias.shape), "bias")
        return [bottom_shapes[0]]

    def forward(self, x, s=None):
        s = self.weight if s is None else s
        y = _apply(x, s, _broadcast_axis(self, x.shape, s.shape, "scale"), torch.mul)
        if self.param.scale_param.bias_term:
            y = _apply(y, self.bias, _broadcast_axis(self, x.shape, self.bias.shape, "bias"), torch.add)
        return y


class _MVNFunction(torch.autograd.Function):
    """Caffe's MVN backward: dx = (dy - mean(dy) - y * mean(y * dy)) / (std + eps), which is the
    exact gradient except for eps (and stays finite for a constant input, where std = 0)."""

    @staticmethod
    def forward(ctx, flat, eps):
        y = flat - flat.mean(-1, keepdim=True)
        denom = torch.sqrt((y * y).mean(-1, keepdim=True)) + eps
        y = y / denom
        ctx.save_for_backward(y, denom)
        return y

    @staticmethod
    def backward(ctx, dy):
        y, denom = ctx.saved_tensors
        dx = dy - dy.mean(-1, keepdim=True) - y * (y * dy).mean(-1, keepdim=True)
        return dx / denom, None


@register("MVN")
class MVN(Layer):
    """Mean-variance normalisation per (num, channel), or per num with ``across_channels``.

    Caffe: y = (x - mean) / (sqrt(var) + eps) with var = mean((x - mean)^2) and eps 1e-9 added
    AFTER the square root; its backward is ``_MVNFunction``'s.  Caffe reads num and channels
    with its legacy accessors, so the bottom has at most 4 axes (missing ones count as 1).
    """

    def setup(self, bottom_shapes):
        if len(bottom_shapes[0]) > 4:
            self.fail(f"takes at most 4 axes (Caffe's num/channels accessors), got {tuple(bottom_shapes[0])}")
        return [bottom_shapes[0]]

    def forward(self, x):
        p = self.param.mvn_param
        rows = x.shape[0] if x.dim() else 1
        if not p.across_channels and x.dim() > 1:
            rows *= x.shape[1]
        flat = x.reshape(rows, -1)
        if p.normalize_variance:
            y = _MVNFunction.apply(flat, float(p.eps))
        else:
            y = flat - flat.mean(-1, keepdim=True)
        return y.reshape(x.shape)
