"""The prototxt that ``caffe.NetSpec`` / ``caffe.layers`` / ``caffe.params`` write.

The expected nets are facts of pycaffe's net_spec as Caffe users know them (the LeNet of Caffe's
"learning LeNet" notebook and of its python/caffe/test/test_net_spec.py): layers come in the
order a depth-first walk from the named tops first reaches them, a layer is named after its first
top, unnamed tops are ``<Type><n>`` counted per type in that order (an in-place layer's name
counts too), keyword arguments that are LayerParameter fields stay on the layer and the others
go to the type's ``<type>_param``.  They are written out here as prototxt and compared message
for message.
"""
import pytest
from google.protobuf import text_format

from brewnet.pycaffe.net_spec import (Function, NetSpec, Top, assign_proto, param_name_dict, to_proto)
from brewnet.pycaffe.net_spec import layers as L
from brewnet.pycaffe.net_spec import params as P
from brewnet.proto import caffe_pb2


def net(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


def assert_same(got: caffe_pb2.NetParameter, want_text: str):
    want = net(want_text)
    assert text_format.MessageToString(got) == text_format.MessageToString(want)


LENET_BODY = """
  type: "DummyData" top: "{d}" top: "{l}" transform_param {{ scale: 0.00392156862745098 }}
  dummy_data_param {{ shape {{ dim: 50 dim: 1 dim: 28 dim: 28 }} shape {{ dim: 50 dim: 1 dim: 1 dim: 1 }} }} }}
layer {{ name: "{c1}" type: "Convolution" bottom: "{d}" top: "{c1}"
  convolution_param {{ num_output: 20 kernel_size: 5 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "{p1}" type: "Pooling" bottom: "{c1}" top: "{p1}"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "{c2}" type: "Convolution" bottom: "{p1}" top: "{c2}"
  convolution_param {{ num_output: 50 kernel_size: 5 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "{p2}" type: "Pooling" bottom: "{c2}" top: "{p2}"
  pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "{i1}" type: "InnerProduct" bottom: "{p2}" top: "{i1}"
  inner_product_param {{ num_output: 500 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "{r1}" type: "ReLU" bottom: "{i1}" top: "{i1}" }}
layer {{ name: "{i2}" type: "InnerProduct" bottom: "{i1}" top: "{i2}"
  inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "{loss}" type: "SoftmaxWithLoss" bottom: "{i2}" bottom: "{l}" top: "{loss}" }}
"""


def lenet_tops(n=None):
    """LeNet's layers; with a NetSpec ``n`` each top is named as in Caffe's example."""
    box = n if n is not None else type("Anon", (), {})()
    d, lab = L.DummyData(shape=[dict(dim=[50, 1, 28, 28]), dict(dim=[50, 1, 1, 1])],
                         transform_param=dict(scale=1. / 255), ntop=2)
    box.data, box.label = d, lab
    box.conv1 = L.Convolution(box.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    box.pool1 = L.Pooling(box.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    box.conv2 = L.Convolution(box.pool1, kernel_size=5, num_output=50, weight_filler=dict(type="xavier"))
    box.pool2 = L.Pooling(box.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    box.ip1 = L.InnerProduct(box.pool2, num_output=500, weight_filler=dict(type="xavier"))
    box.relu1 = L.ReLU(box.ip1, in_place=True)
    box.ip2 = L.InnerProduct(box.relu1, num_output=10, weight_filler=dict(type="xavier"))
    box.loss = L.SoftmaxWithLoss(box.ip2, box.label)
    return box


def test_named_lenet():
    n = NetSpec()
    lenet_tops(n)
    assert_same(n.to_proto(), 'layer { name: "data"' + LENET_BODY.format(
        d="data", l="label", c1="conv1", p1="pool1", c2="conv2", p2="pool2", i1="ip1", r1="relu1",
        i2="ip2", loss="loss"))


def test_anonymous_lenet_auto_names():
    box = lenet_tops()
    want = 'layer { name: "DummyData1"' + LENET_BODY.format(
        d="DummyData1", l="DummyData2", c1="Convolution1", p1="Pooling1", c2="Convolution2",
        p2="Pooling2", i1="InnerProduct1", r1="ReLU1", i2="InnerProduct2", loss="SoftmaxWithLoss1")
    assert_same(box.loss.to_proto(), want)
    assert_same(to_proto(box.loss), want)


def test_layers_without_tops():
    n = NetSpec()
    n.data, n.data2 = L.DummyData(shape=dict(dim=3), ntop=2)
    n.silence_data = L.Silence(n.data, ntop=0)
    n.silence_data2 = L.Silence(n.data2, ntop=0)
    assert isinstance(n.silence_data, Function) and n.silence_data.tops == ()
    assert_same(n.to_proto(), """
        layer { name: "data" type: "DummyData" top: "data" top: "data2" dummy_data_param { shape { dim: 3 } } }
        layer { name: "silence_data" type: "Silence" bottom: "data" }
        layer { name: "silence_data2" type: "Silence" bottom: "data2" }""")


def test_multiple_tops_partly_named_and_counters_per_type():
    n = NetSpec()
    first, second = L.DummyData(shape=[dict(dim=[2, 3]), dict(dim=[2])], ntop=2)
    n.second = second                                   # only the second top is named
    hidden = L.InnerProduct(first, num_output=4)        # InnerProduct1
    n.fc = L.InnerProduct(hidden, num_output=2)         # named: does not count
    n.fc_out = L.InnerProduct(L.ReLU(n.fc), num_output=1)
    n.sum = L.Eltwise(L.InnerProduct(n.fc, num_output=1), n.fc_out, operation=P.Eltwise.SUM)
    assert_same(n.to_proto(), """
        layer { name: "DummyData1" type: "DummyData" top: "DummyData1" top: "second"
                dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
        layer { name: "InnerProduct1" type: "InnerProduct" bottom: "DummyData1" top: "InnerProduct1"
                inner_product_param { num_output: 4 } }
        layer { name: "fc" type: "InnerProduct" bottom: "InnerProduct1" top: "fc"
                inner_product_param { num_output: 2 } }
        layer { name: "ReLU1" type: "ReLU" bottom: "fc" top: "ReLU1" }
        layer { name: "fc_out" type: "InnerProduct" bottom: "ReLU1" top: "fc_out"
                inner_product_param { num_output: 1 } }
        layer { name: "InnerProduct2" type: "InnerProduct" bottom: "fc" top: "InnerProduct2"
                inner_product_param { num_output: 1 } }
        layer { name: "sum" type: "Eltwise" bottom: "InnerProduct2" bottom: "fc_out" top: "sum"
                eltwise_param { operation: SUM } }""")


def test_in_place_names_and_counts():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 4]))
    relu = L.ReLU(n.data, in_place=True)                # in place, unnamed: its name is ReLU1
    n.drop = L.Dropout(relu, in_place=True, dropout_ratio=0.25)
    n.out = L.ReLU(n.drop)                              # a fresh top: ReLU2
    n.out2 = L.TanH(L.ReLU(n.out))
    assert_same(n.to_proto(), """
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 } } }
        layer { name: "ReLU1" type: "ReLU" bottom: "data" top: "data" }
        layer { name: "drop" type: "Dropout" bottom: "data" top: "data" dropout_param { dropout_ratio: 0.25 } }
        layer { name: "out" type: "ReLU" bottom: "data" top: "out" }
        layer { name: "ReLU2" type: "ReLU" bottom: "out" top: "ReLU2" }
        layer { name: "out2" type: "TanH" bottom: "ReLU2" top: "out2" }""")


def test_order_follows_the_walk_from_the_named_tops():
    data = L.Input(shape=dict(dim=[1, 2]))
    n = NetSpec()
    n.b = L.ReLU(data)          # assigned before its bottom gets its name
    n.a = data
    n.c = L.Concat(n.a, n.b, n.a)
    assert_same(n.to_proto(), """
        layer { name: "a" type: "Input" top: "a" input_param { shape { dim: 1 dim: 2 } } }
        layer { name: "b" type: "ReLU" bottom: "a" top: "b" }
        layer { name: "c" type: "Concat" bottom: "a" bottom: "b" bottom: "a" top: "c" }""")


def test_to_proto_of_several_tops_shares_the_counters():
    x = L.Input(shape=dict(dim=[1]))
    y1, y2 = L.ReLU(x), L.ReLU(x)
    assert_same(to_proto(y1, y2), """
        layer { name: "Input1" type: "Input" top: "Input1" input_param { shape { dim: 1 } } }
        layer { name: "ReLU1" type: "ReLU" bottom: "Input1" top: "ReLU1" }
        layer { name: "ReLU2" type: "ReLU" bottom: "Input1" top: "ReLU2" }""")


def test_layer_fields_type_params_and_values():
    n = NetSpec()
    n.data = L.Data(source="train_lmdb", backend=P.Data.LMDB, batch_size=64, ntop=1,
                    include=dict(phase=caffe_pb2.TRAIN), transform_param=dict(mirror=True, crop_size=28))
    n.conv = L.Convolution(n.data, name="conv_one", num_output=8, kernel_size=[3, 5], pad=1,
                           param=[dict(lr_mult=1, decay_mult=1), dict(lr_mult=2, decay_mult=0)],
                           weight_filler=caffe_pb2.FillerParameter(type="gaussian", std=0.5),
                           bias_filler=dict(type="constant", value=0.25), propagate_down=[False])
    n.up = L.Deconvolution(n.conv, convolution_param=dict(num_output=2, kernel_size=4, stride=2))
    n.pool = L.Pooling(n.up, pool=P.Pooling.AVE, global_pooling=True)
    n.loss = L.EuclideanLoss(n.pool, n.data, loss_weight=0.5, exclude=[dict(stage="deploy")])
    assert_same(n.to_proto(), """
        layer { name: "data" type: "Data" top: "data" include { phase: TRAIN }
                transform_param { mirror: true crop_size: 28 }
                data_param { source: "train_lmdb" batch_size: 64 backend: LMDB } }
        layer { name: "conv_one" type: "Convolution" bottom: "data" top: "conv"
                param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
                propagate_down: false
                convolution_param { num_output: 8 pad: 1 kernel_size: 3 kernel_size: 5
                                    weight_filler { type: "gaussian" std: 0.5 }
                                    bias_filler { type: "constant" value: 0.25 } } }
        layer { name: "up" type: "Deconvolution" bottom: "conv" top: "up"
                convolution_param { num_output: 2 kernel_size: 4 stride: 2 } }
        layer { name: "pool" type: "Pooling" bottom: "up" top: "pool" pooling_param { pool: AVE global_pooling: true } }
        layer { name: "loss" type: "EuclideanLoss" bottom: "pool" bottom: "data" top: "loss" loss_weight: 0.5
                exclude { stage: "deploy" } }""")


def test_a_net_spec_is_reusable_and_indexable():
    n = NetSpec()
    n["data"] = L.Input(shape=dict(dim=[1]))
    n.relu = L.ReLU(n["data"])
    assert n.data is n["data"] and isinstance(n.relu, Top) and list(n.tops) == ["data", "relu"]
    assert n.to_proto() == n.to_proto()
    with pytest.raises(AttributeError):
        n.missing


def test_params_namespace_gives_enum_numbers():
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    assert P.Pooling.STOCHASTIC == 2 and P.Eltwise.PROD == 0 and P.Eltwise.MAX == 2
    assert P.Convolution.CUDNN == caffe_pb2.ConvolutionParameter.CUDNN
    with pytest.raises(AttributeError, match="Pooling has no enum value 'MEDIAN'"):
        P.Pooling.MEDIAN


def test_param_name_dict_and_assign_proto():
    names = param_name_dict()
    assert names["Convolution"] == "convolution" and names["InnerProduct"] == "inner_product"
    assert names["Deconvolution"] == "convolution" and names["DummyData"] == "dummy_data"
    lp = caffe_pb2.LayerParameter()
    assign_proto(lp, "bottom", "x")                 # one value for a repeated field
    assign_proto(lp, "top", ["y", "z"])
    assign_proto(lp, "param", dict(lr_mult=3))      # one message for a repeated message field
    assign_proto(lp, "convolution_param", dict(kernel_size=3, weight_filler=dict(type="xavier")))
    assert_same(caffe_pb2.NetParameter(layer=[lp]), """
        layer { bottom: "x" top: "y" top: "z" param { lr_mult: 3 }
                convolution_param { kernel_size: 3 weight_filler { type: "xavier" } } }""")


def test_bad_calls_say_what_is_wrong():
    two = L.DummyData(ntop=2)
    with pytest.raises(TypeError, match=r"^Silence input 0 is not a Top \(type is <class 'tuple'>\)$"):
        L.Silence(two, ntop=0)
    L.Silence(*two, ntop=0)
    with pytest.raises(ValueError, match="in_place=True needs exactly one bottom"):
        L.Eltwise(*two, in_place=True)
    with pytest.raises(AttributeError, match="layer type 'Silence' takes no parameter 'axis'"):
        spec_of(L.Silence(two[0], axis=1, ntop=0))
    with pytest.raises(AttributeError, match="ConvolutionParameter has no field 'kernal_size'"):
        to_proto(L.Convolution(two[0], kernal_size=3))


def spec_of(fn: Function) -> caffe_pb2.NetParameter:
    n = NetSpec()
    n.s = fn
    return n.to_proto()
