"""MAX pooling with tied maxima: the gradient goes to Caffe's element (issue 10, item 5).

Caffe's rule (pooling_layer.cpp, CPU and GPU alike): for output (ph, pw) the window is
[ph*stride - pad, +kernel) clipped to the input; its elements are visited in row-major order and
one replaces the running maximum only when strictly greater, starting from -FLT_MAX with mask -1.
So the FIRST maximum in row-major order wins, the backward pass sends the whole top diff to that
one element (the mask), and a window with no element above -FLT_MAX keeps top -FLT_MAX, mask -1
and passes no gradient.  The reference below is that loop, written out in numpy, and the nets
under test are real brewnet Nets (channels-last on and off, float32 and float64).

Routing is integer semantics, so it is checked exactly: with a top diff of ones, each bottom
element's diff is the NUMBER of outputs routed to it, and the second top (the mask) is compared
exactly.  Random top diffs then check the values with tolerances relative to their magnitude.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from google.protobuf import text_format

import brewnet
from brewnet.layers.vision import pooled_size
from brewnet.proto import caffe_pb2

FLT_MAX = float(np.finfo(np.float32).max)


# ----- the reference: Caffe's loop ---------------------------------------------------------------
def ref_max_pool(x: np.ndarray, k, p, s, ceil: bool = True):
    """Caffe's MAX pooling forward of (N, C, H, W): (top, mask, ties) in float64 / int64, where
    ties counts the outputs whose window holds the winning value more than once."""
    N, C, H, W = x.shape
    out = [pooled_size(H, k[0], p[0], s[0], ceil), pooled_size(W, k[1], p[1], s[1], ceil)]
    top = np.full((N, C, out[0], out[1]), -FLT_MAX)
    mask = np.full((N, C, out[0], out[1]), -1, dtype=np.int64)
    ties = 0
    for ph in range(out[0]):
        for pw in range(out[1]):
            hstart, wstart = ph * s[0] - p[0], pw * s[1] - p[1]
            hend, wend = min(hstart + k[0], H), min(wstart + k[1], W)
            hstart, wstart = max(hstart, 0), max(wstart, 0)
            for h in range(hstart, hend):
                for w in range(wstart, wend):
                    v = x[:, :, h, w]
                    better = v > top[:, :, ph, pw]  # strictly greater: the first maximum stays
                    top[:, :, ph, pw] = np.where(better, v, top[:, :, ph, pw])
                    mask[:, :, ph, pw] = np.where(better, h * W + w, mask[:, :, ph, pw])
            win = x[:, :, hstart:hend, wstart:wend].reshape(N, C, -1)
            winner = top[:, :, ph, pw][:, :, None]
            ties += int(((win == winner).sum(-1) > 1)[mask[:, :, ph, pw] >= 0].sum())
    return top, mask, ties


def ref_max_pool_backward(mask: np.ndarray, top_diff: np.ndarray, shape) -> np.ndarray:
    """Caffe's MAX pooling backward: each top diff is added to the one bottom element its mask
    names (none for mask -1)."""
    N, C, H, W = shape
    bottom = np.zeros((N, C, H * W))
    m = mask.reshape(N, C, -1)
    d = top_diff.reshape(N, C, -1)
    for n in range(N):
        for c in range(C):
            keep = m[n, c] >= 0
            np.add.at(bottom[n, c], m[n, c][keep], d[n, c][keep])
    return bottom.reshape(shape)


class RefMaxPool(torch.autograd.Function):
    """The reference as an autograd op (float64), for the multi-layer scenario.  ``select_on``
    holds the values the rule compares (by default x itself): the windows' winners are chosen on
    them, the top takes x at the winners and the backward routes to them."""

    @staticmethod
    def forward(ctx, x, k, p, s, select_on=None):
        _, mask, _ = ref_max_pool(x.detach().numpy() if select_on is None else select_on, k, p, s)
        ctx.mask, ctx.shape = mask, tuple(x.shape)
        N, C = mask.shape[:2]
        flat = x.detach().numpy().reshape(N, C, -1)
        top = np.take_along_axis(flat, np.maximum(mask, 0).reshape(N, C, -1), -1).reshape(mask.shape)
        return torch.from_numpy(np.where(mask >= 0, top, -FLT_MAX))

    @staticmethod
    def backward(ctx, g):
        return torch.from_numpy(ref_max_pool_backward(ctx.mask, g.numpy(), ctx.shape)), None, None, None, None


# ----- nets --------------------------------------------------------------------------------------
def make_net(text: str, dtype, channels_last: bool):
    param = caffe_pb2.NetParameter()
    text_format.Merge(text, param)
    net = brewnet.Net(param, brewnet.TEST, dtype=dtype)
    net.channels_last = channels_last
    return net


def pool_net(pooling_param: str, shape, two_tops: bool) -> str:
    tops = 'top: "y" top: "m"' if two_tops else 'top: "y"'
    dims = " ".join(f"dim: {d}" for d in shape)
    return ('name: "ties" force_backward: true\n'
            f'layer {{ name: "in" type: "Input" top: "x" input_param {{ shape {{ {dims} }} }} }}\n'
            f'layer {{ name: "pool" type: "Pooling" bottom: "x" {tops} '
            f'pooling_param {{ pool: MAX {pooling_param} }} }}\n')


def geometry(pooling_param: str, shape):
    """(kernel, pad, stride, ceil) of a pooling_param text, as Caffe reads it."""
    p = caffe_pb2.PoolingParameter()
    text_format.Merge(pooling_param, p)
    if p.global_pooling:
        return [shape[2], shape[3]], [0, 0], [1, 1], True
    k = [p.kernel_size] * 2 if p.HasField("kernel_size") else [p.kernel_h, p.kernel_w]
    pad = [p.pad_h, p.pad_w] if p.HasField("pad_h") else [p.pad] * 2
    s = [p.stride_h, p.stride_w] if p.HasField("stride_h") else [p.stride] * 2
    return k, pad, s, p.round_mode == caffe_pb2.PoolingParameter.CEIL


def close(actual, expected, rtol=1e-5, atol_rel=1e-6, what=""):
    expected = np.asarray(expected, dtype=np.float64)
    scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected,
                               rtol=rtol, atol=atol_rel * scale, err_msg=what)


def _pool_check(pooling_param, x, two_tops, channels_last, dtype, require_ties=True):
    """Run the one-layer net on x and check top, mask and bottom diff against the reference."""
    if dtype == torch.float32:  # the reference sees the values the net holds
        x = x.astype(np.float32).astype(np.float64)
    k, p, s, ceil = geometry(pooling_param, x.shape)
    top, mask, ties = ref_max_pool(x, k, p, s, ceil)
    if require_ties:
        assert ties > 0, "the input must tie somewhere for this test to mean anything"
    net = make_net(pool_net(pooling_param, x.shape, two_tops), dtype, channels_last)
    seen = {}

    def layout(module, args):  # the layout the Pooling layer really receives
        seen["cl"] = args[0].is_contiguous(memory_format=torch.channels_last) and not args[0].is_contiguous()

    net.layer_dict["pool"].register_forward_pre_hook(layout)
    net.blobs["x"].data[...] = x
    net.forward()
    assert seen["cl"] == channels_last
    what = f"{pooling_param} channels_last={channels_last} {dtype}"
    np.testing.assert_array_equal(net.blobs["y"].data, top, err_msg="top: " + what)
    if two_tops:
        np.testing.assert_array_equal(net.blobs["m"].data, mask.astype(np.float64), err_msg="mask: " + what)
        net.blobs["m"].diff[...] = 0
    # exact routing: with a top diff of ones, each bottom diff counts the outputs routed to it
    net.blobs["y"].diff[...] = 1.0
    net.backward()
    counts = ref_max_pool_backward(mask, np.ones(top.shape), x.shape)
    np.testing.assert_array_equal(net.blobs["x"].diff, counts, err_msg="routing (counts): " + what)
    # values: a random top diff
    g = np.random.default_rng(7).standard_normal(top.shape)
    net.blobs["y"].diff[...] = g
    net.backward()
    close(net.blobs["x"].diff, ref_max_pool_backward(mask, g, x.shape), what="bottom diff: " + what)


# ----- tied inputs -------------------------------------------------------------------------------
def _const(rng, shape):
    return np.full(shape, 1.5)


def _neg_const(rng, shape):
    return np.full(shape, -3.0)


def _relu(rng, shape):       # zero plateaus, as after a ReLU; every third channel is all zero
    x = np.maximum(rng.standard_normal(shape) - 1.0, 0.0)
    x[:, ::3] = 0.0
    return x


def _ints(rng, shape):       # small integers: ties everywhere, in every position of the window
    return rng.integers(0, 3, size=shape).astype(np.float64)


def _plateau(rng, shape):    # noise below a raised plateau (the maximum ties in whole regions)
    x = rng.standard_normal(shape)
    H, W = shape[2], shape[3]
    x[:, :, H // 4:H // 4 + max(2, H // 2), W // 3:W // 3 + max(2, W // 2)] = 4.0
    x[:, ::2, :, -2:] = 4.0  # and a strip along the right edge, in every other channel
    return x


INPUTS = {"const": _const, "neg_const": _neg_const, "relu": _relu, "ints": _ints, "plateau": _plateau}

# (pooling_param, (N, C, H, W)); C = 17 covers a full vector of channel lanes plus a remainder
GEOMETRIES = [
    ("kernel_size: 3 stride: 1 pad: 1", (2, 17, 7, 8)),                      # stride 1, pad
    ("kernel_size: 3 stride: 2 pad: 1", (2, 17, 8, 7)),                      # CEIL, clipped last window
    ("kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (2, 17, 8, 7)),
    ("kernel_size: 3 stride: 2", (2, 17, 8, 9)),                             # CEIL overhang, no pad
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (2, 5, 8, 9)),
    ("kernel_size: 2 stride: 2", (2, 17, 7, 6)),
    ("kernel_size: 3 stride: 1", (2, 5, 6, 7)),
    ("kernel_size: 2 stride: 1 pad: 1", (2, 5, 5, 6)),                       # pad = kernel / 2
    ("kernel_size: 4 stride: 2 pad: 3", (2, 5, 7, 8)),                       # pad > kernel / 2
    ("kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0", (2, 5, 6, 7)),
    ("kernel_h: 2 kernel_w: 3 stride_h: 4 stride_w: 2", (2, 5, 7, 8)),       # stride > kernel
    ("kernel_size: 1 stride: 3", (2, 5, 5, 7)),                              # a window past the input
    ("global_pooling: true", (2, 17, 5, 6)),
]


@pytest.mark.parametrize("inputs", list(INPUTS))
@pytest.mark.parametrize("pooling_param,shape", GEOMETRIES, ids=[g for g, _ in GEOMETRIES])
def test_tied_maxima_route_like_caffe(pooling_param, shape, inputs):
    if pooling_param == "kernel_size: 1 stride: 3" and inputs != "ints":
        pytest.skip("a 1x1 window cannot tie")
    x = INPUTS[inputs](np.random.default_rng(0), shape)
    require_ties = pooling_param != "kernel_size: 1 stride: 3"
    for dtype in (torch.float32, torch.float64):
        for cl in (True, False):
            _pool_check(pooling_param, x, False, cl, dtype, require_ties)


@pytest.mark.parametrize("pooling_param,shape", [
    ("kernel_size: 3 stride: 1 pad: 1", (2, 17, 7, 8)),
    ("kernel_size: 3 stride: 2 pad: 1", (2, 17, 8, 7)),
    ("kernel_size: 3 stride: 2 round_mode: FLOOR", (2, 5, 8, 9)),
    ("kernel_h: 2 kernel_w: 3 stride_h: 4 stride_w: 2", (2, 5, 7, 8)),
    ("global_pooling: true", (2, 17, 5, 6)),
], ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("inputs", ["const", "ints", "plateau"])
def test_mask_top_is_the_element_that_gets_the_gradient(pooling_param, shape, inputs):
    x = INPUTS[inputs](np.random.default_rng(1), shape)
    for dtype in (torch.float32, torch.float64):
        for cl in (True, False):
            _pool_check(pooling_param, x, True, cl, dtype)


@pytest.mark.parametrize("pooling_param", [
    "kernel_size: 3 stride: 1 pad: 1",
    "kernel_size: 2 stride: 2",
    "kernel_size: 3 stride: 2 pad: 1",
    "global_pooling: true",
])
@pytest.mark.parametrize("two_tops", [True])
def test_windows_with_nothing_above_minus_flt_max(pooling_param, two_tops):
    """-inf and -FLT_MAX never beat Caffe's initial -FLT_MAX: such a window keeps top -FLT_MAX
    and mask -1 and passes no gradient.  Checked on the explicit path (the mask top asks for it);
    the fused kernel keeps -inf there (see test_fused_kernel_keeps_minus_inf_windows)."""
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, size=(2, 9, 6, 6)).astype(np.float64)
    x[0, :, :3, :3] = -np.inf                  # whole windows of -inf
    x[1, 1:4, 2:, 2:] = -FLT_MAX               # -FLT_MAX ties with the initial value
    x[1, 2, 2:, 2:4] = -np.inf
    x[0, 5] = -np.inf                          # a whole plane: global pooling too
    for dtype in (torch.float32, torch.float64):
        for cl in (True, False):
            _pool_check(pooling_param, x, two_tops, cl, dtype, require_ties=False)


def test_fused_kernel_keeps_minus_inf_windows():
    """The documented exception: without the mask top, PyTorch's fused kernel gives a window of
    only -inf inputs -inf (Caffe: -FLT_MAX); finite windows are unaffected."""
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, :2, :2] = -np.inf
    net = make_net(pool_net("kernel_size: 2 stride: 2", x.shape, False), torch.float32, False)
    net.blobs["x"].data[...] = x
    net.forward()
    np.testing.assert_array_equal(net.blobs["y"].data[0, 0], [[-np.inf, 0], [0, 0]])


# ----- the scenario of the issue: TEST phase, force_backward, Pool → 1x1 Conv → Concat → LRN → Pool
SCENARIO = '''name: "ties_scenario" force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 11 dim: 11 } } }
layer { name: "pool1" type: "Pooling" bottom: "data" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "red" type: "Convolution" bottom: "pool1" top: "red"
        convolution_param { num_output: 13 kernel_size: 1 } }
layer { name: "cat" type: "Concat" bottom: "red" bottom: "data" top: "cat" }
layer { name: "norm" type: "LRN" bottom: "cat" top: "norm" lrn_param { local_size: 5 alpha: 0.5 beta: 0.75 } }
layer { name: "pool2" type: "Pooling" bottom: "norm" top: "pool2"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
'''


def _ref_lrn(x, n=5, alpha=0.5, beta=0.75, k=1.0):
    """Caffe's ACROSS_CHANNELS LRN: x * (k + alpha/n * sum of x^2 over n channels)^-beta."""
    sq = F.pad(x * x, (0, 0, 0, 0, n // 2, n // 2))
    window = sum(sq[:, i:i + x.shape[1]] for i in range(n))
    return x * (k + alpha / n * window) ** (-beta)


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_issue_scenario_intermediate_diffs(seed, channels_last, dtype):
    """Every intermediate diff agrees with the same graph run in float64 with the reference
    pooling.  The reference's pools pick their winners on the values the net holds: values that
    are equal in exact arithmetic need not be bitwise equal after a convolution (PyTorch's, like
    any GEMM, may round some output positions differently), and where they differ Caffe's rule
    takes the larger one; what is checked here is that brewnet's pools follow the rule on the
    values they are given, and route through the rest of the graph accordingly."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 3, size=(2, 4, 11, 11)).astype(np.float64)
    x[:, :, 3:8, 2:7] = 3.0   # a plateau: pool1 ties on it, and so (through conv, LRN) does pool2
    net = make_net(SCENARIO, dtype, channels_last)
    w = rng.standard_normal(net.params["red"][0].data.shape) * 0.5
    b = rng.uniform(-0.2, 0.2, size=net.params["red"][1].data.shape)
    net.params["red"][0].data[...] = w
    net.params["red"][1].data[...] = b
    net.blobs["data"].data[...] = x
    net.forward()
    g = rng.standard_normal(net.blobs["pool2"].shape)
    net.blobs["pool2"].diff[...] = g
    net.backward()

    # the same graph in float64 with the reference pooling
    held = net.blobs["norm"].data.astype(np.float64)      # what the net's pool2 compares
    data = torch.tensor(x, requires_grad=True)
    pool1 = RefMaxPool.apply(data, [3, 3], [1, 1], [1, 1])  # integers: exact in every dtype
    red = F.conv2d(pool1, torch.tensor(np.array(net.params["red"][0].data), dtype=torch.float64),
                   torch.tensor(np.array(net.params["red"][1].data), dtype=torch.float64))
    cat = torch.cat([red, data], 1)
    norm = _ref_lrn(cat)
    pool2 = RefMaxPool.apply(norm, [3, 3], [0, 0], [2, 2], held)
    inter = {"pool1": pool1, "red": red, "cat": cat, "norm": norm}
    for t in inter.values():
        t.retain_grad()
    pool2.backward(torch.from_numpy(g))
    assert ref_max_pool(x, [3, 3], [1, 1], [1, 1])[2] > 0, "pool1 must see ties"
    assert ref_max_pool(held, [3, 3], [0, 0], [2, 2])[2] > 0, "pool2 must see ties"

    atol_rel = 1e-6 if dtype == torch.float64 else 1e-5
    close(net.blobs["pool2"].data, pool2.detach().numpy(), atol_rel=atol_rel, what="pool2 data")
    for name, t in inter.items():
        close(net.blobs[name].diff, t.grad.numpy(), atol_rel=atol_rel, what=f"{name} diff")
    close(net.blobs["data"].diff, data.grad.numpy(), atol_rel=atol_rel, what="data diff")


def test_onnx_export_keeps_caffes_start_value(tmp_path):
    """The exported graph computes the same tops, -FLT_MAX windows included (ONNX has no
    threshold operator; the export takes an equivalent where)."""
    pytest.importorskip("onnx")
    from brewnet.convert.pytorch_onnx import export_onnx, run_onnx
    text = ('name: "onnx_pool"\n'
            'layer { name: "in" type: "Input" top: "x" '
            'input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } } }\n'
            'layer { name: "fast" type: "Pooling" bottom: "x" top: "a" '
            'pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }\n'
            'layer { name: "padded" type: "Pooling" bottom: "x" top: "b" '
            'pooling_param { pool: MAX kernel_size: 4 stride: 2 pad: 3 } }\n')
    net = make_net(text, torch.float32, True)
    x = np.random.default_rng(5).integers(0, 3, size=(2, 3, 8, 8)).astype(np.float32)
    x[0, 1, :4, :4] = -np.inf
    expected = {k: v.copy() for k, v in net.forward(x=x).items()}
    # the fused kernel ("fast") keeps -inf for an all -inf window, the explicit path -FLT_MAX
    assert (expected["a"] == -np.inf).any() and (expected["b"] == -FLT_MAX).any()
    path = str(tmp_path / "pool.onnx")
    module = export_onnx(net, path)
    got, _ = run_onnx(path, {"x": x})
    for name, value in zip(module.output_names, got):
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
