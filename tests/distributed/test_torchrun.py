"""`torchrun ... -m brewnet train -solver S` trains as `brewnet train -cpu_procs` does: one machine
with 2 processes, and 2 "machines" (two torchrun agents on this host, static rendezvous) with
one process each."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.distributed import workspace
from tests.distributed.test_data_parallel_training import assert_close_blobs, blobs, ok, train

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ref")
    solver = workspace.make(root, "cli", 32, max_iter=10, snapshot=10)
    ok(train(root, "-solver", str(solver), "-cpu_procs", "2"))
    return blobs(root / "cli" / "snap_iter_10.caffemodel")


def test_torchrun_one_node_two_processes(tmp_path, reference):
    solver = workspace.make(tmp_path, "tr", 32, max_iter=10, snapshot=10)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([*TORCHRUN, "--nnodes", "1", "--nproc-per-node", "2", "-m", "brewnet", "train",
                           "-solver", str(solver)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    out = ok(proc)
    assert "rank 0 of 2" in out
    assert_close_blobs(reference, blobs(tmp_path / "tr" / "snap_iter_10.caffemodel"))


def test_torchrun_two_nodes(tmp_path, reference):
    from brewnet.distributed.launch import free_port

    solver = workspace.make(tmp_path, "nodes", 32, max_iter=10, snapshot=10)
    port = str(free_port())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    agents = [subprocess.Popen([*TORCHRUN, "--nnodes", "2", "--node-rank", str(n), "--nproc-per-node", "1",
                                "--master-addr", "127.0.0.1", "--master-port", port, "-m", "brewnet", "train",
                                "-solver", str(solver)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for n in (0, 1)]
    outs = [a.communicate(timeout=300)[0] for a in agents]
    for a, out in zip(agents, outs):
        assert a.returncode == 0, out[-3000:]
    assert_close_blobs(reference, blobs(tmp_path / "nodes" / "snap_iter_10.caffemodel"))
