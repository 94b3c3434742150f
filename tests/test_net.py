"""The Net: NetState rules, wiring checks, sharing, loss weights, propagate_down, fillers, errors."""
from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

import brewnet
from brewnet.errors import NetError
from brewnet.formats import net_from_text
from brewnet.fillers import fill
from brewnet.proto import caffe_pb2
from numeric import assert_close_f32


def make(text: str, phase=brewnet.TEST, **kw) -> brewnet.Net:
    return brewnet.Net(net_from_text(text), phase, **kw)


INPUT = 'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }\n'


# ----- NetState rules ------------------------------------------------------------------------
RULES = INPUT + """
layer { name: "train_only" type: "ReLU" bottom: "data" top: "a" include { phase: TRAIN } }
layer { name: "test_only" type: "ReLU" bottom: "data" top: "b" include { phase: TEST } }
layer { name: "not_deploy" type: "ReLU" bottom: "data" top: "c" exclude { stage: "deploy" } }
layer { name: "level2" type: "ReLU" bottom: "data" top: "d" include { min_level: 2 } }
layer { name: "staged" type: "ReLU" bottom: "data" top: "e" include { stage: "x" stage: "y" } }
layer { name: "either" type: "ReLU" bottom: "data" top: "f" include { phase: TRAIN } include { stage: "x" } }
"""


@pytest.mark.parametrize("phase,level,stages,expected", [
    (brewnet.TRAIN, 0, (), {"data", "train_only", "not_deploy", "either"}),
    (brewnet.TEST, 0, (), {"data", "test_only", "not_deploy"}),
    (brewnet.TEST, 0, ("deploy",), {"data", "test_only"}),
    (brewnet.TEST, 3, ("x",), {"data", "test_only", "not_deploy", "level2", "either"}),
    (brewnet.TEST, 0, ("x", "y"), {"data", "test_only", "not_deploy", "staged", "either"}),
])
def test_netstate_rules(phase, level, stages, expected):
    net = make(RULES, phase, level=level, stages=stages)
    assert {n for n in net._layer_names if not n.endswith("_split")} == expected


def test_include_and_exclude_together_is_an_error():
    with pytest.raises(NetError, match="either include or exclude"):
        make(INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "r" '
                     'include { phase: TRAIN } exclude { phase: TEST } }')


def test_same_name_train_and_test_layers_share_statistics_through_share_with():
    text = INPUT + """
    layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" include { phase: TRAIN }
            batch_norm_param { use_global_stats: false } }
    layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" include { phase: TEST }
            batch_norm_param { use_global_stats: true } }
    """
    train, test = make(text, brewnet.TRAIN), make(text, brewnet.TEST)
    test.share_with(train)
    train.forward(data=np.random.randn(2, 3))
    assert test.params["bn"][2].data[0] == pytest.approx(1.0)  # the factor TRAIN just updated
    assert np.shares_memory(test.params["bn"][0].data, train.params["bn"][0].data)


# ----- wiring --------------------------------------------------------------------------------
def test_unknown_bottom_names_layer_and_known_blobs():
    with pytest.raises(NetError, match=r"layer 'r' \(ReLU\): unknown bottom blob 'dat'.*data"):
        make(INPUT + 'layer { name: "r" type: "ReLU" bottom: "dat" top: "r" }')


def test_unknown_layer_type_lists_closest_types():
    with pytest.raises(NetError, match=r"layer 'c': unknown layer type 'Convolutoin'.*'Convolution'"):
        make(INPUT + 'layer { name: "c" type: "Convolutoin" bottom: "data" top: "c" }')
    with pytest.raises(NetError, match="'ReLU'"):
        make(INPUT + 'layer { name: "r" type: "relu" bottom: "data" top: "r" }')


def test_wrong_number_of_bottoms():
    with pytest.raises(NetError, match=r"layer 'loss' \(SoftmaxWithLoss\): takes 2 to 3 bottoms, got 1|"
                                       r"layer 'loss' \(SoftmaxWithLoss\): takes 2 bottoms, got 1"):
        make(INPUT + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "data" top: "loss" }')


