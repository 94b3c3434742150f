"""examples/pycaffe_nccl_train.py, our pycaffe script for data-parallel training on
``caffe.NCCL``, trains on 2 CPU processes (``--cpu 2``, gloo) to the weights that
``brewnet train -cpu_procs 2`` gives; with ``--timing`` rank 0 logs per-layer, iteration and
all-reduce times from caffe.Timer, the net's layer callbacks and the solver's callbacks, and
still trains to the same weights.  A rank that fails ends the run with its status."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed import workspace
from tests.distributed.test_data_parallel_training import assert_close_blobs, blobs, ok, train

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "pycaffe_nccl_train.py"

# the layers of workspace.net_prototxt's TRAIN net, in order
LAYERS = ["data", "conv1", "bn1", "scale1", "relu1", "pool1", "ip1", "bn2", "relu2", "ip2", "loss"]


def run_script(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    # the ranks are spawned interpreters: they find brewnet where this one does
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    solver = workspace.make(root, "cli", 32, snapshot=10)
    ok(train(root, "-solver", str(solver), "-cpu_procs", "2"))
    return blobs(root / "cli" / "snap_iter_20.caffemodel")


@pytest.mark.slow  # about 20 s: two spawned ranks train 20 iterations
def test_script_trains_on_two_cpu_processes(tmp_path, reference):
    solver = workspace.make(tmp_path, "script", 32, snapshot=10)
    out = ok(run_script(tmp_path, "--solver", str(solver), "--cpu", "2"))
    assert "Training on 2 CPU processes" in out
    assert "Data-parallel training: rank 0 of 2" in out
    assert "rank 0 times" not in out
    assert_close_blobs(reference, blobs(tmp_path / "script" / "snap_iter_20.caffemodel"))


@pytest.mark.slow
def test_timing_logs_every_layer_and_the_all_reduce(tmp_path, reference):
    solver = workspace.make(tmp_path, "timed", 32, snapshot=10)
    out = ok(run_script(tmp_path, "--solver", str(solver), "--cpu", "2", "--timing"))
    # display: 1, 20 iterations: one report per iteration, from rank 0 alone
    reports = re.findall(r"Iteration (\d+), rank 0 times \(ms\):\n(.*?)\n  forward \+ backward: "
                         r"(\d+\.\d+)\n  gradient all-reduce: (\d+\.\d+)", out, re.S)
    assert [int(r[0]) for r in reports] == list(range(20))
    for _, table, compute, allreduce in reports:
        rows = [line.split() for line in table.splitlines()[1:]]
        assert [r[0] for r in rows] == LAYERS
        times = [float(t) for r in rows for t in r[1:]]
        assert len(times) == 2 * len(LAYERS) and min(times) >= 0
        assert float(compute) > 0 and float(allreduce) > 0
    # the convolution's forward took some time (a layer callback pair around it ran)
    assert any(float(r[1]) > 0 for _, table, _, _ in reports for r in
               (line.split() for line in table.splitlines()[1:]) if r[0] == "conv1")
    assert_close_blobs(reference, blobs(tmp_path / "timed" / "snap_iter_20.caffemodel"))


def test_a_failing_rank_ends_the_run(tmp_path):
    solver = workspace.make(tmp_path, "broken", 32)
    proc = run_script(tmp_path, "--solver", str(solver), "--cpu", "2",
                      "--snapshot", str(tmp_path / "missing.solverstate"))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert re.search(r"rank [01] failed \(exit status 1\); stopping the others", out), out[-3000:]
    assert "missing.solverstate" in out
