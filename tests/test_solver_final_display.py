"""Issue 20 item 1: the last logged test and the last snapshot describe the same net.

Caffe's Solve ends with one more TRAIN forward "to display the loss" when ``display`` divides
``max_iter``; it runs after the snapshot and before the final test, and moves BatchNorm's running
statistics, so Caffe's last logged accuracy belongs to statistics no file holds.  brewnet runs
that forward with the statistics frozen (a deliberate difference from Caffe).  Here max_iter =
test_interval = snapshot with display dividing max_iter, on BatchNorm nets in both dialects,
fused with its Scale or not: the logged test count equals the snapshot's exactly, and the
statistics in the snapshot are the net's after solve."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import brewnet
from brewnet.data.lmdb_io import DatumWriter
from brewnet.formats import net_from_text
from brewnet.pycaffe.io import array_to_datum
from brewnet.reporting.metrics import MetricsWriter, read_metrics
from brewnet.proto import caffe_pb2
from brewnet.solver import SGDSolver
from numeric import assert_close_f32

ITERS, DISPLAY = 6, 3          # display divides max_iter: Caffe's extra forward runs
BATCH, N_TRAIN, N_VAL = 8, 48, 24
TEST_ITER = N_VAL // BATCH     # the test covers the validation set exactly once

NET = """name: "final_display"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 }
        data_param { source: "%(root)s/train_db" batch_size: %(batch)d backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
        transform_param { scale: 0.00390625 }
        data_param { source: "%(root)s/val_db" batch_size: %(batch)d backend: LMDB } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv"
        batch_norm_param { moving_average_fraction: 0.8 %(bn)s } }
%(scale)s
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" include { phase: TEST } }
"""
SCALE = 'layer { name: "scale" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }'

# (BatchNorm fields, Scale layer or not, whether the net runs BatchNorm + Scale fused)
VARIANTS = {
    "bvlc-fused": ("", SCALE, True),
    "bvlc-unfused": ("", SCALE, False),
    "bvlc-alone": ("", "", True),
    "nvcaffe": ("scale_bias: true", "", True),
}


def write_lmdbs(root) -> None:
    """Grey 6x6 images whose brightness gives the class (0, 1, 2), with noise; the training
    set's batches differ from each other, so every TRAIN forward moves the statistics."""
    rng = np.random.default_rng(5)
    for name, n in (("train_db", N_TRAIN), ("val_db", N_VAL)):
        with DatumWriter(str(root / name)) as w:
            for i in range(n):
                label = int(rng.integers(0, 3))
                level = 80 + 30 * label + 10 * (i // BATCH)
                img = np.clip(rng.normal(level, 40, (1, 6, 6)), 0, 255).astype(np.uint8)
                w.put(array_to_datum(img, label))


def net_text(root, variant: str) -> str:
    bn, scale, _ = VARIANTS[variant]
    return NET % {"root": root, "batch": BATCH, "bn": bn, "scale": scale}


def solver_param(root, variant: str, **extra) -> caffe_pb2.SolverParameter:
    param = caffe_pb2.SolverParameter(
        base_lr=0.2, momentum=0.9, lr_policy="fixed", max_iter=ITERS, test_interval=ITERS,
        test_iter=[TEST_ITER], snapshot=ITERS, display=DISPLAY, test_initialization=False,
        snapshot_prefix=str(root / "snap"), random_seed=3, **extra)
    param.net_param.CopyFrom(net_from_text(net_text(root, variant)))
    return param


def snapshot_scores(root, variant: str) -> tuple[int, float]:
    """(correct count, mean loss) of the snapshot's weights over the whole validation set."""
    net = brewnet.Net(net_from_text(net_text(root, variant)), brewnet.TEST,
                      weights=str(root / f"snap_iter_{ITERS}.caffemodel"))
    correct, losses = 0, []
    for _ in range(TEST_ITER):
        out = net.forward()
        correct += round(float(out["acc"].reshape(-1)[0]) * BATCH)
        losses.append(float(out["loss"].reshape(-1)[0]))
    return correct, float(np.mean(losses))


def bn_blobs(net) -> list[np.ndarray]:
    return [t.detach().cpu().numpy().copy() for t in net.layer_dict["bn"].blob_tensors]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_last_logged_test_is_the_last_snapshot(tmp_path, variant):
    write_lmdbs(tmp_path)
    solver = SGDSolver(solver_param(tmp_path, variant))
    solver.net.fuse = VARIANTS[variant][2]
    assert bool(solver.net.fuse and solver.net._fused_bn_scale) == (variant == "bvlc-fused")
    metrics = tmp_path / "metrics.jsonl"
    with MetricsWriter(metrics) as w:
        solver.metrics = w
        solver.solve()
    records = read_metrics(metrics)
    # the final display forward ran (its smoothed loss is logged at max_iter) ...
    assert [r for r in records if r["phase"] == "train" and r["iter"] == ITERS]
    test = {r["name"]: r["value"] for r in records if r["phase"] == "test" and r["iter"] == ITERS}
    # ... and the statistics the snapshot holds are the net's after solve, to the bit
    saved = brewnet.Net(net_from_text(net_text(tmp_path, variant)), brewnet.TEST,
                        weights=str(tmp_path / f"snap_iter_{ITERS}.caffemodel"))
    for got, want in zip(bn_blobs(saved), bn_blobs(solver.net)):
        np.testing.assert_array_equal(got, want)
    correct, loss = snapshot_scores(tmp_path, variant)
    logged_correct = round(test["acc"] * N_VAL)
    assert abs(test["acc"] * N_VAL - logged_correct) < 1e-4  # the log holds a count over N_VAL
    assert logged_correct == correct
    # the same computation on the same statistics: equal up to float32 summation order
    assert_close_f32(test["loss"], loss, rtol=1e-5, what="logged test loss vs the snapshot's")


def test_frozen_statistics_restores_the_flags_and_changes_nothing(tmp_path):
    write_lmdbs(tmp_path)
    net = brewnet.Net(net_from_text(net_text(tmp_path, "nvcaffe")), brewnet.TRAIN)
    bn = net.layer_dict["bn"]
    net.forward_loss()                      # one update: the statistics are not zero now
    before, weight_sum = bn_blobs(net), bn.weight_sum
    bn.update_statistics = True
    with torch.no_grad(), net.frozen_statistics():
        assert bn.update_statistics is False
        net.forward_loss()
    assert bn.update_statistics is True
    assert bn.weight_sum == weight_sum
    for got, want in zip(bn_blobs(net), before):
        np.testing.assert_array_equal(got, want)
    bn.update_statistics = False            # a caller's own setting survives too
    with net.frozen_statistics():
        pass
    assert bn.update_statistics is False
    net.forward_loss()
    for got, want in zip(bn_blobs(net), before):
        np.testing.assert_array_equal(got, want)