def test_two_producers_of_one_top():
    with pytest.raises(NetError, match="produced by more than one layer"):
        make(INPUT + 'layer { name: "a" type: "ReLU" bottom: "data" top: "x" }\n'
                     'layer { name: "b" type: "Sigmoid" bottom: "data" top: "x" }')


def test_shape_error_names_layer_and_shapes():
    with pytest.raises(NetError, match=r"layer 'e' \(Eltwise\).*\(2, 3\).*\(2, 4\)|layer 'e' \(Eltwise\)"):
        make(INPUT + 'layer { name: "d2" type: "Input" top: "d2" input_param { shape { dim: 2 dim: 4 } } }\n'
                     'layer { name: "e" type: "Eltwise" bottom: "data" bottom: "d2" top: "e" }')


def test_duplicate_layer_names():
    with pytest.raises(NetError, match="two layers are named 'r'"):
        make(INPUT + 'layer { name: "r" type: "ReLU" bottom: "data" top: "x" }\n'
                     'layer { name: "r" type: "ReLU" bottom: "x" top: "y" }')


# ----- loss weights, propagate_down, force_backward, in-place ----------------------------------
def test_loss_weight_scales_loss_and_gradient():
    text = "force_backward: true\n" + INPUT + INPUT.replace('"data"', '"t"') + """
    layer { name: "eu" type: "EuclideanLoss" bottom: "data" bottom: "t" top: "eu" loss_weight: 3 }
    """
    net = make(text, brewnet.TRAIN)
    x, t = np.random.randn(2, 3), np.random.randn(2, 3)
    net.forward(data=x, t=t)
    loss, _ = net.forward_loss()
    expected = ((x - t) ** 2).sum() / 2 / 2
    assert float(loss.detach()) == pytest.approx(3 * expected, rel=1e-5)
    net.forward(data=x, t=t)
    net.backward()
    assert_close_f32(net.blobs["data"].diff, 3 * (x - t) / 2, rtol=1e-5)  # float32 vs float64


def test_propagate_down_false_stops_gradient():
    text = INPUT + """
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2
            weight_filler { type: "gaussian" } } }
    layer { name: "r" type: "ReLU" bottom: "ip" top: "r" propagate_down: false }
    layer { name: "s" type: "Reduction" bottom: "r" top: "s" loss_weight: 1 }
    """
    net = make(text, brewnet.TRAIN)
    net.forward(data=np.random.randn(2, 3))
    net.backward()
    assert not net.params["ip"][0].diff.any()


def test_force_backward_gives_input_diffs_and_without_it_none():
    base = INPUT + 'layer { name: "s" type: "Sigmoid" bottom: "data" top: "s" }'
    x = np.random.randn(2, 3).astype(np.float32)
    net = make("force_backward: true\n" + base)
    net.forward(data=x)
    net.blobs["s"].diff[...] = 1
    net.backward()
    sig = 1 / (1 + np.exp(-x))
    assert_close_f32(net.blobs["data"].diff, sig * (1 - sig), rtol=1e-5)  # float32 exp: kernels differ by CPU
    deploy = make(base)
    deploy.forward(data=x)  # no loss, no force_backward: nothing recorded for backward
    with pytest.raises(NetError, match="backward"):
        deploy.backward()


def test_in_place_chain_keeps_last_data_and_first_diff():
    text = "force_backward: true\n" + INPUT + """
    layer { name: "p" type: "Power" bottom: "data" top: "x" power_param { scale: 2 } }
    layer { name: "r" type: "Power" bottom: "x" top: "x" power_param { scale: 3 } }
    layer { name: "e" type: "Power" bottom: "x" top: "y" }
    """
    net = make(text)
    x = np.random.randn(2, 3)
    net.forward(data=x)
    np.testing.assert_allclose(net.blobs["x"].data, 6 * x, rtol=1e-6)
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_allclose(net.blobs["x"].diff, 3, rtol=1e-6)  # w.r.t. the first value of x
    np.testing.assert_allclose(net.blobs["data"].diff, 6, rtol=1e-6)


