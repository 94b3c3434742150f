"""DIGITS' generic inference routes (routes/generic_inference.py; digits-other-jobs.md §1.7) through
the real app and scheduler, and issue 22's regression acceptance through the REST API with DIGITS'
field names: an image-gradients dataset (``/datasets/generic/create/image-gradients.json``) → the
standard regression LeNet (``/models/images/generic.json``) → RMSE of the predicted gradients on
the validation set below 10 % of the label range → ``infer_many.json`` on val images gives the
numbers ``brewnet infer`` gives on the same bundle.  Also every field error with DIGITS' message,
infer_one's batch axis, infer_db keyed by LMDB key with its evaluation, and the HTML views."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from brewnet.data.lmdb_io import iter_records, parse_datum
from brewnet.server.app import create_app
from brewnet.server.config import ServerConfig

pytestmark = pytest.mark.slow   # a real dataset job and a real training (about a minute on 2 cores)

USER = "digits-testsuite"
FINISHED = ("Done", "Aborted", "Error", "Interrupted")
VAL_IMAGES = 12            # val images exported for infer_many


def _wait(client: TestClient, kind: str, job_id: str, timeout_s: float = 240.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        body = json.loads(client.get(f"/{kind}/{job_id}/status").text)
        if body.get("status") in FINISHED:
            return body
        assert time.monotonic() < deadline, f"{kind} {job_id} still {body} after {timeout_s} s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A gradients dataset and a regression LeNet trained on it, both through DIGITS' REST routes."""
    root = tmp_path_factory.mktemp("generic-inference")
    data = root / "data"
    data.mkdir()
    config = ServerConfig(jobs_dir=root / "jobs", data_roots=[data], poll_interval_s=0.1)
    app = create_app(config)
    with TestClient(app) as c:
        assert c.post("/login", data={"username": USER}, follow_redirects=False).status_code == 302
        r = c.post("/datasets/generic/create/image-gradients.json",
                   data={"dataset_name": "gradients", "train_image_count": "600", "val_image_count": "100",
                         "test_image_count": "0", "image_width": "16", "image_height": "16", "seed": "11",
                         "dsopts_feature_encoding": "png", "dsopts_label_encoding": "none"})
        assert r.status_code == 200, r.text
        ds_id = r.json()["id"]
        assert _wait(c, "datasets", ds_id)["status"] == "Done", c.get(f"/api/v1/jobs/{ds_id}/log").text
        r = c.post("/models/images/generic.json",
                   data={"model_name": "regression", "dataset": ds_id, "method": "standard",
                         "standard_networks": "regression_lenet", "framework": "caffe", "train_epochs": "6",
                         "batch_size": "32", "solver_type": "ADAM", "learning_rate": "0.001", "lr_policy": "fixed",
                         "random_seed": "3", "use_mean": "image"})
        assert r.status_code == 200, r.text
        model_id = r.json()["id"]
        assert _wait(c, "models", model_id, 300)["status"] == "Done", c.get(f"/api/v1/jobs/{model_id}/log").text
        ds = c.get(f"/datasets/{ds_id}.json").json()
        model = c.get(f"/models/{model_id}.json").json()
        # val images as PNG files under the data root (infer_many reads image files), in LMDB key order
        features = Path(ds["directory"]) / "val_db" / "features"
        labels = Path(ds["directory"]) / "val_db" / "labels"
        folder = data / "val"
        folder.mkdir()
        truth = {}
        for (key, value), (_, lab) in zip(iter_records(str(features)), iter_records(str(labels))):
            name = f"{key.decode()}.png"
            (folder / name).write_bytes(parse_datum(value).data)     # encoded PNG Datums
            truth[name] = np.asarray(parse_datum(lab).float_data, np.float64)
            if len(truth) == VAL_IMAGES:
                break
        yield {"client": c, "ds": ds, "model": model, "model_id": model_id, "folder": folder, "truth": truth,
               "data": data, "features": features}


def test_regression_acceptance_rmse_below_a_tenth_of_the_label_range(world):
    model, ds = world["model"], world["ds"]
    lo, hi = ds["label_range"]
    records = [json.loads(line) for line in Path(model["directory"], "metrics.jsonl").read_text().splitlines()]
    test = [r for r in records if r.get("phase") == "test" and r.get("name") == "rmse"]
    last = max(test, key=lambda r: r["iter"])
    assert last["value"] < 0.1 * (hi - lo), (last, ds["label_range"])


def test_infer_many_json_equals_brewnet_infer(world, tmp_path):
    c, folder = world["client"], world["folder"]
    names = sorted(world["truth"])
    listing = "".join(f"{n} 0\n" for n in names)            # DIGITS drops a trailing integer
    r = c.post(f"/models/images/generic/infer_many.json?job_id={world['model_id']}",
               data={"image_folder": str(folder)}, files={"image_list": ("list.txt", listing, "text/plain")})
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    assert list(outputs) == [os.path.join(str(folder), n) for n in names]        # keys as listed, joined
    first = outputs[os.path.join(str(folder), names[0])]
    blob = next(iter(first))
    assert np.shape(first[blob]) == (2,)                                        # no batch axis
    # the same bundle through the CLI
    bundle = Path(world["model"]["directory"]) / "bundles"
    bundle = next(p for p in bundle.iterdir() if p.name.startswith("iter_"))
    (tmp_path / "list.txt").write_text("".join(f"{folder / n}\n" for n in names))
    out = tmp_path / "cli.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([sys.executable, "-m", "brewnet", "infer", "-bundle", str(bundle),
                    "-list", str(tmp_path / "list.txt"), "-json", str(out)], check=True, env=env, capture_output=True)
    cli = json.loads(out.read_text())["outputs"]
    for n in names:
        np.testing.assert_allclose(outputs[os.path.join(str(folder), n)][blob], cli[str(folder / n)][blob],
                                   rtol=1e-5, atol=1e-6)
    # and the predictions are the gradients, within the acceptance's tolerance
    pred = np.array([outputs[os.path.join(str(folder), n)][blob] for n in names])
    true = np.array([world["truth"][n] for n in names])
    assert np.sqrt(np.mean((pred - true) ** 2)) < 0.1


