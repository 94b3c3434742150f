"""``kill -9`` of ``brewnet serve`` while a training runs (a second model queued), and again while
a dataset job runs; after each restart: finished jobs intact, the running ones Interrupted (the
training resumable), the queued one queued again, the database consistent, no half-written
file; then the training resumes and finishes."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from test_serve_e2e import Serve, dataset_form, lenet_bn_form, make_images

pytestmark = pytest.mark.slow


def job_json(jobs: Path, job_id: str) -> dict:
    return json.loads((jobs / job_id / "job.json").read_text())


def check_consistent(jobs: Path) -> None:
    """SQLite's integrity check passes and no temporary file of an atomic write is left."""
    con = sqlite3.connect(jobs / "brewnet.sqlite3")
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(con.execute("SELECT id, status FROM jobs").fetchall())
    finally:
        con.close()
    leftovers = [p for p in jobs.rglob("*.tmp")]
    assert not leftovers, leftovers
    for job_id, status in rows.items():
        assert job_json(jobs, job_id)["status"] == status, job_id


def dataset_intact(jobs: Path, ds: str) -> None:
    d = jobs / ds
    assert job_json(jobs, ds)["status"] == "Done"
    for name in ("labels.txt", "mean.binaryproto", "train_db/data.mdb", "val_db/data.mdb", "summary.json"):
        assert (d / name).is_file(), name


def test_kill_9_and_restart(tmp_path):
    data = tmp_path / "data"
    make_images(data / "small", 15)
    make_images(data / "big", 1500, size=64, seed=1)
    jobs = tmp_path / "jobs"

    serve = Serve(jobs, data, "--cpu-slots", "1")
    serve.login("killer")
    c = serve.client
    ds = c.post("/datasets/images/classification.json", data=dataset_form(data / "small", "small")).json()["id"]
    assert serve.wait("datasets", ds, timeout_s=180)["status"] == "Done"
    form = lenet_bn_form(ds, "long", 40)
    form["bn_recalibrate"] = "0"
    model = c.post("/models/images/classification.json", data=form).json()["id"]
    queued = c.post("/models/images/classification.json", data=lenet_bn_form(ds, "queued", 1)).json()["id"]
    serve.wait("models", model, until=("Running",), timeout_s=120)
    deadline = time.monotonic() + 180
    while not (jobs / model / "metrics.jsonl").is_file() or not (jobs / model / "metrics.jsonl").stat().st_size:
        assert time.monotonic() < deadline, serve.output()
        time.sleep(0.2)
    assert serve.status("models", queued)["status"] == "Waiting"
    serve.stop(signal.SIGKILL)

    # restart: the trainer snapshotted on its parent's death, recovery marks it Interrupted
    serve = Serve(jobs, data, "--cpu-slots", "1")
    serve.login("killer")
    c = serve.client
    check_consistent(jobs)
    dataset_intact(jobs, ds)
    m = c.get(f"/models/{model}.json").json()
    assert m["status"] == "Interrupted", m
    assert m["snapshots"], "no snapshot to resume from"
    assert list((jobs / model).glob("snapshot_iter_*.solverstate"))
    q = job_json(jobs, queued)
    assert q["status"] in ("Waiting", "Running", "Done"), q
    assert "Interrupted" not in [s for s, _ in q["status_history"]]
    assert serve.wait("models", queued, timeout_s=300)["status"] == "Done"

    # a dataset job running when the server is killed
    big = c.post("/datasets/images/classification.json", data=dataset_form(data / "big", "big")).json()["id"]
    serve.wait("datasets", big, until=("Running",), timeout_s=60)
    deadline = time.monotonic() + 60
    while not (jobs / big / "progress.jsonl").is_file():
        assert time.monotonic() < deadline, serve.output()
        time.sleep(0.1)
    assert serve.status("datasets", big)["status"] == "Running"
    serve.stop(signal.SIGKILL)

    serve = Serve(jobs, data, "--cpu-slots", "1")
    try:
        serve.login("killer")
        c = serve.client
        check_consistent(jobs)
        dataset_intact(jobs, ds)
        assert serve.status("datasets", big)["status"] == "Interrupted"
        assert serve.status("models", model)["status"] == "Interrupted"
        assert serve.status("models", queued)["status"] == "Done"
        # the interrupted training resumes from its snapshot and finishes
        before = c.get(f"/models/{model}.json").json()["snapshots"][-1]
        r = c.post(f"/jobs/{model}/resume")
        assert r.status_code == 200, r.text
        assert serve.wait("models", model, timeout_s=600)["status"] == "Done", serve.output()
        snaps = c.get(f"/models/{model}.json").json()["snapshots"]
        assert snaps[-1] == 40 and before < 40
        lines = (jobs / model / "metrics.jsonl").read_text().splitlines()
        train = [(r["iter"], r["name"]) for r in map(json.loads, lines) if r.get("phase") == "train"]
        assert train.count(train[0]) == 1   # continued, not started over (its first record once)
        # the interrupted dataset can be deleted; the finished one still cannot (models use it)
        assert c.delete(f"/datasets/{big}").text == "Job deleted."
        assert c.delete(f"/datasets/{ds}").status_code == 403
        check_consistent(jobs)
    finally:
        rc = serve.stop()
    # uvicorn ends by re-raising the SIGTERM it handled, after a clean shutdown
    assert rc in (0, -signal.SIGTERM), serve.output()
    assert "Application shutdown complete" in serve.output()


