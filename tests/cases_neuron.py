"""Harness cases for the element-wise (neuron) layers (see tests/layer_harness.py)."""
from __future__ import annotations

from layer_harness import Case, away_from, uniform

X = {"x": (2, 3, 4, 5)}
# inputs kept away from the non-smooth point 0 (ReLU, PReLU, AbsVal)
OFF0 = {"x": away_from((0.0,), 0.01)}

CASES = {
    "ReLU": [
        Case('type: "ReLU"', X, inputs=OFF0, id="plain"),
        Case('type: "ReLU" relu_param { negative_slope: 0.1 }', X, inputs=OFF0, id="leaky"),
        Case('type: "ReLU"', {"x": (3, 4)}, inputs=OFF0, id="2d"),
    ],
    "PReLU": [
        Case('type: "PReLU"', X, inputs=OFF0, id="per_channel"),
        Case('type: "PReLU" prelu_param { channel_shared: true }', X, inputs=OFF0, id="shared"),
        Case('type: "PReLU" prelu_param { filler { type: "constant" value: 0.1 } }', {"x": (4, 6)},
             inputs=OFF0, id="2d_filler"),
        Case('type: "PReLU"', {"x": (2, 3, 2, 2, 2)}, inputs=OFF0, id="5d"),
    ],
    "ELU": [
        Case('type: "ELU"', X, inputs=OFF0, id="default"),
        Case('type: "ELU" elu_param { alpha: 0.5 }', X, inputs=OFF0, id="alpha"),
    ],
    "Sigmoid": [Case('type: "Sigmoid"', X)],
    "TanH": [Case('type: "TanH"', X)],
    "AbsVal": [Case('type: "AbsVal"', X, inputs=OFF0)],
    "BNLL": [Case('type: "BNLL"', X, inputs={"x": uniform(-6, 6)})],
    "Power": [
        Case('type: "Power" power_param { power: 2 scale: 0.5 shift: 1.5 }', X, id="square"),
        Case('type: "Power" power_param { power: 0.37 scale: 2 shift: 0.5 }', X,
             inputs={"x": uniform(0.1, 3)}, id="fractional"),
        Case('type: "Power" power_param { power: -1.5 }', X, inputs={"x": uniform(0.5, 3)}, id="negative"),
        Case('type: "Power" power_param { scale: -2 shift: 1 }', X, id="linear"),
        Case('type: "Power" power_param { power: 0 }', X, id="constant"),
    ],
    "Exp": [
        Case('type: "Exp"', X, id="e"),
        Case('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 0.1 }', X, id="base2"),
    ],
    "Log": [
        Case('type: "Log"', X, inputs={"x": uniform(0.2, 3)}, id="ln"),
        Case('type: "Log" log_param { base: 10 scale: 2 shift: 1 }', X, inputs={"x": uniform(0.1, 3)},
             id="log10"),
    ],
    "Threshold": [
        Case('type: "Threshold" threshold_param { threshold: 0.3 }', X, grad=False),
    ],
    "Clip": [
        Case('type: "Clip" clip_param { min: -0.5 max: 0.7 }', X,
             inputs={"x": away_from((-0.5, 0.7), 0.01)}),
    ],
    "Swish": [
        Case('type: "Swish"', X, id="default"),
        Case('type: "Swish" swish_param { beta: 1.5 }', X, id="beta"),
    ],
    "Dropout": [
        Case('type: "Dropout"', X, id="test_identity"),
        Case('type: "Dropout" dropout_param { dropout_ratio: 0.3 }', X, phase="TRAIN",
             deterministic=False, id="train"),
    ],
}
