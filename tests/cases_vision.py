"""Harness cases for Convolution, Deconvolution, Pooling and LRN (see tests/layer_harness.py)."""
from __future__ import annotations

import numpy as np

from layer_harness import Case, uniform


def distinct(spacing: float = 0.05):
    """Well-separated values (a shuffled grid) so MAX pooling has no near-ties for finite differences."""
    def gen(rng, shape):
        n = int(np.prod(shape))
        return (rng.permutation(n) - n / 2.0).reshape(shape) * spacing
    return gen


def conv(params: str, kind: str = "Convolution") -> str:
    return f'type: "{kind}" convolution_param {{ {params} }}'


def pool(params: str) -> str:
    return f'type: "Pooling" pooling_param {{ {params} }}'


X = {"x": (2, 4, 7, 6)}
D = {"x": distinct()}

CASES = {
    "Convolution": [
        Case(conv("num_output: 3 kernel_size: 3"), X, id="basic"),
        Case(conv("num_output: 4 kernel_size: 3 pad: 1 stride: 2 group: 2"), X, id="group_pad_stride"),
        Case(conv("num_output: 6 group: 2 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 "
                  "pad_w: 0 dilation: 2"), X, id="rect_dilation"),
        Case(conv("num_output: 2 kernel_size: 3 kernel_size: 2 pad: 0 pad: 1 stride: 1 stride: 2 "
                  "dilation: 1 dilation: 2 bias_term: false"), X, id="repeated_no_bias"),
        Case(conv("num_output: 4 kernel_size: 1 group: 4"), X, id="depthwise_1x1"),
        Case(conv("num_output: 3 kernel_size: 2 stride: 2"), {"x": (2, 2, 4, 3, 4)}, id="3d"),
        Case(conv("num_output: 3 kernel_size: 2 pad: 1"), {"x": (2, 3, 6)}, id="1d"),
        Case(conv("num_output: 2 kernel_size: 3"), {"a": (2, 3, 5, 5), "b": (2, 3, 5, 5)},
             tops=("ya", "yb"), id="two_bottoms"),
    ],
    "Deconvolution": [
        Case(conv("num_output: 4 kernel_size: 4 stride: 2 pad: 1", "Deconvolution"),
             {"x": (2, 3, 5, 5)}, id="upsample"),
        Case(conv("num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 group: 2 dilation: 2",
                  "Deconvolution"), {"x": (2, 4, 4, 5)}, id="rect_group_dilation"),
        Case(conv("num_output: 2 kernel_size: 1 bias_term: false", "Deconvolution"), {"x": (1, 3, 3, 3)},
             id="1x1_no_bias"),
    ],
    "Pooling": [
        Case(pool("pool: MAX kernel_size: 3 stride: 2 pad: 1"), X, inputs=D, id="max_ceil_pad"),
        Case(pool("pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR"), X, inputs=D, id="max_floor"),
        Case(pool("pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1"), X, inputs=D, id="max_rect"),
        Case(pool("pool: MAX kernel_size: 3 stride: 2"), X, inputs=D, tops=("y", "mask"), id="max_mask"),
        Case(pool("pool: AVE kernel_size: 3 stride: 2 pad: 1"), X, id="ave_ceil_pad"),
        Case(pool("pool: AVE kernel_size: 3 stride: 2 pad_h: 2 pad_w: 1"), X, id="ave_pad_hw"),
        Case(pool("pool: AVE kernel_size: 2 stride: 2"), X, id="ave_overhang"),
        Case(pool("pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR"), X, id="ave_floor"),
        Case(pool("pool: AVE global_pooling: true"), X, id="ave_global"),
        Case(pool("pool: MAX global_pooling: true"), X, inputs=D, id="max_global"),
        Case(pool("pool: STOCHASTIC kernel_size: 2 stride: 2"), X, inputs={"x": uniform(0.5, 2)},
             id="stochastic_test"),
    ],
    "LRN": [
        Case('type: "LRN" lrn_param { local_size: 5 alpha: 0.3 beta: 0.75 k: 2 }', {"x": (2, 7, 3, 4)},
             id="across"),
        Case('type: "LRN" lrn_param { local_size: 3 alpha: 0.2 beta: 0.75 norm_region: WITHIN_CHANNEL }',
             {"x": (2, 3, 5, 4)}, id="within"),
        Case('type: "LRN"', {"x": (1, 3, 2, 2)}, id="defaults_few_channels"),
    ],
}
