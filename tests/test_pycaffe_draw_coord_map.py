"""pycaffe's ``caffe.coord_map`` (coordinate maps between NetSpec tops, the Crop helper) and
``caffe.draw`` (pydot graphs and Graphviz pictures of a NetParameter), as brewnet.coord_map and
brewnet.draw.

Expected coordinate maps are worked out by hand: a map ``(axis, a, b)`` from top X to top Y
says that position ``x`` in X sits at ``a * x + b`` in Y."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

import brewnet
from brewnet.pycaffe import coord_map as cm
from brewnet.pycaffe import draw
from brewnet.pycaffe.net_spec import NetSpec
from brewnet.pycaffe.net_spec import layers as L
from brewnet.pycaffe.net_spec import params as P
from brewnet.proto import caffe_pb2

LENET = (Path(__file__).resolve().parent / "bvlc_caffe" / "examples" / "mnist"
         / "lenet_train_test.prototxt")
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="Graphviz's dot is not installed (apt-get install graphviz)")


def _net(**conv) -> NetSpec:
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=4, **conv)
    return n


def _same(m1, m2) -> None:
    """Equal maps; a single scale or shift stands for the same value on every axis."""
    assert m1[0] == m2[0]
    for got, want in ((m1[1], m2[1]), (m1[2], m2[2])):
        got, want = np.broadcast_arrays(np.atleast_1d(got), np.atleast_1d(want))
        np.testing.assert_allclose(got, want)


# ----- coord_map --------------------------------------------------------------------------
def test_padded_3x3_conv_is_the_identity():
    n = _net(kernel_size=3, pad=1)
    _same(cm.coord_map_from_to(n.conv, n.data), (1, 1, 0))


def test_unpadded_3x3_conv_shifts_by_one():
    n = _net(kernel_size=3, pad=0)
    # conv output 0 is centred on input 1
    _same(cm.coord_map_from_to(n.conv, n.data), (1, 1, 1))
    _same(cm.coord_map_from_to(n.data, n.conv), (1, 1, -1))
    # the layer's own (forward) map: input -> output
    _same(cm.coord_map(n.conv.fn), (1, 1, -1))


def test_dilated_strided_conv():
    # extent (3 - 1) * 2 + 1 = 5, centre at 2; stride 2, pad 1: output y covers input 2y - 1 + 2
    n = _net(kernel_size=3, dilation=2, stride=2, pad=1)
    _same(cm.coord_map_from_to(n.conv, n.data), (1, 2, 1))


def test_pool_2_stride_2_scales_by_two():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.pool = L.Pooling(n.data, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    # pooled cell y covers inputs 2y and 2y + 1, centred at 2y + 0.5
    _same(cm.coord_map_from_to(n.pool, n.data), (1, 2, 0.5))
    _same(cm.coord_map(n.pool.fn), (1, 0.5, -0.25))


def test_nested_and_legacy_hw_params():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.pool = L.Pooling(n.data, pooling_param=dict(kernel_size=3, stride=1))
    _same(cm.coord_map_from_to(n.pool, n.data), (1, 1, 1))
    n.conv = L.Convolution(n.data, num_output=2, kernel_h=3, kernel_w=5, pad_h=0, pad_w=2)
    _same(cm.coord_map_from_to(n.conv, n.data), (1, [1, 1], [1, 0]))


def test_deconv_undoes_pool():
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.pool = L.Pooling(n.data, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool, convolution_param=dict(num_output=1, kernel_size=4, stride=2))
    # pool: x -> x/2 - 1/4; deconv (extent 4, stride 2): x -> 2x + 1.5; together x + 1
    _same(cm.coord_map_from_to(n.data, n.up), (1, 1, 1))
    _same(cm.coord_map_from_to(n.up, n.data), (1, 1, -1))


def test_pass_through_and_crop_layers():
    n = _net(kernel_size=3)
    n.relu = L.ReLU(n.conv, in_place=True)
    n.drop = L.Dropout(n.relu)
    _same(cm.coord_map_from_to(n.drop, n.data), (1, 1, 1))
    _same(cm.coord_map(n.relu.fn), (None, 1, 0))
    n.cropped = L.Crop(n.drop, n.data, axis=2, offset=[3, 4])
    # Crop maps only its first bottom; position 0 of the crop is position (3, 4) of drop
    _same(cm.coord_map(n.cropped.fn), (1, 1, [-3, -4]))
    _same(cm.coord_map_from_to(n.cropped, n.data), (1, 1, [4, 5]))


def test_compose_and_inverse():
    _same(cm.compose((None, 1, 0), (1, 0.5, 2)), (1, 0.5, 2))
    _same(cm.compose((1, 2, 1), (None, 1, 0)), (1, 2, 1))
    _same(cm.compose((1, 2, 1), (1, 3, 4)), (1, 6, 9))  # 2 * (3x + 4) + 1
    _same(cm.inverse((1, 2, 1)), (1, 0.5, -0.5))
    with pytest.raises(cm.AxisMismatchException):
        cm.compose((1, 1, 0), (2, 1, 0))


def test_param_helpers():
    n = _net(kernel_size=[3, 5], stride=2, pad=[1, 0], dilation=[1, 2])
    axis, stride, extent, pad = cm.conv_params(n.conv.fn)
    assert axis == 1
    np.testing.assert_array_equal(stride, [2])
    np.testing.assert_array_equal(extent, [3, 9])
    np.testing.assert_array_equal(pad, [1, 0])
    n.crop = L.Crop(n.conv, n.data, crop_param=dict(axis=3, offset=7))
    axis, offset = cm.crop_params(n.crop.fn)
    assert axis == 3 and offset.tolist() == [7]
    n.crop2 = L.Crop(n.conv, n.data)
    assert cm.crop_params(n.crop2.fn)[0] == 2 and cm.crop_params(n.crop2.fn)[1].tolist() == [0]


def test_undefined_maps_and_unconnected_tops():
    n = _net(kernel_size=3)
    n.ip = L.InnerProduct(n.conv, num_output=10)
    with pytest.raises(cm.UndefinedMapException):
        cm.coord_map(n.ip.fn)
    with pytest.raises(RuntimeError, match="connected by spatial"):
        cm.coord_map_from_to(n.ip, n.data)
    n.gp = L.Pooling(n.conv, global_pooling=True)
    with pytest.raises(cm.UndefinedMapException):
        cm.coord_map(n.gp.fn)
    n.other = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    with pytest.raises(RuntimeError):
        cm.coord_map_from_to(n.conv, n.other)


def test_crop_helper_writes_the_crop_layer():
    n = _net(kernel_size=5)  # conv output 16x16, centred 2 pixels into data
    n.crop = cm.crop(n.data, n.conv)
    layer = n.to_proto().layer[-1]
    assert layer.type == "Crop"
    assert list(layer.bottom) == ["data", "conv"]
    assert layer.crop_param.axis == 2
    assert list(layer.crop_param.offset) == [2]


def test_crop_helper_refuses_impossible_crops():
    n = _net(kernel_size=3, stride=2)
    with pytest.raises(AssertionError, match="scale mismatch"):
        cm.crop(n.data, n.conv)
    n = _net(kernel_size=3)
    with pytest.raises(AssertionError, match="negative offset"):
        cm.crop(n.conv, n.data)  # conv is smaller than data
    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 1, 20, 20]))
    n.pool = L.Pooling(n.data, kernel_size=2, stride=2)
    n.up = L.Deconvolution(n.pool, num_output=1, kernel_size=3, stride=2)
    with pytest.raises(AssertionError, match="noninteger"):
        cm.crop(n.up, n.data)  # up = data + 0.5: shifted by half a pixel


def test_crop_helper_aligns_in_a_real_net():
    """The Crop that crop() writes, run by brewnet, takes data's pixels that conv's outputs are
    centred on."""
    n = _net(kernel_size=3, pad=0)
    n.aligned = cm.crop(n.data, n.conv)
    net = brewnet.Net(n.to_proto(), phase=brewnet.TEST)
    image = np.arange(400, dtype=np.float32).reshape(1, 1, 20, 20)
    net.blobs["data"].data[...] = image
    net.forward()
    np.testing.assert_array_equal(net.blobs["aligned"].data, image[:, :, 1:19, 1:19])


def test_caffe_alias_imports():
    code = ("import brewnet; brewnet.alias_as_caffe(); import caffe.coord_map, caffe.draw, "
            "brewnet.coord_map, brewnet.draw; "
            "assert caffe.coord_map is brewnet.coord_map and caffe.draw is brewnet.draw")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_draw_imports_without_pydot():
    code = ("import sys; sys.modules['pydot'] = None; import brewnet.draw as d\n"
            "from brewnet.proto import caffe_pb2\n"
            "assert d.get_pooling_types_dict()[0] == 'MAX'\n"
            "try:\n    d.get_pydot_graph(caffe_pb2.NetParameter(), 'LR')\n"
            "except ImportError as e:\n    assert 'pip install pydot' in str(e)\n"
            "else:\n    raise SystemExit('no ImportError')\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# ----- draw -------------------------------------------------------------------------------
def _lenet() -> caffe_pb2.NetParameter:
    return text_format.Parse(LENET.read_text(), caffe_pb2.NetParameter())


def _labels(graph) -> dict[str, str]:
    return {node.get_name(): node.get("label").strip('"') for node in graph.get_nodes()}


def test_graph_has_a_node_per_layer_and_blob():
    graph = draw.get_pydot_graph(_lenet(), "LR", phase=caffe_pb2.TRAIN)
    labels = _labels(graph)
    layer_names = [v.split("\\n")[0] for k, v in labels.items() if k.startswith("layer")]
    assert layer_names == ["mnist", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2",
                           "loss"]
    # relu1 is in place: ip1 is one blob
    blobs = sorted(v for k, v in labels.items() if k.startswith("blob"))
    assert blobs == sorted(["data", "label", "conv1", "pool1", "conv2", "pool2", "ip1", "ip2",
                            "loss"])
    relu = graph.get_node("layer7")[0]
    assert relu.get("fillcolor") == draw.NEURON_LAYER_STYLE["fillcolor"]
    edges = {(e.get_source(), e.get_destination()) for e in graph.get_edges()}
    ip1 = next(k for k, v in labels.items() if v == "ip1")
    assert ("layer7", ip1) in edges and (ip1, "layer7") in edges
    # Data edges say the batch size, Convolution edges the number of outputs
    out_labels = {(e.get_source(), e.get("label")) for e in graph.get_edges()}
    assert ("layer0", '"Batch 64"') in out_labels
    assert ("layer2", "20") in out_labels or ("layer2", '"20"') in out_labels
    assert draw.LAYER_STYLE_DEFAULT["fillcolor"] == "#6495ED"  # never modified


def test_phase_filtering():
    def layer_labels(phase):
        labels = _labels(draw.get_pydot_graph(_lenet(), "LR", phase=phase))
        return [v for k, v in labels.items() if k.startswith("layer")]
    train, test, both = (layer_labels(p) for p in (caffe_pb2.TRAIN, caffe_pb2.TEST, None))
    assert not any(v.startswith("accuracy") for v in train)
    assert any(v.startswith("accuracy") for v in test)
    assert len(both) == 11 and len(train) == 9 and len(test) == 10
    assert layer_labels("test") == test
    with pytest.raises(ValueError):
        layer_labels(5)
    bad = caffe_pb2.NetParameter()
    bad.layer.add(name="x", type="ReLU").include.add(phase=caffe_pb2.TRAIN)
    bad.layer[0].exclude.add(phase=caffe_pb2.TEST)
    with pytest.raises(ValueError, match="both include and exclude"):
        draw.get_pydot_graph(bad, "LR", phase=caffe_pb2.TRAIN)


def test_layer_labels():
    conv = caffe_pb2.LayerParameter(name="conv1", type="Convolution")
    conv.convolution_param.kernel_size.append(5)
    conv.convolution_param.stride.append(2)
    conv.convolution_param.pad.append(1)
    assert draw.get_layer_label(conv, "LR") == \
        r'"conv1\n(Convolution)\nkernel size: 5\nstride: 2\npad: 1"'
    assert draw.get_layer_label(conv, "TB") == \
        '"conv1 (Convolution) kernel size: 5 stride: 2 pad: 1"'
    conv.param.add(lr_mult=2)
    assert draw.get_layer_lr_mult(conv) == (2.0, 1.0)
    assert draw.get_layer_label(conv, "TB", display_lrm=True).endswith('lr mult: 2.0, 1.0"')
    pool = caffe_pb2.LayerParameter(name="pool", type="Pooling")
    pool.pooling_param.pool = caffe_pb2.PoolingParameter.AVE
    pool.pooling_param.kernel_size = 3
    assert draw.get_layer_label(pool, "BT") == \
        '"pool (Pooling AVE) kernel size: 3 stride: 1 pad: 0"'
    relu = caffe_pb2.LayerParameter(name="r{1}", type="ReLU")
    assert draw.get_layer_label(relu, "LR") == r'"r\{1\}\n(ReLU)"'
    assert draw.get_pooling_types_dict() == {0: "MAX", 1: "AVE", 2: "STOCHASTIC"}
    assert draw.get_edge_label(relu) == '""'
    assert draw.choose_color_by_layertype("Deconvolution") == "#FF5050"
    assert draw.choose_color_by_layertype("Pooling") == "#FF9900"
    assert draw.choose_color_by_layertype("InnerProduct") == "#CC33FF"
    assert draw.choose_color_by_layertype("ReLU") == "#6495ED"
    with pytest.raises(ValueError):
        draw.get_layer_lr_mult(relu)


def test_raw_output_needs_no_graphviz(tmp_path):
    out = tmp_path / "lenet.raw"
    draw.draw_net_to_file(_lenet(), str(out))
    text = out.read_text()
    assert text.startswith("digraph LeNet {") and "conv1" in text
    with pytest.raises(ValueError, match="no extension"):
        draw.draw_net_to_file(_lenet(), str(tmp_path / "noext"))


def test_missing_dot_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(draw.shutil, "which", lambda name: None)
    with pytest.raises(draw.GraphvizNotFoundError, match="apt-get install graphviz"):
        draw.draw_net(_lenet(), "LR")


@needs_dot
@pytest.mark.parametrize("phase", [caffe_pb2.TRAIN, caffe_pb2.TEST, None])
@pytest.mark.parametrize("rankdir", ["LR", "TB"])
def test_png_and_svg_files(tmp_path, phase, rankdir):
    png, svg = tmp_path / "net.png", tmp_path / "net.svg"
    draw.draw_net_to_file(_lenet(), str(png), rankdir=rankdir, phase=phase)
    draw.draw_net_to_file(_lenet(), svg, rankdir=rankdir, phase=phase)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml") and "</svg>" in text
    for name in ("mnist", "conv1", "pool2", "ip2", "loss"):
        assert name in text
    assert ("accuracy" in text) == (phase != caffe_pb2.TRAIN)


@needs_dot
def test_unknown_format_is_a_clear_error():
    with pytest.raises(draw.GraphvizError, match="not recognized"):
        draw.draw_net(_lenet(), "LR", ext="nosuchformat")
