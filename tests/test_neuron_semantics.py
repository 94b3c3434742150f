"""Hand-computed checks of Caffe's element-wise layers, including the gradients at the kinks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from google.protobuf import text_format

from brewnet.errors import NetError
from brewnet.layers import layer_class
from brewnet.proto import caffe_pb2


def make(text: str, shape=(1, 3, 1, 2), phase=caffe_pb2.TEST):
    lp = caffe_pb2.LayerParameter()
    text_format.Merge(f'name: "l" bottom: "x" top: "y" {text}', lp)
    layer = layer_class(lp.type)(lp, phase)
    layer.generator = torch.Generator().manual_seed(0)
    assert layer.setup([shape]) == [shape]
    return layer.to(torch.float64)


def value_and_grad(layer, values):
    x = torch.tensor(values, dtype=torch.float64, requires_grad=True)
    y = layer(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    return y.detach().numpy(), g.numpy()


def test_relu_slope_applies_at_zero():
    y, g = value_and_grad(make('type: "ReLU" relu_param { negative_slope: 0.1 }', (3,)), [-2.0, 0.0, 3.0])
    np.testing.assert_allclose(y, [-0.2, 0.0, 3.0])
    np.testing.assert_allclose(g, [0.1, 0.1, 1.0])


def test_absval_gradient_is_sign():
    _, g = value_and_grad(make('type: "AbsVal"', (3,)), [-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(g, [-1.0, 0.0, 1.0])


def test_clip_gradient_includes_the_bounds():
    y, g = value_and_grad(make('type: "Clip" clip_param { min: -0.5 max: 0.5 }', (5,)),
                          [-1.0, -0.5, 0.0, 0.5, 1.0])
    np.testing.assert_allclose(y, [-0.5, -0.5, 0.0, 0.5, 0.5])
    np.testing.assert_array_equal(g, [0.0, 1.0, 1.0, 1.0, 0.0])


def test_bnll_value_and_gradient():
    y, g = value_and_grad(make('type: "BNLL"', (3,)), [-1.0, 0.0, 2.0])
    np.testing.assert_allclose(y, [math.log1p(math.exp(-1)), math.log(2), 2 + math.log1p(math.exp(-2))])
    np.testing.assert_allclose(g, [1 / (1 + math.e), 0.5, 1 / (1 + math.exp(-2))])


def test_prelu_default_slope_and_shape():
    layer = make('type: "PReLU"', (2, 3, 4))
    assert tuple(layer.weight.shape) == (3,)
    np.testing.assert_array_equal(layer.weight.detach().numpy(), [0.25] * 3)
    assert tuple(make('type: "PReLU" prelu_param { channel_shared: true }').weight.shape) == (1,)
    with pytest.raises(NetError, match="at least 2 axes"):
        make('type: "PReLU"', (4,))


def test_power_exp_log_threshold():
    y, _ = value_and_grad(make('type: "Power" power_param { power: 2 scale: 0.5 shift: 1.5 }', (2,)), [1.0, -3.0])
    np.testing.assert_allclose(y, [4.0, 0.0])
    y, g = value_and_grad(make('type: "Power" power_param { power: 0 scale: 3 }', (2,)), [1.0, -3.0])
    np.testing.assert_array_equal(y, [1.0, 1.0])
    np.testing.assert_array_equal(g, [0.0, 0.0])
    y, _ = value_and_grad(make('type: "Exp" exp_param { base: 2 scale: 0.5 shift: 1 }', (2,)), [2.0, 0.0])
    np.testing.assert_allclose(y, [4.0, 2.0])
    y, _ = value_and_grad(make('type: "Exp"', (1,)), [1.0])
    np.testing.assert_allclose(y, [math.e])
    y, _ = value_and_grad(make('type: "Log" log_param { base: 10 scale: 2 shift: 0 }', (2,)), [50.0, 0.5])
    np.testing.assert_allclose(y, [2.0, 0.0], atol=1e-12)
    y = make('type: "Threshold" threshold_param { threshold: 0.5 }', (3,))(torch.tensor([0.4, 0.5, 0.6]))
    np.testing.assert_array_equal(y.numpy(), [0.0, 0.0, 1.0])


def test_dropout_scales_in_train_and_is_identity_in_test():
    x = torch.ones(1000, dtype=torch.float64)
    np.testing.assert_array_equal(make('type: "Dropout"', (1000,))(x).numpy(), x.numpy())
    y = make('type: "Dropout" dropout_param { dropout_ratio: 0.25 }', (1000,), phase=caffe_pb2.TRAIN)(x).numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], 1 / 0.75)
    assert 0.65 < kept.mean() < 0.85
