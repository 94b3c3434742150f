"""Data-parallel training with 2 CPU processes on gloo, through `brewnet train -cpu_procs 2`:
the numbers of one process with the global batch, within float32 tolerance."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.distributed import workspace

REL = 1e-5


def train(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.pop("BREWNET_PROGRESS_FILE", None)
    proc = subprocess.run([sys.executable, "-m", "brewnet", "train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    return proc


def ok(proc: subprocess.CompletedProcess) -> str:
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def blobs(path: Path) -> dict:
    from brewnet import formats
    from brewnet.proto import caffe_pb2

    net = formats.read_binary(str(path), caffe_pb2.NetParameter)
    return {f"{layer.name}[{i}]": formats.blob_to_array(b)
            for layer in net.layer for i, b in enumerate(layer.blobs)}


def train_losses(metrics: Path, name: str = "smoothed_loss") -> dict[int, float]:
    """The solver's loss per iteration (display: 1, average_loss 1: the iteration's loss, the
    mean over iter_size); name="loss": the train net's output at the last forward."""
    out = {}
    for line in metrics.read_text().splitlines():
        r = json.loads(line)
        if r["phase"] == "train" and r["name"] == name:
            out[r["iter"]] = r["value"]
    return out


def assert_close_blobs(a: dict, b: dict, rel: float = REL) -> None:
    assert a.keys() == b.keys()
    for k in a:
        scale = max(float(np.abs(a[k]).max()), 1e-3)
        err = float(np.abs(a[k] - b[k]).max()) / scale
        assert err <= rel, f"{k}: relative difference {err:.2e} > {rel:.0e}"


def assert_close_losses(a: dict, b: dict, rel: float = REL) -> None:
    assert a.keys() == b.keys() and a
    for it in a:
        assert abs(a[it] - b[it]) <= rel * max(abs(a[it]), 1e-3), (it, a[it], b[it])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """1 process × batch 64 and 2 processes × batch 32, synchronised BatchNorm, 20 iterations."""
    root = tmp_path_factory.mktemp("dp")
    one = workspace.make(root, "one", 64, snapshot=10)
    two = workspace.make(root, "two", 32, snapshot=10)
    out_one = ok(train(root, "-solver", str(one)))
    out_two = ok(train(root, "-solver", str(two), "-cpu_procs", "2"))
    return root, out_one, out_two


def test_two_ranks_of_32_equal_one_process_of_64(runs):
    root, _, out_two = runs
    assert "rank 0 of 2" in out_two and "effective batch = batch × 2" in out_two
    a, b = blobs(root / "one" / "snap_iter_20.caffemodel"), blobs(root / "two" / "snap_iter_20.caffemodel")
    # weights, Scale's γ/β, BVLC BatchNorm's sums and NVCaffe BatchNorm's averages and γ/β
    assert {"bn1[0]", "bn1[1]", "bn1[2]", "bn2[0]", "bn2[1]", "bn2[3]", "conv1[0]"} <= a.keys()
    assert_close_blobs(a, b)
    for name in ("smoothed_loss", "loss"):
        assert_close_losses(train_losses(root / "one" / "snap_metrics.jsonl", name),
                            train_losses(root / "two" / "snap_metrics.jsonl", name))


def test_metrics_and_log_written_once(runs):
    root, _, out_two = runs
    lines = (root / "two" / "snap_metrics.jsonl").read_text().splitlines()
    iters = [json.loads(x)["iter"] for x in lines if json.loads(x)["name"] == "smoothed_loss"]
    assert iters == sorted(set(iters)), "a metrics record came twice"
    assert out_two.count("Optimization Done.") == 1
    assert "[rank 1]" not in out_two  # rank 1 logs warnings and errors only
    # test phases ran once, on rank 0, with the numbers of one process
    def tests(path):
        return [(r["iter"], r["name"], round(r["value"], 4)) for r in map(json.loads, path.read_text().splitlines())
                if r["phase"] == "test"]
    assert tests(root / "one" / "snap_metrics.jsonl") == tests(root / "two" / "snap_metrics.jsonl")


