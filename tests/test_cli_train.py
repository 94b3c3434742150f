"""`brewnet train|test|time` command lines: Caffe's log lines, metrics, errors, signals."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import brewnet
from brewnet import formats
from brewnet.commands import main as cli
from brewnet.reporting.metrics import read_metrics
from brewnet.proto import caffe_pb2

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NET = """
name: "clinet"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 3 } shape { dim: 8 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "bn" type: "BatchNorm" bottom: "ip1" top: "ip1" }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
  include { phase: TEST } }
"""


def write_solver(tmp_path, extra="", max_iter=6):
    (tmp_path / "net.prototxt").write_text(NET)
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt"\ntype: "SGD" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed"\n'
        f'max_iter: {max_iter} display: 2 test_iter: 2 test_interval: 3 random_seed: 3\n'
        'snapshot_prefix: "out/run"\n' + extra)
    return tmp_path / "solver.prototxt"


def test_train_logs_metrics_and_snapshots(tmp_path, monkeypatch, caplog):
    write_solver(tmp_path)
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO", logger="brewnet")
    assert cli.main(["train", "-solver", "solver.prototxt"]) == 0
    text = caplog.text
    for line in ("Iteration 0, Testing net (#0)", "Test net output #1: accuracy = ",
                 "Test net output #0: loss = ", "Iteration 2, lr = 0.1", "Train net output #0: loss = ",
                 "Optimization Done."):
        assert line in text
    assert "Iteration 4 (" in text and "), loss = " in text
    assert os.path.exists("out/run_iter_6.caffemodel") and os.path.exists("out/run_iter_6.solverstate")
    recs = read_metrics("out/run_metrics.jsonl")
    assert {r["phase"] for r in recs} == {"train", "test"}
    assert all(set(r) >= {"iter", "phase", "name", "value", "lr", "time"} for r in recs)
    assert any(r["phase"] == "test" and r["name"] == "accuracy" and r["iter"] == 3 for r in recs)
    assert any(r["name"] == "lr" and r["value"] == pytest.approx(0.1) for r in recs)
    # the snapshot loads as a net and as a solver state
    net = brewnet.Net("net.prototxt", brewnet.TEST, weights="out/run_iter_6.caffemodel")
    assert net.params["ip2"][0].data.shape == (3, 4)
    state = formats.read_binary("out/run_iter_6.solverstate", caffe_pb2.SolverState)
    assert state.iter == 6 and state.learned_net == "out/run_iter_6.caffemodel"


def test_train_resume_from_snapshot(tmp_path, monkeypatch):
    write_solver(tmp_path, "snapshot: 3\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "-solver", "solver.prototxt", "-iterations", "3"]) == 0
    assert os.path.exists("out/run_iter_3.solverstate")
    assert cli.main(["train", "--solver", "solver.prototxt", "--snapshot", "out/run_iter_3.solverstate"]) == 0
    state = formats.read_binary("out/run_iter_6.solverstate", caffe_pb2.SolverState)
    assert state.iter == 6


def test_train_errors_are_one_line(tmp_path, monkeypatch, capsys):
    write_solver(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "-solver", "missing.prototxt"]) == 1
    assert cli.main(["train", "-solver", "solver.prototxt", "-weights", "a", "-snapshot", "b"]) == 1
    assert cli.main(["train", "-solver", "solver.prototxt", "-weights", "nope.caffemodel"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(e.startswith("brewnet train: error: ") for e in err)
    assert "nope.caffemodel" in err[2]


def test_train_gpu_without_cuda_is_clear(tmp_path, monkeypatch, capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    write_solver(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "-solver", "solver.prototxt", "-gpu", "0"]) == 1
    assert "CUDA is not available" in capsys.readouterr().err


def _other_model(tmp_path, text, name):
    (tmp_path / f"{name}.prototxt").write_text(text)
    net = brewnet.Net(str(tmp_path / f"{name}.prototxt"), brewnet.TRAIN)
    net.save(str(tmp_path / f"{name}.caffemodel"))
    return f"{name}.caffemodel"


def test_weights_misshaped_layer_is_named(tmp_path, monkeypatch, capsys):
    write_solver(tmp_path)
    monkeypatch.chdir(tmp_path)
    bad = _other_model(tmp_path, NET.replace("num_output: 3", "num_output: 5"), "bad")
    assert cli.main(["train", "-solver", "solver.prototxt", "-weights", bad]) == 1
    err = capsys.readouterr().err
    assert "ip2" in err and "(5, 4)" in err and "(3, 4)" in err


def test_weights_missing_layer_is_reported(tmp_path, monkeypatch, caplog):
    write_solver(tmp_path)
    monkeypatch.chdir(tmp_path)
    partial = _other_model(tmp_path, NET.replace('name: "ip2"', 'name: "other"'), "partial")
    caplog.set_level("INFO", logger="brewnet")
    assert cli.main(["train", "-solver", "solver.prototxt", "-weights", partial, "-iterations", "1"]) == 0
    assert "no weights for layers ip2" in caplog.text


def test_sigterm_leaves_loadable_snapshot(tmp_path):
    write_solver(tmp_path, max_iter=10 ** 7)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "brewnet", "train", "-solver", "solver.prototxt"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    metrics = tmp_path / "out" / "run_metrics.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and any(r["phase"] == "train" for r in read_metrics(str(metrics))):
            break
        time.sleep(0.1)
    assert proc.poll() is None, proc.stdout.read().decode()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode()
    snaps = sorted((tmp_path / "out").glob("run_iter_*.solverstate"))
    assert len(snaps) == 1, out.decode()
    state = formats.read_binary(str(snaps[0]), caffe_pb2.SolverState)
    assert state.iter > 0
    net = brewnet.Net(str(tmp_path / "net.prototxt"), brewnet.TEST,
                      weights=str(tmp_path / state.learned_net))
    assert np.isfinite(net.params["ip1"][0].data).all()
    assert b"Optimization stopped early." in out


def test_a_stop_during_the_first_test_still_snapshots(tmp_path, monkeypatch):
    """A stop that lands in the test at iteration 0 (a server's abort right after the first
    metrics) writes snapshot_iter_0, so the job can be resumed; a stop right after a regular
    snapshot does not write it twice."""
    from brewnet.solver import get_solver

    write_solver(tmp_path, extra="snapshot: 3\n", max_iter=10)
    monkeypatch.chdir(tmp_path)
    solver = get_solver("solver.prototxt")
    calls = []

    def stop_in_first_test():
        calls.append(solver.iter)
        return "stop" if len(calls) == 1 else "none"   # the first poll is in test(): iteration 0
    solver.set_action_function(stop_in_first_test)
    solver.solve()
    assert solver.iter == 0 and os.path.exists("out/run_iter_0.solverstate")
    # resumed, and stopped right after the snapshot of iteration 3 (polled after that iteration)
    solver = get_solver("solver.prototxt")
    solver.set_action_function(lambda: "stop" if solver.iter == 3 else "none")
    solver.solve("out/run_iter_0.solverstate")
    assert solver.iter == 3
    assert sorted(p.name for p in (tmp_path / "out").glob("*.solverstate")) == [
        "run_iter_0.solverstate", "run_iter_3.solverstate"]


def test_cli_test_prints_caffe_lines(tmp_path, monkeypatch, capsys):
    write_solver(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "-solver", "solver.prototxt"]) == 0
    capsys.readouterr()
    assert cli.main(["test", "-model", "net.prototxt", "-weights", "out/run_iter_6.caffemodel",
                     "-iterations", "3"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Loss: ")
    assert any(line.startswith("accuracy = ") for line in out)
    loss_line = [line for line in out if line.startswith("loss = ")][0]
    assert loss_line.endswith(" loss)") and "(* 1 = " in loss_line


def test_cli_test_needs_weights(tmp_path, monkeypatch, capsys):
    write_solver(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["test", "-model", "net.prototxt"]) == 1
    assert "weights" in capsys.readouterr().err


def test_cli_time_prints_caffe_summary(tmp_path, monkeypatch, capsys):
    write_solver(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["time", "-model", "net.prototxt", "-iterations", "2"]) == 0
    out = capsys.readouterr().out
    for line in ("Average Forward pass: ", "Average Backward pass: ", "Average Forward-Backward: ",
                 "*** Benchmark begins ***", "Backward timing method", "Per-layer passes (each layer timed alone)",
                 "Whole net, as training runs it", "Iteration: 2 forward-backward time: "):
        assert line in out
    assert "       ip1\tforward: " in out and "       ip1\tbackward: " in out
    assert cli.main(["time", "-model", "net.prototxt", "-iterations", "1", "-forward_only"]) == 0



def test_cli_speed_switches(tmp_path, monkeypatch, capsys):
    """-fuse, -channels_last and -amp turn brewnet's speed-ups off and on; training still works."""
    write_solver(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["time", "-model", "net.prototxt", "-iterations", "1", "-fuse", "off",
                     "-channels_last", "on"]) == 0
    assert cli.main(["train", "-solver", "solver.prototxt", "-iterations", "2", "--fuse", "off",
                     "--channels_last", "on"]) == 0
    # mixed precision (bfloat16 autocast on the CPU), BatchNorm in TRAIN and TEST nets included
    assert cli.main(["train", "-solver", "solver.prototxt", "-amp", "on"]) == 0
    net = brewnet.Net("net.prototxt", brewnet.TEST, weights="out/run_iter_6.caffemodel")
    assert np.isfinite(net.params["ip2"][0].data).all()
    assert cli.main(["time", "-model", "net.prototxt", "-iterations", "1", "-amp", "on"]) == 0
    with pytest.raises(SystemExit) as e:  # argparse: usage error, exit 2
        cli.main(["time", "-model", "net.prototxt", "-fuse", "sometimes"])
    assert e.value.code == 2


