"""DIGITS' REST routes through FastAPI's TestClient (the application's lifespan runs: database,
scheduler, inference worker): the flow of DIGITS' own tests (docs/digits-rest.md §8) on
a real dataset and real trainings, then malformed forms, unknown ids, path escapes, oversized
uploads, JSON/HTML negotiation and the error handlers."""
from __future__ import annotations

import io
import json
import os
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from brewnet.server.app import create_app
from brewnet.server.config import ServerConfig

CLASSES = ("red", "green", "blue")
USER = "digits-testsuite"
FINISHED = ("Done", "Abort", "Aborted", "Error", "Interrupted")

# DIGITS-style custom network: stages train/val/deploy; the InnerProduct without num_output
# gets the class count (digits-rest.md §4)
TINY_LENET = """
layer { name: "scale" type: "Power" bottom: "data" top: "scaled" power_param { scale: 0.0125 } }
layer { name: "conv1" type: "Convolution" bottom: "scaled" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" \
pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool1" top: "output" \
inner_product_param { weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "output" bottom: "label" top: "loss" exclude { stage: "deploy" } }
layer { name: "accuracy" type: "Accuracy" bottom: "output" bottom: "label" top: "accuracy" include { stage: "val" } }
layer { name: "softmax" type: "Softmax" bottom: "output" top: "softmax" include { stage: "deploy" } }
"""


def make_images(root: Path, n: int = 10, size: int = 10) -> dict[str, list[Path]]:
    """DIGITS' test images: one folder per class, ``n`` colour gradients of size x size PNGs
    (the class's channel rises along x, brighter for each image)."""
    out = {}
    for ci, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        out[name] = []
        for i in range(n):
            a = np.zeros((size, size, 3), np.uint8)
            a[..., ci] = (np.linspace(80, 255, size)[None, :] * (0.5 + 0.5 * (i + 1) / n)).astype(np.uint8)
            p = root / name / f"{i}.png"
            Image.fromarray(a).save(p)
            out[name].append(p)
    return out