def test_unsynchronised_batchnorm_differs(runs, tmp_path):
    root = runs[0]
    two = workspace.make(tmp_path, "local", 32, snapshot=10)
    ok(train(tmp_path, "-solver", str(two), "-cpu_procs", "2", "-bn_sync", "none", "-iterations", "10"))
    local = blobs(tmp_path / "local" / "snap_iter_10.caffemodel")
    synced = blobs(root / "two" / "snap_iter_10.caffemodel")
    diff = np.abs(local["bn1[1]"] - synced["bn1[1]"]).max() / np.abs(synced["bn1[1]"]).max()
    assert diff > 1e-3  # statistics of half the batch: a different variance


def test_bn_sync_per_layer(tmp_path):
    """-bn_sync bn1: bn1's statistics are the global batch's (as with all), bn2's its rank's."""
    for policy in ("all", "bn1"):
        solver = workspace.make(tmp_path, f"sync_{policy}", 32)
        ok(train(tmp_path, "-solver", str(solver), "-cpu_procs", "2", "-bn_sync", policy, "-iterations", "1"))
    every, first = (blobs(tmp_path / f"sync_{p}" / "snap_iter_1.caffemodel") for p in ("all", "bn1"))
    assert_close_blobs({k: v for k, v in every.items() if k.startswith("bn1[")},
                       {k: v for k, v in first.items() if k.startswith("bn1[")})
    assert np.abs(every["bn2[1]"] - first["bn2[1]"]).max() > 1e-3 * np.abs(every["bn2[1]"]).max()


def test_bn_sync_names_unknown_layers(tmp_path):
    solver = workspace.make(tmp_path, "bad", 32)
    proc = train(tmp_path, "-solver", str(solver), "-cpu_procs", "2", "-bn_sync", "bn1,nosuch")
    assert proc.returncode == 1
    assert "no BatchNorm layer named nosuch" in proc.stderr + proc.stdout


def test_iter_size_2_on_2_ranks_equals_batch_times_4(tmp_path):
    # no clipping: Caffe clips the accumulated sum before dividing by iter_size, so with
    # iter_size 2 the threshold acts on twice the gradient (as in Caffe on one GPU)
    big = workspace.make(tmp_path, "big", 64, batchnorm=False, clip_gradients=-1)
    acc = workspace.make(tmp_path, "acc", 16, batchnorm=False, iter_size=2, clip_gradients=-1)
    ok(train(tmp_path, "-solver", str(big)))
    ok(train(tmp_path, "-solver", str(acc), "-cpu_procs", "2"))
    assert_close_blobs(blobs(tmp_path / "big" / "snap_iter_20.caffemodel"),
                       blobs(tmp_path / "acc" / "snap_iter_20.caffemodel"))
    # iterations 0..19 (Caffe's last display after training is one forward: one batch, not iter_size)
    big_l, acc_l = (train_losses(tmp_path / n / "snap_metrics.jsonl") for n in ("big", "acc"))
    assert_close_losses({i: v for i, v in big_l.items() if i < 20}, {i: v for i, v in acc_l.items() if i < 20})


def test_resume_across_process_counts(runs, tmp_path):
    """A 1-process snapshot resumed on 2 processes, and a 2-process one on 1, give what the
    other count gives from the same state."""
    root = runs[0]
    for name, batch, procs, state in (("one_to_two", 32, "2", root / "one" / "snap_iter_10.solverstate"),
                                      ("one_to_one", 64, "1", root / "one" / "snap_iter_10.solverstate"),
                                      ("two_to_one", 64, "1", root / "two" / "snap_iter_10.solverstate")):
        solver = workspace.make(tmp_path, name, batch, snapshot=10)
        ok(train(tmp_path, "-solver", str(solver), "-cpu_procs", procs, "-snapshot", str(state)))
    ref = blobs(tmp_path / "one_to_one" / "snap_iter_20.caffemodel")
    assert_close_blobs(ref, blobs(tmp_path / "one_to_two" / "snap_iter_20.caffemodel"))
    assert_close_blobs(ref, blobs(tmp_path / "two_to_one" / "snap_iter_20.caffemodel"))


def _snapshots(folder: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in folder.glob("snap_iter_*.solverstate")
                  if (m := re.match(r"snap_iter_(\d+)\.solverstate$", p.name)))


