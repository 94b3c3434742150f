"""Hand-computed checks of Caffe's loss and accuracy rules (brewnet/layers/loss.py)."""
from __future__ import annotations

import numpy as np
import pytest

from brewnet.errors import NetError
from brewnet.proto import caffe_pb2
from layer_harness import single_layer_net


def make_net(layer: str, bottoms: dict, tops=("loss",)):
    return single_layer_net(layer, bottoms, tops, phase="TRAIN")


def run(layer: str, inputs: dict, tops=("loss",), backward=False):
    net = make_net(layer, {k: np.shape(v) for k, v in inputs.items()}, tops)
    net.forward(**inputs)
    if backward:
        net.backward()
    return net


# x: (N=2, C=3, inner=2); labels (2, 2)
X = np.array([[[0.5, -1.0], [2.0, 0.0], [-0.5, 1.5]],
              [[1.0, 1.0], [0.0, -2.0], [3.0, 0.5]]])
LABEL = np.array([[2.0, 0.0], [1.0, 2.0]])


def softmax_nll(x, label):
    """-log softmax over axis 1 at the labels, per (n, inner) position."""
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n_idx, i_idx = np.meshgrid(range(x.shape[0]), range(x.shape[2]), indexing="ij")
    return -np.log(p[n_idx, label.astype(int), i_idx]), p


@pytest.mark.parametrize("param,ignore,normalizer", [
    ("", None, 4),                                                  # VALID, nothing ignored
    ("loss_param { ignore_label: 2 }", 2, 2),                       # VALID: 2 non-ignored
    ("loss_param { ignore_label: 2 normalization: FULL }", 2, 4),   # N * inner
    ("loss_param { ignore_label: 2 normalization: BATCH_SIZE }", 2, 2),
    ("loss_param { ignore_label: 0 normalization: NONE }", 0, 1),
    ("loss_param { ignore_label: 2 normalize: false }", 2, 2),      # legacy: BATCH_SIZE
    ("loss_param { ignore_label: 0 normalize: true }", 0, 3),       # legacy: VALID
])
def test_softmax_with_loss_normalization(param, ignore, normalizer):
    nll, p = softmax_nll(X, LABEL)
    keep = np.ones_like(LABEL, bool) if ignore is None else LABEL != ignore
    net = run(f'type: "SoftmaxWithLoss" {param}', {"x": X, "label": LABEL}, backward=True)
    np.testing.assert_allclose(net.blobs["loss"].data, nll[keep].sum() / normalizer, rtol=1e-12)
    # gradient: (p - onehot) / normalizer, zero at ignored positions
    onehot = np.zeros_like(X)
    for n in range(2):
        for i in range(2):
            onehot[n, int(LABEL[n, i]), i] = 1
    expected = (p - onehot) / normalizer * keep[:, None, :]
    np.testing.assert_allclose(net.blobs["x"].diff, expected, atol=1e-12)


def test_softmax_with_loss_all_ignored_and_prob_top():
    net = run('type: "SoftmaxWithLoss" loss_param { ignore_label: 1 }',
              {"x": np.zeros((2, 3)), "label": np.array([1.0, 1.0])})
    assert net.blobs["loss"].data == 0  # normalizer max(1, 0)
    net = run('type: "SoftmaxWithLoss"', {"x": X, "label": LABEL}, tops=("loss", "prob"))
    nll, p = softmax_nll(X, LABEL)
    np.testing.assert_allclose(net.blobs["prob"].data, p)
    assert net.blob_loss_weights["prob"] == 0 and net.blob_loss_weights["loss"] == 1
    net.blobs["prob"].diff[...] = 100.0  # Caffe's backward ignores the probability top's diff
    net.backward()
    onehot = np.zeros_like(X)
    for n in range(2):
        for i in range(2):
            onehot[n, int(LABEL[n, i]), i] = 1
    np.testing.assert_allclose(net.blobs["x"].diff, (p - onehot) / 4, atol=1e-12)


def test_softmax_with_loss_errors():
    with pytest.raises(NetError, match=r"layer 'l' \(SoftmaxWithLoss\).*label 3 out of range \[0, 3\)"):
        run('type: "SoftmaxWithLoss"', {"x": X, "label": np.array([[0.0, 3.0], [1.0, 2.0]])})
    # an ignored label may be anything
    run('type: "SoftmaxWithLoss" loss_param { ignore_label: 7 }', {"x": X, "label": np.array([[0.0, 7.0], [1.0, 2.0]])})
    with pytest.raises(NetError, match=r"layer 'l' \(SoftmaxWithLoss\).*number of labels"):
        make_net('type: "SoftmaxWithLoss"', {"x": (2, 3, 2), "label": (2, 3)})