def wait_status(client: TestClient, kind: str, job_id: str, timeout_s: float = 300.0,
                until=FINISHED) -> dict:
    """Poll GET /<kind>/<id>/status every 0.5 s (DIGITS' test poller) until ``until``."""
    deadline = time.monotonic() + timeout_s
    while True:
        r = client.get(f"/{kind}/{job_id}/status")
        assert r.status_code == 200, r.text
        body = json.loads(r.text)
        if body.get("status") in until:
            return body
        assert time.monotonic() < deadline, f"{kind} {job_id} still {body} after {timeout_s} s"
        time.sleep(0.5)


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One server (jobs folder, data root with DIGITS' test images) for the whole flow."""
    root = tmp_path_factory.mktemp("digits")
    data = root / "data"
    images = make_images(data / "train")
    make_images(data / "val", n=4)
    config = ServerConfig(jobs_dir=root / "jobs", data_roots=[data], poll_interval_s=0.1)
    app = create_app(config, scheduler_options={"train_abort_grace_s": 60.0, "recovery_wait_s": 5.0})
    with TestClient(app) as client:
        r = client.post("/login", data={"username": USER}, follow_redirects=False)
        assert r.status_code == 302, r.text
        yield {"client": client, "root": root, "data": data, "images": images, "config": config, "app": app}


@pytest.fixture
def fresh(tmp_path):
    """A server of its own (nothing trains) for the error tests."""
    data = tmp_path / "data"
    make_images(data / "train", n=3)
    config = ServerConfig(jobs_dir=tmp_path / "jobs", data_roots=[data], max_upload_bytes=4096,
                          max_field_bytes=2048, max_form_fields=50)
    app = create_app(config)
    with TestClient(app) as client:
        yield {"client": client, "data": data, "config": config, "app": app}


def dataset_form(folder: Path, name: str = "ds", **extra) -> dict:
    form = {"dataset_name": name, "group_name": "tests", "method": "folder", "folder_train": str(folder),
            "resize_channels": "3", "resize_width": "10", "resize_height": "10", "backend": "lmdb",
            "encoding": "png", "compression": "none"}
    form.update({k: str(v) for k, v in extra.items()})
    return form


def model_form(dataset_id: str, name: str = "model", **extra) -> dict:
    form = {"model_name": name, "group_name": "tests", "dataset": dataset_id, "method": "custom",
            "custom_network": TINY_LENET, "batch_size": "10", "train_epochs": "1", "framework": "caffe",
            "random_seed": "3405691582", "shuffle": "false", "learning_rate": "0.05"}
    form.update({k: str(v) for k, v in extra.items()})
    return form


# ----------------------------------------------------------------------------- DIGITS' flow

@pytest.fixture(scope="module")
def dataset(world):
    c = world["client"]
    r = c.post("/datasets/images/classification.json",
               data=dataset_form(world["data"] / "train", folder_pct_val=20))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "Initialized" and body["name"] == "ds"
    assert wait_status(c, "datasets", body["id"], 120)["status"] == "Done"
    return body["id"]


def test_dataset_json_and_files(world, dataset):
    c = world["client"]
    d = c.get(f"/datasets/{dataset}.json").json()
    assert d["id"] == dataset and d["status"] == "Done"
    assert Path(d["directory"]).is_dir()
    parse = d["ParseFolderTasks"][0]
    total = parse["train_count"] + parse["val_count"] + parse["test_count"]
    assert total == 30 and parse["val_count"] == 0.2 * total and parse["label_count"] == 3
    assert [t["name"] for t in d["CreateDbTasks"]] == ["Create DB (train)", "Create DB (val)"]
    assert all(t["backend"] == "lmdb" and t["compression"] == "none" for t in d["CreateDbTasks"])
    assert d["CreateDbTasks"][0]["entries"] == 24 and d["CreateDbTasks"][0]["image_channels"] == 3
    # listed, and DIGITS' job redirect answers the page
    assert dataset in [j["id"] for j in c.get("/index.json").json()["datasets"]]
    completed = c.get("/completed_jobs.json").json()
    assert dataset in [j["id"] for j in completed["datasets"]]
    assert completed["datasets"][0]["backend"] == "lmdb"
    r = c.get(f"/jobs/{dataset}")
    assert r.status_code == 200 and r.url.path == f"/datasets/{dataset}" and "text/html" in r.headers["content-type"]
    assert "ds" in r.text and 'id="gallery"' in r.text
    assert c.get(f"/jobs/{dataset}/table_data.json").json()["job"]["id"] == dataset
    # mean.jpg is W x H
    r = c.get(f"/files/{dataset}/mean.jpg")
    assert r.status_code == 200
    assert Image.open(io.BytesIO(r.content)).size == (10, 10)
    assert (Path(d["directory"]) / "labels.txt").read_text().split("\n")[:3] == list(sorted(CLASSES))


def test_dataset_separate_val_folder_and_clone(world, dataset):
    c = world["client"]
    form = dataset_form(world["data"] / "train", "separate", has_val_folder="y",
                        folder_val=world["data"] / "val")
    r = c.post("/datasets/images/classification.json", data=form)
    assert r.status_code == 200, r.text
    job = r.json()["id"]
    assert wait_status(c, "datasets", job, 120)["status"] == "Done"
    d = c.get(f"/datasets/{job}.json").json()
    counts = {t["name"]: t["entries"] for t in d["CreateDbTasks"]}
    assert counts == {"Create DB (train)": 30, "Create DB (val)": 12}
    # clone=<id>: the saved fields win over the submitted defaults
    r = c.post("/datasets/images/classification.json", data={"clone": job, "dataset_name": "other"})
    assert r.status_code == 200, r.text
    clone = r.json()
    assert clone["name"] == "separate"
    assert wait_status(c, "datasets", clone["id"], 120)["status"] == "Done"
    d2 = c.get(f"/datasets/{clone['id']}.json").json()
    assert {t["name"]: t["entries"] for t in d2["CreateDbTasks"]} == counts
    # the clone route sends the browser to the prefilled form
    r = c.get(f"/clone/{job}", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == f"/datasets/images/classification/new?clone={job}"
    page = c.get(r.headers["location"])
    assert page.status_code == 200 and "separate" in page.text
    for j in (job, clone["id"]):
        assert c.delete(f"/datasets/{j}").text == "Job deleted."


@pytest.fixture(scope="module")
def model(world, dataset):
    c = world["client"]
    r = c.post("/models/images/classification.json", data=model_form(dataset))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "Initialized" and body["dataset_id"] == dataset
    assert body["snapshot file"] == "no snapshots" and body["model file"] == "original.prototxt"
    assert body["username"] == USER and body["image dimensions"] == [10, 10, 3]
    assert wait_status(c, "models", body["id"], 300)["status"] == "Done"
    return body["id"]


def test_model_json_snapshots_and_page(world, model, dataset):
    c = world["client"]
    m = c.get(f"/models/{model}.json").json()
    assert m["id"] == model and m["dataset_id"] == dataset and m["status"] == "Done"
    assert m["snapshots"] == [1]
    assert m["snapshot file"] == "snapshot_iter_3.caffemodel"   # 24 images / batch 10 -> 3 it/epoch
    assert Path(m["directory"], "solver.prototxt").is_file()
    assert model in [j["id"] for j in c.get("/index.json").json()["models"]]
    completed = c.get("/completed_jobs.json").json()
    row = next(j for j in completed["models"] if j["id"] == model)
    assert row["framework"] == "caffe" and row["dataset_id"] == dataset and row["progress"] == 1.0
    assert "loss (train) last" in row and "accuracy (val) max" in row
    assert "loss (train) last" in completed["model_output_fields"]
    page = c.get(f"/models/{model}")
    assert page.status_code == 200 and "Snapshots" in page.text and "snapshot_iter_3" in page.text
    # the same route answers JSON when Accept prefers it (DIGITS' negotiation)
    assert c.get(f"/models/{model}", headers={"Accept": "application/json"}).json()["id"] == model
    assert c.get(f"/jobs/{model}").url.path == f"/models/{model}"


def test_snapshot_epochs_follow_the_intervals(world, dataset):
    c = world["client"]
    r = c.post("/models/images/classification.json",
               data=model_form(dataset, "four epochs", train_epochs=4, snapshot_interval=2))
    job = r.json()["id"]
    r2 = c.post("/models/images/classification.json",
                data=model_form(dataset, "half epochs", train_epochs=1, snapshot_interval=0.5))
    job2 = r2.json()["id"]
    assert wait_status(c, "models", job, 300)["status"] == "Done"
    assert wait_status(c, "models", job2, 300)["status"] == "Done"
    assert c.get(f"/models/{job}.json").json()["snapshots"] == [2, 4]
    assert len(c.get(f"/models/{job2}.json").json()["snapshots"]) > 1
    for j in (job, job2):
        assert c.delete(f"/models/{j}").status_code == 200


def test_retrain_from_previous_and_sweep(world, model, dataset):
    c = world["client"]
    snaps = c.get(f"/models/{model}.json").json()["snapshots"]
    r = c.post("/models/images/classification.json",
               data={**model_form(dataset, "retrain"), "method": "previous", "previous_networks": model,
                     f"{model}-snapshot": str(snaps[-1])})
    assert r.status_code == 200, r.text
    retrain = r.json()["id"]
    assert wait_status(c, "models", retrain, 300)["status"] == "Done"
    assert c.get(f"/models/{retrain}.json").json()["snapshots"] == [1]
    # a sweep of two learning rates: one job each, names suffixed
    r = c.post("/models/images/classification.json",
               data={**model_form(dataset, "sweep"), "learning_rate": "[0.01, 0.02]"})
    assert r.status_code == 200, r.text
    jobs = r.json()["jobs"]
    assert sorted(j["name"] for j in jobs) == ["sweep learning_rate:0.01", "sweep learning_rate:0.02"]
    # the same sweep as the browser's form sends it: the field repeated (and batch sizes too)
    r = c.post("/models/images/classification.json",
               data={**model_form(dataset, "repeated"), "learning_rate": ["0.01", "0.02"],
                     "batch_size": ["2", "4"]})
    assert r.status_code == 200, r.text
    jobs += r.json()["jobs"]
    assert sorted(j["name"] for j in r.json()["jobs"]) == [
        f"repeated learning_rate:{lr} batch_size:{b}" for lr in ("0.01", "0.02") for b in (2, 4)]
    for j in jobs:
        assert c.post(f"/models/{j['id']}/abort").status_code in (200, 403)
        wait_status(c, "models", j["id"], 300)
        assert c.delete(f"/models/{j['id']}").text == "Job deleted."
    assert c.delete(f"/models/{retrain}").text == "Job deleted."


def test_classify_one_and_many(world, model):
    c = world["client"]
    image = world["images"]["green"][3]
    with open(image, "rb") as f:
        r = c.post(f"/models/images/classification/classify_one.json?job_id={model}",
                   files={"image_file": ("g.png", f, "image/png")}, data={"show_visualizations": "y"})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert preds[0][0] in CLASSES and 1 <= len(preds) <= 3
    assert all(0.0 <= p[1] <= 100.0 for p in preds) and preds == sorted(preds, key=lambda p: -p[1])
    # a server path under the data root works too; outside it is refused
    r = c.post("/models/images/classification/classify_one.json",
               data={"job_id": model, "image_path": str(image)})
    assert r.status_code == 200 and r.json()["predictions"][0][0] in CLASSES
    # a browser's form sends its unfilled file input as an empty part with filename="": no upload
    boundary = "brewnet-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="job_id"\r\n\r\n{model}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image_path"\r\n\r\n{image}\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="image_file"; filename=""\r\n'
            f'Content-Type: application/octet-stream\r\n\r\n\r\n--{boundary}--\r\n').encode()
    r = c.post("/models/images/classification/classify_one.json", content=body,
               headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 200 and r.json()["predictions"][0][0] in CLASSES
    r = c.post("/models/images/classification/classify_one.json", data={"job_id": model, "image_path": "/etc/passwd"})
    assert r.status_code == 403
    r = c.post("/models/images/classification/classify_one.json", data={"job_id": model})
    assert r.status_code == 400
    r = c.post("/models/images/classification/classify_one.json", files={"image_file": ("g.png", b"x")})
    assert r.status_code == 400
    r = c.post("/models/images/classification/classify_one.json?job_id=20200101-000000-abcd",
               files={"image_file": ("g.png", image.read_bytes())})
    assert r.status_code == 404
    # the HTML page shows the predictions and the layers
    with open(image, "rb") as f:
        page = c.post(f"/models/images/classification/classify_one?job_id={model}",
                      files={"image_file": ("g.png", f, "image/png")}, data={"show_visualizations": "y"})
    assert page.status_code == 200 and "predictions" in page.text and "conv1" in page.text
    # classify many: a list of "<abs path> <label>" lines
    listed = [world["images"][name][i] for name in CLASSES for i in (0, 9)]
    text = "".join(f"{p} {CLASSES.index(p.parent.name)}\n" for p in listed)
    r = c.post(f"/models/images/classification/classify_many.json?job_id={model}",
               files={"image_list": ("list.txt", text.encode())})
    assert r.status_code == 200, r.text
    got = r.json()["classifications"]
    assert set(got) == {str(p) for p in listed}
    assert all(v[0][0] in CLASSES for v in got.values())
    # relative paths joined with image_folder, the first N lines only
    rel = "".join(f"{name}/1.png\n" for name in CLASSES)
    r = c.post("/models/images/classification/classify_many.json",
               data={"job_id": model, "image_folder": str(world["data"] / "train"), "num_test_images": "2"},
               files={"image_list": ("list.txt", rel.encode())})
    assert r.status_code == 200, r.text
    assert set(r.json()["classifications"]) == {os.path.join(str(world["data"] / "train"), f"{n}/1.png")
                                                for n in CLASSES[:2]}
    r = c.post(f"/models/images/classification/classify_many.json?job_id={model}")
    assert r.status_code == 400 and "image_list" in r.text


@pytest.mark.parametrize("ext", ["tar", "zip", "tar.gz", "tar.bz2"])
def test_downloads(world, model, ext):
    c = world["client"]
    r = c.get(f"/models/{model}/download.{ext}")
    assert r.status_code == 200
    assert f"{model}_epoch_1.{ext}" in r.headers["content-disposition"]
    if ext == "zip":
        names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
        info = json.loads(zipfile.ZipFile(io.BytesIO(r.content)).read("info.json"))
    else:
        with tarfile.open(fileobj=io.BytesIO(r.content)) as t:
            names = t.getnames()
            info = json.load(t.extractfile("info.json"))
    for name in ("solver.prototxt", "train_val.prototxt", "deploy.prototxt", "original.prototxt",
                 "labels.txt", "mean.binaryproto", "snapshot_iter_3.caffemodel", "info.json"):
        assert name in names
    assert info["id"] == model and info["snapshot file"] == "snapshot_iter_3.caffemodel"


def test_download_errors(world, model):
    c = world["client"]
    assert c.get(f"/models/{model}/download.rar").status_code == 400
    assert c.get(f"/models/{model}/download", params={"epoch": "7"}).status_code == 404
    assert c.get("/models/20200101-000000-abcd/download").status_code == 404
    r = c.post(f"/models/{model}/download", data={"snapshot_epoch": "1"})
    assert r.status_code == 200 and f"{model}_epoch_1.tar.gz" in r.headers["content-disposition"]


def test_abort_resume_delete_and_dependents(world, dataset, model):
    c = world["client"]
    r = c.post("/models/images/classification.json", data=model_form(dataset, "long", train_epochs=400))
    job = r.json()["id"]
    wait_status(c, "models", job, 120, until=("Running",) + FINISHED)
    # wait for a first snapshot-able iteration, then abort: the trainer snapshots and stops
    deadline = time.monotonic() + 120
    while not c.get(f"/models/{job}.json").json()["progress"] and time.monotonic() < deadline:
        time.sleep(0.2)
    r = c.post(f"/models/{job}/abort")
    assert r.status_code == 200 and r.text == "Job aborted."
    assert wait_status(c, "models", job, 180)["status"] == "Aborted"
    r = c.post(f"/models/{job}/abort")
    assert r.status_code == 403 and "Job not aborted" in r.text
    # classify_one of a finished model answers while another trains (resume of this one)
    assert c.post(f"/jobs/{job}/resume").text == "Job resumed."
    wait_status(c, "models", job, 60, until=("Running",) + FINISHED)
    r = c.post(f"/models/images/classification/classify_one.json?job_id={model}",
               files={"image_file": ("b.png", world["images"]["blue"][0].read_bytes())})
    assert r.status_code == 200
    # DIGITS scripts abort then delete at once (and DIGITS deletes a running job): aborted, removed
    c.post(f"/models/{job}/abort")
    r = c.delete(f"/models/{job}")
    assert r.status_code == 200 and r.text == "Job deleted."
    assert c.get(f"/models/{job}.json").status_code == 404
    assert c.get(f"/models/{job}").status_code == 404
    assert json.loads(c.get(f"/models/{job}/status").text) == {"error": "Job not found."}
    assert not (world["config"].jobs_dir / job).exists()
    # a dataset a model uses cannot be deleted
    r = c.delete(f"/datasets/{dataset}")
    assert r.status_code == 403 and "depends on it" in r.text


def test_edit_group_and_bulk(world, dataset):
    c = world["client"]
    r = c.put(f"/jobs/{dataset}", data={"job_name": "renamed", "job_notes": "some notes"})
    assert r.status_code == 200 and r.text == "Image Classification Dataset updated."
    assert c.get(f"/datasets/{dataset}.json").json()["name"] == "renamed"
    assert c.put(f"/jobs/{dataset}", data={"job_name": "  "}).status_code == 400
    r = c.post("/group", data={"job_ids[]": [dataset], "group_name": "regrouped"})
    assert r.status_code == 200 and r.text == "Jobs regrouped."
    assert c.get(f"/jobs/{dataset}/table_data.json").json()["job"]["group"] == "regrouped"
    r = c.post("/abort_jobs", data={"job_ids[]": ["20200101-000000-abcd"]})
    assert r.status_code == 400 and "1 job not found" in r.text
    r = c.request("DELETE", "/jobs", data={"job_ids[]": ["20200101-000000-abcd", "20200101-000000-abce"]})
    assert r.status_code == 400 and "2 jobs not found" in r.text
    assert c.put(f"/jobs/{dataset}", data={"job_name": "ds"}).status_code == 200


def test_model_helpers(world):
    c = world["client"]
    r = c.post("/models/customize?network=lenet&framework=caffe")
    assert r.status_code == 200 and 'type: "Convolution"' in r.json()["network"]
    r = c.post("/models/visualize-lr", data={"lr_policy": "step", "learning_rate": "0.1",
                                             "lr_step_size": "33", "lr_step_gamma": "0.5"})
    assert r.status_code == 200
    col = r.json()["data"]["columns"][0]
    assert col[0] == "Learning Rate 0" and len(col) == 102 and col[1] == pytest.approx(0.1)


# a job's step for the delete tests: says it started, then waits for <jobdir>/go (a "stubborn"
# job ignores SIGTERM, so only the SIGKILL after the grace period ends it)
GATED_STEP = """
import os, signal, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
open("started", "w").write("1")
deadline = time.time() + 120
while time.time() < deadline and not os.path.exists("go"):
    time.sleep(0.05)
"""


@pytest.fixture
def gated(tmp_path, monkeypatch):
    """A server whose jobs' steps wait (GATED_STEP) instead of doing their work."""
    import sys

    from brewnet.server.service import control as service

    monkeypatch.setattr(service, "DELETE_GRACE_S", 0.5)
    data = tmp_path / "data"
    make_images(data / "train", n=3)
    config = ServerConfig(jobs_dir=tmp_path / "jobs", data_roots=[data], poll_interval_s=0.05, cpu_slots=2)

    def steps(job, resume):
        return [[sys.executable, "-c", GATED_STEP, job.name]]
    app = create_app(config, scheduler_options={"steps_override": steps, "abort_grace_s": 60.0})
    with TestClient(app) as client:
        assert client.post("/login", data={"username": USER}, follow_redirects=False).status_code == 302
        yield {"client": client, "data": data, "config": config}


def test_delete_of_a_running_job_aborts_then_removes_it(gated):
    """DIGITS' DELETE /datasets/<id>, /jobs/<id> and DELETE /jobs on running jobs: each is
    aborted, its process ends (SIGKILL after the grace period for one that ignores SIGTERM),
    its directory and row go, 200; a dataset a queued model uses is refused and keeps running."""
    from brewnet.server.jobs.process import pid_alive

    c, jobs = gated["client"], gated["config"].jobs_dir

    def running(name: str) -> tuple[str, tuple]:
        r = c.post("/datasets/images/classification.json", data=dataset_form(gated["data"] / "train", name))
        assert r.status_code == 200, r.text
        jid = r.json()["id"]
        wait_status(c, "datasets", jid, 60, until=("Running",) + FINISHED)
        deadline = time.monotonic() + 60
        while not (jobs / jid / "started").is_file():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        d = json.loads((jobs / jid / "job.json").read_text())
        assert d["status"] == "Running"
        return jid, (d["pid"], jobs / jid, d["pid_start"])

    def gone(jid: str, process: tuple) -> None:
        assert not (jobs / jid).exists()
        assert json.loads(c.get(f"/datasets/{jid}/status").text) == {"error": "Job not found."}
        assert c.get(f"/datasets/{jid}.json").status_code == 404
        assert not pid_alive(process[0], None, process[2])

    ds, proc = running("made and deleted at once")
    r = c.delete(f"/datasets/{ds}")
    assert (r.status_code, r.text) == (200, "Job deleted.")
    gone(ds, proc)

    stubborn, proc = running("stubborn")
    r = c.delete(f"/jobs/{stubborn}")
    assert (r.status_code, r.text) == (200, "Job deleted.")
    gone(stubborn, proc)

    used, _ = running("used")
    r = c.post("/models/images/classification.json", data=model_form(used, "queued"))
    assert r.status_code == 200, r.text
    model = r.json()["id"]
    r = c.delete(f"/datasets/{used}")
    assert r.status_code == 403 and "depends on it" in r.text and model in r.text
    assert c.get(f"/datasets/{used}/status").json()["status"] == "Running"   # not aborted either

    other, proc_other = running("stubborn")
    r = c.request("DELETE", "/jobs", data={"job_ids[]": [model, other]})
    assert (r.status_code, r.text) == (200, "Jobs deleted.")
    gone(other, proc_other)
    assert c.get(f"/models/{model}.json").status_code == 404
    (jobs / used / "go").write_text("")
    assert wait_status(c, "datasets", used, 60)["status"] == "Done"


# ----------------------------------------------------------------------------- errors

def test_login_is_needed_to_change_jobs(fresh):
    c = fresh["client"]
    r = c.post("/datasets/images/classification.json", data=dataset_form(fresh["data"] / "train"))
    assert r.status_code == 401 and "error" in r.json()
    assert c.post("/jobs/20200101-000000-abcd/abort").status_code in (401, 404)


def test_malformed_forms_name_the_field(fresh):
    c = fresh["client"]
    c.post("/login", data={"username": "tester"})
    r = c.post("/datasets/images/classification.json", data={"method": "folder"})
    assert r.status_code == 400 and "dataset_name" in r.json()["errors"]
    r = c.post("/datasets/images/classification.json",
               data=dataset_form(fresh["data"] / "nope"))
    assert r.status_code == 400 and r.json()["errors"]["folder_train"]
    r = c.post("/datasets/images/classification.json",
               data=dataset_form(fresh["data"] / "train", resize_width="wide"))
    assert r.status_code == 400 and "resize_width" in r.json()["errors"]
    r = c.post("/models/images/classification.json", data=model_form("20200101-000000-abcd"))
    assert r.status_code == 400 and r.json()["errors"]["dataset"]
    r = c.post("/datasets/images/classification.json", content=b"--x\r\nbroken",
               headers={"Content-Type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400
    # nothing half made
    assert [p.name for p in fresh["config"].jobs_dir.iterdir() if not p.name.startswith("brewnet.sqlite3")] == []


def test_oversized_upload_and_field_are_413_and_leave_nothing(fresh):
    c = fresh["client"]
    c.post("/login", data={"username": "tester"})
    r = c.post("/datasets/images/classification.json", data={"dataset_name": "big", "method": "textfile"},
               files={"textfile_train_images": ("train.txt", b"x" * 5000)})
    assert r.status_code == 413 and r.json()["error"]["field"] == "textfile_train_images"
    r = c.post("/datasets/images/classification.json", data={"dataset_name": "n" * 3000})
    assert r.status_code == 413
    r = c.post("/datasets/images/classification.json", data={f"f{i}": "1" for i in range(60)})
    assert r.status_code == 413
    assert [p.name for p in fresh["config"].jobs_dir.iterdir() if not p.name.startswith("brewnet.sqlite3")] == []


def test_unknown_ids(fresh):
    c = fresh["client"]
    c.post("/login", data={"username": "tester"})
    unknown = "20200101-000000-abcd"
    for path in (f"/datasets/{unknown}.json", f"/models/{unknown}.json", f"/datasets/{unknown}",
                 f"/models/{unknown}", f"/jobs/{unknown}", f"/jobs/{unknown}/table_data.json",
                 "/datasets/not-an-id.json", "/models/..%2F..%2Fetc.json"):
        r = c.get(path)
        assert r.status_code == 404, path
        assert r.json()["error"]["message"].startswith("404 Not Found"), path
    r = c.get(f"/jobs/{unknown}/status")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert json.loads(r.text) == {"error": "Job not found."}
    assert c.post(f"/jobs/{unknown}/abort").status_code == 404
    assert c.delete(f"/jobs/{unknown}").status_code == 404
    assert c.put(f"/jobs/{unknown}", data={"job_name": "x"}).status_code == 404
    assert c.get(f"/clone/{unknown}").status_code == 404


def test_files_are_confined_to_job_directories(fresh, tmp_path):
    c = fresh["client"]
    jobs = fresh["config"].jobs_dir
    d = jobs / "20200101-000000-abcd"
    d.mkdir()
    (d / "ok.txt").write_text("fine")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    (d / "escape").symlink_to(tmp_path)
    assert c.get("/files/20200101-000000-abcd/ok.txt").text == "fine"
    for path, codes in (("/files/20200101-000000-abcd/escape/secret.txt", (400,)),
                        ("/files/20200101-000000-abcd/%2e%2e/%2e%2e/secret.txt", (400, 404)),
                        ("/files/20200101-000000-abcd/..%2F..%2Fsecret.txt", (400, 404)),
                        ("/files/%2Fetc%2Fpasswd", (400, 404)),
                        ("/files/brewnet.sqlite3", (404,)),
                        ("/files/20200101-000000-abcd/missing.txt", (404,))):
        r = c.get(path)
        assert r.status_code in codes, (path, r.status_code, r.text)
        assert "TOP-SECRET-CONTENT" not in r.text and "root:" not in r.text


def test_negotiation_and_pages(fresh):
    c = fresh["client"]
    r = c.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'id="dataset-jobs"' in r.text and "None yet." in r.text
    r = c.get("/", headers={"Accept": "application/json"})
    assert r.json()["datasets"] == [] and r.json()["version"]
    # equal preference (curl's */*) is HTML, as DIGITS did
    assert c.get("/", headers={"Accept": "*/*"}).headers["content-type"].startswith("text/html")
    assert c.get("/", headers={"Accept": "text/html;q=0.5, application/json"}).json()["models"] == []
    assert c.get("/index.json").json()["jobs_dir"] == str(fresh["config"].jobs_dir)
    assert c.get("/datasets/images/classification/new").status_code == 200


def test_error_handlers_answer_json_without_traces(tmp_path):
    app = create_app(ServerConfig(jobs_dir=tmp_path / "jobs"))

    @app.get("/_test/crash")
    def crash():
        raise RuntimeError("secret detail /home/x")

    @app.get("/_test/typed")
    def typed(count: int):
        return {"count": count}

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/_test/crash")
        assert r.status_code == 500
        body = r.json()
        assert body["error"]["message"].startswith("500 Internal Server Error")
        assert "Traceback" not in r.text and "secret detail" not in r.text
        r = c.get("/_test/typed", params={"count": "many"})
        assert r.status_code == 400 and "count" in r.json()["errors"]
        r = c.post("/index.json")
        assert r.status_code == 405 and "error" in r.json()