def test_train_warns_about_batchnorm_pitfalls_before_training(tmp_path, monkeypatch, caplog):
    """lint's findings for the train net are logged before training (nothing is changed): here
    maf .999 (a ~1000-iteration window) for 6 iterations, and no Scale after the BVLC BatchNorm."""
    write_solver(tmp_path)
    monkeypatch.chdir(tmp_path)
    caplog.set_level("INFO", logger="brewnet")
    assert cli.main(["train", "-solver", "solver.prototxt"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith("BN008 moving-average-window layer 'bn'") and "6 iterations" in m for m in warnings)
    assert any(m.startswith("BN006") and "'bn'" in m for m in warnings)
    assert any("-bn_recalibrate 100" in m for m in warnings)
    assert caplog.text.index("BN008") < caplog.text.index("Iteration 0, Testing net")
    caplog.clear()
    assert cli.main(["train", "-solver", "solver.prototxt", "-bn_recalibrate", "2"]) == 0
    assert "BN008" in caplog.text and "-bn_recalibrate 100" not in caplog.text


def test_tf32_is_off_unless_asked(tmp_path, monkeypatch):
    """CUDA convolutions would run in TF32 by PyTorch's default (about 1e-3 from float32 Caffe);
    brewnet turns it off and -tf32 on turns it back on (the flags exist on CPU builds too)."""
    import torch
    write_solver(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    assert cli.main(["train", "-solver", "solver.prototxt"]) == 0
    assert torch.backends.cudnn.allow_tf32 is False and torch.backends.cuda.matmul.allow_tf32 is False
    assert cli.main(["train", "-solver", "solver.prototxt", "-tf32", "on"]) == 0
    assert torch.backends.cudnn.allow_tf32 is True and torch.backends.cuda.matmul.allow_tf32 is True
    brewnet.runtime.set_tf32(False)
