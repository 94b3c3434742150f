"""brewnet's /api/v1 through the real application and FastAPI's TestClient.

Most tests put job rows and files in place themselves (nothing trains), so that each route's
answer can be checked exactly; the slow test runs the real thing: a dataset made from generated
images, a tiny network trained one epoch, then snapshots, the bundle, classify one, classify many,
a test of the validation set, clone and delete, all over /api/v1."""
from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from brewnet.server import auth
from brewnet.server.app import create_app
from brewnet.server.config import ServerConfig
from brewnet.server.jobs.jobdir import write_job_json
from brewnet.server.store.db import new_job_id
from brewnet.server.store.models import Job

BN_NET = """name: "t"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
"""


@pytest.fixture
def env(tmp_path):
    """A server in local mode (no password users): reads need no login, changes a DIGITS name."""
    config = ServerConfig(jobs_dir=tmp_path / "jobs", data_roots=[tmp_path / "data"], poll_interval_s=0.1)
    (tmp_path / "data").mkdir()
    app = create_app(config)
    with TestClient(app) as client:
        yield {"client": client, "app": app, "config": config, "tmp": tmp_path}


def add_job(app, kind: str = "model", status: str = "Done", owner: str | None = "bob", name: str | None = None,
            dataset_id: str | None = None, metrics: list[dict] | None = None, log: str | None = None,
            files: dict[str, bytes] | None = None, spec: dict | None = None, progress: float = 1.0,
            created: float | None = None) -> str:
    """A job row and directory as the scheduler would leave them (no task runs)."""
    config = app.state.config
    job_id = new_job_id(created)
    d = config.jobs_dir / job_id
    d.mkdir(parents=True)
    now = created or time.time()
    job = Job(id=job_id, kind=kind, name=name or f"{kind} {job_id}", group_name="", notes="", owner=owner,
              status=status, status_history=[["Initialized", now], [status, now]], created=now,
              progress=progress, dataset_id=dataset_id, resources={}, assigned={}, spec=spec or {},
              summary={}, queue_seq=None)
    if metrics is not None:
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    if log is not None:
        (d / "log.txt").write_text(log)
    for rel, data in (files or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    with app.state.db.session() as s:
        if status == "Waiting":
            job.queue_seq = int(time.time() * 1000) % 1_000_000_000
        s.add(job)
        s.flush()
        write_job_json(d, job)
    return job_id


def token_of(app, name: str, password: str | None = "pw", admin: bool = False) -> dict:
    with app.state.db.session() as s:
        user = auth.create_user(s, name, password, is_admin=admin)
        s.flush()
        return {"Authorization": f"Bearer {auth.create_token(s, user)}"}


def records(n: int) -> list[dict]:
    """Training loss every iteration, validation accuracy every 10 with its best at iteration 37."""
    out = []
    for i in range(n):
        out.append({"iter": i, "phase": "train", "name": "loss", "value": 2.0 / (1 + i), "time": 1000.0 + i})
        if i % 10 == 0 or i == 37:
            acc = 0.99 if i == 37 else 0.5 + i / (4 * n)
            out.append({"iter": i, "phase": "test", "name": "accuracy", "value": acc, "time": 1000.0 + i})
    return out


# ----------------------------------------------------------------------- the schema

def test_openapi_lists_every_api_route(env):
    c = env["client"]
    schema = c.get("/api/v1/openapi.json").json()
    documented = {(p, m.upper()) for p, ops in schema["paths"].items() for m in ops}
    from brewnet.server.routes import accounts, api_v1, events

    routes = {(r.path, m) for module in (api_v1, accounts, events) for r in module.router.routes
              if r.path.startswith("/api/v1/") for m in r.methods if m != "HEAD"}
    assert routes and routes == documented, routes ^ documented
    assert all(p.startswith("/api/v1/") for p in schema["paths"])       # DIGITS' routes stay out
    for path in ("/api/v1/jobs", "/api/v1/jobs/{job_id}/events", "/api/v1/lint", "/api/v1/tokens"):
        assert path in schema["paths"]
    # the pydantic models are the schema
    assert "JobOut" in schema["components"]["schemas"]
    assert "queue_position" in schema["components"]["schemas"]["JobOut"]["properties"]
    ops = schema["paths"]["/api/v1/models/{job_id}/classify"]["post"]
    assert "image_file" in ops["requestBody"]["content"]["multipart/form-data"]["schema"]["properties"]


# ----------------------------------------------------------------------- jobs

def test_jobs_list_filters_and_detail(env):
    app, c = env["app"], env["client"]
    t = time.time()
    ds = add_job(app, "dataset", "Done", owner="alice", name="digits", created=t - 30)
    running_ds = add_job(app, "dataset", "Running", owner="alice", progress=0.25, created=t - 20)
    model = add_job(app, "model", "Error", owner="bob", dataset_id=ds, created=t - 10,
                    files={"snapshot_iter_5.caffemodel": b"w", "snapshot_iter_5.solverstate": b"s"})
    waiting = add_job(app, "model", "Waiting", owner="bob", dataset_id=running_ds, created=t)
    jobs = c.get("/api/v1/jobs").json()["jobs"]
    assert [j["id"] for j in jobs] == [waiting, model, running_ds, ds]          # newest first
    by_id = {j["id"]: j for j in jobs}
    assert by_id[running_ds]["progress"] == 0.25 and by_id[running_ds]["status"] == "Running"
    assert by_id[waiting]["queue_position"] == 1 and by_id[model]["queue_position"] is None
    assert by_id[ds]["type"] == "Image Classification Dataset" and by_id[ds]["owner"] == "alice"
    assert by_id[ds]["status_history"][-1][0] == "Done" and by_id[ds]["created"] == pytest.approx(t - 30)
    ids = lambda **q: [j["id"] for j in c.get("/api/v1/jobs", params=q).json()["jobs"]]  # noqa: E731
    assert ids(kind="dataset") == [running_ds, ds]
    assert ids(status="Error") == [model]
    assert ids(status="active") == [waiting, running_ds]
    assert ids(status="finished") == [model, ds]
    assert ids(owner="alice", kind="dataset", status="Done") == [ds]
    assert c.get("/api/v1/jobs", params={"kind": "pretrained"}).status_code == 400
    r = c.get("/api/v1/jobs", params={"status": "Abort"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "status"
    detail = c.get(f"/api/v1/jobs/{model}").json()
    assert detail["dataset_id"] == ds and detail["spec"] == {} and detail["snapshots"][0]["iteration"] == 5
    assert c.get("/api/v1/jobs/20990101-000000-abcd").status_code == 404
    assert c.get("/api/v1/jobs/..%2F..%2Fetc").status_code in (400, 404)
    # the queue and the slots
    q = c.get("/api/v1/queue").json()["queue"]
    assert [(e["id"], e["position"]) for e in q] == [(waiting, 1)]
    slots = c.get("/api/v1/resources").json()
    assert slots["cpu"]["total"] == 1 and slots["gpus"] == []


def test_metrics_log_and_files(env):
    app, c = env["app"], env["client"]
    log = "".join(f"line {i}\n" for i in range(500))
    model = add_job(app, metrics=records(100), log=log, files={"sub/deploy.prototxt": b"x" * 7})
    full = c.get(f"/api/v1/jobs/{model}/metrics").json()
    assert full["job_id"] == model and len(full["train"]["loss"]) == 100
    assert full["train"]["loss"][3] == [3, 0.5, 1003.0]
    small = c.get(f"/api/v1/jobs/{model}/metrics", params={"max_points": 5}).json()
    assert len(small["train"]["loss"]) == 5
    acc = small["test"]["accuracy"]
    assert len(acc) == 5 and [37, 0.99, 1037.0] in acc              # the best validation point is kept
    assert acc[0][0] == 0 and acc[-1][0] == 90
    assert c.get(f"/api/v1/jobs/{model}/metrics", params={"max_points": 1}).status_code == 400
    tail = c.get(f"/api/v1/jobs/{model}/log", params={"lines": 3}).json()
    assert tail["lines"] == ["line 497", "line 498", "line 499"]
    assert c.get(f"/api/v1/jobs/{model}/log", params={"lines": 0}).status_code == 400
    files = c.get(f"/api/v1/jobs/{model}/files").json()
    listed = {f["path"]: f for f in files["files"]}
    assert {"job.json", "log.txt", "metrics.jsonl", "sub/deploy.prototxt"} <= set(listed)
    assert listed["sub/deploy.prototxt"]["size"] == 7 and files["truncated"] is False
    r = c.get(listed["sub/deploy.prototxt"]["url"])
    assert r.status_code == 200 and r.content == b"x" * 7
    ds = add_job(app, "dataset")
    assert c.get(f"/api/v1/jobs/{ds}/metrics").json() == {"job_id": ds, "train": {}, "test": {}}
    assert c.get(f"/api/v1/jobs/{ds}/log").json()["lines"] == []


def test_control_edit_abort_resume_delete(env):
    app, c = env["app"], env["client"]
    bob = {"username": "bob"}
    running_ds = add_job(app, "dataset", "Running", owner="bob", progress=0.5)
    waiting = add_job(app, "model", "Waiting", owner="bob", dataset_id=running_ds)
    # changes need a user (local mode: DIGITS' name)
    assert c.patch(f"/api/v1/jobs/{waiting}", json={"name": "x"}).status_code == 401
    r = c.patch(f"/api/v1/jobs/{waiting}", params=bob, json={"name": "renamed", "notes": "n", "group": "g"})
    assert r.status_code == 200 and (r.json()["name"], r.json()["notes"], r.json()["group"]) == ("renamed", "n", "g")
    assert json.loads((env["config"].jobs_dir / waiting / "job.json").read_text())["name"] == "renamed"
    r = c.patch(f"/api/v1/jobs/{waiting}", params=bob, json={"name": "  "})
    assert r.status_code == 400 and "job_name" in r.json()["errors"]
    r = c.post(f"/api/v1/jobs/{waiting}/abort", params=bob)
    assert r.status_code == 200 and r.json()["status"] == "Aborted"
    r = c.post(f"/api/v1/jobs/{waiting}/abort", params=bob)
    assert r.status_code == 403 and "not aborted" in r.json()["error"]["description"]
    # resume needs a solverstate
    r = c.post(f"/api/v1/jobs/{waiting}/resume", params=bob)
    assert r.status_code == 400 and "solverstate" in r.json()["error"]["description"]
    (env["config"].jobs_dir / waiting / "snapshot_iter_4.solverstate").write_bytes(b"s")
    r = c.post(f"/api/v1/jobs/{waiting}/resume", params=bob)
    assert r.status_code == 200 and r.json()["status"] == "Waiting" and r.json()["queue_position"] == 1
    c.post(f"/api/v1/jobs/{waiting}/abort", params=bob)
    # delete: the dataset is used by a model, then the model, then the dataset
    c.post(f"/api/v1/jobs/{running_ds}/abort", params=bob)  # a row without a task: not active for the scheduler
    with app.state.db.session() as s:
        s.get(Job, running_ds).status = "Done"
    r = c.delete(f"/api/v1/jobs/{running_ds}", params=bob)
    assert r.status_code == 403 and "depends on it" in r.json()["error"]["description"]
    assert c.delete(f"/api/v1/jobs/{waiting}", params=bob).json() == {"message": "Job deleted."}
    assert c.delete(f"/api/v1/jobs/{running_ds}", params=bob).status_code == 200
    assert not (env["config"].jobs_dir / running_ds).exists()
    assert c.delete(f"/api/v1/jobs/{running_ds}", params=bob).status_code == 404
    assert c.get("/api/v1/jobs").json()["jobs"] == []


def test_create_validation_errors_are_per_field(env):
    c = env["client"]
    r = c.post("/api/v1/datasets", params={"username": "bob"}, json={"dataset_name": "d"})
    assert r.status_code == 400 and r.json()["errors"]["folder_train"] == ["This field is required."]
    r = c.post("/api/v1/datasets", params={"username": "bob"},
               json={"dataset_name": "d", "folder_train": "/etc"})
    assert r.status_code in (400, 403) and "folder_train" in json.dumps(r.json())
    r = c.post("/api/v1/datasets", params={"username": "bob"}, json={"dataset_name": {"a": 1}})
    assert r.status_code == 400
    r = c.post("/api/v1/models", params={"username": "bob"},
               json={"model_name": "m", "dataset": "20990101-000000-abcd", "method": "standard",
                     "standard_networks": "lenet", "learning_rate": [0.1, 0.01]})
    assert r.status_code == 400 and "dataset" in r.json()["errors"]
    assert c.post("/api/v1/models", json={"model_name": "m"}).status_code == 401
    r = c.post("/api/v1/datasets", params={"username": "bob"}, content=b"not json",
               headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_clone_of_a_job_without_saved_settings_is_a_clear_error(env):
    app, c = env["app"], env["client"]
    inf = add_job(app, "inference")
    r = c.post(f"/api/v1/jobs/{inf}/clone", params={"username": "bob"})
    assert r.status_code == 400 and "cloned" in r.json()["error"]["description"]


# ----------------------------------------------------------------------- helpers

def test_networks_lint_and_lr_curve(env):
    c = env["client"]
    nets = c.get("/api/v1/networks").json()
    assert {n["id"] for n in nets} >= {"lenet", "lenet_bn", "alexnet", "googlenet", "resnet18", "resnet50"}
    text = c.get("/api/v1/networks/lenet_bn").json()
    assert text["title"] == "LeNet with BatchNorm" and 'type: "BatchNorm"' in text["prototxt"]
    assert c.get("/api/v1/networks/vgg").status_code == 404
    r = c.post("/api/v1/lint", json={"prototxt": BN_NET}).json()
    assert r["valid"] is True
    assert [(f["rule"], f["layer"], f["line"]) for f in r["findings"]] == [("BN006", "bn", 4)]
    r = c.post("/api/v1/lint", json={"prototxt": text["prototxt"], "digits": True, "num_classes": 3}).json()
    assert r == {"valid": True, "parse_error": None, "findings": []}
    r = c.post("/api/v1/lint", json={"prototxt": 'layer {\n  name: "a"\n  bogus: 1\n}\n'}).json()
    assert r["valid"] is False and r["parse_error"]["line"] == 3 and "bogus" in r["parse_error"]["message"]
    r = c.post("/api/v1/lint", json={"prototxt": BN_NET, "digits": True}).json()
    assert r["valid"] is False and "Softmax" in r["parse_error"]["message"]
    assert c.post("/api/v1/lint", json={}).status_code == 400
    r = c.post("/api/v1/lr-curve", json={"learning_rate": [0.1, 0.01], "lr_policy": "step",
                                         "lr_step_size": 50, "lr_step_gamma": 0.1}).json()
    assert r["learning_rates"] == [0.1, 0.01] and [len(x) for x in r["curves"]] == [101, 101]
    assert r["curves"][0][0] == pytest.approx(0.1) and r["curves"][0][100] == pytest.approx(0.001)
    assert r["curves"][1][49] == pytest.approx(0.01) and r["curves"][1][50] == pytest.approx(0.001)
    r = c.post("/api/v1/lr-curve", json={"learning_rate": "x"})
    assert r.status_code == 400 and "learning_rate" in r.json()["errors"]


def test_inference_routes_refuse_bad_requests(env):
    app, c = env["app"], env["client"]
    model = add_job(app)                                  # no snapshot
    ds = add_job(app, "dataset")
    r = c.post(f"/api/v1/models/{model}/classify", files={"image_file": ("a.png", b"\x89PNG", "image/png")})
    assert r.status_code == 404 and "no snapshot" in r.json()["error"]["description"]
    assert c.post(f"/api/v1/models/{ds}/classify",
                  files={"image_file": ("a.png", b"x", "image/png")}).status_code == 404
    r = c.post(f"/api/v1/models/{model}/classify", data={"image_path": "/etc/passwd"})
    assert r.status_code in (400, 403) and "image_path" in r.text
    assert c.get(f"/api/v1/models/{model}/snapshots").json() == []
    assert c.get(f"/api/v1/models/{model}/bundle.tar.gz").status_code == 404
    assert c.post(f"/api/v1/models/{model}/test", json={}).status_code == 401
    r = c.post(f"/api/v1/models/{model}/test", params={"username": "bob"}, json={"split": "val"})
    assert r.status_code == 404
    r = c.post(f"/api/v1/models/{model}/classify-many", params={"username": "bob"}, data={"x": "1"})
    assert r.status_code == 404
    assert c.get(f"/api/v1/jobs/{model}/result").status_code == 404   # not an inference job


def test_reads_need_a_login_once_users_have_passwords(env):
    app, c = env["app"], env["client"]
    job = add_job(app)
    headers = token_of(app, "alice")
    for path in ("/api/v1/jobs", f"/api/v1/jobs/{job}", f"/api/v1/jobs/{job}/metrics", f"/api/v1/jobs/{job}/log",
                 f"/api/v1/jobs/{job}/files", "/api/v1/queue", "/api/v1/resources", "/api/v1/networks",
                 "/api/v1/networks/lenet", f"/api/v1/models/{job}/snapshots"):
        assert c.get(path).status_code == 401, path
        assert c.get(path, headers=headers).status_code == 200, path


# ----------------------------------------------------------------------- the real thing (slow)

TINY_NET = """
layer { name: "scale" type: "Power" bottom: "data" top: "scaled" power_param { scale: 0.0125 } }
layer { name: "conv1" type: "Convolution" bottom: "scaled" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "output" \
inner_product_param { weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "output" bottom: "label" top: "loss" exclude { stage: "deploy" } }
layer { name: "accuracy" type: "Accuracy" bottom: "output" bottom: "label" top: "accuracy" include { stage: "val" } }
layer { name: "softmax" type: "Softmax" bottom: "output" top: "softmax" include { stage: "deploy" } }
"""


def make_images(root: Path, n: int = 8) -> list[Path]:
    out = []
    for ci, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = np.zeros((10, 10, 3), np.uint8)
            a[..., ci] = 120 + 15 * i
            p = root / name / f"{i}.png"
            Image.fromarray(a).save(p)
            out.append(p)
    return out


def wait_done(c: TestClient, job_id: str, headers: dict, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        job = c.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in ("Done", "Aborted", "Error", "Interrupted"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.3)


def post_folder_dataset(c: TestClient, headers: dict, folder: Path, name: str) -> dict:
    """A dataset job of the class folders in ``folder`` (10x10 colour PNGs in LMDBs, 25 % for
    validation), created through /api/v1; returns its answer."""
    r = c.post("/api/v1/datasets", headers=headers, json={
        "dataset_name": name, "method": "folder", "folder_train": str(folder),
        "folder_pct_val": 25, "resize_channels": 3, "resize_width": 10, "resize_height": 10,
        "encoding": "png", "backend": "lmdb"})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.mark.slow
def test_api_flow_dataset_model_inference(env):
    app, c, tmp = env["app"], env["client"], env["tmp"]
    images = make_images(tmp / "data" / "train")
    h = token_of(app, "alice")
    ds = post_folder_dataset(c, h, tmp / "data" / "train", "colours")
    assert ds["kind"] == "dataset" and ds["owner"] == "alice"
    assert wait_done(c, ds["id"], h)["status"] == "Done"
    r = c.post("/api/v1/models", headers=h, json={
        "model_name": "tiny", "dataset": ds["id"], "method": "custom", "custom_network": TINY_NET,
        "batch_size": 6, "train_epochs": 2, "learning_rate": 0.05, "random_seed": 7, "shuffle": False})
    assert r.status_code == 201, r.text
    (model,) = r.json()["jobs"]
    job = wait_done(c, model["id"], h)
    assert job["status"] == "Done", c.get(f"/api/v1/jobs/{model['id']}/log", headers=h).json()
    metrics = c.get(f"/api/v1/jobs/{model['id']}/metrics", headers=h).json()
    assert metrics["train"]["loss"] and metrics["test"]["accuracy"]
    snaps = c.get(f"/api/v1/models/{model['id']}/snapshots", headers=h).json()
    assert snaps and snaps[-1]["file"].endswith(".caffemodel")
    # the bundle of the last epoch, with info.json
    r = c.get(f"/api/v1/models/{model['id']}/bundle.tar.gz", headers=h)
    assert r.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tf:
        names = set(tf.getnames())
        info = json.load(tf.extractfile("info.json"))
    assert {"deploy.prototxt", "labels.txt", "info.json"} <= names and info["id"] == model["id"]
    # classify one uploaded image
    r = c.post(f"/api/v1/models/{model['id']}/classify", headers=h,
               files={"image_file": ("x.png", images[0].read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    preds = r.json()["predictions"]
    assert len(preds) == 3 and {p[0] for p in preds} == {"red", "green", "blue"}
    assert sum(p[1] for p in preds) == pytest.approx(100, abs=0.1)
    assert r.json()["visualizations"] is None
    r = c.post(f"/api/v1/models/{model['id']}/classify", headers=h, data={"show_visualizations": "y"},
               files={"image_file": ("x.png", images[0].read_bytes(), "image/png")})
    assert r.status_code == 200, r.text
    vis = r.json()["visualizations"]
    assert vis and r.json()["visualization_dir"] and r.json()["predictions"] == preds
    # classify many: an inference job
    listing = "".join(f"{p}\n" for p in images[:4]).encode()
    r = c.post(f"/api/v1/models/{model['id']}/classify-many", headers=h,
               files={"image_list": ("list.txt", listing, "text/plain")})
    assert r.status_code == 202, r.text
    many = r.json()["job_id"]
    assert wait_done(c, many, h)["status"] == "Done"
    result = c.get(f"/api/v1/jobs/{many}/result", headers=h).json()
    assert len(result["classifications"]) == 4
    # test the validation set
    r = c.post(f"/api/v1/models/{model['id']}/test", headers=h, json={"split": "val"})
    assert r.status_code == 202, r.text
    tested = r.json()["job_id"]
    assert wait_done(c, tested, h)["status"] == "Done"
    assert c.get(f"/api/v1/jobs/{tested}/result", headers=h).json()["result"]
    # clone the dataset (same settings, a new job of the caller's), then delete the clone
    r = c.post(f"/api/v1/jobs/{ds['id']}/clone", headers=h)
    assert r.status_code == 201 and r.json()["name"] == "colours" and r.json()["id"] != ds["id"]
    clone = r.json()["id"]
    wait_done(c, clone, h)
    assert c.delete(f"/api/v1/jobs/{clone}", headers=h).status_code == 200


BN_TINY_NET = """
layer { name: "scale" type: "Power" bottom: "data" top: "scaled" power_param { scale: 0.0078125 shift: -1 } }
layer { name: "conv1" type: "Convolution" bottom: "scaled" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 bias_term: false weight_filler { type: "xavier" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { moving_average_fraction: 0.8 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "output" \
inner_product_param { weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "output" bottom: "label" top: "loss" exclude { stage: "deploy" } }
layer { name: "accuracy" type: "Accuracy" bottom: "output" bottom: "label" top: "accuracy" include { stage: "val" } }
layer { name: "softmax" type: "Softmax" bottom: "output" top: "softmax" include { stage: "deploy" } }
"""


def make_noisy_images(root: Path, n: int) -> None:
    """Three classes of one strong colour channel under heavy noise, 10x10 PNGs (not all
    separable after one epoch: the accuracy is a count, not 100 %)."""
    rng = np.random.default_rng(3)
    for ci, name in enumerate(("red", "green", "blue")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = rng.normal(110, 60, (10, 10, 3))
            a[..., ci] += 25
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")


@pytest.mark.slow
def test_last_validation_point_is_what_the_downloaded_bundle_classifies(env):
    """One epoch of a BatchNorm net: max_iter = test_interval, the snapshot after training and
    display 1 (which divides max_iter, so the solver's final display forward runs after the
    snapshot). The validation point the server shows at the end is the downloaded model's:
    the same count of correct images over the validation set, and the same loss."""
    from brewnet.data.lmdb_io import count_records
    from brewnet.inference.classify import classify
    from brewnet.inference.sources import sources_from_lmdb

    app, c, tmp = env["app"], env["client"], env["tmp"]
    make_noisy_images(tmp / "data" / "train", 16)
    h = token_of(app, "alice")
    ds = post_folder_dataset(c, h, tmp / "data" / "train", "noisy")["id"]
    assert wait_done(c, ds, h)["status"] == "Done"
    val_db = env["config"].jobs_dir / ds / "val_db"
    n_val, batch = count_records(str(val_db)), 6
    assert n_val % batch == 0  # the validation covers each image once
    r = c.post("/api/v1/models", headers=h, json={
        "model_name": "bn", "dataset": ds, "method": "custom", "custom_network": BN_TINY_NET,
        "batch_size": batch, "train_epochs": 1, "learning_rate": 0.05, "random_seed": 7, "shuffle": False})
    assert r.status_code == 201, r.text
    (model,) = r.json()["jobs"]
    job = wait_done(c, model["id"], h)
    assert job["status"] == "Done", c.get(f"/api/v1/jobs/{model['id']}/log", headers=h).json()
    metrics = c.get(f"/api/v1/jobs/{model['id']}/metrics", headers=h).json()
    last_iter, last_acc = metrics["test"]["accuracy"][-1][:2]
    assert metrics["test"]["loss"][-1][0] == last_iter
    assert metrics["train"]["smoothed_loss"][-1][0] == last_iter  # the final display forward ran
    last_loss = metrics["test"]["loss"][-1][1]
    snaps = c.get(f"/api/v1/models/{model['id']}/snapshots", headers=h).json()
    assert snaps[-1]["iteration"] == last_iter  # the last snapshot is the last validation's iteration

    r = c.get(f"/api/v1/models/{model['id']}/bundle.tar.gz", headers=h)
    assert r.status_code == 200
    out = tmp / "download"
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tf:
        tf.extractall(out, filter="data")
    (folder,) = {p.parent for p in out.rglob("deploy.prototxt")}
    info = json.loads((folder / "info.json").read_text())
    weights = folder / "weights.caffemodel"
    if not weights.exists():  # DIGITS' archive names the snapshot file in info.json
        (folder / info["snapshot file"]).rename(weights)
    result = classify(str(folder), sources_from_lmdb(str(val_db)), top=3, batch=batch, workers=0)
    assert result.count == n_val and not result.errors
    assert result.correct1 == round(last_acc * n_val)
    losses = [-np.log(dict(p["top"])[p["label"]]) for p in result.predictions]
    # the logged loss is SoftmaxWithLoss's, the bundle's a float32 softmax then log
    assert abs(float(np.mean(losses)) - last_loss) <= 1e-5 * max(1.0, last_loss), (np.mean(losses), last_loss)
