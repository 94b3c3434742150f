"""The generic layer harness: one test over every registered layer type.

Each family file ``tests/cases_<family>.py`` defines ``CASES: dict[type_name, list[Case]]``.
For every case the harness builds a net of Input layers + the layer under test (force_backward),
converts it to float64, and checks: forward is finite; float64 central finite differences match
the autograd gradients for every bottom that takes a gradient and every learnable parameter (the
objective is sum(top * R) with fixed random R for every top); every learnable parameter receives
a gradient; the prototxt round-trips through text; the caffemodel round-trips (saved, reloaded
into a fresh net: same blobs and same outputs).
A registered type without a case fails the suite.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


@dataclasses.dataclass
class Case:
    layer: str                      # the layer's prototxt text, e.g. 'type: "ReLU" relu_param {...}'
    bottoms: dict[str, tuple]       # bottom name -> shape, in order
    phase: str = "TEST"
    tops: tuple[str, ...] = ("y",)
    # bottom name -> function(rng, shape) -> array (default: standard normal)
    inputs: dict[str, Callable] = dataclasses.field(default_factory=dict)
    no_grad: tuple[str, ...] = ()   # bottoms without gradient (labels, indices)
    grad: bool = True               # False for layers without backward (Accuracy, ArgMax, data)
    # Caffe's "kinks": skip finite differences for inputs within kink_range of kink
    kink: float | None = None
    kink_range: float = -1.0
    eps: float = 1e-6
    tol: float = 1e-5               # relative to max(1, |grad|)
    deterministic: bool = True      # False: forward twice may differ (e.g. Dropout in TRAIN)
    id: str = ""

    def prototxt(self) -> str:
        inputs = "".join(
            f'layer {{ name: "in_{b}" type: "Input" top: "{b}" '
            f'input_param {{ shape {{ {" ".join(f"dim: {d}" for d in s)} }} }} }}\n'
            for b, s in self.bottoms.items())
        bottoms = " ".join(f'bottom: "{b}"' for b in self.bottoms)
        tops = " ".join(f'top: "{t}"' for t in self.tops)
        return (f'name: "harness" force_backward: true\n{inputs}'
                f'layer {{ name: "l" {bottoms} {tops} {self.layer} }}\n')


def labels(num_classes: int) -> Callable:
    return lambda rng, shape: rng.integers(0, num_classes, size=shape).astype(np.float64)


def uniform(lo: float, hi: float) -> Callable:
    return lambda rng, shape: rng.uniform(lo, hi, size=shape)


def away_from(points: tuple[float, ...], margin: float) -> Callable:
    """Standard normal values kept at least ``margin`` away from non-smooth points."""
    def gen(rng, shape):
        x = rng.standard_normal(size=shape)
        for p in points:
            close = np.abs(x - p) < margin
            x[close] = p + np.sign(x[close] - p + 1e-12) * (margin + rng.uniform(0, 0.5, size=close.sum()))
        return x
    return gen


def single_layer_net(layer: str, bottoms: dict, tops=("y",), phase: str = "TEST",
                     force_backward: bool = True, dtype=None):
    """A float64 Net of Input layers for ``bottoms`` (name -> shape) and the layer 'l' under test."""
    import torch
    from google.protobuf import text_format

    import brewnet
    from brewnet.proto import caffe_pb2

    case = Case(layer=layer, bottoms=bottoms, tops=tuple(tops), phase=phase)
    text = case.prototxt()
    if not force_backward:
        text = text.replace("force_backward: true", "force_backward: false", 1)
    param = caffe_pb2.NetParameter()
    text_format.Merge(text, param)
    return brewnet.Net(param, brewnet.TRAIN if phase == "TRAIN" else brewnet.TEST,
                       dtype=dtype or torch.float64)
