"""End to end: ``brewnet serve`` as a real process on a free port, driven over HTTP: a dataset
from generated images, LeNet-BN trained a few epochs while its Server-Sent Events stream is read,
aborted, resumed to the end, classify one and many, and the .tar.gz bundle with its info.json."""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

CLASSES = ("bars", "columns", "dots")
FINISHED = ("Done", "Aborted", "Error", "Interrupted")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_images(root: Path, n: int, size: int = 28, seed: int = 0) -> dict[str, list[Path]]:
    """Three visibly different grey patterns with noise, ``n`` PNGs each."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[Path]] = {}
    yy, xx = np.mgrid[:size, :size]
    patterns = {"bars": (yy // 4) % 2 == 0, "columns": (xx // 4) % 2 == 0, "dots": ((yy % 6) < 2) & ((xx % 6) < 2)}
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        out[name] = []
        for i in range(n):
            a = np.where(patterns[name], 200.0, 40.0) + rng.normal(0, 25, (size, size))
            p = root / name / f"{i}.png"
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(p)
            out[name].append(p)
    return out


class Serve:
    """``python -m brewnet serve`` in its own process, its output in ``<jobs>/../serve.log``."""

    def __init__(self, jobs: Path, data: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(jobs.parent / "serve.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "brewnet", "serve", "--port", str(self.port), "--jobs", str(jobs),
             "--data-root", str(data), *extra],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 120
        while True:
            assert self.proc.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/index.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "brewnet serve did not answer:\n" + self.output()
            time.sleep(0.3)
        self.client = httpx.Client(base_url=self.url, timeout=120)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def login(self, name: str) -> None:
        r = self.client.post("/login", data={"username": name}, follow_redirects=False)
        assert r.status_code == 302, r.text

    def status(self, kind: str, job_id: str) -> dict:
        r = self.client.get(f"/{kind}/{job_id}/status")
        assert r.status_code == 200, r.text
        return json.loads(r.text)

    def wait(self, kind: str, job_id: str, until=FINISHED, timeout_s: float = 600) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            s = self.status(kind, job_id)
            if s.get("status") in until:
                return s
            assert time.monotonic() < deadline, f"{job_id}: still {s}\n{self.output()}"
            time.sleep(0.5)

    def stop(self, sig=signal.SIGTERM, timeout_s: float = 90) -> int:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout_s)
        finally:
            self.log.close()


def dataset_form(folder: Path, name: str) -> dict:
    return {"dataset_name": name, "method": "folder", "folder_train": str(folder), "folder_pct_val": "25",
            "resize_channels": "1", "resize_width": "28", "resize_height": "28", "encoding": "png",
            "backend": "lmdb"}


def lenet_bn_form(dataset_id: str, name: str, epochs: int) -> dict:
    return {"model_name": name, "dataset": dataset_id, "method": "standard", "standard_networks": "lenet_bn",
            "train_epochs": str(epochs), "batch_size": "8", "learning_rate": "0.01", "random_seed": "7",
            "shuffle": "true", "bn_recalibrate": "5"}


def read_events(client: httpx.Client, job_id: str, want, timeout_s: float = 300) -> list[tuple[str, dict]]:
    """Read /api/v1/jobs/<id>/events until ``want(events)`` holds; returns (event, data) pairs."""
    events: list[tuple[str, dict]] = []
    deadline = time.monotonic() + timeout_s
    with client.stream("GET", f"/api/v1/jobs/{job_id}/events", timeout=timeout_s) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name, data = "message", []
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                try:
                    events.append((name, json.loads("\n".join(data))))
                except ValueError:
                    events.append((name, {"text": "\n".join(data)}))
                name, data = "message", []
                if want(events):
                    return events
            assert time.monotonic() < deadline, f"no wanted event in {timeout_s} s: {events[-5:]}"
    return events


def is_metric(event: tuple[str, dict]) -> bool:
    name, data = event
    return "metric" in name or "metrics" in data or "records" in data or ("iter" in data and "value" in data)


def test_serve_end_to_end(tmp_path):
    data = tmp_path / "data"
    images = make_images(data / "train", 20)
    serve = Serve(tmp_path / "jobs", data)
    try:
        serve.login("e2e")
        c = serve.client
        r = c.post("/datasets/images/classification.json", data=dataset_form(data / "train", "patterns"))
        assert r.status_code == 200, r.text
        ds = r.json()["id"]
        assert serve.wait("datasets", ds, timeout_s=180)["status"] == "Done"
        assert c.get(f"/datasets/{ds}.json").json()["CreateDbTasks"][0]["entries"] == 45

        r = c.post("/models/images/classification.json", data=lenet_bn_form(ds, "lenet-bn", 12))
        assert r.status_code == 200, r.text
        model = r.json()["id"]
        events = read_events(c, model, lambda ev: any(is_metric(e) for e in ev))
        assert any(is_metric(e) for e in events)

        r = c.post(f"/models/{model}/abort")
        assert r.status_code == 200 and r.text == "Job aborted."
        assert serve.wait("models", model)["status"] == "Aborted"
        aborted = c.get(f"/models/{model}.json").json()
        assert aborted["snapshots"], "the abort wrote no snapshot"
        assert aborted["snapshots"][-1] < 12

        r = c.post(f"/jobs/{model}/resume")
        assert r.status_code == 200, r.text
        assert serve.wait("models", model)["status"] == "Done", serve.output()
        done = c.get(f"/models/{model}.json").json()
        assert done["snapshots"][-1] == 12
        job_json = json.loads((Path(done["directory"]) / "job.json").read_text())
        history = [s for s, _ in job_json["status_history"]]
        assert "Aborted" in history and history[-1] == "Done"
        # the resumed run continued the same metrics file at the snapshot's iteration (a run
        # started over would log its first iterations twice)
        lines = [json.loads(x) for x in (Path(done["directory"]) / "metrics.jsonl").read_text().splitlines()]
        train = [(x["iter"], x["name"]) for x in lines if x.get("phase") == "train"]
        assert max(it for it, _ in train) >= 6 * 12 - 1 and train.count(train[0]) == 1

        for name in CLASSES:
            r = c.post(f"/models/images/classification/classify_one.json?job_id={model}",
                       files={"image_file": ("x.png", images[name][0].read_bytes(), "image/png")})
            assert r.status_code == 200, r.text
            assert r.json()["predictions"][0][0] == name
        listed = [images[n][i] for n in CLASSES for i in range(5)]
        r = c.post(f"/models/images/classification/classify_many.json?job_id={model}",
                   files={"image_list": ("l.txt", "".join(f"{p}\n" for p in listed).encode())})
        assert r.status_code == 200, r.text
        got = r.json()["classifications"]
        assert set(got) == {str(p) for p in listed}
        right = sum(got[str(p)][0][0] == p.parent.name for p in listed)
        assert right >= 12, got

        r = c.get(f"/models/{model}/download.tar.gz")
        assert r.status_code == 200
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as t:
            info = json.load(t.extractfile("info.json"))
            names = t.getnames()
        assert info["id"] == model and info["status"] == "Done" and info["image dimensions"] == [28, 28, 1]
        assert "deploy.prototxt" in names and info["snapshot file"] in names
    finally:
        rc = serve.stop()
    # uvicorn ends by re-raising the SIGTERM it handled, after a clean shutdown
    assert rc in (0, -signal.SIGTERM), serve.output()
    assert "Application shutdown complete" in serve.output()


def test_public_bind_needs_a_user_with_a_password(tmp_path):
    jobs = tmp_path / "jobs"
    cmd = [sys.executable, "-m", "brewnet", "serve", "--host", "0.0.0.0", "--port", str(free_port()),
           "--jobs", str(jobs)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("brewnet serve: error:")
    # --add-user (password from stdin) and --create-token work on the database and exit
    r = subprocess.run([*cmd[:4], "--jobs", str(jobs), "--add-user", "alice", "--admin"], input="s3cret-pw\n",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "user alice created (administrator)" in r.stdout, r.stderr
    r = subprocess.run([*cmd[:4], "--jobs", str(jobs), "--create-token", "alice", "--token-name", "ci"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().startswith("bnt_"), r.stderr
    r = subprocess.run([*cmd[:4], "--jobs", str(jobs), "--create-token", "nobody"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "no user named 'nobody'" in r.stderr
    r = subprocess.run([*cmd[:4], "--jobs", str(jobs), "--add-user", "alice"], input="other\n",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    r = subprocess.run([*cmd[:4], "--data-root", str(tmp_path / "missing")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 1 and "--data-root" in r.stderr
