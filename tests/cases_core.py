"""Harness cases for the core layers: Input, DummyData, Split, Silence, BatchNorm, Python."""
from layer_harness import Case

CASES = {
    "Input": [Case(layer='type: "Input" input_param { shape { dim: 2 dim: 3 dim: 4 } }', bottoms={}, grad=False)],
    "DummyData": [
        Case(layer='type: "DummyData" dummy_data_param { shape { dim: 2 dim: 3 } '
                   'data_filler { type: "constant" value: 0.5 } }',
             bottoms={}, grad=False, id="constant"),
        Case(layer='type: "DummyData" dummy_data_param { num: 2 channels: 3 height: 4 width: 5 '
                   'data_filler { type: "gaussian" std: 2 } }',
             bottoms={}, grad=False, deterministic=False, id="gaussian"),
    ],
    "Split": [Case(layer='type: "Split"', bottoms={"x": (2, 3, 4)}, tops=("y1", "y2", "y3"))],
    "Silence": [Case(layer='type: "Silence"', bottoms={"x": (2, 3)}, tops=(), grad=False)],
    "BatchNorm": [
        Case(layer='type: "BatchNorm"', bottoms={"x": (4, 3, 2, 3)}, phase="TRAIN", id="bvlc-train"),
        Case(layer='type: "BatchNorm"', bottoms={"x": (4, 3, 2, 3)}, phase="TEST", id="bvlc-global"),
        Case(layer='type: "BatchNorm" batch_norm_param { use_global_stats: false eps: 0.01 }',
             bottoms={"x": (5, 4)}, phase="TEST", id="bvlc-2d-batch-stats-in-test"),
        Case(layer='type: "BatchNorm" batch_norm_param { scale_bias: true }', bottoms={"x": (4, 3, 2, 2)},
             phase="TRAIN", id="nvcaffe-scale-bias-train"),
        Case(layer='type: "BatchNorm" batch_norm_param { scale_filler { type: "constant" value: 1 } '
                   'bias_filler { type: "constant" value: 0 } engine: CUDNN }', bottoms={"x": (3, 2, 3, 3)},
             phase="TEST", id="nvcaffe-fillers-global"),
    ],
    "Python": [
        Case(layer='type: "Python" python_param { module: "pylayers" layer: "ScaledSquare" param_str: "1.5" }',
             bottoms={"x": (2, 3)}, id="one-bottom", eps=1e-2, tol=1e-3),  # runs in float32, as pycaffe
        Case(layer='type: "Python" python_param { module: "pylayers" layer: "SumTwo" }',
             bottoms={"a": (2, 3), "b": (2, 3)}, id="two-bottoms", eps=1e-2, tol=1e-3),
        Case(layer='type: "Python" python_param { module: "pylayers" layer: "LearnedScale" param_str: "2" }',
             bottoms={"x": (2, 3)}, id="learnable-blob", eps=1e-2, tol=1e-3),
    ],
}
