"""brewnet.server.web.batchnorm_stats on a tiny BatchNorm model trained here with brewnet's Python
API (three snapshots): the statistics per snapshot against the caffemodel's own blobs, the cache
keyed by file and mtime, the doctor's gap in its subprocess against doctor.diagnose run here."""
from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import brewnet
from brewnet.data.builder import create_dataset
from brewnet.server.web import batchnorm_stats as bs

ITERS = 30
SNAP = 10

TRAIN_VAL = """name: "tiny"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
        transform_param {{ scale: 0.0078125 }}
        data_param {{ source: "{ds}/train_db" batch_size: 8 backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
        transform_param {{ scale: 0.0078125 }}
        data_param {{ source: "{ds}/val_db" batch_size: 3 backend: LMDB }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "bn_a" type: "BatchNorm" bottom: "conv" top: "conv" }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "conv" top: "ip1"
        inner_product_param {{ num_output: 6 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "bn_b" type: "BatchNorm" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "ip1" top: "ip"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A job-like model directory with snapshots at iterations 10, 20, 30."""
    root = tmp_path_factory.mktemp("bnstats")
    rng = np.random.default_rng(0)
    for name, rgb in {"a": (200, 30, 30), "b": (30, 200, 30), "c": (30, 30, 200)}.items():
        (root / "images" / name).mkdir(parents=True)
        for i in range(8):
            a = np.clip(np.array(rgb) + rng.normal(0, 20, (10, 10, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / "images" / name / f"{i}.png")
    ds = root / "dataset"
    create_dataset(str(root / "images"), str(ds), val_percent=25, seed=0, digits_labels=True, stream=io.StringIO())
    md = root / "20240101-000000-bbbb"
    md.mkdir()
    (md / "train_val.prototxt").write_text(TRAIN_VAL.format(ds=ds))
    (md / "solver.prototxt").write_text(
        f'net: "{md}/train_val.prototxt"\ntest_iter: 2\ntest_interval: {ITERS}\nbase_lr: 0.05\n'
        f'momentum: 0.9\nlr_policy: "fixed"\nmax_iter: {ITERS}\nsnapshot: {SNAP}\ndisplay: 0\n'
        f'snapshot_prefix: "{md}/snapshot"\nrandom_seed: 1\n')
    (md / "plan.json").write_text(json.dumps({"max_iter": ITERS, "test_iter": 2, "iters_per_epoch": SNAP}))
    brewnet.get_solver(str(md / "solver.prototxt")).solve()
    return md


def _snapshots(md: Path) -> list[dict]:
    from brewnet.server.jobs.tasks import snapshots

    return [{"iteration": it, "epoch": it / SNAP, "path": str(p)} for it, p in snapshots(md)]


def _by_hand(path: Path) -> dict[str, tuple[float, float]]:
    """Channel means of Caffe's statistics straight from the protobuf: accumulators / factor."""
    from brewnet.proto import caffe_pb2

    net = caffe_pb2.NetParameter()
    net.ParseFromString(path.read_bytes())
    out = {}
    for lp in net.layer:
        if lp.type == "BatchNorm":
            mean_acc, var_acc, factor = (np.array(b.data, dtype=np.float64) for b in lp.blobs)
            assert factor.size == 1 and factor[0] > 0
            out[lp.name] = (float(np.mean(mean_acc / factor[0])), float(np.mean(var_acc / factor[0])))
    return out


def test_running_stats_per_snapshot_as_caffe_reads_them(trained):
    snaps = _snapshots(trained)
    assert [s["iteration"] for s in snaps] == [10, 20, 30]
    out = bs.running_stats(trained, snaps)
    assert out["layers"] == ["bn_a", "bn_b"]
    assert [(s["iteration"], s["file"]) for s in out["snapshots"]] == [(10, "snapshot_iter_10.caffemodel"),
                                                                       (20, "snapshot_iter_20.caffemodel"),
                                                                       (30, "snapshot_iter_30.caffemodel")]
    for s in out["snapshots"]:
        expected = _by_hand(trained / s["file"])
        for name, (mean, var) in expected.items():
            got = s["layers"][name]
            assert got["mean"] == pytest.approx(mean, rel=1e-6, abs=1e-9)
            assert got["var"] == pytest.approx(var, rel=1e-6, abs=1e-9)
            assert got["layout"] == "bvlc"
        assert s["layers"]["bn_a"]["channels"] == 4 and s["layers"]["bn_b"]["channels"] == 6
        assert "error" not in s
    # the statistics move as training goes on
    means = [s["layers"]["bn_b"]["mean"] for s in out["snapshots"]]
    assert len(set(means)) == 3


def test_running_stats_cache_by_file_and_mtime(trained, monkeypatch):
    snaps = _snapshots(trained)
    first = bs.running_stats(trained, snaps)
    cache = json.loads((trained / bs.CACHE_FILE).read_text())
    assert set(cache["snapshots"]) == {Path(s["path"]).name for s in snaps}

    calls = []

    def counting(path):
        calls.append(Path(path).name)
        return {"bn_a": {"mean": 1.0, "var": 2.0, "channels": 4, "layout": "bvlc"}}
    monkeypatch.setattr(bs, "layer_stats", counting)
    assert bs.running_stats(trained, snaps) == first and calls == []      # all from the cache
    p = Path(snaps[1]["path"])
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        again = bs.running_stats(trained, snaps)
        assert calls == [p.name]                                          # only the changed file read
        assert again["snapshots"][1]["layers"]["bn_a"]["mean"] == 1.0
        assert again["snapshots"][0] == first["snapshots"][0]
        # a snapshot that is gone leaves the cache; a file outside the job's folder is never read
        outside = {"iteration": 99, "epoch": 9.9, "path": str(trained.parent / "elsewhere.caffemodel")}
        fewer = bs.running_stats(trained, snaps[:2] + [outside])
        assert [s["iteration"] for s in fewer["snapshots"]] == [10, 20]
        assert set(json.loads((trained / bs.CACHE_FILE).read_text())["snapshots"]) == {
            "snapshot_iter_10.caffemodel", "snapshot_iter_20.caffemodel"}
    finally:
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        monkeypatch.undo()
        (trained / bs.CACHE_FILE).unlink()


def test_damaged_snapshot_is_reported_not_raised(trained):
    bad = trained / "snapshot_iter_40.caffemodel"
    bad.write_bytes(b"not a caffemodel at all")
    try:
        out = bs.running_stats(trained, _snapshots(trained))
        row = out["snapshots"][-1]
        assert row["iteration"] == 40 and row["layers"] == {} and row["error"]
        assert out["layers"] == ["bn_a", "bn_b"]
    finally:
        bad.unlink()
        (trained / bs.CACHE_FILE).unlink()


def test_gap_matches_doctor_and_is_cached(trained):
    import torch

    from brewnet.batchnorm import doctor
    from brewnet.net import Net
    from brewnet.proto import caffe_pb2

    snaps = _snapshots(trained)
    newest = snaps[-1]
    assert bs.gap_batches(trained) == 2                  # plan.json's test_iter
    assert bs.gap_state(trained, None) == {"status": "none"}

    # what `brewnet doctor -model train_val.prototxt -weights <newest> -iterations 2` reports
    net = Net(str(trained / "train_val.prototxt"), newest["path"], caffe_pb2.TEST, dtype=torch.float64)
    report = doctor.diagnose(net, doctor.collect_batches(net, 2))
    direct = bs.compute_gap(trained, newest["path"], 2)
    assert [r["name"] for r in direct["layers"]] == [r.name for r in report.layers] == ["bn_a", "bn_b"]
    for mine, theirs in zip(direct["layers"], report.layers):
        assert mine["output_gap"] == pytest.approx(theirs.output_gap)
        assert mine["mean_shift_max"] == pytest.approx(theirs.mean_shift_max)
        assert mine["var_rel_median"] == pytest.approx(theirs.var_rel_median)
        assert mine["output_gap"] > 0
    assert direct["accuracy_global"] == pytest.approx(report.accuracy_global)
    assert set(direct["accuracy_batch"]) == {"accuracy"}

    # through the subprocess: "computing" first, then the same numbers, cached by file and mtime
    first = bs.gap_state(trained, newest)
    assert first["status"] == "computing" and first["file"] == "snapshot_iter_30.caffemodel"
    assert first["previous"] is None
    deadline = time.monotonic() + 300
    state = first
    while state["status"] == "computing":
        assert time.monotonic() < deadline, "the gap was not measured"
        time.sleep(0.2)
        state = bs.gap_state(trained, newest)
    assert state["status"] == "ready", state
    assert state["batches"] == 2 and state["iteration"] == 30
    for mine, theirs in zip(state["layers"], direct["layers"]):
        assert mine["output_gap"] == pytest.approx(theirs["output_gap"], rel=1e-9)
    assert state["accuracy_global"] == direct["accuracy_global"]
    assert json.loads((trained / bs.CACHE_FILE).read_text())["gap"]["file"] == "snapshot_iter_30.caffemodel"
    assert bs.gap_state(trained, newest, start=False)["status"] == "ready"

    # a newer file under the same name is measured again; the old numbers are shown meanwhile
    p = Path(newest["path"])
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        stale = bs.gap_state(trained, newest, start=False)
        assert stale["status"] == "computing" and stale["previous"]["layers"] == state["layers"]
    finally:
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        (trained / bs.CACHE_FILE).unlink()


def test_gap_failure_is_a_message(trained, tmp_path):
    """A job whose network cannot be built: the state says why, once, without a traceback."""
    import shutil

    jd = tmp_path / "20240101-000000-cccc"
    jd.mkdir()
    shutil.copy(trained / "snapshot_iter_10.caffemodel", jd)
    (jd / "train_val.prototxt").write_text('name: "broken" layer { name: "x" type: "NoSuchLayer" top: "x" }')
    snap = {"iteration": 10, "epoch": 1, "path": str(jd / "snapshot_iter_10.caffemodel")}
    state = bs.gap_state(jd, snap)
    deadline = time.monotonic() + 120
    while state["status"] == "computing":
        assert time.monotonic() < deadline
        time.sleep(0.2)
        state = bs.gap_state(jd, snap)
    assert state["status"] == "error"
    assert "NoSuchLayer" in state["error"] and "Traceback" not in state["error"]
    out = bs.batchnorm_json(jd, [snap], start_gap=False)
    assert out["layers"] == ["bn_a", "bn_b"] and out["gap"]["status"] == "error"
