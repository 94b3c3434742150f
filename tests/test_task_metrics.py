"""Test-phase task metrics (brewnet/solver/task_metrics.py, the hook in Solver.test and
`brewnet train -task_metrics`): checked against float64 numpy written here, independently."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from brewnet.commands import main as cli
from brewnet.reporting.metrics import read_metrics
from brewnet.solver.task_metrics import RegressionMetrics, SegmentationMetrics
from test_generic_networks import write_lmdb

IGNORE = 255


def reference_segmentation(batches, num_classes):
    """Confusion counted pixel by pixel with a plain loop, then the metrics from their definitions."""
    conf = np.zeros((num_classes, num_classes))
    for scores, labels in batches:
        pred = np.argmax(scores, axis=1)
        lab = labels.reshape(pred.shape)
        for t, p in zip(lab.ravel(), pred.ravel()):
            if t != IGNORE:
                conf[int(t), int(p)] += 1
    out = {"pixel_accuracy": sum(conf[k, k] for k in range(num_classes)) / conf.sum()}
    ious = {}
    for k in range(num_classes):
        tp, fp, fn = conf[k, k], conf[:, k].sum() - conf[k, k], conf[k, :].sum() - conf[k, k]
        if tp + fp + fn:
            ious[k] = tp / (tp + fp + fn)
    out["mean_iou"] = sum(ious.values()) / len(ious)
    out.update({f"iou[{k}]": v for k, v in ious.items()})
    return conf, out


def test_segmentation_metrics_against_numpy():
    rng = np.random.default_rng(0)
    c = 5
    batches = []
    for n, h, w in [(2, 6, 7), (1, 9, 4), (3, 5, 5)]:  # sizes vary from batch to batch
        scores = rng.normal(size=(n, c, h, w))
        scores[:, 4] -= 100  # class 4 is never predicted ...
        labels = rng.integers(0, 4, size=(n, 1, h, w)).astype(np.float32)  # ... nor labelled
        labels[rng.random(labels.shape) < 0.2] = IGNORE
        batches.append((scores, labels))
    m = SegmentationMetrics(c, ignore_label=IGNORE)
    for i, (s, lab) in enumerate(batches):
        m.update(torch.from_numpy(s) if i == 1 else s, lab[:, 0] if i == 2 else lab)  # N×H×W too
    conf, want = reference_segmentation(batches, c)
    np.testing.assert_array_equal(m.confusion, conf)
    got = m.result()
    assert set(got) == set(want) and "iou[4]" not in got
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-12)


def test_segmentation_metrics_refuse_a_label_out_of_range():
    m = SegmentationMetrics(3, ignore_label=IGNORE)
    with pytest.raises(ValueError, match="label 7 is outside 0..2"):
        m.update(np.zeros((1, 3, 2, 2)), np.array([[[0, 7], [1, IGNORE]]]))


def test_regression_metrics_against_numpy():
    rng = np.random.default_rng(1)
    pairs = [(rng.normal(size=(4, 2)), rng.normal(size=(4, 1, 1, 2))) for _ in range(3)]
    m = RegressionMetrics()
    for p, t in pairs:
        m.update(torch.from_numpy(p).float(), t)
    d = np.concatenate([p.astype(np.float32).astype(np.float64).ravel() - t.ravel() for p, t in pairs])
    got = m.result()
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean(d ** 2)), rel=1e-12)
    assert got["mae"] == pytest.approx(np.mean(np.abs(d)), rel=1e-12)


# ----- through the solver and `brewnet train` ------------------------------------------------------
SEG_NET = """name: "seg"
layer { name: "data" type: "Data" top: "data" include { phase: TRAIN }
        data_param { source: "FEAT" batch_size: 2 backend: LMDB } }
