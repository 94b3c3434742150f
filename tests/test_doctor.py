"""brewnet doctor: statistics report and exact recalibration."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import brewnet
from brewnet import formats
from brewnet.commands import main as cli
from brewnet.batchnorm import doctor
from brewnet.proto import caffe_pb2

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 3 dim: 4 dim: 4 } } }
layer { name: "bn1" type: "BatchNorm" bottom: "data" top: "bn1" }
layer { name: "sc1" type: "Scale" bottom: "bn1" top: "bn1" scale_param { bias_term: true } }
layer { name: "conv" type: "Convolution" bottom: "bn1" top: "conv"
        convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "gaussian" std: 1 }
                            bias_filler { type: "constant" value: 0.5 } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { scale_bias: true } }
"""


def make(tmp_path, text=NET):
    model = tmp_path / "m.prototxt"
    model.write_text(text)
    net = brewnet.Net(str(model), brewnet.TEST)
    with torch.no_grad():  # stale statistics
        for bn in doctor.batchnorm_layers(net):
            bn.running_mean.fill_(0.3 if not bn.nvcaffe else 0.1)
            bn.running_var.fill_(2.0)
            bn.factor.fill_(1.0)
    weights = tmp_path / "m.caffemodel"
    net.save(str(weights))
    return str(model), str(weights)


def test_recalibration_equals_population_statistics_of_what_it_saw(tmp_path):
    model, weights = make(tmp_path)
    net = brewnet.Net(model, weights, brewnet.TEST, dtype=torch.float64)
    batches = doctor.collect_batches(net, 5, seed=3)
    assert len(batches) == 5 and batches[0]["data"].shape == (8, 3, 4, 4)
    stats = doctor.recalibrate(net, batches)
    # layer 1: exact population mean and unbiased variance of all 5 batches, per channel
    x = np.concatenate([b["data"] for b in batches]).transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(stats["bn1"][0], x.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(stats["bn1"][1], x.var(axis=1, ddof=1), rtol=1e-12)
    np.testing.assert_allclose(net.params["bn1"][0].data, x.mean(axis=1), rtol=1e-12)
    assert net.params["bn1"][2].data[0] == 1  # BVLC: stored with s = 1
    # layer 2 saw its input computed with the recalibrated layer 1 (TEST mode)
    conv_in = []
    h = net.layer_dict["bn2"].register_forward_pre_hook(lambda m, i: conv_in.append(i[0].detach().numpy().copy()))
    for b in batches:
        net.forward(data=b["data"])
    h.remove()
    y = np.concatenate(conv_in).transpose(1, 0, 2, 3).reshape(4, -1)
    np.testing.assert_allclose(stats["bn2"][0], y.mean(axis=1), rtol=1e-10)
    np.testing.assert_allclose(stats["bn2"][1], y.var(axis=1, ddof=1), rtol=1e-10)
    # after recalibration the stored statistics match the batches
    rep = doctor.diagnose(net, batches)
    assert all(r.mean_shift_max < 1e-9 and r.var_rel_max < 1e-9 for r in rep.layers)


def test_moments_are_exact_across_uneven_batches():
    rng = np.random.default_rng(0)
    parts = [rng.normal(5, 3, size=(n, 2, 3)) for n in (1, 7, 2)]
    m = doctor.RunningMoments()
    for p in parts:
        m.add(torch.as_tensor(p))
    x = np.concatenate(parts).transpose(1, 0, 2).reshape(2, -1)
    np.testing.assert_allclose(m.mean.numpy(), x.mean(axis=1), rtol=1e-13)
    np.testing.assert_allclose(m.var_unbiased.numpy(), x.var(axis=1, ddof=1), rtol=1e-12)


def test_doctor_cli_reports_and_writes_recalibrated_caffemodel(tmp_path, capsys):
    model, weights = make(tmp_path)
    out = str(tmp_path / "recal.caffemodel")
    assert cli.main(["doctor", "-model", model, "-weights", weights, "-iterations", "3",
                     "-recalibrate", "4", "-output", out]) == 0
    text = capsys.readouterr().out
    assert "bn1" in text and "bn2" in text and "output gap" in text and "wrote" in text
    net = brewnet.Net(model, out, brewnet.TEST, dtype=torch.float64)
    batches = doctor.collect_batches(net, 4, seed=0)
    x = np.concatenate([b["data"] for b in batches]).transpose(1, 0, 2, 3).reshape(3, -1)
    np.testing.assert_allclose(net.params["bn1"][0].data, x.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(net.params["bn1"][1].data, x.var(axis=1, ddof=1), rtol=1e-6)
    # scale layer and the rest of the caffemodel are untouched
    a = {lp.name: lp for lp in formats.read_caffemodel(weights).layer}
    b = {lp.name: lp for lp in formats.read_caffemodel(out).layer}
    assert a["sc1"] == b["sc1"] and a["conv"] == b["conv"]


def test_doctor_on_data_layer_net_with_accuracy(tmp_path, capsys):
    from brewnet.data.lmdb_io import DatumWriter
    db = str(tmp_path / "val_db")
    rng = np.random.default_rng(0)
    with DatumWriter(db) as w:
        for i in range(40):
            d = caffe_pb2.Datum(channels=1, height=4, width=4, label=int(i % 2))
            img = rng.integers(0, 100, size=16) + (120 if i % 2 else 0)
            d.data = img.astype(np.uint8).tobytes()
            w.put(d)
    text = f"""
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
        transform_param {{ scale: 0.00390625 }} data_param {{ source: "{db}" batch_size: 10 backend: LMDB }} }}
layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "bn" top: "ip"
        inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 1 }} }} }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" }}
"""
    model, weights = make(tmp_path, text)
    assert cli.main(["doctor", "-model", model, "-weights", weights, "-iterations", "4",
                     "-recalibrate", "4", "-output", str(tmp_path / "r.caffemodel")]) == 0
    out = capsys.readouterr().out
    assert "the net's data layers" in out
    assert out.count("accuracy:") == 2 and "with batch statistics" in out
    net = brewnet.Net(model, str(tmp_path / "r.caffemodel"), brewnet.TEST)
    # population of the 40 records (4 batches of 10) after the transform
    xs = np.stack([np.frombuffer(caffe_pb2.Datum.FromString(v).data, np.uint8) for v in _values(db)])
    xs = xs.astype(np.float64) * 0.00390625
    assert net.params["bn"][0].data[0] == pytest.approx(xs.mean(), rel=1e-5)
    assert net.params["bn"][1].data[0] == pytest.approx(xs.var(ddof=1), rel=1e-5)


def _values(db):
    from brewnet.data.lmdb_io import read_datums
    return [d.SerializeToString() for _, d in read_datums(db)]


def test_recalibrate_needs_output(tmp_path):
    model, weights = make(tmp_path)
    assert cli.main(["doctor", "-model", model, "-weights", weights, "-recalibrate", "2"]) == 1
