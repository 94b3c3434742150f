"""brewnet convert: BVLC <-> NVCaffe 0.17 (exact), PyTorch and ONNX exports, numerically checked."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import brewnet
from brewnet import formats
from brewnet.commands import main as cli
from brewnet.convert import dialects as dialect
from brewnet.proto import caffe_pb2
from numeric import assert_close_f32

MODEL = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
        convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" include { phase: TRAIN }
        batch_norm_param { use_global_stats: false } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "bn2" include { phase: TEST }
        batch_norm_param { use_global_stats: true } }
layer { name: "scale2" type: "Scale" bottom: "bn2" top: "bn2"
        param { lr_mult: 2 decay_mult: 0 } param { lr_mult: 3 decay_mult: 0 } scale_param { bias_term: true } }
layer { name: "ip" type: "InnerProduct" bottom: "bn2" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.3 } } }
"""


def randomise(net, rng):
    with torch.no_grad():
        for layer in net.layers:
            for name, b in zip(layer.blob_names, layer.blob_tensors):
                if layer.type == "BatchNorm":
                    s = 3.0
                    val = {"running_mean": rng.normal(size=b.shape) * s,
                           "running_var": rng.uniform(0.5, 2, size=b.shape) * s,
                           "factor": np.full(b.shape, s)}.get(name, rng.uniform(0.5, 1.5, size=b.shape))
                else:
                    val = rng.normal(size=b.shape)
                b.copy_(torch.as_tensor(val))


@pytest.fixture
def bvlc_model(tmp_path):
    model = tmp_path / "m.prototxt"
    model.write_text(MODEL)
    net = brewnet.Net(str(model), brewnet.TEST)
    randomise(net, np.random.default_rng(0))
    weights = tmp_path / "m.caffemodel"
    net.save(str(weights))
    return str(model), str(weights)


def outputs(model, weights, x, dtype=torch.float64):
    net = brewnet.Net(model, weights, brewnet.TEST, dtype=dtype)
    return net.forward(data=x)["ip"].copy()


def largest(out: str) -> float:
    return float(re.findall(r"largest difference \S+ \(relative (\S+)\)", out)[-1])


def test_bvlc_to_nvcaffe_folds_scale_and_back_is_exact(bvlc_model, tmp_path, capsys):
    model, weights = bvlc_model
    nv = str(tmp_path / "nv")
    assert cli.main(["convert", "-model", model, "-weights", weights, "-to", "nvcaffe", "-output", nv]) == 0
    out = capsys.readouterr().out
    assert largest(out) <= 1e-6
    nv_param = formats.read_net(nv + ".prototxt")
    assert [lp.type for lp in nv_param.layer].count("Scale") == 0
    bn2 = [lp for lp in nv_param.layer if lp.name == "bn2"]
    assert len(bn2) == 2 and all(lp.batch_norm_param.scale_bias for lp in bn2)
    assert [(s.lr_mult, s.decay_mult) for s in bn2[0].param] == [(0, 0)] * 3 + [(2, 0), (3, 0)]
    bn1 = next(lp for lp in nv_param.layer if lp.name == "bn1")
    assert list(bn1.top) == ["conv1"]  # in-place chain preserved
    nvw = {lp.name: lp for lp in formats.read_caffemodel(nv + ".caffemodel").layer}
    assert len(nvw["bn1"].blobs) == 5 and formats.blob_to_array(nvw["bn1"].blobs[2])[0] == 1
    back = str(tmp_path / "back")
    assert cli.main(["convert", "-model", nv + ".prototxt", "-weights", nv + ".caffemodel",
                     "-to", "bvlc", "-output", back]) == 0
    assert largest(capsys.readouterr().out) <= 1e-6
    back_param = formats.read_net(back + ".prototxt")
    types = [(lp.name, lp.type) for lp in back_param.layer]
    assert types.count(("bn1_scale", "Scale")) == 1 and types.count(("bn2_scale", "Scale")) == 2
    sc = next(lp for lp in back_param.layer if lp.name == "bn1_scale")
    assert list(sc.bottom) == list(sc.top) == ["conv1"] and sc.scale_param.bias_term
    # exact: the statistics and affine parameters survive the round trip bit for bit
    bw = {lp.name: lp for lp in formats.read_caffemodel(back + ".caffemodel").layer}
    for name in ("bn1", "bn2"):
        for k in range(3):
            np.testing.assert_array_equal(formats.blob_to_array(bw[name].blobs[k]),
                                          formats.blob_to_array(nvw[name].blobs[k]))
        for k in range(2):
            np.testing.assert_array_equal(formats.blob_to_array(bw[name + "_scale"].blobs[k]),
                                          formats.blob_to_array(nvw[name].blobs[3 + k]))
    x = np.random.default_rng(1).normal(size=(2, 3, 6, 6))
    ref = outputs(model, weights, x)
    for m, w in ((nv + ".prototxt", nv + ".caffemodel"), (back + ".prototxt", back + ".caffemodel")):
        np.testing.assert_allclose(outputs(m, w, x), ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())


def test_converted_train_nets_keep_their_phase_behaviour(bvlc_model, tmp_path):
    model, weights = bvlc_model
    nv_model, nv_weights, _ = dialect.to_nvcaffe(formats.read_net(model), formats.read_caffemodel(weights))
    train = brewnet.Net(nv_model, brewnet.TRAIN)
    assert train.layer_dict["bn2"].use_global_stats is False and train.layer_dict["bn2"].scale_bias
    lrs = {(e.layer.name, e.index): e.lr_mult for e in train.caffe_params}
    assert lrs[("bn2", 3)] == 2 and lrs[("bn2", 4)] == 3 and lrs[("bn2", 0)] == 0


