"""BVLC Caffe's own ``python/train.py`` (tests/bvlc_caffe/python/train.py, unchanged) trains
data-parallel on 2 CPU processes: the one line that picks the GPU, ``caffe.set_mode_gpu()``,
becomes ``caffe.set_mode_cpu()`` (the issue's "with set_mode_cpu() the same script"), and
``import caffe`` resolves to brewnet.  It gives what ``brewnet train -cpu_procs 2`` gives."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed import workspace
from tests.distributed.test_data_parallel_training import assert_close_blobs, blobs, ok, train

TRAIN_PY = Path(__file__).resolve().parents[1] / "bvlc_caffe" / "python" / "train.py"

RUN_AS_CAFFE = ("import runpy, sys, brewnet; brewnet.alias_as_caffe(); sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")


def run_train_py(tmp_path: Path, solver: Path, *extra: str) -> str:
    script = TRAIN_PY.read_text()
    assert script.count("caffe.set_mode_gpu()") == 1
    cpu = tmp_path / "train_cpu.py"
    cpu.write_text(script.replace("caffe.set_mode_gpu()", "caffe.set_mode_cpu()"))
    proc = subprocess.run([sys.executable, "-c", RUN_AS_CAFFE, str(cpu), "--solver", str(solver),
                           "--gpus", "0", "1", *extra], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    return ok(proc)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    solver = workspace.make(root, "cli", 32, snapshot=10)
    ok(train(root, "-solver", str(solver), "-cpu_procs", "2"))
    return blobs(root / "cli" / "snap_iter_20.caffemodel")


def test_train_py_trains_on_two_cpu_processes(tmp_path, reference):
    solver = workspace.make(tmp_path, "script", 32, snapshot=10)
    out = run_train_py(tmp_path, solver)
    assert "Using devices [0, 1]" in out
    assert "Data-parallel training: rank 0 of 2" in out
    assert_close_blobs(reference, blobs(tmp_path / "script" / "snap_iter_20.caffemodel"))


def test_train_py_timing_uses_timers_and_net_hooks(tmp_path, reference):
    solver = workspace.make(tmp_path, "timed", 32, snapshot=10)
    out = run_train_py(tmp_path, solver, "--timing")
    # rank 0's show_time(): per-layer forward/backward times from the net hooks, the solver total
    # and the all-reduce time measured around the NCCL callback
    assert "forw   0     data" in out and "back   1    conv1" in out
    assert "solver total:" in out and "allreduce:" in out
    assert_close_blobs(reference, blobs(tmp_path / "timed" / "snap_iter_20.caffemodel"))