def test_param_sharing_by_name():
    text = INPUT + """
    layer { name: "a" type: "InnerProduct" bottom: "data" top: "a" param { name: "w" } param { name: "b" }
            inner_product_param { num_output: 4 weight_filler { type: "gaussian" } } }
    layer { name: "b" type: "InnerProduct" bottom: "data" top: "b" param { name: "w" } param { name: "b" }
            inner_product_param { num_output: 4 } }
    layer { name: "bad" type: "InnerProduct" bottom: "a" top: "c" param { name: "w" }
            inner_product_param { num_output: 4 } }
    """
    with pytest.raises(NetError, match="cannot share param 'w'"):
        make(text)
    net = make(text.rsplit("layer {", 1)[0])
    out = net.forward(data=np.random.randn(2, 3))
    np.testing.assert_array_equal(out["a"], out["b"])  # exact: one weight tensor, the same product twice
    assert len(net.learnable) == 2  # shared blobs are learned once


# ----- fillers -------------------------------------------------------------------------------
def _filler(**kw):
    return caffe_pb2.FillerParameter(**kw)


def test_filler_fan_rules():
    g = torch.Generator().manual_seed(0)
    shape = (64, 32, 3, 3)  # fan_in 288, fan_out 576
    x = fill(_filler(type="xavier"), shape, g)
    assert x.abs().max() <= np.sqrt(3 / 288) + 1e-7 and x.abs().max() > 0.9 * np.sqrt(3 / 288)
    x = fill(_filler(type="xavier", variance_norm=caffe_pb2.FillerParameter.FAN_OUT), shape, g)
    assert x.abs().max() <= np.sqrt(3 / 576) + 1e-7
    x = fill(_filler(type="msra", variance_norm=caffe_pb2.FillerParameter.AVERAGE), (500, 400), g)
    assert float(x.std()) == pytest.approx(np.sqrt(2 / 450), rel=0.02)
    x = fill(_filler(type="positive_unitball"), (5, 7), g)
    np.testing.assert_allclose(x.sum(1).numpy(), 1, rtol=1e-6)
    x = fill(_filler(type="gaussian", std=1, sparse=2), (100, 300), g)
    assert float((x != 0).float().mean()) == pytest.approx(2 / 100, abs=0.005)
    x = fill(_filler(type="bilinear"), (1, 1, 4, 4), g)
    np.testing.assert_allclose(x[0, 0, 0].numpy(), [0.0625, 0.1875, 0.1875, 0.0625])
    x = fill(_filler(type="uniform", min=-2, max=-1), (100,), g)
    assert float(x.min()) >= -2 and float(x.max()) <= -1
    assert float(fill(None, (3,), g).abs().sum()) == 0


def test_fillers_are_seeded():
    text = INPUT + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" ' \
                   'inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }'
    brewnet.set_random_seed(5)
    a = make(text).params["ip"][0].data.copy()
    brewnet.set_random_seed(5)
    b = make(text).params["ip"][0].data.copy()
    np.testing.assert_array_equal(a, b)


def test_unknown_filler_type():
    with pytest.raises(NetError, match="unknown filler type 'xavir'"):
        make(INPUT + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                     'inner_product_param { num_output: 4 weight_filler { type: "xavir" } } }')


# ----- weights -------------------------------------------------------------------------------
IP_NET = INPUT + ('layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                  'inner_product_param { num_output: 4 } }')


def test_mismatched_weights_name_layer_and_shapes(tmp_path):
    path = str(tmp_path / "w.caffemodel")
    make(IP_NET.replace("num_output: 4", "num_output: 5")).save(path)
    with pytest.raises(NetError, match=r"layer 'ip' \(InnerProduct\): blob 0 shape mismatch: caffemodel has "
                                       r"\(5, 3\), the net expects \(4, 3\)"):
        make(IP_NET, weights=path)


def test_weights_report_missing_and_ignored(tmp_path):
    path = str(tmp_path / "w.caffemodel")
    make(IP_NET.replace('name: "ip"', 'name: "other"')).save(path)
    net = make(IP_NET)
    report = net.copy_from(path)
    assert report.missing == ["ip"] and report.ignored == ["other"]


