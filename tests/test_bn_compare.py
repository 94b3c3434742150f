"""Both numbers for precise BN: with ``bn_recalibrate`` > 0 each test first runs with BatchNorm's
moving averages (metrics phase "test_moving_bn"), then with the re-estimated statistics ("test")."""
from __future__ import annotations

import pytest

from brewnet.formats import net_from_text
from brewnet.reporting.metrics import MetricsWriter, read_metrics
from brewnet.proto import caffe_pb2
from brewnet.solver import SGDSolver

# inputs far from zero mean and unit variance, so the statistics matter; the label is constant
NET = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 16 dim: 3 dim: 4 dim: 4 } shape { dim: 16 }
                           data_filler { type: "gaussian" mean: 3 std: 2 }
                           data_filler { type: "constant" value: 1 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" }
"""


def _solver(tmp_path, snapshot: int = 0, test_initialization: bool = True) -> SGDSolver:
    # lr 0.5 with momentum: the weights move fast, the moving averages (maf .999) lag them
    param = caffe_pb2.SolverParameter(base_lr=0.5, momentum=0.9, lr_policy="fixed", max_iter=10,
                                      test_iter=[2], test_interval=5, snapshot=snapshot,
                                      snapshot_prefix=str(tmp_path / "s"), random_seed=7, display=0,
                                      test_initialization=test_initialization)
    param.net_param.CopyFrom(net_from_text(NET))
    return SGDSolver(param)


def _by_phase(records) -> dict:
    out: dict = {}
    for r in records:
        out.setdefault(r["phase"], {})[(r["iter"], r["name"])] = r["value"]
    return out


@pytest.mark.parametrize("snapshot", [0, 5], ids=["no-snapshot", "snapshot-first"])
def test_both_numbers_at_each_test(tmp_path, snapshot):
    solver = _solver(tmp_path, snapshot)
    solver.bn_recalibrate = 3
    metrics = tmp_path / "metrics.jsonl"
    with MetricsWriter(metrics) as w:
        solver.metrics = w
        solver.solve()
    phases = _by_phase(read_metrics(metrics))
    test, moving = phases["test"], phases["test_moving_bn"]
    # same names at the same iterations (0: test_initialization; 10: after the last iteration)
    assert set(test) == set(moving) == {(i, n) for i in (0, 5, 10) for n in ("loss", "acc")}
    for it in (0, 5, 10):
        # the moving averages lag the weights at lr 0.5: another loss than the re-estimated one
        assert moving[(it, "loss")] != pytest.approx(test[(it, "loss")], rel=1e-3)
    assert solver.last_moving_bn_scores and solver.last_test_scores
    assert solver.last_moving_bn_scores[0]["loss"] == moving[(10, "loss")]


def test_the_moving_average_run_is_caffes_number(tmp_path):
    """The "test_moving_bn" number is what a solver without precise BN reports at that iteration
    (the first test: later ones continue from re-estimated statistics, as training does)."""
    plain = _solver(tmp_path / "a", test_initialization=False)
    with MetricsWriter(tmp_path / "a.jsonl") as w:
        plain.metrics = w
        plain.step(5)
        plain.test_all()
    precise = _solver(tmp_path / "b", test_initialization=False)
    precise.bn_recalibrate = 3
    with MetricsWriter(tmp_path / "b.jsonl") as w:
        precise.metrics = w
        precise.step(5)
        precise.test_all()
    a = _by_phase(read_metrics(tmp_path / "a.jsonl"))
    b = _by_phase(read_metrics(tmp_path / "b.jsonl"))
    assert set(a) == {"test"}
    assert b["test_moving_bn"][(5, "loss")] == pytest.approx(a["test"][(5, "loss")], rel=1e-6)


def test_no_moving_bn_record_without_recalibration_or_with_compare_off(tmp_path):
    for recal, compare in ((0, True), (3, False)):
        solver = _solver(tmp_path / f"{recal}{compare}")
        solver.bn_recalibrate = recal
        solver.bn_compare = compare
        path = tmp_path / f"m{recal}{compare}.jsonl"
        with MetricsWriter(path) as w:
            solver.metrics = w
            solver.solve()
        phases = _by_phase(read_metrics(path))
        assert "test_moving_bn" not in phases
        assert {k[0] for k in phases["test"]} == {0, 5, 10}
        assert solver.last_moving_bn_scores == []


@pytest.mark.parametrize("compare", ["on", "off"])
def test_train_flag(tmp_path, compare):
    from brewnet.commands.main import main

    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        f'net: "{tmp_path / "net.prototxt"}" base_lr: 0.5 momentum: 0.9 lr_policy: "fixed" max_iter: 4 '
        f'test_iter: 1 test_interval: 2 display: 0 random_seed: 1 snapshot_prefix: "{tmp_path / "s"}"\n')
    metrics = tmp_path / "m.jsonl"
    assert main(["train", "-solver", str(tmp_path / "solver.prototxt"), "-metrics", str(metrics),
                 "-bn_recalibrate", "2", "-bn_compare", compare]) == 0
    phases = _by_phase(read_metrics(metrics))
    if compare == "on":
        assert {k[0] for k in phases["test_moving_bn"]} == {0, 2, 4}
    else:
        assert "test_moving_bn" not in phases
    assert {k[0] for k in phases["test"]} == {0, 2, 4}