layer { name: "label" type: "Data" top: "label" include { phase: TRAIN }
        data_param { source: "LAB" batch_size: 2 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" include { phase: TEST }
        data_param { source: "FEAT" batch_size: 1 backend: LMDB } }
layer { name: "label" type: "Data" top: "label" include { phase: TEST }
        data_param { source: "LAB" batch_size: 1 backend: LMDB } }
layer { name: "score" type: "Convolution" bottom: "data" top: "score"
        convolution_param { num_output: 3 kernel_size: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
        loss_param { ignore_label: 255 } }
layer { name: "accuracy" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy"
        accuracy_param { ignore_label: 255 } include { phase: TEST } }
"""

REG_NET = """name: "reg"
layer { name: "data" type: "Data" top: "data" data_param { source: "FEAT" batch_size: 2 backend: LMDB } }
layer { name: "label" type: "Data" top: "label" data_param { source: "LAB" batch_size: 2 backend: LMDB } }
layer { name: "output" type: "InnerProduct" bottom: "data" top: "output"
        inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.01 } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "output" bottom: "label" top: "loss" }
layer { name: "l1" type: "L1Loss" bottom: "output" bottom: "label" top: "l1" loss_weight: 0 }
"""


def setup_run(tmp_path, net: str, images, labels, test_iter: int) -> None:
    feat = write_lmdb(tmp_path / "feat", images)
    lab = write_lmdb(tmp_path / "lab", labels)
    (tmp_path / "net.prototxt").write_text(net.replace("FEAT", feat).replace("LAB", lab))
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt"\ntype: "SGD" base_lr: 0.01 momentum: 0.9 lr_policy: "fixed"\n'
        f'max_iter: 4 display: 0 test_iter: {test_iter} test_interval: 2 random_seed: 3\n'
        'snapshot_prefix: "out/run"\n')


def seg_data(rng):
    images = rng.integers(0, 256, size=(4, 3, 5, 6), dtype=np.uint8)
    labels = (images[:, :1] // 90).astype(np.uint8)  # classes 0..2
    labels[:, :, 0, 0] = IGNORE
    return images, labels


def test_train_writes_segmentation_metrics_at_each_test(tmp_path, monkeypatch, caplog):
    images, labels = seg_data(np.random.default_rng(2))
    setup_run(tmp_path, SEG_NET, images, labels, test_iter=4)
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO", logger="brewnet")
    assert cli.main(["train", "-solver", "solver.prototxt"]) == 0
    assert "    Test net metric: mean_iou = " in caplog.text
    recs = [r for r in read_metrics("out/run_metrics.jsonl") if r["phase"] == "test"]
    for it in (0, 2, 4):
        names = {r["name"] for r in recs if r["iter"] == it}
        assert {"mean_iou", "pixel_accuracy", "accuracy"} <= names and any(n.startswith("iou[") for n in names)
        # Accuracy's own number counts the same pixels: the two agree
        value = {r["name"]: r["value"] for r in recs if r["iter"] == it}
        assert value["pixel_accuracy"] == pytest.approx(value["accuracy"], abs=1e-6)
        assert 0 <= value["mean_iou"] <= 1


def test_train_task_metrics_none_turns_them_off(tmp_path, monkeypatch):
    images, labels = seg_data(np.random.default_rng(2))
    setup_run(tmp_path, SEG_NET, images, labels, test_iter=4)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "-solver", "solver.prototxt", "-task_metrics", "none"]) == 0
    names = {r["name"] for r in read_metrics("out/run_metrics.jsonl")}
    assert "accuracy" in names and not names & {"mean_iou", "pixel_accuracy", "iou[0]"}


def test_solver_regression_metrics_with_prefixes(tmp_path, monkeypatch):
    from brewnet.solver import SGDSolver
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(4, 1, 3, 3), dtype=np.uint8)
    labels = rng.uniform(-1, 1, size=(4, 1, 1, 2)).astype(np.float32)
    setup_run(tmp_path, REG_NET, images, labels, test_iter=2)
    monkeypatch.chdir(tmp_path)
    solver = SGDSolver("solver.prototxt", device="cpu")
    solver.test(0)
    got = solver.last_task_metrics
    # both losses read (output, label): one source, so no prefix
    assert set(got) == {"rmse", "mae"}
    net = solver.test_nets[0]
    pred = np.concatenate([net.layer_dict["output"].forward(torch.from_numpy(images[i:i + 2].astype(np.float32)))
                           .detach().numpy() for i in (0, 2)]).astype(np.float64)
    d = pred.ravel() - labels.astype(np.float64).ravel()
    assert got["rmse"] == pytest.approx(np.sqrt(np.mean(d ** 2)), rel=1e-5)
    assert got["mae"] == pytest.approx(np.mean(np.abs(d)), rel=1e-5)

    # two sources (a second prediction): names get the layer's prefix
    (tmp_path / "net.prototxt").write_text((tmp_path / "net.prototxt").read_text().replace(
        'bottom: "output" bottom: "label" top: "l1"', 'bottom: "label" bottom: "output" top: "l1"'))
    solver = SGDSolver("solver.prototxt", device="cpu")
    solver.test(0)
    assert set(solver.last_task_metrics) == {"loss/rmse", "loss/mae", "l1/rmse", "l1/mae"}
    assert solver.last_task_metrics["l1/mae"] == pytest.approx(solver.last_task_metrics["loss/mae"])


def test_each_test_net_writes_its_own_records(tmp_path, monkeypatch):
    from brewnet.reporting.metrics import MetricsWriter
    from brewnet.solver import SGDSolver
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(4, 1, 3, 3), dtype=np.uint8)
    labels = rng.uniform(-1, 1, size=(4, 1, 1, 2)).astype(np.float32)
    setup_run(tmp_path, REG_NET, images, labels, test_iter=2)
    solver_text = (tmp_path / "solver.prototxt").read_text().replace("test_iter: 2", "test_iter: 2 test_iter: 1")
    (tmp_path / "solver.prototxt").write_text(solver_text + "test_state { } test_state { }\n")
    monkeypatch.chdir(tmp_path)
    solver = SGDSolver("solver.prototxt", device="cpu")
    with MetricsWriter(str(tmp_path / "m.jsonl")) as solver.metrics:
        solver.test_all()
    recs = [r for r in read_metrics(str(tmp_path / "m.jsonl")) if r["name"] == "rmse"]
    assert [r.get("test_net", 0) for r in recs] == [0, 1]
    assert solver.last_task_metrics["rmse"] == pytest.approx(recs[1]["value"])  # the last test's
    assert recs[0]["value"] != recs[1]["value"]  # 4 records against the first 2
