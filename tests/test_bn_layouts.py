"""Every BatchNorm layout on disk loads through plain brewnet.Net and gives the TEST outputs of
the equivalent BVLC model (BatchNorm + Scale)."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import brewnet
from brewnet.errors import NetError
from brewnet.proto import caffe_pb2
from numeric import assert_close_f32

C = 3
RNG = np.random.default_rng(0)
# values exactly representable in float16, so raw_data FLOAT16 blobs are exact
MEAN = np.float16(RNG.normal(size=C)).astype(np.float32)
VAR = np.float16(RNG.uniform(0.5, 2.0, size=C)).astype(np.float32)
GAMMA = np.float16(RNG.uniform(0.5, 1.5, size=C)).astype(np.float32)
BETA = np.float16(RNG.normal(size=C)).astype(np.float32)
X = RNG.normal(size=(4, C, 3, 3)).astype(np.float32)

INPUT = (f'layer {{ name: "data" type: "Input" top: "data" '
         f'input_param {{ shape {{ dim: 4 dim: {C} dim: 3 dim: 3 }} }} }}\n')


def bvlc_text(eps=1e-5):
    return INPUT + f"""
layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param {{ eps: {eps} }} }}
layer {{ name: "sc" type: "Scale" bottom: "bn" top: "bn" scale_param {{ bias_term: true }} }}
"""


def nv_text(extra="scale_bias: true"):
    return INPUT + f"""
layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param {{ {extra} }} }}
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def blob(arr, shape, fp16=False):
    b = caffe_pb2.BlobProto()
    b.shape.dim.extend(shape)
    arr = np.asarray(arr, dtype=np.float32).reshape(-1)
    if fp16:
        b.raw_data_type = caffe_pb2.FLOAT16
        b.raw_data = arr.astype("<f2").tobytes()
    else:
        b.data.extend(arr.tolist())
    return b


def caffemodel(tmp_path, name, layers):
    """layers: {layer name: [BlobProto, ...]} -> path of a caffemodel."""
    net = caffe_pb2.NetParameter(name="m")
    for lname, blobs in layers.items():
        lp = net.layer.add(name=lname, type="BatchNorm" if lname == "bn" else "Scale")
        lp.blobs.extend(blobs)
    p = tmp_path / name
    p.write_bytes(net.SerializeToString())
    return str(p)


def r4(n=C):
    return (1, n, 1, 1)


def layouts(fp16):
    s = 2.5
    return {
        "nvcaffe-0.14-cudnn": [blob(GAMMA, r4(), fp16), blob(BETA, r4(), fp16), blob([0], r4(1), fp16),
                               blob(MEAN, r4(), fp16), blob(VAR, r4(), fp16)],
        "nvcaffe-0.14-cudnn-unused-C": [blob(GAMMA, r4(), fp16), blob(BETA, r4(), fp16),
                                        blob(np.zeros(C), r4(), fp16), blob(MEAN, r4(), fp16),
                                        blob(VAR, r4(), fp16)],
        "nvcaffe-0.15-caffe": [blob(GAMMA, (C,), fp16), blob(BETA, (C,), fp16), blob(MEAN, (C,), fp16),
                               blob(VAR, (C,), fp16), blob([7], (1,), fp16)],
        "nvcaffe-0.15-cudnn": [blob(GAMMA, r4(), fp16), blob(BETA, r4(), fp16), blob(MEAN, r4(), fp16),
                               blob(VAR, r4(), fp16), blob([7], r4(1), fp16)],
        "nvcaffe-0.16": [blob(MEAN, (C,), fp16), blob(VAR, (C,), fp16), blob([1], (1,), fp16),
                         blob(GAMMA, (C,), fp16), blob(BETA, (C,), fp16)],
        "bvlc": [blob(MEAN * s, (C,)), blob(VAR * s, (C,)), blob([s], (1,))],
    }


def reference(tmp_path, eps=1e-5):
    """TEST output of the BVLC model with the same statistics, γ and β."""
    w = caffemodel(tmp_path, "ref.caffemodel", {
        "bn": [blob(MEAN * 4, (C,)), blob(VAR * 4, (C,)), blob([4], (1,))],
        "sc": [blob(GAMMA, (C,)), blob(BETA, (C,))]})
    net = brewnet.Net(write(tmp_path, "ref.prototxt", bvlc_text(eps)), w, brewnet.TEST)
    return net.forward(data=X)["bn"].copy()


@pytest.mark.parametrize("fp16", [False, True], ids=["float", "raw-float16"])
@pytest.mark.parametrize("layout", [k for k in layouts(False) if k != "bvlc"])
def test_nvcaffe_layouts_load_into_nvcaffe_prototxt(tmp_path, layout, fp16, caplog):
    eps = 1e-4 if layout.startswith("nvcaffe-0.14") else 1e-5
    expected = reference(tmp_path, eps)
    w = caffemodel(tmp_path, "nv.caffemodel", {"bn": layouts(fp16)[layout]})
    with caplog.at_level(logging.INFO, logger="brewnet"):
        net = brewnet.Net(write(tmp_path, "nv.prototxt", nv_text()), w, brewnet.TEST)
    bn = net.layer_dict["bn"]
    assert bn.loaded_layout == layout.replace("-unused-C", "")
    assert bn.eps == pytest.approx(eps)
    assert "layout" in caplog.text  # the note says what was detected
    out = net.forward(data=X)["bn"]
    assert_close_f32(out, expected, rtol=1e-5)  # NVCaffe layer vs BatchNorm + Scale
    # statistics map exactly (normalised, correction 1)
    np.testing.assert_array_equal(net.params["bn"][0].data, MEAN)
    np.testing.assert_array_equal(net.params["bn"][1].data, VAR)
    assert net.params["bn"][2].data[0] == 1
    np.testing.assert_array_equal(net.params["bn"][3].data, GAMMA)