def test_euclidean_sigmoid_hinge_values():
    a = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 1.0]])
    b = np.array([[0.0, 2.0], [1.0, 1.0], [3.0, 0.0]])
    net = run('type: "EuclideanLoss"', {"a": a, "b": b}, backward=True)
    assert np.isclose(net.blobs["loss"].data, (1 + 0 + 1 + 4 + 0 + 1) / 3 / 2)
    np.testing.assert_allclose(net.blobs["b"].diff, -(a - b) / 3)

    net = run('type: "L1Loss"', {"a": a, "b": b}, backward=True)  # NVCaffe's: sum |a - b| / N
    assert np.isclose(net.blobs["loss"].data, (1 + 0 + 1 + 2 + 0 + 1) / 3)
    np.testing.assert_allclose(net.blobs["a"].diff, np.sign(a - b) / 3)  # sign(0) = 0
    np.testing.assert_allclose(net.blobs["b"].diff, -np.sign(a - b) / 3)

    x = np.array([[2.0, -3.0], [0.5, 4.0]])
    t = np.array([[1.0, 0.0], [0.25, 1.0]])
    per = -(t * np.log(1 / (1 + np.exp(-x))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-x))))
    net = run('type: "SigmoidCrossEntropyLoss"', {"x": x, "t": t})
    np.testing.assert_allclose(net.blobs["loss"].data, per.sum() / 2)  # BVLC default: BATCH_SIZE
    net = run('type: "SigmoidCrossEntropyLoss" loss_param { ignore_label: 0 normalization: VALID }', {"x": x, "t": t})
    np.testing.assert_allclose(net.blobs["loss"].data, (per[0, 0] + per[1, 1]) / 2)  # 0.25 -> int 0: ignored

    x = np.array([[0.5, -2.0, 0.2], [1.5, 0.3, -0.1]])
    label = np.array([0.0, 2.0])
    # sample 0: 1-0.5, max(0,1-2)=0, 1+0.2 ; sample 1: 1+1.5, 1+0.3, 1+0.1
    terms = np.array([0.5, 0.0, 1.2, 2.5, 1.3, 1.1])
    net = run('type: "HingeLoss"', {"x": x, "label": label})
    assert np.isclose(net.blobs["loss"].data, terms.sum() / 2)
    net = run('type: "HingeLoss" hinge_loss_param { norm: L2 }', {"x": x, "label": label})
    assert np.isclose(net.blobs["loss"].data, (terms ** 2).sum() / 2)


