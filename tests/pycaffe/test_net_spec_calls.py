"""caffe.NetSpec with caffe.layers and caffe.params: a small LeNet written with named and with
anonymous tops, in-place layers, layers without tops, and the TypeError for a bottom that is not a
Top.  Each prototxt is loaded into a caffe.Net from a file, whose blob shapes are checked."""
from __future__ import annotations

import pytest

import brewnet as caffe
from brewnet import layers as L
from brewnet import params as P
from pycaffe.nets import write

BATCH = 2
# 12x12 -> conv 3: 10x10 -> pool 2/2: 5x5 -> conv 2: 4x4 -> pool 2/2: 2x2
SHAPES = {"conv1": (BATCH, 4, 10, 10), "pool1": (BATCH, 4, 5, 5), "conv2": (BATCH, 6, 4, 4),
          "pool2": (BATCH, 6, 2, 2), "ip1": (BATCH, 8), "ip2": (BATCH, 3), "loss": ()}
TYPES = ["DummyData", "Convolution", "Pooling", "Convolution", "Pooling", "InnerProduct", "ReLU",
         "InnerProduct", "SoftmaxWithLoss"]


def _data():
    return L.DummyData(shape=[dict(dim=[BATCH, 1, 12, 12]), dict(dim=[BATCH])],
                       transform_param=dict(scale=1. / 255), ntop=2)


def _conv(bottom, outputs: int, kernel: int):
    return L.Convolution(bottom, kernel_size=kernel, num_output=outputs, weight_filler=dict(type="xavier"))


def _pool(bottom):
    return L.Pooling(bottom, kernel_size=2, stride=2, pool=P.Pooling.MAX)


def named_lenet():
    n = caffe.NetSpec()
    n.data, n.label = _data()
    n.conv1 = _conv(n.data, 4, 3)
    n.pool1 = _pool(n.conv1)
    n.conv2 = _conv(n.pool1, 6, 2)
    n.pool2 = _pool(n.conv2)
    n.ip1 = L.InnerProduct(n.pool2, num_output=8, weight_filler=dict(type="xavier"))
    n.relu1 = L.ReLU(n.ip1, in_place=True)
    n.ip2 = L.InnerProduct(n.relu1, num_output=3, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.ip2, n.label)
    return n.to_proto()


def anonymous_lenet():
    data, label = _data()
    relu = L.ReLU(L.InnerProduct(_pool(_conv(_pool(_conv(data, 4, 3)), 6, 2)), num_output=8,
                                 weight_filler=dict(type="xavier")), in_place=True)
    loss = L.SoftmaxWithLoss(L.InnerProduct(relu, num_output=3, weight_filler=dict(type="xavier")), label)
    return loss.to_proto()


def _load(tmp_path, proto) -> caffe.Net:
    return caffe.Net(write(tmp_path, str(proto)), caffe.TEST)


def test_named_lenet(tmp_path):
    proto = named_lenet()
    assert [layer.type for layer in proto.layer] == TYPES
    assert [layer.name for layer in proto.layer][1:] == \
        ["conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "loss"]
    relu = proto.layer[6]
    assert list(relu.bottom) == list(relu.top) == ["ip1"]  # in place
    assert proto.layer[0].transform_param.scale == pytest.approx(1 / 255)  # a LayerParameter field
    assert proto.layer[2].pooling_param.pool == caffe.proto.caffe_pb2.PoolingParameter.MAX
    net = _load(tmp_path, proto)
    assert len(net.layers) == 9
    for name, shape in SHAPES.items():
        assert net.blobs[name].data.shape == shape, name


def test_anonymous_lenet_gets_unique_names(tmp_path):
    proto = anonymous_lenet()
    assert [layer.type for layer in proto.layer] == TYPES
    names = [layer.name for layer in proto.layer]
    assert len(set(names)) == len(names) and all(names)
    relu = proto.layer[6]
    assert list(relu.bottom) == list(relu.top)
    net = _load(tmp_path, proto)
    assert len(net.layers) == 9
    assert net.outputs == [proto.layer[-1].top[0]]
    assert [net.blobs[proto.layer[i].top[0]].data.shape for i in (1, 2, 3, 4, 5, 7)] == \
        [SHAPES[k] for k in ("conv1", "pool1", "conv2", "pool2", "ip1", "ip2")]


def test_layers_without_tops(tmp_path):
    n = caffe.NetSpec()
    n.a, n.b = L.DummyData(shape=dict(dim=[2, 5]), ntop=2)
    n.silence_a = L.Silence(n.a, ntop=0)
    n.silence_b = L.Silence(n.b, ntop=0)
    proto = n.to_proto()
    assert [(layer.type, list(layer.bottom), list(layer.top)) for layer in proto.layer] == [
        ("DummyData", [], ["a", "b"]), ("Silence", ["a"], []), ("Silence", ["b"], [])]
    net = _load(tmp_path, proto)
    assert net.outputs == []
    assert net.forward() == {}


def test_a_bottom_that_is_not_a_top_is_a_type_error():
    n = caffe.NetSpec()
    tops = L.DummyData(shape=dict(dim=[2]), ntop=2)  # a tuple of two Tops
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"):
        L.Silence(tops, ntop=0)
    n.a, n.b = tops
    n.silence = L.Silence(*tops, ntop=0)  # each Top on its own is fine
    assert list(n.to_proto().layer[-1].bottom) == ["a", "b"]
