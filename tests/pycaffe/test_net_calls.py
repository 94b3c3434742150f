"""caffe.Net opened from a prototxt file: blobs and params that outlive the net, layer_dict,
forward and backward over the whole net and over one layer, clear_param_diffs, the name maps,
caffemodel and HDF5 weights, and NetState levels and stages."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

import brewnet as caffe
from numeric import assert_close_f32
from pycaffe.nets import CLASSES, N, NET, write


@pytest.fixture
def net_file(tmp_path) -> str:
    return write(tmp_path, NET)


@pytest.fixture
def net(net_file) -> caffe.Net:
    caffe.set_random_seed(11)
    return caffe.Net(net_file, caffe.TRAIN)


def _softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_blob_and_param_arrays_outlive_the_net(net):
    net.forward()
    net.backward()
    blobs = [b for ps in net.params.values() for b in ps] + list(net.blobs.values())
    saved = [(b.data.copy(), b.diff.copy()) for b in blobs]
    del net
    gc.collect()
    for b, (data, diff) in zip(blobs, saved):
        np.testing.assert_array_equal(b.data, data)  # the same memory, read again: exact
        np.testing.assert_array_equal(b.diff, diff)


def test_layer_dict_is_keyed_by_layer_name_in_net_order(net):
    assert list(net.layer_dict) == list(net._layer_names) == ["data", "conv", "ip", "loss"]
    assert [layer.type for layer in net.layer_dict.values()] == \
        ["DummyData", "Convolution", "InnerProduct", "SoftmaxWithLoss"]
    for i, name in enumerate(net._layer_names):
        assert net.layer_dict[name] is net.layers[i]


def test_forward_gives_the_softmax_loss_and_backward_its_gradient(net):
    out = net.forward()
    assert list(out) == ["loss"]
    scores = net.blobs["ip_out"].data.astype(np.float64)  # (N, CLASSES)
    labels = net.blobs["label"].data.reshape(N).astype(int)
    assert labels.tolist() == [2] * N  # the constant filler
    p = _softmax(scores)
    assert_close_f32(out["loss"], -np.log(p[np.arange(N), labels]).mean())
    net.backward()
    # d loss / d score = (softmax - one-hot) / N
    expected = p.copy()
    expected[np.arange(N), labels] -= 1
    assert_close_f32(net.blobs["ip_out"].diff, expected / N)


def test_force_backward_gives_the_diff_of_a_data_layers_top(net):
    """Caffe's force_backward makes every layer write the diffs of the bottoms that allow it,
    also where a data layer made the bottom: here the conv's gradient w.r.t. the images."""
    net.forward()
    net.backward()
    x = torch.tensor(net.blobs["data"].data, dtype=torch.float64, requires_grad=True)
    w, b = (torch.tensor(p.data, dtype=torch.float64) for p in net.params["conv"])
    torch.nn.functional.conv2d(x, w, b, padding=2).backward(
        torch.tensor(net.blobs["conv"].diff, dtype=torch.float64))
    assert net.blobs["data"].diff.any()
    assert_close_f32(net.blobs["data"].diff, x.grad)


def test_forward_over_one_layer_recomputes_only_it(net):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=net.blobs["conv"].data.shape).astype(np.float32)  # (3, 5, 6, 6)
    net.blobs["conv"].data[...] = x
    out = net.forward(start="ip", end="ip")
    assert list(out) == ["ip_out"]
    w, b = (p.data.astype(np.float64) for p in net.params["ip"])  # (7, 180), (7,)
    assert_close_f32(out["ip_out"], x.reshape(N, -1) @ w.T + b)
    np.testing.assert_array_equal(net.blobs["conv"].data, x)  # conv did not run again


def test_backward_over_one_layer_gives_its_bottom_diff(net):
    net.forward()
    d = np.random.default_rng(1).normal(size=(N, CLASSES)).astype(np.float32)
    net.blobs["ip_out"].diff[...] = d
    grads = net.backward(start="ip", end="ip")
    assert list(grads) == ["conv"]
    w = net.params["ip"][0].data.astype(np.float64)
    expected = (d @ w).reshape(net.blobs["conv"].data.shape)
    assert_close_f32(net.blobs["conv"].diff, expected)
    assert_close_f32(grads["conv"], expected)


def test_clear_param_diffs_zeroes_every_param_diff_and_keeps_the_data(net):
    net.forward()
    net.backward()
    params = [p for ps in net.params.values() for p in ps]
    assert len(params) == 4 and all(p.diff.any() for p in params)
    data = [p.data.copy() for p in params]
    net.clear_param_diffs()
    for p, before in zip(params, data):
        assert not p.diff.any()
        np.testing.assert_array_equal(p.data, before)


def test_inputs_outputs_and_the_name_maps(net):
    assert net.inputs == [] and net.outputs == ["loss"]  # DummyData is a layer, not an input
    assert list(net.top_names.items()) == [
        ("data", ["data", "label"]), ("conv", ["conv"]), ("ip", ["ip_out"]), ("loss", ["loss"])]
    assert list(net.bottom_names.items()) == [
        ("data", []), ("conv", ["data"]), ("ip", ["conv"]), ("loss", ["ip_out", "label"])]


