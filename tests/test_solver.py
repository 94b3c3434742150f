"""Solvers and lr policies against hand-computed values on a 2-parameter problem.

The net: x = 2 (DummyData), top = w·x + b with loss_weight 1, so loss = 2w + b and the
gradients are constant: dL/dw = 2, dL/db = 1.  w starts at 1 (lr_mult 1, decay_mult 1),
b at 0.5 (lr_mult 2, decay_mult 0).
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

import brewnet
from brewnet.errors import SolverError
from brewnet.proto import caffe_pb2
from brewnet.solver import learning_rate
from numeric import assert_close_f32
from google.protobuf import text_format

NET = """
name: "tiny"
layer { name: "x" type: "DummyData" top: "x"
  dummy_data_param { shape { dim: 1 dim: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "ip" type: "InnerProduct" bottom: "x" top: "y" loss_weight: 1
  param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
  inner_product_param { num_output: 1
    weight_filler { type: "constant" value: 1 } bias_filler { type: "constant" value: 0.5 } } }
"""


def make_solver(text: str, tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(NET)
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "{net}"\nmax_iter: 100\nsnapshot_prefix: "{tmp_path}/snap"\n' + text)
    return brewnet.get_solver(str(path))


def wb(solver):
    p = solver.net.params["ip"]
    return float(p[0].data.ravel()[0]), float(p[1].data.ravel()[0])


def run(text, tmp_path, steps=2):
    s = make_solver(text, tmp_path)
    out = []
    for _ in range(steps):
        s.step(1)
        out.append(wb(s))
    return s, out


def close(actual, expected, tol=1e-6):
    """Within ``tol`` relative to the value and to the problem's scale, 1 (w starts at 1, the
    gradients are 2 and 1, lr is 0.1 or 1): float32 updates round at 6e-8 of that, the hand
    values above carry seven digits; AdaDelta and Adam take square roots of small sums (1e-5)."""
    assert_close_f32(actual, expected, rtol=tol, scale=1.0, what=f"{actual} != {expected}")


def test_sgd_momentum_weight_decay(tmp_path):
    # it0: gw = 2 + 0.1·1 = 2.1, v = 0.1·2.1 = 0.21, w = 0.79; b: v = 0.2·1, b = 0.3
    # it1: gw = 2 + 0.1·0.79 = 2.079, v = 0.9·0.21 + 0.1·2.079 = 0.3969, w = 0.3931
    #      b: v = 0.9·0.2 + 0.2 = 0.38, b = -0.08
    s, out = run('type: "SGD" base_lr: 0.1 momentum: 0.9 weight_decay: 0.1 lr_policy: "fixed"', tmp_path)
    close(out, [(0.79, 0.3), (0.3931, -0.08)])
    assert s.iter == 2
    close(s.history[0].item(), 0.3969)


def test_sgd_lr_lives_in_history(tmp_path):
    # step policy: lr 0.1 at it0, 0.05 at it1 (stepsize 1, gamma .5); momentum .5
    # it0: v = 0.2, w = 0.8.  it1: v = 0.5·0.2 + 0.05·2 = 0.2, w = 0.6
    # (PyTorch's form, v = m·v + g; w -= lr·v, would give 0.8 - 0.05·3 = 0.65)
    _, out = run('type: "SGD" base_lr: 0.1 momentum: 0.5 lr_policy: "step" gamma: 0.5 stepsize: 1', tmp_path)
    close([o[0] for o in out], [0.8, 0.6])


def test_l1_regularization(tmp_path):
    # gw = 2 + 0.1·sign(w) = 2.1 at both steps: w = 0.79, 0.58 (L2 would give 0.5821)
    _, out = run('type: "SGD" base_lr: 0.1 weight_decay: 0.1 regularization_type: "L1" lr_policy: "fixed"', tmp_path)
    close([o[0] for o in out], [0.79, 0.58])


def test_clip_then_normalize_iter_size(tmp_path):
    # iter_size 2 accumulates (4, 2); norm √20 > 1 ⇒ scale 1/√20 ⇒ (0.894427, 0.447214);
    # ÷ 2 ⇒ (0.447214, 0.223607); w = 1 − 0.1·0.447214, b = 0.5 − 0.2·0.223607
    _, out = run('type: "SGD" base_lr: 0.1 lr_policy: "fixed" iter_size: 2 clip_gradients: 1', tmp_path, 1)
    close(out[0], (0.9552786, 0.4552786))


def test_clip_inactive_below_threshold(tmp_path):
    _, out = run('type: "SGD" base_lr: 0.1 lr_policy: "fixed" clip_gradients: 10', tmp_path, 1)
    close(out[0], (0.8, 0.3))


def test_nesterov(tmp_path):
    # it0: v = 0.2, update = 1.9·0.2 − 0.9·0 = 0.38, w = 0.62
    # it1: v = 0.9·0.2 + 0.2 = 0.38, update = 1.9·0.38 − 0.9·0.2 = 0.542, w = 0.078
    _, out = run('type: "Nesterov" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed"', tmp_path)
    close([o[0] for o in out], [0.62, 0.078])


def test_adagrad(tmp_path):
    # it0: h = 4, w = 1 − 0.1·2/2 = 0.9; it1: h = 8, w = 0.9 − 0.2/√8 = 0.8292893
    _, out = run('type: "AdaGrad" base_lr: 0.1 lr_policy: "fixed" delta: 0', tmp_path)
    close([o[0] for o in out], [0.9, 0.8292893])


def test_rmsprop(tmp_path):
    # it0: h = 0.1·4 = 0.4, w = 1 − 0.2/√0.4 = 0.6837722
    # it1: h = 0.9·0.4 + 0.4 = 0.76, w = 0.6837722 − 0.2/√0.76 = 0.4543565
    _, out = run('type: "RMSProp" base_lr: 0.1 rms_decay: 0.9 delta: 0 lr_policy: "fixed"', tmp_path)
    close([o[0] for o in out], [0.6837722, 0.4543565])


def test_adadelta(tmp_path):
    # it0: h1 = 0.4, u = 2·√(0.01/0.41) = 0.3123475, h2 = 0.1·u² = 0.0097561, w = 0.6876525
    # it1: h1 = 0.76, u = 2·√(0.0197561/0.77) = 0.3203577, w = 0.3672947
    s, out = run('type: "AdaDelta" base_lr: 1 momentum: 0.9 delta: 0.01 lr_policy: "fixed"', tmp_path)
    close([o[0] for o in out], [0.6876525, 0.3672947], 1e-5)
    assert len(s.history) == 2 * len(s.net.caffe_params)


def test_adam(tmp_path):
    # it0 (t=1): m = 0.2, v = 0.004, corr = √0.001/0.1; update = 0.1·corr·0.2/√0.004 = 0.1
    # it1 (t=2): m = 0.38, v = 0.007996, corr = √(1−.999²)/(1−.81); update = 0.1 again
    _, out = run('type: "Adam" base_lr: 0.1 momentum: 0.9 momentum2: 0.999 delta: 0 lr_policy: "fixed"', tmp_path)
    close([o[0] for o in out], [0.9, 0.8], 1e-5)
    # b: lr_mult 2 → update 0.2 per step
    close([o[1] for o in out], [0.3, 0.1], 1e-5)


def test_legacy_solver_type(tmp_path):
    s = make_solver('solver_type: NESTEROV base_lr: 0.1 lr_policy: "fixed"', tmp_path)
    assert isinstance(s, brewnet.NesterovSolver)


def test_adagrad_refuses_momentum(tmp_path):
    with pytest.raises(SolverError, match="momentum"):
        make_solver('type: "AdaGrad" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed"', tmp_path)


def _param(text):
    return text_format.Parse(text, caffe_pb2.SolverParameter())


@pytest.mark.parametrize("text, expected", [
    ('lr_policy: "fixed" base_lr: 0.1', {0: 0.1, 7: 0.1}),
    ('lr_policy: "step" base_lr: 0.1 gamma: 0.5 stepsize: 3', {0: 0.1, 2: 0.1, 3: 0.05, 7: 0.025}),
    ('lr_policy: "exp" base_lr: 0.1 gamma: 0.9', {0: 0.1, 2: 0.081}),
    ('lr_policy: "inv" base_lr: 0.1 gamma: 0.1 power: 0.75', {0: 0.1, 10: 0.0594604}),
    ('lr_policy: "poly" base_lr: 1 power: 2 max_iter: 10', {0: 1.0, 5: 0.25, 10: 0.0}),
    ('lr_policy: "sigmoid" base_lr: 1 gamma: 1 stepsize: 5', {5: 0.5, 7: 0.8807971, 3: 0.1192029}),
])
def test_lr_policies(text, expected):
    p = _param(text)
    for it, rate in expected.items():
        close(learning_rate(p, it)[0], rate)


def test_multistep_advances_one_step_per_call():
    p = _param('lr_policy: "multistep" base_lr: 1 gamma: 0.1 stepvalue: 2 stepvalue: 5')
    step, rates = 0, []
    for it in range(7):
        r, step = learning_rate(p, it, step)
        rates.append(r)
    close(rates, [1, 1, 0.1, 0.1, 0.1, 0.01, 0.01])
    assert step == 2


def test_unknown_policy(tmp_path):
    with pytest.raises(SolverError, match="lr_policy"):
        make_solver('type: "SGD" base_lr: 0.1 lr_policy: "cosine"', tmp_path)


def test_pycaffe_apply_update_uses_diffs(tmp_path):
    s = make_solver('type: "SGD" base_lr: 0.5 lr_policy: "fixed"', tmp_path)
    w = s.net.params["ip"][0].data  # a live view
    s.net.params["ip"][0].diff[...] = 1.0
    s.net.params["ip"][1].diff[...] = 0.0
    s.apply_update()
    close(float(w.ravel()[0]), 0.5)
    assert s.iter == 0  # apply_update does not advance iter (Caffe's Step does)


def test_test_nets_share_and_average(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text(NET)
    path = tmp_path / "solver.prototxt"
    path.write_text(f'net: "{net}"\ntest_iter: 3 test_interval: 1 base_lr: 0.1 lr_policy: "fixed"\n'
                    f'max_iter: 2 snapshot_prefix: "{tmp_path}/snap" snapshot_after_train: false\n')
    s = brewnet.get_solver(str(path))
    assert len(s.test_nets) == 1
    assert s.test_nets[0].params["ip"][0].data.ctypes.data == s.net.params["ip"][0].data.ctypes.data
    s.solve()
    # tested at 0, 1 and 2: y = 2w + b; after 2 steps w = 0.6, b = 0.1 ⇒ 1.3
    close(s.last_test_scores[0]["y"], 1.3)


def test_inline_nets_and_test_state(tmp_path):
    """train_net_param / test_net_param, NetState stages from test_state, paths beside the solver."""
    staged = NET + """
layer { name: "only_val" type: "Power" bottom: "y" top: "y2" power_param { scale: 10 }
  include { stage: "val" } }
"""
    (tmp_path / "net.prototxt").write_text(staged)
    path = tmp_path / "solver.prototxt"
    inline = NET.replace("\n", " ")
    path.write_text(f'train_net_param {{ {inline} }}\ntest_net: "net.prototxt"\ntest_net: "net.prototxt"\n'
                    'test_state { stage: "val" } test_state { }\n'
                    'test_iter: 1 test_iter: 1 test_interval: 100 base_lr: 0.1 lr_policy: "fixed"\n'
                    f'snapshot_prefix: "{tmp_path}/snap"\n')
    # test_net is relative to the working directory in Caffe; found beside the solver here
    s = brewnet.get_solver(str(path))
    assert ["only_val" in n._layer_names for n in s.test_nets] == [True, False]
    assert "y2" in s.test_nets[0].outputs
    scores = s.test_all()
    close(scores[0]["y2"], 25.0)  # 10·(2·1 + 0.5)


def test_snapshot_prefix_defaults_to_solver_path(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    path = tmp_path / "my_solver.prototxt"
    path.write_text(f'net: "{tmp_path}/net.prototxt" base_lr: 0.1 lr_policy: "fixed"\n')
    s = brewnet.get_solver(str(path))
    model, state = s.snapshot()
    assert model == str(tmp_path / "my_solver_iter_0.caffemodel")
    assert state == str(tmp_path / "my_solver_iter_0.solverstate")


AMP_NET = """
layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { dim: 16 dim: 6 } shape { dim: 16 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 8 weight_filler { type: "xavier" } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""


def _amp_solver(dtype):
    from brewnet.formats import net_from_text
    brewnet.set_random_seed(4)
    sp = caffe_pb2.SolverParameter(base_lr=0.1, momentum=0.9, lr_policy="fixed", max_iter=100, display=0)
    sp.net_param.CopyFrom(net_from_text(AMP_NET))
    s = brewnet.SGDSolver(sp)
    s.net.autocast = dtype
    rng = np.random.default_rng(1)
    x = rng.standard_normal((16, 6))
    s.net.blobs["data"].data[...] = x
    s.net.blobs["label"].data[...] = (x[:, 0] > 0) + (x[:, 1] > 0)  # 0, 1 or 2
    return s


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_mixed_precision_trains_close_to_float32(dtype):
    """-amp on: autocast (bfloat16 on the CPU, float16 on CUDA, here float16 on the CPU to drive
    the loss scaling); parameters and Caffe's update stay float32."""
    ref, amp = _amp_solver(None), _amp_solver(dtype)
    losses = {}
    for name, s in (("ref", ref), ("amp", amp)):
        s.step(30)
        losses[name] = float(s.net.forward_loss()[0].detach())
    assert losses["amp"] < 0.5 * float(_amp_solver(None).net.forward_loss()[0].detach())  # it learns
    assert losses["amp"] == pytest.approx(losses["ref"], rel=0.1, abs=0.02)
    assert all(e.tensor.dtype == torch.float32 for e in amp.net.learnable)
    assert (getattr(amp, "_scaler", None) is not None) == (dtype == torch.float16)


def test_float16_overflow_skips_the_update():
    s = _amp_solver(torch.float16)
    s.step(1)
    scale = s._scaler.get_scale()
    before = [e.tensor.detach().clone() for e in s.net.learnable]
    s.net.blobs["data"].data[0, 0] = 1e30  # float16 overflows: inf gradients
    s.step(1)
    assert all(torch.equal(b, e.tensor) for b, e in zip(before, s.net.learnable))  # exact: no update ran
    assert s._scaler.get_scale() < scale and s.iter == 2