def test_saved_caffemodel_is_a_netparameter_with_every_blob(tmp_path):
    path = str(tmp_path / "w.caffemodel")
    net = make(IP_NET)
    net.save(path)
    param = caffe_pb2.NetParameter()
    param.ParseFromString(open(path, "rb").read())
    ip = [lp for lp in param.layer if lp.name == "ip"][0]
    assert [list(b.shape.dim) for b in ip.blobs] == [[4, 3], [4]]
    np.testing.assert_array_equal(np.array(ip.blobs[0].data).reshape(4, 3), net.params["ip"][0].data)


# ----- pycaffe surface -----------------------------------------------------------------------
def test_pycaffe_constructor_forms(tmp_path):
    proto = tmp_path / "n.prototxt"
    proto.write_text(IP_NET)
    weights = str(tmp_path / "w.caffemodel")
    brewnet.Net(str(proto), brewnet.TEST).save(weights)
    a = brewnet.Net(str(proto), weights, brewnet.TEST)
    b = brewnet.Net(str(proto), brewnet.TEST, weights=weights)
    np.testing.assert_array_equal(a.params["ip"][0].data, b.params["ip"][0].data)
    with pytest.raises(NetError, match="not found"):
        brewnet.Net(str(tmp_path / "missing.prototxt"), brewnet.TEST)


def test_blob_arrays_are_live_and_survive_the_net():
    net = make(IP_NET)
    x = np.random.randn(2, 3).astype(np.float32)
    net.blobs["data"].data[...] = x  # written before forward: seen by forward
    out = net.blobs["ip"].data
    net.forward()
    w, b = net.params["ip"][0].data, net.params["ip"][1].data
    np.testing.assert_allclose(out, x @ w.T + b, rtol=1e-5)  # array taken before forward is live
    net.forward(data=2 * x)
    np.testing.assert_allclose(out, 2 * x @ w.T + b, rtol=1e-5)
    del net
    gc.collect()
    assert w.shape == (4, 3) and np.isfinite(out).all()


def test_blob_reshape_and_net_reshape():
    net = make(IP_NET)
    net.blobs["data"].reshape(5, 3)
    net.reshape()
    assert net.blobs["ip"].shape == (5, 4)
    assert (net.blobs["data"].num, net.blobs["data"].channels, net.blobs["data"].height) == (5, 3, 1)
    out = net.forward(data=np.ones((5, 3)))
    assert out["ip"].shape == (5, 4)


def test_forward_start_end_and_backward_kwargs():
    text = "force_backward: true\n" + INPUT + """
    layer { name: "a" type: "Power" bottom: "data" top: "a" power_param { scale: 2 } }
    layer { name: "b" type: "Power" bottom: "a" top: "b" power_param { shift: 1 } }
    """
    net = make(text)
    net.forward(data=np.ones((2, 3)), end="a")
    assert net.blobs["a"].data[0, 0] == 2
    net.blobs["a"].data[...] = 10
    out = net.forward(start="b")
    assert out["b"][0, 0] == 11
    net.forward(data=np.ones((2, 3)))
    diffs = net.backward(b=np.full((2, 3), 0.5))
    np.testing.assert_allclose(diffs["data"], 1.0)


def test_layer_surface_and_names():
    net = make(IP_NET)
    assert net._layer_names == ["data", "ip"]
    assert net.layer_dict["ip"].type == "InnerProduct"
    assert [b.shape for b in net.params["ip"]] == [(4, 3), (4,)]
    assert net.top_names["ip"] == ["ip"] and net.bottom_names["ip"] == ["data"]
    assert net.inputs == ["data"] and net.outputs == ["ip"]
    net.params["ip"][0].diff[...] = 3
    net.clear_param_diffs()
    assert not net.params["ip"][0].diff.any()