def test_four_param_block_nvcaffe_syntax_has_scale_bias(tmp_path):
    text = INPUT + """layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data"
      param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 decay_mult: 1 }
      param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }
      batch_norm_param { engine: CAFFE } }"""
    w = caffemodel(tmp_path, "nv.caffemodel", {"bn": layouts(False)["nvcaffe-0.15-caffe"]})
    net = brewnet.Net(write(tmp_path, "nv.prototxt", text), w, brewnet.TEST)
    assert_close_f32(net.forward(data=X)["data"], reference(tmp_path), rtol=1e-5)
    lrs = {e.index: e.lr_mult for e in net.caffe_params}
    assert lrs == {0: 0, 1: 0, 2: 0, 3: 1, 4: 1}


def test_bvlc_layout_loads_exactly_into_bvlc_and_nvcaffe_prototxts(tmp_path):
    w = caffemodel(tmp_path, "b.caffemodel",
                   {"bn": layouts(False)["bvlc"], "sc": [blob(GAMMA, (C,)), blob(BETA, (C,))]})
    net = brewnet.Net(write(tmp_path, "b.prototxt", bvlc_text()), w, brewnet.TEST)
    np.testing.assert_array_equal(net.params["bn"][0].data, np.float32(MEAN * 2.5))
    assert net.params["bn"][2].data[0] == 2.5
    assert_close_f32(net.forward(data=X)["bn"], reference(tmp_path), rtol=1e-5)
    # into an NVCaffe-dialect layer: normalised, correction 1, scale/bias keep their fillers
    w2 = caffemodel(tmp_path, "b2.caffemodel", {"bn": layouts(False)["bvlc"]})
    nv = brewnet.Net(write(tmp_path, "nv.prototxt", nv_text()), w2, brewnet.TEST)
    np.testing.assert_allclose(nv.params["bn"][0].data, MEAN, rtol=1e-6)
    assert nv.params["bn"][2].data[0] == 1
    np.testing.assert_array_equal(nv.params["bn"][3].data, np.ones(C))


def test_bvlc_zero_factor_means_zero_statistics_with_a_note(tmp_path, caplog):
    w = caffemodel(tmp_path, "z.caffemodel", {"bn": [blob(MEAN, (C,)), blob(VAR, (C,)), blob([0], (1,))]})
    with caplog.at_level(logging.INFO, logger="brewnet"):
        net = brewnet.Net(write(tmp_path, "z.prototxt", INPUT + 'layer { name: "bn" type: "BatchNorm" '
                                'bottom: "data" top: "bn" }'), w, brewnet.TEST)
    assert "0/0" in caplog.text
    np.testing.assert_allclose(net.forward(data=X)["bn"], X / np.sqrt(1e-5), rtol=1e-5)


def test_nvcaffe_layout_with_scale_into_bvlc_prototxt_says_convert(tmp_path):
    w = caffemodel(tmp_path, "nv.caffemodel", {"bn": layouts(False)["nvcaffe-0.16"]})
    with pytest.raises(NetError, match=r"layer 'bn'.*brewnet convert .*-to bvlc"):
        brewnet.Net(write(tmp_path, "b.prototxt", bvlc_text()), w, brewnet.TEST)


def test_identity_scale_bias_into_bvlc_prototxt_loads_with_note(tmp_path):
    blobs = [blob(MEAN, (C,)), blob(VAR, (C,)), blob([1], (1,)), blob(np.ones(C), (C,)), blob(np.zeros(C), (C,))]
    w = caffemodel(tmp_path, "nv.caffemodel", {"bn": blobs})
    net = brewnet.Net(write(tmp_path, "b.prototxt", INPUT + 'layer { name: "bn" type: "BatchNorm" '
                            'bottom: "data" top: "bn" }'), w, brewnet.TEST)
    report = net.copy_from(w)
    assert any("identity" in n for n in report.notes)
    np.testing.assert_array_equal(net.params["bn"][0].data, MEAN)  # mean_acc = mean · s, s = 1
    assert net.params["bn"][2].data[0] == 1


def test_cudnn_015_raises_eps_to_cudnn_minimum(tmp_path):
    w = caffemodel(tmp_path, "nv.caffemodel", {"bn": layouts(False)["nvcaffe-0.15-cudnn"]})
    net = brewnet.Net(write(tmp_path, "nv.prototxt", nv_text("scale_bias: true eps: 1e-7")), w, brewnet.TEST)
    assert net.layer_dict["bn"].eps == pytest.approx(1e-5)


def test_unknown_layout_is_a_clear_error(tmp_path):
    w = caffemodel(tmp_path, "bad.caffemodel", {"bn": [blob(MEAN, (C,)), blob(VAR, (C,))]})
    with pytest.raises(NetError, match="no known BatchNorm layout"):
        brewnet.Net(write(tmp_path, "nv.prototxt", nv_text()), w, brewnet.TEST)


def test_channel_mismatch_names_layout(tmp_path):
    w = caffemodel(tmp_path, "bad.caffemodel",
                   {"bn": [blob(np.ones(4), (4,)), blob(np.ones(4), (4,)), blob([1], (1,))]})
    with pytest.raises(NetError, match="4 channels"):
        brewnet.Net(write(tmp_path, "nv.prototxt", nv_text()), w, brewnet.TEST)