def _set_distinct_params(net: caffe.Net) -> None:
    """Values no filler gives, so that a net that loaded them cannot agree by chance."""
    for ps in net.params.values():
        for k, p in enumerate(ps):
            p.data[...] = np.linspace(-1, 1 + k, p.count).reshape(p.data.shape)


def _params(net: caffe.Net) -> dict:
    return {(name, k): p.data.copy() for name, ps in net.params.items() for k, p in enumerate(ps)}


@pytest.mark.parametrize("form", ["legacy positional weights", "weights keyword", "copy_from"])
def test_caffemodel_round_trip(net, net_file, tmp_path, form):
    _set_distinct_params(net)
    weights = str(tmp_path / "calls.caffemodel")
    net.save(weights)
    if form == "legacy positional weights":
        other = caffe.Net(net_file, weights, caffe.TRAIN)
    elif form == "weights keyword":
        other = caffe.Net(net_file, caffe.TRAIN, weights=weights)
    else:
        other = caffe.Net(net_file, caffe.TRAIN)
        other.copy_from(weights)
    saved, loaded = _params(net), _params(other)
    assert saved.keys() == loaded.keys()
    for key in saved:
        np.testing.assert_array_equal(loaded[key], saved[key])  # a file round trip: exact
    assert not np.array_equal(_params(caffe.Net(net_file, caffe.TRAIN))[("ip", 0)], saved[("ip", 0)])


def test_hdf5_round_trip(net, net_file, tmp_path):
    _set_distinct_params(net)
    weights = str(tmp_path / "calls.h5")
    net.save_hdf5(weights)
    other = caffe.Net(net_file, caffe.TRAIN)
    other.load_hdf5(weights)
    saved, loaded = _params(net), _params(other)
    assert saved.keys() == loaded.keys()
    for key in saved:
        np.testing.assert_array_equal(loaded[key], saved[key])


# ----- NetState: levels and stages ---------------------------------------------------------
def _ip(name: str, rule: str = "") -> str:
    return (f'layer {{ name: "{name}" type: "InnerProduct" bottom: "data" top: "{name}" {rule} '
            'inner_product_param { num_output: 2 } }\n')


DATA = 'layer { name: "data" type: "DummyData" top: "data" dummy_data_param { shape { dim: 2 dim: 3 } } }\n'

LEVELS = DATA + _ip("always") + _ip("only_1", "include { min_level: 1 max_level: 1 }") + \
    _ip("up_to_1", "include { max_level: 1 }") + _ip("from_2", "include { min_level: 2 }") + \
    _ip("not_1", "exclude { min_level: 1 max_level: 1 }")

STAGES = DATA + _ip("in_x", 'include { stage: "x" }') + _ip("in_y", 'include { stage: "y" }') + \
    _ip("x_or_y", 'include { stage: "x" } include { stage: "y" }') + \
    _ip("x_and_y", 'include { stage: "x" stage: "y" }') + _ip("not_x", 'exclude { stage: "x" }')


def _layers(net: caffe.Net) -> list[str]:
    """The InnerProduct layers the net kept (not the data layer, nor the split that feeds them)."""
    return [name for name, layer in net.layer_dict.items() if layer.type == "InnerProduct"]


@pytest.mark.parametrize("level,expected", [
    (None, ["always", "up_to_1", "not_1"]),  # the default level is 0
    (1, ["always", "only_1", "up_to_1"]),
    (2, ["always", "from_2", "not_1"]),
])
def test_levels_pick_layers(tmp_path, level, expected):
    kwargs = {} if level is None else {"level": level}
    assert _layers(caffe.Net(write(tmp_path, LEVELS), caffe.TEST, **kwargs)) == expected


@pytest.mark.parametrize("stages,expected", [
    ([], ["not_x"]),
    (["x"], ["in_x", "x_or_y"]),
    (["y"], ["in_y", "x_or_y", "not_x"]),
    (["x", "y"], ["in_x", "in_y", "x_or_y", "x_and_y"]),
])
def test_stages_pick_layers(tmp_path, stages, expected):
    assert _layers(caffe.Net(write(tmp_path, STAGES), caffe.TEST, stages=stages)) == expected


# one file for training, validation and deployment, told apart by phase and stage
ALL_IN_ONE = """
layer { name: "train_data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 6 } shape { dim: 4 } }
  include { phase: TRAIN stage: "train" } }
layer { name: "val_data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 6 } shape { dim: 2 } }
  include { phase: TEST stage: "val" } }
layer { name: "deploy_data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 6 } }
  include { phase: TEST stage: "deploy" } }
layer { name: "score" type: "InnerProduct" bottom: "data" top: "score" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  include { phase: TRAIN stage: "train" } include { phase: TEST stage: "val" } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" include { phase: TEST stage: "deploy" } }
"""


@pytest.mark.parametrize("phase,stage,batch,inputs,outputs", [
    (caffe.TRAIN, "train", 4, [], ["loss"]),
    (caffe.TEST, "val", 2, [], ["loss"]),
    (caffe.TEST, "deploy", 1, ["data"], ["prob"]),
])
def test_all_in_one_net_by_phase_and_stage(tmp_path, phase, stage, batch, inputs, outputs):
    net = caffe.Net(write(tmp_path, ALL_IN_ONE), phase, stages=[stage])
    assert net.blobs["data"].shape == (batch, 6)
    assert net.inputs == inputs and net.outputs == outputs
    assert set(net.forward()) == set(outputs)