def _start_long_job(tmp_path: Path, *extra: str) -> tuple[subprocess.Popen, Path, list[int]]:
    solver = workspace.make(tmp_path, "long", 32, max_iter=100000, snapshot=20)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "brewnet", "train", "-solver", str(solver), "-cpu_procs", "2",
                             *extra], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    pids: list[int] = []
    deadline = time.monotonic() + 120
    lines = []
    for line in proc.stdout:
        lines.append(line)
        m = re.search(r"Started 2 training processes \(pids (\d+), (\d+)\)", line)
        if m:
            pids = [int(m.group(1)), int(m.group(2))]
        if pids and _snapshots(tmp_path / "long"):
            break
        assert time.monotonic() < deadline, "".join(lines[-30:])
    assert pids, "".join(lines[-30:])
    return proc, tmp_path / "long", pids


def _check_last_snapshot(folder: Path) -> None:
    from brewnet import formats
    from brewnet.proto import caffe_pb2

    it = _snapshots(folder)[-1]
    state = formats.read_binary(str(folder / f"snap_iter_{it}.solverstate"), caffe_pb2.SolverState)
    assert state.iter == it
    assert blobs(folder / f"snap_iter_{it}.caffemodel")["conv1[0]"].shape == (6, 1, 3, 3)


def test_killing_one_rank_ends_the_job(tmp_path):
    proc, folder, pids = _start_long_job(tmp_path)
    killed_at = time.monotonic()
    os.kill(pids[1], signal.SIGKILL)
    rest = proc.communicate(timeout=120)[0]
    assert time.monotonic() - killed_at < 60
    assert proc.returncode == 1, rest[-3000:]
    assert "rank 1 of 2 was killed by SIGKILL" in rest, rest[-3000:]
    _check_last_snapshot(folder)
    for pid in pids:  # no rank left behind
        with pytest.raises(ProcessLookupError):
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)