def nvcaffe_014_model(tmp_path):
    """An NVCaffe 0.14 cuDNN model (5 rank-4 blobs, float16 raw data), written by hand."""
    text = MODEL.replace('layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" '
                         'scale_param { bias_term: true } }', "")
    text = text.replace('layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }',
                        'layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" '
                        'batch_norm_param { engine: CUDNN scale_filler { type: "constant" value: 1 } '
                        'bias_filler { type: "constant" value: 0 } } }')
    model = tmp_path / "nv14.prototxt"
    model.write_text(text)
    net = brewnet.Net(str(model), brewnet.TEST)
    randomise(net, np.random.default_rng(2))
    proto = net.to_proto()
    bn = next(lp for lp in proto.layer if lp.name == "bn1")
    arrs = [formats.blob_to_array(b) for b in bn.blobs]  # mean, var, 1, scale, bias
    del bn.blobs[:]
    for a in (arrs[3], arrs[4], np.zeros(1), arrs[0] / 3, arrs[1] / 3):
        b = bn.blobs.add()
        a = np.asarray(a, np.float32).reshape(-1)
        b.shape.dim.extend((1, a.size, 1, 1))
        b.raw_data_type = caffe_pb2.FLOAT16
        b.raw_data = a.astype("<f2").tobytes()
    weights = tmp_path / "nv14.caffemodel"
    weights.write_bytes(proto.SerializeToString())
    return str(model), str(weights)


def test_nvcaffe_014_cudnn_model_converts_to_bvlc(tmp_path, capsys):
    model, weights = nvcaffe_014_model(tmp_path)
    out = str(tmp_path / "b")
    assert cli.main(["convert", "-model", model, "-weights", weights, "-to", "bvlc", "-output", out]) == 0
    text = capsys.readouterr().out
    assert "nvcaffe-0.14-cudnn" in text and largest(text) <= 1e-6
    bn1 = next(lp for lp in formats.read_net(out + ".prototxt").layer if lp.name == "bn1")
    assert bn1.batch_norm_param.eps == pytest.approx(1e-4)
    assert not bn1.batch_norm_param.HasField("engine")


def test_fieldless_prototxt_with_nvcaffe_014_weights_takes_their_scale_bias(tmp_path):
    """NVCaffe 0.14 cuDNN BatchNorm always had scale/bias, and its prototxts often declared no
    field at all: the file's layout decides (issue 10, item 4; it used to be refused)."""
    model, weights = nvcaffe_014_model(tmp_path)
    plain = tmp_path / "plain.prototxt"
    plain.write_text(MODEL.replace('layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" '
                                   'scale_param { bias_term: true } }', ""))
    net = brewnet.Net(str(plain), weights, brewnet.TEST)
    assert len(net.params["bn1"]) == 5 and net.layer_dict["bn1"].scale_bias
    x = np.random.default_rng(5).normal(size=(2, 3, 6, 6))
    ref = outputs(model, weights, x)
    np.testing.assert_allclose(outputs(str(plain), weights, x), ref, rtol=1e-6, atol=1e-9 * np.abs(ref).max())


def test_pytorch_export_reloads_identically(bvlc_model, tmp_path, capsys):
    from brewnet.convert.pytorch_onnx import load_pytorch
    model, weights = bvlc_model
    prefix = str(tmp_path / "m")
    assert cli.main(["convert", "-model", model, "-weights", weights, "-to", "pytorch", "-output", prefix]) == 0
    # exact: the saved and the reloaded module run the same layers on the same weights, bit for bit
    assert largest(capsys.readouterr().out) == 0
    module = load_pytorch(prefix + ".pt")
    x = np.random.default_rng(3).normal(size=(2, 3, 6, 6))
    got = module(torch.as_tensor(x, dtype=torch.float32))[0].detach().numpy()
    # float32 and not the same computation: the Net runs channels-last with BatchNorm + Scale
    # fused, the module NCHW layer by layer, on kernels PyTorch picks by CPU (2.2e-6 relative on
    # a Sapphire Rapids with avx512 or avx2 kernels); two convolutions, two BatchNorms, an IP
    assert_close_f32(got, outputs(model, weights, x, torch.float32), rtol=1e-5, what="reloaded module")
    assert module.input_names == ["data"] and module.output_names == ["ip"]


def test_onnx_export_checked_and_numerically_equal(bvlc_model, tmp_path, capsys):
    import onnx
    from brewnet.convert.pytorch_onnx import run_onnx
    model, weights = bvlc_model
    prefix = str(tmp_path / "m")
    assert cli.main(["convert", "-model", model, "-weights", weights, "-to", "onnx", "-output", prefix]) == 0
    assert largest(capsys.readouterr().out) <= 1e-5
    onnx.checker.check_model(onnx.load(prefix + ".onnx"))
    x = np.random.default_rng(4).normal(size=(2, 3, 6, 6)).astype(np.float32)
    got, _ = run_onnx(prefix + ".onnx", {"data": x})
    ref = outputs(model, weights, x, torch.float32)
    np.testing.assert_allclose(got[0], ref, rtol=1e-4, atol=1e-5 * np.abs(ref).max())
