"""Harness cases for brewnet/layers/common.py (see tests/layer_harness.py)."""
from layer_harness import Case, away_from, labels

X4 = {"x": (2, 3, 4, 5)}

CASES = {
    "InnerProduct": [
        Case('type: "InnerProduct" inner_product_param { num_output: 4 }', X4, id="default"),
        Case('type: "InnerProduct" inner_product_param { num_output: 3 axis: 2 transpose: true }', X4,
             id="axis2-transpose"),
        Case('type: "InnerProduct" inner_product_param { num_output: 2 bias_term: false axis: -1 }', X4,
             id="axis-1-nobias"),
    ],
    "Eltwise": [
        Case('type: "Eltwise" eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 3 }',
             {"a": (2, 3, 4), "b": (2, 3, 4), "c": (2, 3, 4)}, id="sum-coeff"),
        Case('type: "Eltwise"', {"a": (2, 3), "b": (2, 3)}, id="sum-default"),
        Case('type: "Eltwise" eltwise_param { operation: PROD }',
             {"a": (2, 3, 4), "b": (2, 3, 4), "c": (2, 3, 4)}, id="prod"),
        Case('type: "Eltwise" eltwise_param { operation: MAX }',
             {"a": (2, 3, 4), "b": (2, 3, 4), "c": (2, 3, 4)}, id="max"),
    ],
    "Concat": [
        Case('type: "Concat"', {"a": (2, 3, 4), "b": (2, 1, 4), "c": (2, 2, 4)}, id="axis1"),
        Case('type: "Concat" concat_param { axis: -1 }', {"a": (2, 3, 4), "b": (2, 3, 2)}, id="axis-1"),
        Case('type: "Concat" concat_param { concat_dim: 0 }', {"a": (2, 3), "b": (1, 3)}, id="concat_dim"),
        Case('type: "Concat"', {"a": (2, 3)}, id="single"),
    ],
    "Slice": [
        Case('type: "Slice" slice_param { axis: 1 slice_point: 1 slice_point: 4 }', {"x": (2, 6, 3)},
             tops=("y1", "y2", "y3"), id="points"),
        Case('type: "Slice" slice_param { axis: -1 }', {"x": (2, 3, 6)}, tops=("y1", "y2"), id="equal"),
        Case('type: "Slice" slice_param { slice_dim: 0 slice_point: 1 }', {"x": (3, 2)},
             tops=("y1", "y2"), id="slice_dim"),
    ],
    "Flatten": [
        Case('type: "Flatten"', X4, id="default"),
        Case('type: "Flatten" flatten_param { axis: 0 end_axis: 1 }', X4, id="axis0-end1"),
        Case('type: "Flatten" flatten_param { axis: 2 end_axis: -2 }', X4, id="single-axis"),
    ],
    "Reshape": [
        Case('type: "Reshape" reshape_param { shape { dim: 0 dim: -1 dim: 4 } }', X4, id="copy-infer"),
        Case('type: "Reshape" reshape_param { shape { dim: 2 dim: 2 } axis: 2 num_axes: 1 }', X4,
             id="axis-num_axes"),
        Case('type: "Reshape" reshape_param { shape { dim: 1 } axis: -1 num_axes: 0 }', X4, id="append-axis"),
    ],
    "Crop": [
        Case('type: "Crop" crop_param { axis: 2 offset: 1 offset: 2 }', {"x": (2, 3, 5, 6), "ref": (1, 1, 3, 3)},
             no_grad=("ref",), id="per-axis"),
        Case('type: "Crop" crop_param { axis: 1 offset: 1 }', {"x": (2, 4, 5), "ref": (2, 2, 3)},
             no_grad=("ref",), id="one-offset"),
        Case('type: "Crop"', {"x": (2, 3, 5, 6), "ref": (2, 3, 2, 2)}, no_grad=("ref",), id="default"),
    ],
    "Tile": [
        Case('type: "Tile" tile_param { axis: 1 tiles: 3 }', {"x": (2, 2, 3)}, id="axis1"),
        Case('type: "Tile" tile_param { axis: -1 tiles: 2 }', {"x": (2, 3)}, id="last"),
    ],
    "Reduction": [
        Case('type: "Reduction"', {"x": (2, 3, 4)}, id="sum-all"),
        Case('type: "Reduction" reduction_param { operation: ASUM axis: 1 coeff: -2 }', {"x": (2, 3, 4)},
             inputs={"x": away_from((0.0,), 0.01)}, id="asum"),
        Case('type: "Reduction" reduction_param { operation: SUMSQ axis: 2 coeff: 0.5 }', {"x": (2, 3, 4)},
             id="sumsq"),
        Case('type: "Reduction" reduction_param { operation: MEAN axis: -1 }', {"x": (2, 3, 4)}, id="mean"),
    ],
    "ArgMax": [
        Case('type: "ArgMax"', {"x": (3, 2, 4)}, grad=False, id="default"),
        Case('type: "ArgMax" argmax_param { out_max_val: true top_k: 2 }', {"x": (3, 5)}, grad=False,
             id="max_val-2d"),
        Case('type: "ArgMax" argmax_param { axis: 1 top_k: 2 }', {"x": (3, 4, 2)}, grad=False, id="axis"),
        Case('type: "ArgMax" argmax_param { axis: -1 out_max_val: true }', {"x": (3, 4, 2)}, grad=False,
             id="axis-max_val"),
    ],
    "Softmax": [
        Case('type: "Softmax"', X4, id="default"),
        Case('type: "Softmax" softmax_param { axis: -1 }', {"x": (2, 3, 4)}, id="axis-1"),
    ],
    "Embed": [
        Case('type: "Embed" embed_param { num_output: 3 input_dim: 5 }', {"x": (2, 4)},
             inputs={"x": labels(5)}, no_grad=("x",), id="bias"),
        Case('type: "Embed" embed_param { num_output: 2 input_dim: 4 bias_term: false }', {"x": (3,)},
             inputs={"x": labels(4)}, no_grad=("x",), id="nobias"),
    ],
    "Parameter": [
        Case('type: "Parameter" parameter_param { shape { dim: 2 dim: 3 } }', {}, id="2d"),
    ],
    "Scale": [
        Case('type: "Scale"', X4, id="default"),
        Case('type: "Scale" scale_param { bias_term: true axis: 1 num_axes: 2 }', X4, id="num_axes2-bias"),
        Case('type: "Scale" scale_param { num_axes: -1 axis: 2 }', X4, id="to-end"),
        Case('type: "Scale" scale_param { num_axes: 0 bias_term: true }', X4, id="scalar"),
        Case('type: "Scale"', {"x": (2, 3, 4), "s": (3,)}, id="two-bottoms"),
        Case('type: "Scale" scale_param { axis: 1 bias_term: true }', {"x": (2, 3, 4), "s": (3, 4)},
             id="two-bottoms-bias"),
    ],
    "Bias": [
        Case('type: "Bias"', X4, id="default"),
        Case('type: "Bias" bias_param { axis: 2 num_axes: -1 }', X4, id="to-end"),
        Case('type: "Bias" bias_param { num_axes: 0 }', X4, id="scalar"),
        Case('type: "Bias" bias_param { axis: 0 }', {"x": (2, 3, 4), "b": (2, 3)}, id="two-bottoms"),
    ],
    "MVN": [
        Case('type: "MVN"', X4, id="default"),
        Case('type: "MVN" mvn_param { across_channels: true }', X4, id="across"),
        Case('type: "MVN" mvn_param { normalize_variance: false }', X4, id="mean-only"),
        Case('type: "MVN"', {"x": (3, 4)}, id="2d"),
    ],
}
