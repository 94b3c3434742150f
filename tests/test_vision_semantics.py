"""Hand-computed checks of Caffe's vision-layer semantics: shape rules, AVE divisors, weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from brewnet.errors import NetError
from brewnet.layers import layer_class
from brewnet.layers.vision import ave_window_sizes, pooled_size
from brewnet.proto import caffe_pb2


def make(text: str, *bottom_shapes, phase=caffe_pb2.TEST):
    """Build and set up one layer from its prototxt text; returns (layer, top shapes)."""
    lp = caffe_pb2.LayerParameter()
    text_format.Merge(f'name: "l" {text}', lp)
    for i in range(max(1, len(bottom_shapes))):
        lp.bottom.append(f"b{i}")
    if not lp.top:
        lp.top.append("y")
    layer = layer_class(lp.type)(lp, phase)
    layer.generator = torch.Generator().manual_seed(0)
    return layer, layer.setup([tuple(s) for s in bottom_shapes])


def pool(params: str, shape):
    return make(f'type: "Pooling" pooling_param {{ {params} }}', shape)


# ----- Pooling output size ---------------------------------------------------------------------
@pytest.mark.parametrize("n,k,p,s,ceil,expected", [
    (7, 3, 1, 2, True, 4),   # ceil(6/2) + 1 = 4; last window starts at 6 - 1 = 5 < 7: kept
    (5, 2, 1, 2, True, 3),   # ceil(5/2) + 1 = 4, but window 3 starts at 6 - 1 = 5 = in: dropped
    (5, 2, 1, 2, False, 3),  # floor(5/2) + 1 = 3
    (4, 3, 0, 2, True, 2),   # ceil(1/2) + 1 = 2: the last window overhangs the input
    (4, 3, 0, 2, False, 1),
    (6, 2, 0, 2, True, 3),   # exact fit: both modes agree
    (2, 3, 0, 2, True, 1),   # kernel larger than the input: one clipped window (ceil(-1/2) + 1)
    (2, 3, 0, 1, True, 0),   # ceil(-1) + 1 = 0: refused by the layer
])
def test_pooled_size_rule(n, k, p, s, ceil, expected):
    assert pooled_size(n, k, p, s, ceil) == expected


def test_pooling_pad_clip_drops_last_window_in_top_shape():
    _, tops = pool("pool: MAX kernel_size: 2 stride: 2 pad: 1", (1, 2, 5, 5))
    assert tops == [(1, 2, 3, 3)]
    _, tops = pool("pool: AVE kernel_size: 3 stride: 2 pad: 1", (2, 3, 7, 6))
    assert tops == [(2, 3, 4, 4)]  # H: ceil(6/2)+1 = 4; W: ceil(5/2)+1 = 4, start 6-1 = 5 < 6 kept
    _, tops = pool("pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR", (2, 3, 7, 6))
    assert tops == [(2, 3, 3, 3)]


def test_global_pooling_takes_the_whole_map():
    layer, tops = pool("pool: AVE global_pooling: true", (2, 3, 4, 5))
    assert tops == [(2, 3, 1, 1)]
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).reshape(2, 3, 4, 5)
    np.testing.assert_allclose(layer(x).numpy(), x.mean(dim=(2, 3), keepdim=True).numpy())


# ----- AVE divisor at the borders --------------------------------------------------------------
def test_ave_window_sizes_count_padding_but_not_overhang():
    # n=4, k=3, p=1, s=2: windows [-1,2) [1,4) [3,6); the last is clipped to n + p = 5 -> size 2
    assert ave_window_sizes(4, 3, 1, 2, 3) == [3, 3, 2]


def test_ave_pooling_of_ones_at_the_borders():
    layer, tops = pool("pool: AVE kernel_size: 3 stride: 2 pad: 1", (1, 1, 4, 4))
    assert tops == [(1, 1, 3, 3)]
    y = layer(torch.ones(1, 1, 4, 4, dtype=torch.float64))[0, 0].numpy()
    # per axis: window 0 holds 2 input rows of 3 (one is padding), window 1 holds 3 of 3,
    # window 2 holds 1 input row of 2 (padding counts, the overhang beyond it does not)
    a = np.array([2 / 3, 1.0, 1 / 2])
    np.testing.assert_allclose(y, np.outer(a, a), rtol=1e-12)


def test_ave_pooling_without_pad_divides_by_the_clipped_window():
    # n=5, k=2, s=2, no pad: ceil(3/2)+1 = 3 windows; the last holds one row and divides by 1
    layer, tops = pool("pool: AVE kernel_size: 2 stride: 2", (1, 1, 5, 2))
    x = torch.arange(10, dtype=torch.float64).reshape(1, 1, 5, 2)
    y = layer(x)[0, 0, :, 0].numpy()
    np.testing.assert_allclose(y, [(0 + 1 + 2 + 3) / 4, (4 + 5 + 6 + 7) / 4, (8 + 9) / 2])


def test_max_pooling_ignores_padding_and_gives_caffe_mask():
    layer, tops = make('type: "Pooling" top: "y" top: "mask" '
                       'pooling_param { pool: MAX kernel_size: 2 stride: 2 pad: 1 }', (1, 1, 4, 4))
    assert tops == [(1, 1, 3, 3)] * 2
    x = -torch.arange(16, dtype=torch.float64).reshape(1, 1, 4, 4) - 1  # all negative: padding (0) must not win
    y, mask = layer(x)
    # windows cover rows/cols {0}, {1,2}, {3}; the max is the smallest index in each window
    rows = [0, 1, 3]
    expect_idx = np.array([[r * 4 + c for c in rows] for r in rows], dtype=np.float64)
    np.testing.assert_array_equal(mask[0, 0].numpy(), expect_idx)
    np.testing.assert_array_equal(y[0, 0].numpy(), -expect_idx - 1)


def test_max_pooling_window_past_the_input_is_lowest_float():
    # n=5, k=1, s=3, CEIL, no pad: ceil(4/3)+1 = 3 windows starting at 0, 3, 6: the last is empty
    layer, tops = make('type: "Pooling" top: "y" top: "mask" '
                       'pooling_param { pool: MAX kernel_size: 1 stride: 3 }', (1, 1, 5, 1))
    assert tops == [(1, 1, 3, 1)] * 2
    x = torch.arange(5, dtype=torch.float64).reshape(1, 1, 5, 1).requires_grad_()
    y, mask = layer(x)
    lowest = float(np.finfo(np.float32).min)
    np.testing.assert_array_equal(y.detach().numpy().ravel(), [0.0, 3.0, lowest])
    np.testing.assert_array_equal(mask.numpy().ravel(), [0.0, 3.0, -1.0])
    (g,) = torch.autograd.grad(y.sum(), x)
    np.testing.assert_array_equal(g.numpy().ravel(), [1, 0, 0, 1, 0])


def test_pooling_errors_name_the_layer():
    with pytest.raises(NetError, match=r"layer 'l' \(Pooling\).*pad"):
        pool("pool: MAX kernel_size: 2 pad: 2", (1, 1, 5, 5))
    with pytest.raises(NetError, match=r"layer 'l' \(Pooling\).*kernel"):
        pool("pool: MAX kernel_size: 2 kernel_h: 2 kernel_w: 2", (1, 1, 5, 5))
    with pytest.raises(NetError, match=r"layer 'l' \(Pooling\).*global_pooling"):
        pool("pool: AVE global_pooling: true kernel_size: 2", (1, 1, 5, 5))
    with pytest.raises(NetError, match=r"4 axes"):
        pool("pool: MAX kernel_size: 2", (1, 5, 5))
    with pytest.raises(NetError, match=r"layer 'l' \(Pooling\).*not positive"):
        pool("pool: MAX kernel_size: 3", (1, 1, 2, 2))


# ----- Convolution / Deconvolution shapes ------------------------------------------------------
def test_conv_output_and_weight_shapes():
    layer, tops = make('type: "Convolution" convolution_param { num_output: 6 group: 2 kernel_h: 3 '
                       'kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 dilation: 2 }', (2, 4, 9, 8))
    # H: extent 2*(3-1)+1 = 5, (9 + 2 - 5)//2 + 1 = 4; W: extent 3, (8 - 3)//1 + 1 = 6
    assert tops == [(2, 6, 4, 6)]
    assert tuple(layer.weight.shape) == (6, 2, 3, 2) and tuple(layer.bias.shape) == (6,)
    assert float(layer.weight.detach().abs().sum()) == 0.0  # default fillers: constant 0
    layer, tops = make('type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 '
                       'stride: 2 bias_term: false }', (1, 2, 8, 8))
    assert tops == [(1, 3, 3, 3)]  # (8 - 3)//2 + 1 = 3 (floor)
    assert layer.blob_names == ["weight"]


def test_conv_repeated_fields_per_axis():
    _, tops = make('type: "Convolution" convolution_param { num_output: 2 kernel_size: 3 kernel_size: 1 '
                   'pad: 1 pad: 0 stride: 1 stride: 2 }', (1, 1, 5, 5))
    assert tops == [(1, 2, 5, 3)]


def test_deconv_output_and_weight_shapes():
    layer, tops = make('type: "Deconvolution" convolution_param { num_output: 4 kernel_size: 4 '
                       'stride: 2 pad: 1 }', (2, 3, 5, 5))
    assert tops == [(2, 4, 10, 10)]  # 2*(5-1) + 4 - 2
    assert tuple(layer.weight.shape) == (3, 4, 4, 4)
    layer, tops = make('type: "Deconvolution" convolution_param { num_output: 6 group: 2 kernel_size: 3 '
                       'dilation: 2 }', (1, 4, 3, 3))
    assert tops == [(1, 6, 7, 7)]  # (3-1) + 2*(3-1) + 1
    assert tuple(layer.weight.shape) == (4, 3, 3, 3)


def test_conv_matches_a_direct_sum():
    layer, _ = make('type: "Convolution" convolution_param { num_output: 1 kernel_size: 2 }', (1, 1, 2, 3))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]]))
        layer.bias.fill_(0.5)
    x = torch.tensor([[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]])
    y = layer(x)  # cross-correlation, as Caffe's im2col + gemm
    np.testing.assert_allclose(y.detach().numpy().ravel(), [1 + 4 + 12 + 20 + 0.5, 2 + 6 + 15 + 24 + 0.5])


def test_conv_shape_errors_name_the_layer():
    with pytest.raises(NetError, match=r"layer 'l' \(Convolution\).*larger than the padded input"):
        make('type: "Convolution" convolution_param { num_output: 2 kernel_size: 5 pad: 0 }', (1, 1, 3, 3))
    with pytest.raises(NetError, match=r"layer 'l' \(Convolution\).*group"):
        make('type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 group: 2 }', (1, 3, 3, 3))
    with pytest.raises(NetError, match=r"not both"):
        make('type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 kernel_h: 1 kernel_w: 1 }',
             (1, 1, 3, 3))
    with pytest.raises(NetError, match=r"kernel_size"):
        make('type: "Convolution" convolution_param { num_output: 2 }', (1, 1, 3, 3))
    with pytest.raises(NetError, match=r"stride_w"):  # stride_h/stride_w have no default: give both
        make('type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 stride_h: 2 }', (1, 1, 3, 3))
    with pytest.raises(NetError, match=r"once per spatial axis"):
        make('type: "Convolution" convolution_param { num_output: 2 kernel_size: 1 kernel_size: 1 '
             'kernel_size: 1 }', (1, 1, 3, 3))


# ----- LRN ---------------------------------------------------------------------------------------
def test_lrn_across_channels_by_hand():
    layer, _ = make('type: "LRN" lrn_param { local_size: 3 alpha: 0.3 beta: 0.5 k: 2 }', (1, 3, 1, 1))
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64).reshape(1, 3, 1, 1)
    sums = np.array([1 + 4, 1 + 4 + 9, 4 + 9])  # zero-padded window of 3 channels
    expect = x.numpy().ravel() * (2 + 0.3 / 3 * sums) ** -0.5
    np.testing.assert_allclose(layer(x).numpy().ravel(), expect, rtol=1e-6)  # alpha is a float32


def test_lrn_within_channel_divides_by_n_squared_at_borders():
    layer, _ = make('type: "LRN" lrn_param { local_size: 3 alpha: 0.9 beta: 1 norm_region: WITHIN_CHANNEL '
                    'k: 5 }', (1, 1, 2, 2))
    x = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    # every 3x3 window (pad 1) holds the 4 ones; the divisor is 9 (padding counts); k is not used
    np.testing.assert_allclose(layer(x).numpy(), np.full((1, 1, 2, 2), 1 / (1 + 0.9 * 4 / 9)), rtol=1e-6)


def test_lrn_even_local_size_is_refused():
    with pytest.raises(NetError, match="odd"):
        make('type: "LRN" lrn_param { local_size: 4 }', (1, 3, 2, 2))
