"""Caffe's learning-rate arithmetic, to the bit: SGDSolver::GetLearningRate computes in the
solver's Dtype (float32 here) where its operands are Dtype, and in double where they are the
proto's fields read through ``pow`` on doubles (step, exp, multistep).  The expected values are
those expressions, written out with numpy float32 / Python double operations.
"""
import math

import numpy as np
import pytest
from google.protobuf import text_format

from brewnet.errors import SolverError
from brewnet.proto import caffe_pb2
from brewnet.solver import LR_POLICIES, learning_rate

F = np.float32


def param(text: str) -> caffe_pb2.SolverParameter:
    return text_format.Parse(text, caffe_pb2.SolverParameter())


def base(p):   # the float fields as the solver reads them: float32 values, widened
    return float(p.base_lr), float(p.gamma), float(p.power)


@pytest.mark.parametrize("it", [0, 1, 7, 30, 999])
def test_every_policy_to_the_bit(it):
    p = param('lr_policy: "step" base_lr: 0.03 gamma: 0.7 stepsize: 4')
    b, g, _ = base(p)
    assert learning_rate(p, it) == (float(F(b * math.pow(g, it // 4))), it // 4)
    p = param('lr_policy: "exp" base_lr: 0.03 gamma: 0.993')
    b, g, _ = base(p)
    assert learning_rate(p, it)[0] == float(F(b * math.pow(g, it)))
    p = param('lr_policy: "inv" base_lr: 0.03 gamma: 0.0001 power: 0.75')
    b, g, pw = base(p)
    assert learning_rate(p, it)[0] == float(F(b) * np.power(F(1) + F(g) * F(it), F(-pw)))
    p = param('lr_policy: "poly" base_lr: 0.03 power: 1.5 max_iter: 1000')
    b, _, pw = base(p)
    assert learning_rate(p, it)[0] == float(F(b) * np.power(F(1) - F(it) / F(1000), F(pw)))
    p = param('lr_policy: "sigmoid" base_lr: 0.03 gamma: -0.05 stepsize: 20')
    b, g, _ = base(p)
    assert learning_rate(p, it)[0] == float(F(b) * (F(1) / (F(1) + np.exp(-F(g) * (F(it) - F(20))))))
    p = param('lr_policy: "fixed" base_lr: 0.03')
    assert learning_rate(p, it, 3) == (float(F(0.03)), 3)


def test_multistep_carries_its_step():
    p = param('lr_policy: "multistep" base_lr: 0.5 gamma: 0.3 stepvalue: 2 stepvalue: 3 stepvalue: 9')
    b, g, _ = base(p)
    assert learning_rate(p, 3, 0) == (float(F(b * math.pow(g, 1))), 1)   # one step per call
    assert learning_rate(p, 3, 1) == (float(F(b * math.pow(g, 2))), 2)
    assert learning_rate(p, 8, 2) == (float(F(b * math.pow(g, 2))), 2)
    assert learning_rate(p, 50, 3) == (float(F(b * math.pow(g, 3))), 3)


def test_policy_errors_name_the_choices():
    names = "fixed, step, exp, inv, multistep, poly, sigmoid"
    assert ", ".join(LR_POLICIES) == names
    with pytest.raises(SolverError, match=rf"^unknown lr_policy 'cosine' \(one of: {names}\)$"):
        learning_rate(param('lr_policy: "cosine"'), 0)
    with pytest.raises(SolverError, match=rf"^the solver gives no lr_policy \(one of: {names}\)$"):
        learning_rate(param('base_lr: 1'), 0)
    with pytest.raises(SolverError, match="lr_policy 'step' needs a stepsize > 0"):
        learning_rate(param('lr_policy: "step"'), 0)
    with pytest.raises(SolverError, match="lr_policy 'poly' needs max_iter > 0"):
        learning_rate(param('lr_policy: "poly"'), 0)