TAG = "BREWNET_TEST_SERVER_TAG"


def tagged_processes(value: str) -> dict[int, str]:
    """pid -> command line of every live process but this one whose environment holds
    TAG=value: the server and everything it started, re-parented or not (each inherits it)."""
    want = f"{TAG}={value}".encode()
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            if want not in Path(f"/proc/{name}/environ").read_bytes().split(b"\0"):
                continue
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z":
                out[int(name)] = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        except (FileNotFoundError, ProcessLookupError, PermissionError, IndexError):
            continue
    return out


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")
def test_nothing_of_a_killed_server_survives(tmp_path, monkeypatch):
    """kill -9 of a server that has served classify_one while a training runs: its inference
    worker, the training and every other process it started end within seconds."""
    tag = uuid.uuid4().hex
    monkeypatch.setenv(TAG, tag)        # Serve's environment, and so every descendant's
    data = tmp_path / "data"
    images = make_images(data / "small", 15)
    jobs = tmp_path / "jobs"
    serve = Serve(jobs, data, "--cpu-slots", "1")
    try:
        serve.login("killer")
        c = serve.client
        ds = c.post("/datasets/images/classification.json", data=dataset_form(data / "small", "small")).json()["id"]
        assert serve.wait("datasets", ds, timeout_s=180)["status"] == "Done"
        model = c.post("/models/images/classification.json", data=lenet_bn_form(ds, "short", 1)).json()["id"]
        assert serve.wait("models", model, timeout_s=300)["status"] == "Done", serve.output()
        r = c.post(f"/models/images/classification/classify_one.json?job_id={model}",
                   files={"image_file": ("x.png", images["bars"][0].read_bytes(), "image/png")})
        assert r.status_code == 200, r.text
        long = c.post("/models/images/classification.json", data=lenet_bn_form(ds, "long", 200)).json()["id"]
        serve.wait("models", long, until=("Running",), timeout_s=120)
        trainer = job_json(jobs, long)["pid"]
        before = tagged_processes(tag)
        children = set(before) - {serve.proc.pid}
        assert serve.proc.pid in before and trainer in children and len(children) >= 2, before
        serve.stop(signal.SIGKILL)
        deadline = time.monotonic() + 30
        while tagged_processes(tag) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert tagged_processes(tag) == {}, f"left after the server's SIGKILL (of {before})"
    finally:
        if serve.proc.poll() is None:
            serve.stop(signal.SIGKILL)
        for pid in tagged_processes(tag):   # a failed run leaves nothing behind either
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