@pytest.mark.parametrize("watch", ["heartbeat", "collective"])
def test_a_hung_rank_ends_the_job(tmp_path, watch):
    """A stopped rank: the launcher's heartbeat watch ends the job after -hang_timeout; under
    torchrun (no launcher) the others' collective times out after -dist_timeout."""
    flags = ("-hang_timeout", "5") if watch == "heartbeat" else ("-dist_timeout", "5", "-hang_timeout", "600")
    proc, folder, pids = _start_long_job(tmp_path, *flags)
    stopped_at = time.monotonic()
    os.kill(pids[1], signal.SIGSTOP)
    try:
        rest = proc.communicate(timeout=120)[0]
    finally:
        try:
            os.kill(pids[1], signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert time.monotonic() - stopped_at < 60
    assert proc.returncode == 1, rest[-3000:]
    expected = "rank 1 (no sign of life for" if watch == "heartbeat" else "rank 1 of 2 stopped responding"
    assert expected in rest and "stopped responding" in rest, rest[-3000:]
    _check_last_snapshot(folder)


def test_sigint_stops_every_rank_with_one_snapshot(tmp_path):
    proc, folder, pids = _start_long_job(tmp_path)
    proc.send_signal(signal.SIGINT)
    rest = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, rest[-3000:]
    assert "Optimization stopped early." in rest
    _check_last_snapshot(folder)


def test_precise_batchnorm_on_two_ranks(tmp_path):
    """-bn_recalibrate re-estimates the statistics on every rank together over the global
    batches: the test numbers (both phases) and the snapshot equal one process's."""
    one = workspace.make(tmp_path, "p_one", 64, max_iter=10, snapshot=10)
    two = workspace.make(tmp_path, "p_two", 32, max_iter=10, snapshot=10)
    ok(train(tmp_path, "-solver", str(one), "-bn_recalibrate", "2"))
    ok(train(tmp_path, "-solver", str(two), "-cpu_procs", "2", "-bn_recalibrate", "2"))
    assert_close_blobs(blobs(tmp_path / "p_one" / "snap_iter_10.caffemodel"),
                       blobs(tmp_path / "p_two" / "snap_iter_10.caffemodel"))

    def tests(name):
        rows = [json.loads(x) for x in (tmp_path / name / "snap_metrics.jsonl").read_text().splitlines()]
        return {(r["iter"], r["phase"], r["name"]): r["value"] for r in rows if r["phase"].startswith("test")}
    a, b = tests("p_one"), tests("p_two")
    assert a.keys() == b.keys() and {p for _, p, _ in a} == {"test", "test_moving_bn"}
    for k in a:
        assert abs(a[k] - b[k]) <= 1e-4 * max(1.0, abs(a[k])), (k, a[k], b[k])


def _two_gpus_with_nccl() -> bool:
    import torch
    import torch.distributed as dist
    return torch.cuda.is_available() and torch.cuda.device_count() >= 2 and dist.is_nccl_available()


@pytest.mark.skipif(not _two_gpus_with_nccl(), reason="needs 2 CUDA GPUs and NCCL")
def test_two_gpus_with_nccl_equal_one_gpu_of_twice_the_batch(tmp_path):
    one = workspace.make(tmp_path, "g_one", 64)
    two = workspace.make(tmp_path, "g_two", 32)
    ok(train(tmp_path, "-solver", str(one), "-gpu", "0"))
    out = ok(train(tmp_path, "-solver", str(two), "-gpu", "0,1"))
    assert "(nccl)" in out
    # cuDNN's kernels differ between batch sizes: float32 tolerance a GPU meets
    assert_close_blobs(blobs(tmp_path / "g_one" / "snap_iter_20.caffemodel"),
                       blobs(tmp_path / "g_two" / "snap_iter_20.caffemodel"), rel=1e-4)


def test_launcher_draws_rank_0s_progress_under_the_lines(tmp_path):
    """On a terminal the launcher draws rank 0's progress file as a bar and clears it before
    each relayed line."""
    import io

    from brewnet.distributed.launch import _Screen
    from brewnet.reporting.progress_file import ProgressFile

    lines, bar = io.StringIO(), io.StringIO()
    path = tmp_path / "progress.jsonl"
    screen = _Screen(lines, str(path), bar_stream=bar)
    screen.update_bar()  # no progress yet: nothing drawn
    assert bar.getvalue() == ""
    with ProgressFile(path) as pf:
        pf.update("train", 5, 20, force=True)
    screen.next_look = 0.0  # (it looks at most 4 times a second)
    screen.update_bar()
    assert "5/20 iters" in bar.getvalue()
    screen.line("Iteration 5, loss = 1.0")
    assert bar.getvalue().endswith("\r\033[K") and lines.getvalue() == "Iteration 5, loss = 1.0\n"


@pytest.mark.slow
@pytest.mark.parametrize("bn_sync", ["all", "none"])
def test_last_logged_test_is_the_last_snapshot_on_two_ranks(tmp_path, bn_sync):
    """max_iter = test_interval = snapshot = 10 with display 1: the final display forward runs
    on both ranks (through synchronised BatchNorm's collectives too) without moving the
    statistics, so the test logged at 10 is exactly what the snapshot gives."""
    import brewnet

    # no test at 0, so that the test at 10 reads the first test_iter batches
    solver = workspace.make(tmp_path, "last", 32, max_iter=10, snapshot=10, extra="test_initialization: false")
    out = ok(train(tmp_path, "-solver", str(solver), "-cpu_procs", "2", "-bn_sync", bn_sync))
    assert "Iteration 10, loss = " in out  # the final display forward ran
    rows = [json.loads(x) for x in (tmp_path / "last" / "snap_metrics.jsonl").read_text().splitlines()]
    logged = {r["name"]: r["value"] for r in rows if r["phase"] == "test" and r["iter"] == 10}
    net = brewnet.Net(str(tmp_path / "last.prototxt"), brewnet.TEST,
                      weights=str(tmp_path / "last" / "snap_iter_10.caffemodel"))
    test_iter, batch = 4, 40  # the workspace's test net
    correct, losses = 0, []
    for _ in range(test_iter):
        scores = net.forward()
        correct += round(float(scores["accuracy"].reshape(-1)[0]) * batch)
        losses.append(float(scores["loss"].reshape(-1)[0]))
    assert round(logged["accuracy"] * test_iter * batch) == correct
    assert abs(logged["loss"] - np.mean(losses)) <= 1e-5 * abs(logged["loss"]), (logged, np.mean(losses))
