"""DIGITS' generic model routes (routes/generic_models.py, digits-other-jobs.md §1.1, §1.5) through
FastAPI's TestClient: the form's fields and errors with DIGITS' names and messages, the pages,
and one real small regression training through the scheduler (gradients dataset -> a tiny
regression net) whose model JSON and metrics hold DIGITS' keys and brewnet's rmse/mae."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from generic_datasets import FCN, REGRESSION_NET, add_dataset_job, make_gradients_dataset, make_segmentation_dataset

from brewnet.server.app import create_app
from brewnet.server.config import ServerConfig

USER = "digits-testsuite"
FINISHED = ("Done", "Aborted", "Error", "Interrupted")


def wait_status(client: TestClient, job_id: str, timeout_s: float = 300.0) -> dict:
    import time
    deadline = time.monotonic() + timeout_s
    while True:
        body = json.loads(client.get(f"/models/{job_id}/status").text)
        if body.get("status") in FINISHED:
            return body
        assert time.monotonic() < deadline, f"model {job_id} still {body} after {timeout_s} s"
        time.sleep(0.5)


def model_form(dataset_id: str, name: str = "regression", **extra) -> dict:
    form = {"model_name": name, "group_name": "tests", "dataset": dataset_id, "method": "custom",
            "custom_network": REGRESSION_NET, "batch_size": "16", "train_epochs": "2", "framework": "caffe",
            "random_seed": "7", "learning_rate": "0.01", "solver_type": "ADAM", "lr_policy": "fixed"}
    form.update({k: str(v) for k, v in extra.items()})
    return form


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("generic")
    data = root / "data"
    data.mkdir()
    config = ServerConfig(jobs_dir=root / "jobs", data_roots=[data], poll_interval_s=0.1)
    app = create_app(config)
    with TestClient(app) as client:
        assert client.post("/login", data={"username": USER}, follow_redirects=False).status_code == 302
        server = app.state.server
        grad = add_dataset_job(server, "gradients", "gradients", lambda d: make_gradients_dataset(d, 64, 16, 16))
        seg = add_dataset_job(server, "shapes", "segmentation", lambda d: make_segmentation_dataset(d, 4, 2, 16))
        classification = add_dataset_job(server, "classes", None, lambda d: None)
        yield {"client": client, "server": server, "gradients": grad, "segmentation": seg,
               "classification": classification}


def test_form_errors_name_digits_fields(world):
    c = world["client"]
    r = c.post("/models/images/generic.json", data=model_form(world["classification"]))
    assert r.status_code == 400 and r.json()["errors"]["dataset"] == ["Not a valid choice"]
    # a generic dataset is not a classification model's
    r = c.post("/models/images/classification.json", data=model_form(world["gradients"]))
    assert r.status_code == 400 and r.json()["errors"]["dataset"] == ["Not a valid choice"]
    # the extension of the URL filters the datasets
    r = c.post("/models/images/generic/image-segmentation.json", data=model_form(world["gradients"]))
    assert r.status_code == 400 and r.json()["errors"]["dataset"] == ["Not a valid choice"]
    r = c.post("/models/images/generic.json", data=model_form(world["gradients"], custom_network=""))
    assert r.json()["errors"]["custom_network"] == ["This field is required."]
    unset = REGRESSION_NET.replace("num_output: 2 ", "")
    r = c.post("/models/images/generic.json", data=model_form(world["gradients"], custom_network=unset))
    assert r.status_code == 400
    assert r.json()["errors"]["custom_network"] == [
        "Don't leave inner_product_param.num_output unset for generic networks (layer ip1)"]
    dangling = REGRESSION_NET.replace('exclude { stage: "deploy" }', "")
    r = c.post("/models/images/generic.json", data=model_form(world["gradients"], custom_network=dangling))
    assert r.status_code == 400 and "references bottom 'label' at the DEPLOY stage" in r.text
    r = c.post("/models/images/generic.json", data=model_form(world["gradients"], crop_size=17))
    assert r.json()["errors"]["crop_size"] == ["crop_size is larger than the image size"]
    for wrong in ("lenet", "fcn_small"):     # a classification net; a segmentation net for regression data
        r = c.post("/models/images/generic.json", data=model_form(world["gradients"], method="standard",
                                                                 standard_networks=wrong))
        assert r.json()["errors"]["standard_networks"] == ["Not a valid choice"]
    # an unknown extension is no route of ours
    assert c.post("/models/images/generic/image-nothing.json", data=model_form(world["gradients"])).status_code \
        in (404, 405)
    assert c.get("/index.json").json()["models"] == []          # nothing was made


def test_pages_list_the_generic_datasets(world):
    c = world["client"]
    page = c.get("/models/images/generic/new")
    assert page.status_code == 200 and "New Image Model" in page.text
    assert 'action="/models/images/generic.json"' in page.text
    assert "gradients" in page.text and "shapes" in page.text and "classes" not in page.text
    assert 'data-kind="segmentation"' in page.text and 'data-generic="1"' in page.text
    seg = c.get("/models/images/generic/new/image-segmentation")
    assert 'action="/models/images/generic/image-segmentation.json"' in seg.text
    assert "shapes" in seg.text and ">gradients" not in seg.text
    assert c.get("/models/images/generic/new", headers={"Accept": "application/json"}).json()["fields"] == {}
    assert c.get("/models/images/generic/large_graph").status_code == 400
    assert c.get("/models/images/generic/large_graph?job_id=nope").status_code == 404
    assert c.get("/models/images/generic/networks/nothing").status_code == 404
    net = c.get("/models/images/generic/networks/fcn_small").json()
    assert net["name"] == "fcn_small" and "Deconvolution" in net["prototxt"]
    # every standard generic network, each row with the dataset kinds it fits (the page's filter)
    assert '<tr data-kinds="gradients generic"><td><input type="radio" name="standard_networks" ' \
           'id="net-regression_lenet"' in page.text
    assert 'data-kinds="segmentation"><td><input type="radio" name="standard_networks" id="net-fcn_small"' in page.text


def test_segmentation_model_files_from_the_route(world):
    c = world["client"]
    form = model_form(world["segmentation"], name="fcn", custom_network=FCN, crop_size=12, batch_size=2,
                      train_epochs=1)
    r = c.post("/models/images/generic/image-segmentation.json", data=form)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["image dimensions"] == [16, 16, 3] and body["mean file"] == "mean.binaryproto"
    assert "labels file" not in body and "image resize mode" not in body
    d = Path(c.get(f"/models/{body['id']}.json").json()["directory"])
    plan = json.loads((d / "plan.json").read_text())
    assert plan["dataset_kind"] == "segmentation" and plan["dataset_dir"].endswith(world["segmentation"])
    tv = (d / "train_val.prototxt").read_text()
    assert tv.count("crop_size: 12") == 4      # the features and labels layers of both phases
    assert json.loads(c.get(f"/models/{body['id']}/status").text)["type"] == "Generic Image Model"
    assert c.post(f"/models/{body['id']}/abort").status_code in (200, 409)
    wait_status(c, body["id"])
    assert c.delete(f"/models/{body['id']}").text == "Job deleted."


def test_regression_training_end_to_end(world):
    c = world["client"]
    # DIGITS' regression example: the standard regression LeNet on image gradients
    r = c.post("/models/images/generic/image-gradients.json",
               data=model_form(world["gradients"], method="standard", standard_networks="regression_lenet",
                               custom_network=""))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "Initialized" and body["dataset_id"] == world["gradients"]
    assert body["image dimensions"] == [16, 16, 1] and "labels file" not in body
    done = wait_status(c, body["id"])
    assert done["status"] == "Done", done
    m = c.get(f"/models/{body['id']}.json").json()
    assert m["snapshots"] == [1, 2] and m["snapshot file"] == "snapshot_iter_8.caffemodel"   # 64/16 x 2
    assert m["dataset kind"] == "gradients"
    records = [json.loads(line) for line in Path(m["directory"], "metrics.jsonl").read_text().splitlines()]
    test = {(r["name"], r["iter"]): r["value"] for r in records if r.get("phase") == "test"}
    assert {"rmse", "mae", "loss"} <= {name for name, _ in test}
    last = max(it for _, it in test)
    assert 0 < test[("mae", last)] <= test[("rmse", last)]
    # the model page shows the regression graphs; the large graph page exists
    page = c.get(f"/models/{body['id']}")
    assert "Regression metrics" in page.text and "generic_model.js" in page.text
    assert "/models/images/generic/new?clone=" in page.text
    big = c.get(f"/models/images/generic/large_graph?job_id={body['id']}")
    assert big.status_code == 200 and "chart-loss" in big.text
    # DIGITS' download: the model files, the mean, the snapshot and info.json, no labels
    r = c.get(f"/models/{body['id']}/download.tar.gz")
    assert r.status_code == 200, r.text
    with tarfile.open(fileobj=io.BytesIO(r.content)) as tar:
        names = set(tar.getnames())
        info = json.loads(tar.extractfile("info.json").read())
    assert {"train_val.prototxt", "deploy.prototxt", "solver.prototxt", "original.prototxt", "mean.binaryproto",
            "snapshot_iter_8.caffemodel", "info.json"} <= names
    assert "labels.txt" not in names and "labels file" not in info and info["image dimensions"] == [16, 16, 1]
    # a clone goes to the generic form; previous: a generic model's snapshot
    assert c.get(f"/clone/{body['id']}", follow_redirects=False).headers["location"] == \
        f"/models/images/generic/new?clone={body['id']}"
    prev = model_form(world["gradients"], name="again", method="previous", previous_networks=body["id"],
                      **{f"{body['id']}-snapshot": "2", "train_epochs": "1"})
    r = c.post("/models/images/generic.json", data=prev)
    assert r.status_code == 200, r.text
    plan = json.loads(Path(c.get(f"/models/{r.json()['id']}.json").json()["directory"], "plan.json").read_text())
    assert plan["weights"] and plan["weights"][0].endswith("snapshot_iter_8.caffemodel")
    assert wait_status(c, r.json()["id"])["status"] == "Done"