def test_caffe_alias_imports():
    brewnet.alias_as_caffe()
    import caffe  # noqa: F401
    from caffe.proto import caffe_pb2 as pb2
    from caffe import layers as L, params as P  # noqa: N812
    assert pb2.NetParameter is caffe_pb2.NetParameter
    assert P.Pooling.MAX == caffe_pb2.PoolingParameter.MAX
    top = L.ReLU(L.Input(shape=dict(dim=[1, 2])))
    assert [lp.type for lp in top.to_proto().layer] == ["Input", "ReLU"]


@pytest.mark.parametrize("in_place", [True, False])
def test_fused_batchnorm_scale_equals_the_two_layers(in_place):
    """The training path fuses BVLC BatchNorm + Scale; values, gradients and statistics agree."""
    bn_top = "c" if in_place else "bn"
    text = INPUT.replace("dim: 2 dim: 3", "dim: 4 dim: 3 dim: 5 dim: 5") + f"""
    layer {{ name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param {{ num_output: 4
            kernel_size: 3 weight_filler {{ type: "gaussian" }} }} }}
    layer {{ name: "bn" type: "BatchNorm" bottom: "c" top: "{bn_top}" }}
    layer {{ name: "sc" type: "Scale" bottom: "{bn_top}" top: "{bn_top if in_place else 'sc'}"
            scale_param {{ bias_term: true filler {{ type: "gaussian" }} bias_filler {{ type: "gaussian" }} }} }}
    layer {{ name: "s" type: "Reduction" bottom: "{bn_top if in_place else 'sc'}" top: "s"
            reduction_param {{ operation: SUMSQ }} loss_weight: 1 }}
    """
    brewnet.set_random_seed(1)
    fused = make(text, brewnet.TRAIN)
    brewnet.set_random_seed(1)
    plain = make(text, brewnet.TRAIN)
    plain.fuse = False
    assert list(fused._fused_bn_scale) == [2]
    x = np.random.randn(4, 3, 5, 5)
    results = []
    for net in (fused, plain):
        net.blobs["data"].data[...] = x
        loss, _ = net.forward_loss()
        loss.backward()
        results.append((float(loss.detach()), [p.grad.clone() for p in net.module.parameters()],
                        [b.clone() for b in net.layer_dict["bn"].blob_tensors]))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    # float32, one fused kernel against three: the convolution's gradients are zero in exact
    # arithmetic (a sum of squares after BatchNorm does not depend on what comes before it), so
    # they are round-off, and every gradient's floor is the largest gradient in the net
    scale = max(float(g.abs().max()) for g in results[1][1])
    for k, (a, b) in enumerate(zip(results[0][1], results[1][1])):
        assert_close_f32(a, b, rtol=1e-5, scale=scale, what=f"gradient {k}")
    for k, (a, b) in enumerate(zip(results[0][2], results[1][2])):
        assert_close_f32(a, b, rtol=1e-5, what=f"statistics blob {k}")


def test_python_layer_blobs_are_learnable_params(tmp_path):
    """pycaffe Python layers' self.blobs are net params: gradients accumulate, caffemodels hold them."""
    text = "force_backward: true\n" + INPUT + INPUT.replace('"data"', '"t"') + """
    layer { name: "py" type: "Python" bottom: "data" top: "y"
            python_param { module: "pylayers" layer: "LearnedScale" param_str: "3" } }
    layer { name: "eu" type: "EuclideanLoss" bottom: "y" bottom: "t" top: "eu" }
    """
    net = make(text, brewnet.TRAIN)
    assert net.params["py"][0].data[0] == 3 and len(net.learnable) == 1
    x, t = np.random.randn(2, 3), np.random.randn(2, 3)
    expected = ((3 * x - t) * x).sum() / 2  # d/dw of sum((w x - t)^2) / (2 N)
    for k in (1, 2):  # the second backward accumulates, as every Caffe param diff does
        net.forward(data=x, t=t)
        net.backward()
        assert net.params["py"][0].diff[0] == pytest.approx(k * expected, rel=1e-4)
    path = str(tmp_path / "py.caffemodel")
    net.params["py"][0].data[...] = 5
    net.save(path)
    assert make(text, brewnet.TEST, weights=path).params["py"][0].data[0] == 5


