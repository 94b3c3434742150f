"""BatchNorm semantics that users of the DIGITS #629 thread tripped over: in-place is exactly as
correct as out-of-place in every mode and engine; statistics are never trained; use_global_stats
follows the phase; TEST nets share statistics with TRAIN by layer name."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import brewnet
from brewnet.formats import net_from_text
from brewnet.proto import caffe_pb2
from numeric import assert_close_f32

N, C, H, W = 4, 3, 5, 5

ENGINES = {
    "bvlc": "",
    "default": "engine: DEFAULT",
    "caffe": "engine: CAFFE",
    "cudnn": "engine: CUDNN",
    "cudnn-scale-bias": ('engine: CUDNN scale_filler { type: "constant" value: 1 } '
                         'bias_filler { type: "constant" value: 0 }'),
    "scale-bias-017": "scale_bias: true",
}
MODES = {  # (phase, explicit use_global_stats or None)
    "train": (brewnet.TRAIN, None),
    "test": (brewnet.TEST, None),
    "train-global": (brewnet.TRAIN, True),
    "test-batch": (brewnet.TEST, False),
}


def net_text(bn_param: str, inplace: bool) -> str:
    bn_top = "conv" if inplace else "bn"
    return f"""
force_backward: true
layer {{ name: "data" type: "Input" top: "data" top: "label"
         input_param {{ shape {{ dim: {N} dim: {C} dim: {H} dim: {W} }} shape {{ dim: {N} dim: 2 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
         convolution_param {{ num_output: {C} kernel_size: 1 weight_filler {{ type: "gaussian" std: 1 }}
                              bias_filler {{ type: "constant" value: 0.3 }} }} }}
layer {{ name: "bn" type: "BatchNorm" bottom: "conv" top: "{bn_top}" batch_norm_param {{ {bn_param} }} }}
layer {{ name: "relu" type: "ReLU" bottom: "{bn_top}" top: "{bn_top}" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "{bn_top}" top: "ip"
         inner_product_param {{ num_output: 2 weight_filler {{ type: "gaussian" std: 0.1 }} }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""


def build(engine, mode, inplace):
    phase, ugs = MODES[mode]
    param = ENGINES[engine] + ("" if ugs is None else f" use_global_stats: {str(ugs).lower()}")
    brewnet.set_random_seed(7)
    net = brewnet.Net(net_from_text(net_text(param, inplace)), phase, dtype=torch.float64)
    bn = net.layer_dict["bn"]
    rng = np.random.default_rng(3)
    with torch.no_grad():  # non-trivial stored statistics (factor 2 for BVLC accumulators)
        s = 1.0 if bn.nvcaffe else 2.0
        bn.running_mean.copy_(torch.as_tensor(rng.normal(size=C) * s))
        bn.running_var.copy_(torch.as_tensor(rng.uniform(0.5, 2, size=C) * s))
        bn.factor.fill_(s)
        if bn.scale_bias:
            bn.weight.copy_(torch.as_tensor(rng.uniform(0.5, 1.5, size=C)))
            bn.bias.copy_(torch.as_tensor(rng.normal(size=C)))
    return net


def run(net, steps=2):
    rng = np.random.default_rng(11)
    record = []
    for _ in range(steps):
        x = rng.normal(size=(N, C, H, W))
        lab = rng.normal(size=(N, 2))
        out = net.forward(data=x, label=lab)
        diffs = net.backward()
        record.append({
            "loss": out["loss"].copy(),
            "ip": net.blobs["ip"].data.copy(),
            "data_diff": diffs["data"].copy(),
            "params": [[p.data.copy() for p in ps] for ps in net.params.values()],
            "param_diffs": [[p.diff.copy() for p in ps] for ps in net.params.values()],
        })
        net.clear_param_diffs()
    return record


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("engine", list(ENGINES))
def test_inplace_equals_out_of_place(engine, mode):
    a = run(build(engine, mode, inplace=True))
    b = run(build(engine, mode, inplace=False))
    for ra, rb in zip(a, b):
        for key in ("loss", "ip", "data_diff"):
            np.testing.assert_allclose(ra[key], rb[key], rtol=1e-12, atol=1e-12, err_msg=key)
        for pa, pb in zip(ra["params"], rb["params"]):  # statistics updated identically
            for x, y in zip(pa, pb):
                np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
        for pa, pb in zip(ra["param_diffs"], rb["param_diffs"]):
            for x, y in zip(pa, pb):
                np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
    # and the mode really is what it says: statistics change exactly when batch stats are used
    phase, ugs = MODES[mode]
    batch_stats = (phase == brewnet.TRAIN) if ugs is None else not ugs
    before = build(engine, mode, True).params["bn"][0].data.copy()
    changed = not np.array_equal(a[-1]["params"][1][0], before)  # statistics not in use stay bit for bit
    assert changed == batch_stats


def test_batch_stat_diff_matches_finite_differences_inplace():
    net = build("cudnn-scale-bias", "train", inplace=True)
    for layer in net.layers:
        if layer.type == "BatchNorm":
            layer.update_statistics = False
    rng = np.random.default_rng(0)
    x, lab = rng.normal(size=(N, C, H, W)), rng.normal(size=(N, 2))
    net.forward(data=x, label=lab)
    g = net.backward()["data"].copy()
    eps, idx = 1e-6, (1, 2, 3, 4)
    xp, xm = x.copy(), x.copy()
    xp[idx] += eps
    xm[idx] -= eps
    lp = float(net.forward(data=xp, label=lab)["loss"])
    lm = float(net.forward(data=xm, label=lab)["loss"])
    assert g[idx] == pytest.approx((lp - lm) / (2 * eps), rel=1e-5)


# ----- statistics are never trained --------------------------------------------------------
SOLVER_NET = """
layer { name: "data" type: "DummyData" top: "data"
        dummy_data_param { shape { dim: 8 dim: 2 dim: 3 dim: 3 } data_filler { type: "gaussian" std: 2 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data"
        param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 1 decay_mult: 1 }
        batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "data" bottom: "data" top: "loss" }
"""


def test_solver_and_weight_decay_never_touch_statistics(caplog):
    sp = caffe_pb2.SolverParameter(base_lr=10.0, weight_decay=0.5, momentum=0.9, lr_policy="fixed",
                                   max_iter=10, display=0, snapshot_after_train=False)
    sp.net_param.CopyFrom(net_from_text(SOLVER_NET))
    with caplog.at_level(logging.WARNING, logger="brewnet"):
        solver = brewnet.SGDSolver(sp)
    assert "'bn'" in caplog.text and "never" in caplog.text
    net = solver.net
    bn = net.layer_dict["bn"]
    assert all(not e.learnable for e in net.caffe_params if e.layer is bn)
    assert all(e.lr_mult == 0 and e.decay_mult == 0 for e in net.caffe_params if e.layer is bn)


def test_statistics_update_exactly_as_caffe_without_solver_interference():
    sp = caffe_pb2.SolverParameter(base_lr=10.0, weight_decay=0.5, lr_policy="fixed", max_iter=10,
                                   display=0, snapshot_after_train=False)
    text = SOLVER_NET.replace('top: "data"\n        param', 'top: "bn"\n        param').replace(
        'bottom: "data" bottom: "data"', 'bottom: "bn" bottom: "data"')
    sp.net_param.CopyFrom(net_from_text(text))
    solver = brewnet.SGDSolver(sp)
    net = solver.net
    acc = np.zeros(2)
    s = 0.0
    for _ in range(3):
        solver.step(1)
        x = net.blobs["data"].data.astype(np.float64)
        acc = x.mean(axis=(0, 2, 3)) + 0.9 * acc
        s = 0.9 * s + 1
    assert_close_f32(net.params["bn"][0].data, acc, rtol=1e-5)  # float32 means vs float64
    assert net.params["bn"][2].data[0] == pytest.approx(s)


# ----- use_global_stats and sharing ----------------------------------------------------------
@pytest.mark.parametrize("phase,text,expected", [
    (brewnet.TRAIN, "", False), (brewnet.TEST, "", True),
    (brewnet.TRAIN, "use_global_stats: true", True), (brewnet.TEST, "use_global_stats: false", False),
    (brewnet.TEST, "engine: CUDNN", True), (brewnet.TRAIN, "scale_bias: true", False),
])
def test_use_global_stats_defaults_from_phase(phase, text, expected):
    net = brewnet.Net(net_from_text(net_text(text, True)), phase)
    assert net.layer_dict["bn"].use_global_stats is expected


SEPARATE = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 6 dim: 2 dim: 3 dim: 3 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv1_BN" type: "BatchNorm" include { phase: TRAIN } bottom: "conv1" top: "conv1_BN"
        param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }
        batch_norm_param { use_global_stats: false moving_average_fraction: 0.95 } }
layer { name: "conv1_BN" type: "BatchNorm" include { phase: TEST } bottom: "conv1" top: "conv1_BN"
        param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }
        batch_norm_param { use_global_stats: true moving_average_fraction: 0.95 } }
"""


def test_test_net_shares_statistics_with_separate_included_train_definition():
    train = brewnet.Net(net_from_text(SEPARATE), brewnet.TRAIN)
    test = brewnet.Net(net_from_text(SEPARATE), brewnet.TEST)
    test.share_with(train)
    rng = np.random.default_rng(0)
    for _ in range(5):
        train.forward(data=rng.normal(size=(6, 2, 3, 3)))
    tb, sb = train.layer_dict["conv1_BN"], test.layer_dict["conv1_BN"]
    assert tb.use_global_stats is False and sb.use_global_stats is True
    for a, b in zip(tb.blob_tensors, sb.blob_tensors):
        assert a is b
    assert test.params["conv1_BN"][2].data[0] == pytest.approx(sum(0.95 ** k for k in range(5)))
    x = rng.normal(size=(6, 2, 3, 3))
    out = test.forward(data=x)["conv1_BN"]
    conv = np.maximum(test.blobs["conv1"].data, 0)
    s = tb.factor.item()
    mean = tb.running_mean.numpy() / s
    var = tb.running_var.numpy() / s
    expected = (conv - mean[None, :, None, None]) / np.sqrt(var[None, :, None, None] + 1e-5)
    assert_close_f32(out, expected, rtol=1e-5)  # float32 vs float64 from the same conv values


@pytest.mark.parametrize("engine", ["bvlc", "scale-bias-017"])
def test_running_variance_is_exact_when_far_below_eps(engine):
    """Stored variance = Caffe's unbiased batch variance, also when it is much smaller than eps
    (float32: re-deriving it from 1/sqrt(var + eps) would lose it in the rounding of var + eps)."""
    text = f"""
    layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 8 dim: 2 dim: 3 dim: 3 }} }} }}
    layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param {{ {ENGINES[engine]} }} }}
    """
    net = brewnet.Net(net_from_text(text), brewnet.TRAIN)
    x = 1e-6 * np.random.default_rng(0).standard_normal((8, 2, 3, 3))  # var ~1e-12, eps 1e-5
    net.forward(data=x)
    x32 = x.astype(np.float32).astype(np.float64)
    expected = x32.var(axis=(0, 2, 3), ddof=1)
    bn = net.layer_dict["bn"]
    stored = bn.running_var.numpy() / (1.0 if bn.nvcaffe else bn.factor.numpy()[0])
    np.testing.assert_allclose(stored, expected, rtol=1e-3)


RESUME_NET = """
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 8 dim: 2 dim: 3 dim: 3 } shape { dim: 8 dim: 3 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv"
        batch_norm_param { scale_bias: true moving_average_fraction: 0.9 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_nvcaffe_dialect_statistics_resume_as_if_never_stopped(tmp_path):
    """The unbiased NVCaffe-dialect average keeps a weight that is not a Caffe blob; a solver
    resuming at iteration N gives it back (N batches seen), so the statistics continue exactly."""
    rng = np.random.default_rng(5)
    batches = [(rng.standard_normal((8, 2, 3, 3)) * 2 + 1, rng.standard_normal((8, 3))) for _ in range(10)]

    def solver():
        brewnet.set_random_seed(11)
        sp = caffe_pb2.SolverParameter(base_lr=0.05, momentum=0.9, lr_policy="fixed", max_iter=10, display=0,
                                       snapshot_prefix=str(tmp_path / "bn"))
        sp.net_param.CopyFrom(net_from_text(RESUME_NET))
        return brewnet.SGDSolver(sp)

    def run(s, ks):
        for k in ks:
            s.net.blobs["data"].data[...] = batches[k][0]
            s.net.blobs["label"].data[...] = batches[k][1]
            s.step(1)

    whole = solver()
    run(whole, range(10))
    first = solver()
    run(first, range(4))
    _, state = first.snapshot()
    resumed = solver()
    resumed.restore(state)
    run(resumed, range(4, 10))
    a, b = whole.net.layer_dict["bn"], resumed.net.layer_dict["bn"]
    assert a.nvcaffe
    np.testing.assert_allclose(b.running_mean.numpy(), a.running_mean.numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(b.running_var.numpy(), a.running_var.numpy(), rtol=1e-6, atol=1e-7)