SCORES = np.array([[0.1, 0.5, 0.4], [0.3, 0.3, 0.2], [0.9, 0.05, 0.05], [0.2, 0.3, 0.5]])
ACC_LABEL = np.array([2.0, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("param,acc", [
    ("", 0.25),                                   # sample 1 ties with class 1: a tie counts against
    ("accuracy_param { top_k: 2 }", 0.75),
    ("accuracy_param { top_k: 3 }", 1.0),
    ("accuracy_param { ignore_label: 0 }", 0.0),  # only sample 0 counts, and it is wrong
    ("accuracy_param { ignore_label: 0 top_k: 2 }", 1.0),
    ("accuracy_param { ignore_label: 2 }", 1 / 3),
])
def test_accuracy_top_k_and_ignore(param, acc):
    net = run(f'type: "Accuracy" {param}', {"x": SCORES, "label": ACC_LABEL}, tops=("acc",))
    assert np.isclose(net.blobs["acc"].data, acc)


def test_accuracy_per_class_and_errors():
    net = run('type: "Accuracy" accuracy_param { top_k: 2 }', {"x": SCORES, "label": ACC_LABEL},
              tops=("acc", "per_class"))
    assert net.blobs["per_class"].shape == (3,)
    np.testing.assert_allclose(net.blobs["per_class"].data, [2 / 3, 0.0, 1.0])  # class 1 absent: 0
    net = run('type: "Accuracy"', {"x": SCORES, "label": np.full(4, 1.0)}, tops=("acc",))
    assert net.blobs["acc"].data == 0.25  # only sample 0; sample 1 ties with class 0
    with pytest.raises(NetError, match=r"layer 'l' \(Accuracy\).*top_k 4"):
        make_net('type: "Accuracy" accuracy_param { top_k: 4 }', {"x": (4, 3), "label": (4,)}, ("acc",))
    with pytest.raises(NetError, match=r"layer 'l' \(Accuracy\).*label -1 out of range"):
        run('type: "Accuracy"', {"x": SCORES, "label": np.array([0.0, -1.0, 0.0, 0.0])}, tops=("acc",))


def test_infogain_identity_equals_softmax_loss(tmp_path):
    h = caffe_pb2.BlobProto()
    h.shape.dim.extend([3, 3])
    h.data.extend(np.eye(3).reshape(-1).tolist())
    path = tmp_path / "H.binaryproto"
    path.write_bytes(h.SerializeToString())
    x = X.transpose(0, 2, 1).reshape(4, 3)
    label = LABEL.reshape(4)
    a = run(f'type: "InfogainLoss" infogain_loss_param {{ source: "{path}" }}', {"x": x, "label": label},
            backward=True)
    b = run('type: "SoftmaxWithLoss"', {"x": x, "label": label}, backward=True)
    np.testing.assert_allclose(a.blobs["loss"].data, b.blobs["loss"].data)
    np.testing.assert_allclose(a.blobs["x"].diff, b.blobs["x"].diff, atol=1e-12)


@pytest.mark.parametrize("param", ["", "loss_param { ignore_label: 5 }"])
def test_softmax_with_loss_floors_at_flt_min_with_gradient_p_minus_1(param):
    """Caffe's loss is -log(max(p, FLT_MIN)) per position, yet its gradient stays p - onehot; the
    fast path (no ignore_label) and the general one agree."""
    x = np.array([[0.0, 200.0, 0.0], [1.0, 0.0, 0.0]])  # sample 0: p(label 0) = e^-200 < FLT_MIN
    label = np.array([0.0, 0.0])
    net = run(f'type: "SoftmaxWithLoss" {param}', {"x": x, "label": label}, backward=True)
    p = np.exp(x - x.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    floor = -np.log(np.finfo(np.float32).tiny)
    expected = (min(-np.log(p[0, 0]) if p[0, 0] > 0 else np.inf, floor) - np.log(p[1, 0])) / 2
    np.testing.assert_allclose(net.blobs["loss"].data, expected, rtol=1e-6)
    onehot = np.array([[1.0, 0, 0], [1.0, 0, 0]])
    np.testing.assert_allclose(net.blobs["x"].diff, (p - onehot) / 2, atol=1e-12)


SOLVER_LOSS_NET = """
layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { dim: 4 dim: 5 } shape { dim: 4 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_label_checks_on_an_accelerator_wait_for_a_sync_point(monkeypatch):
    """On CUDA a label check per iteration would stall the device: the check is recorded on the
    device, the kernels see clamped labels, and the error (naming the layer) comes at the next
    sync point: here the end of solver.step, or a pycaffe forward. Simulated on the CPU."""
    import brewnet
    from brewnet.formats import net_from_text
    from brewnet.layers import loss as loss_module

    monkeypatch.setattr(loss_module, "defers_checks", lambda device: True)
    sp = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", max_iter=5, display=0)
    sp.net_param.CopyFrom(net_from_text(SOLVER_LOSS_NET))
    solver = brewnet.SGDSolver(sp)
    x = np.random.default_rng(0).standard_normal((4, 5))
    solver.net.blobs["data"].data[...] = x
    solver.net.blobs["label"].data[...] = [0, 1, 2, 1]
    solver.step(2)  # good labels: no error, and the loss is the CPU path's
    loss, _ = solver.net.forward_loss()
    monkeypatch.setattr(loss_module, "defers_checks", lambda device: False)
    assert float(loss.detach()) == pytest.approx(float(solver.net.forward_loss()[0].detach()), rel=1e-6)
    monkeypatch.setattr(loss_module, "defers_checks", lambda device: True)
    solver.net.blobs["label"].data[...] = [0, 7, 2, 1]
    solver.net.forward_loss()  # recorded, not raised
    with pytest.raises(NetError, match=r"layer 'loss' \(SoftmaxWithLoss\).*label out of range \[0, 3\)"):
        solver.step(1)
    with pytest.raises(NetError, match=r"layer 'loss'.*out of range"):
        solver.net.forward()
    solver.net.blobs["label"].data[...] = [0, 1, 2, 1]
    solver.net.forward()  # nothing left pending