def test_backward_from_a_middle_layer():
    """backward(start=L) starts from the diffs on L's tops, as pycaffe's BackwardFrom does."""
    text = "force_backward: true\n" + INPUT + """
    layer { name: "a" type: "Power" bottom: "data" top: "a" power_param { scale: 2 } }
    layer { name: "b" type: "Power" bottom: "a" top: "b" power_param { scale: 5 } }
    """
    net = make(text)
    net.forward(data=np.ones((2, 3)))
    net.blobs["a"].diff[...] = 0.25
    diffs = net.backward(start="a")
    np.testing.assert_allclose(diffs["data"], 0.5)


ONE_CHANNEL_NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 1 dim: 12 dim: 12 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 4 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_channels_last_reaches_convolutions_of_a_one_channel_input():
    """A (N, 1, H, W) input is 'contiguous' in both layouts, so PyTorch would read it as NCHW and
    the whole net would run NCHW; the convolution's channels-last weight decides. Values and
    gradients equal the NCHW run's."""
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 1, 12, 12)), np.array([0.0, 1.0, 2.0, 1.0])
    results = []
    for cl in (True, False):
        brewnet.set_random_seed(3)
        net = brewnet.Net(net_from_text(ONE_CHANNEL_NET), phase=brewnet.TRAIN)
        net.channels_last = cl
        net.blobs["data"].data[...] = x
        net.blobs["label"].data[...] = y
        loss, out = net.forward_loss(["conv", "pool"])
        assert out["pool"].is_contiguous(memory_format=torch.channels_last) == cl
        assert out["pool"].is_contiguous() == (not cl)
        loss.backward()
        results.append((float(loss.detach()), net.params["conv"][0].diff.copy(), net.params["ip"][0].diff.copy()))
    (l1, dw1, di1), (l2, dw2, di2) = results
    # float32 through other convolution kernels (channels-last against NCHW), BatchNorm and a pool
    assert l1 == pytest.approx(l2, rel=1e-5)
    assert_close_f32(dw1, dw2, rtol=1e-5, what="conv weight gradient")
    assert_close_f32(di1, di2, rtol=1e-5, what="ip weight gradient")


HALF_NET = """
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 4 dim: 3 } shape { dim: 4 dim: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_param_arrays_without_a_zero_copy_view_sync_like_caffe():
    """Where numpy cannot share the tensor (CUDA; here bfloat16 on the CPU) parameter data and
    diffs are float32 host copies: writes reach the tensor before the net next runs, and a later
    read refreshes the same array from the tensor (Caffe's SyncedMemory)."""
    net = brewnet.Net(net_from_text(HALF_NET), brewnet.TRAIN, dtype=torch.bfloat16)
    w = net.params["ip"][0].data
    assert w.dtype == np.float32 and w.shape == (2, 3)
    w[...] = 0.5
    net.params["ip"][1].data[...] = 0.25
    out = net.forward(data=np.ones((4, 3)), label=np.zeros((4, 2)))
    np.testing.assert_allclose(net.blobs["ip"].data, 1.75)   # 3 * 0.5 + 0.25
    assert float(out["loss"]) == pytest.approx(1.75 ** 2 * 8 / 8)
    with torch.no_grad():
        net.params["ip"][0].tensor.add_(1.0)  # the device changes (a solver update, say)
    again = net.params["ip"][0].data
    assert again is w
    np.testing.assert_allclose(w, 1.5)
    net.backward()
    np.testing.assert_allclose(net.params["ip"][0].diff, 1.75)  # mean over the batch of (ip - 0) * 1
    net.params["ip"][0].diff[...] = 2.0  # written diffs are what the update uses
    net.clear_param_diffs()
    np.testing.assert_allclose(net.params["ip"][0].diff, 0.0)
    proto = net.to_proto()
    np.testing.assert_allclose(np.asarray(proto.layer[1].blobs[0].data), 1.5)
    net.params["ip"][0].data[...] = -1.0  # as pycaffe scripts write: .data read again each time
    np.testing.assert_allclose(np.asarray(net.to_proto().layer[1].blobs[0].data), -1.0)