def test_infer_one_keeps_the_batch_axis_and_the_html_views(world):
    c, folder = world["client"], world["folder"]
    name = sorted(world["truth"])[0]
    png = (folder / name).read_bytes()
    r = c.post(f"/models/images/generic/infer_one.json?job_id={world['model_id']}",
               files={"image_file": (name, png, "image/png")})
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    blob = next(iter(outputs))
    assert np.shape(outputs[blob]) == (1, 2)
    gx, gy = world["truth"][name]
    assert abs(outputs[blob][0][0] - gx) < 0.15 and abs(outputs[blob][0][1] - gy) < 0.15
    # by server path, HTML: the gradients view draws an arrow over the image; raw data lists the blob
    page = c.post("/models/images/generic/infer_one",
                  data={"job_id": world["model_id"], "image_path": str(folder / name),
                        "view_extension_id": "image-gradients", "arrow_size": "50"})
    assert page.status_code == 200, page.text
    assert 'class="grad-view"' in page.text and 'class="arrow"' in page.text and "data:image/png;base64," in page.text
    raw = c.get(f"/models/images/generic/infer_one?job_id={world['model_id']}&image_path={folder / name}")
    assert raw.status_code == 200 and "raw-data" in raw.text and blob in raw.text


def test_infer_db_keys_by_lmdb_key_and_evaluates_a_labelled_stage(world):
    c = world["client"]
    r = c.post(f"/models/images/generic/infer_db.json?job_id={world['model_id']}",
               data={"db_path": str(world["features"])})
    assert r.status_code == 200, r.text
    outputs = r.json()["outputs"]
    assert len(outputs) == world["ds"]["stages"]["val"]["entries"]
    assert all(len(k) == 9 and k.isdigit() for k in outputs)
    # the page: regression scatter and error histogram with the evaluation's RMSE (the stage's labels)
    page = c.post("/models/images/generic/infer_db",
                  data={"job_id": world["model_id"], "db_path": str(world["features"]),
                        "view_extension_id": "image-gradients"})
    assert page.status_code == 200, page.text
    assert 'id="regression-scatter"' in page.text and 'id="regression-data"' in page.text
    data = json.loads(page.text.split('id="regression-data">', 1)[1].split("</script>", 1)[0])
    assert data["count"] == len(outputs) and data["dimensions"] == 2
    assert data["rmse"] < 0.1 and sum(data["histogram"]["counts"]) == 2 * len(outputs)


def test_field_errors_have_digits_messages(world):
    c, mid = world["client"], world["model_id"]
    base = "/models/images/generic"

    def message(r, status=400):
        assert r.status_code == status, r.text
        return r.json()["error"]["description"]

    assert message(c.post(f"{base}/infer_one.json")) == "job_id is a required field"
    assert c.post(f"{base}/infer_one.json?job_id=20990101-000000-dead").status_code == 404
    assert message(c.post(f"{base}/infer_one.json?job_id={mid}")) == "must provide image_path or image_file"
    assert message(c.post(f"{base}/infer_many.json?job_id={mid}")) == "image_list is a required field"
    missing = world["data"] / "nowhere"
    r = c.post(f"{base}/infer_many.json?job_id={mid}", data={"image_folder": str(missing)},
               files={"image_list": ("l.txt", "a.png\n", "text/plain")})
    assert message(r) == f'image_folder "{missing}" does not exit'
    assert message(c.post(f"{base}/infer_db.json?job_id={mid}")) == "db_path is a required field"
    assert message(c.post(f"{base}/infer_db.json?job_id={mid}", data={"db_path": str(missing)})) == \
        f'DB "{missing}" does not exit'
    assert c.post(f"{base}/infer_db.json?job_id={mid}", data={"db_path": "/etc"}).status_code == 403
    # a view that cannot be: 400 before anything runs (gradients datasets have no palette)
    r = c.post(f"{base}/infer_one?job_id={mid}", data={"image_path": str(next(world["folder"].iterdir())),
                                                       "view_extension_id": "image-segmentation"})
    assert r.status_code == 400 and r.json()["errors"]["colormap"] == \
        ["No palette found in dataset - choose other colormap"]
    bad = Image.new("RGB", (4, 4))
    bad.save(world["data"] / "tiny.png")
    (world["data"] / "broken.png").write_bytes(b"not an image")
    r = c.post(f"{base}/infer_one.json?job_id={mid}", data={"image_path": str(world["data"] / "broken.png")})
    assert r.status_code == 400 and "Could not read image" in r.json()["error"]["description"]


def test_the_model_page_has_the_generic_forms(world):
    page = world["client"].get(f"/models/{world['model_id']}")
    assert page.status_code == 200
    for form in ("infer-one-form", "infer-many-form", "infer-db-form"):
        assert f'id="{form}"' in page.text
    assert "/models/images/generic/infer_db?job_id=" in page.text and "classify-one-form" not in page.text
    assert str(world["features"]) in page.text    # the dataset's val features as the default DB
    assert 'value="image-gradients" selected' in page.text
