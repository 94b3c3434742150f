"""Generic datasets through the real app (TestClient; lifespan, scheduler and the job's
``brewnet dataset create --kind`` subprocess all real): DIGITS' "Other" form of pre-built LMDBs
and the data extensions (image-gradients, image-processing, image-segmentation), their errors,
their JSON, the pages and their data routes, clone and delete."""
from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from brewnet.data.generic.synthetic import make_shapes_dataset
from brewnet.server.app import create_app
from brewnet.server.config import ServerConfig
from brewnet.server.jobs.specs import DatasetSpec, GenericDatasetSpec, dataset_spec_from_json
from brewnet.server.jobs.states import job_type_name

sys.path.insert(0, os.path.dirname(__file__))
from test_digits_routes import USER, wait_status  # noqa: E402

GRADIENTS = "/datasets/generic/create/image-gradients.json"
PROCESSING = "/datasets/generic/create/image-processing.json"
SEGMENTATION = "/datasets/generic/create/image-segmentation.json"
PREBUILT = "/datasets/images/generic.json"


def make_pairs(root: Path, n: int = 10, size: int = 12) -> tuple[Path, Path]:
    """image-processing's folders: ``n`` grey inputs and their inverted targets, same names."""
    inp, tgt = root / "input", root / "target"
    inp.mkdir(parents=True)
    tgt.mkdir(parents=True)
    for i in range(n):
        a = (np.arange(size * size).reshape(size, size) * (i + 1) % 256).astype(np.uint8)
        Image.fromarray(a, "L").save(inp / f"{i:03d}.png")
        Image.fromarray(255 - a, "L").save(tgt / f"{i:03d}.png")
    return inp, tgt


def login(client: TestClient) -> None:
    r = client.post("/login", data={"username": USER}, follow_redirects=False)
    assert r.status_code == 302, r.text


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("generic")
    data = root / "data"
    images, labels, classes = make_shapes_dataset(str(data / "shapes"), count=10, size=16, seed=1)
    inp, tgt = make_pairs(data / "pairs")
    config = ServerConfig(jobs_dir=root / "jobs", data_roots=[data], poll_interval_s=0.1)
    app = create_app(config)
    with TestClient(app) as client:
        login(client)
        yield {"client": client, "data": data, "root": root, "shapes": (images, labels, classes),
               "pairs": (inp, tgt)}


def created(r) -> str:
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "Initialized" and set(body) == {"id", "name", "status"}
    return body["id"]


def done(client, job_id: str) -> dict:
    status = wait_status(client, "datasets", job_id, 180)
    assert status["status"] == "Done", client.get(f"/api/v1/jobs/{job_id}/log").text
    return status


@pytest.fixture(scope="module")
def gradients(world):
    c = world["client"]
    job_id = created(c.post(GRADIENTS, data={"dataset_name": "grad", "train_image_count": "20",
                                             "val_image_count": "6", "image_width": "8", "image_height": "8",
                                             "seed": "5"}))
    done(c, job_id)
    return job_id


@pytest.fixture(scope="module")
def segmentation(world):
    c = world["client"]
    images, labels, classes = world["shapes"]
    with open(classes, "rb") as f:
        r = c.post(SEGMENTATION, data={"dataset_name": "shapes", "feature_folder": images, "label_folder": labels,
                                       "folder_pct_val": "20", "channel_conversion": "RGB", "seed": "3"},
                   files={"class_labels_file": ("classes.txt", f.read(), "text/plain")})
    job_id = created(r)
    done(c, job_id)
    return job_id


# ----------------------------------------------------------------------------- specs

def test_spec_arguments_and_kinds():
    s = GenericDatasetSpec(kind="processing", name="p", feature_folder="/in", label_folder="/out", pct_val=20,
                           label_encoding="png", seed=7)
    args = s.cli_args("/o")
    assert args[:5] == ["--kind", "processing", "/in", "/out", "/o"]
    assert args[args.index("-val-percent") + 1] == "20" and args[args.index("-seed") + 1] == "7"
    s.val_feature_folder, s.val_label_folder = "/vi", "/vo"
    args = s.cli_args("/o")
    assert "-val-percent" not in args and args[args.index("-val-target-folder") + 1] == "/vo"
    g = GenericDatasetSpec(kind="generic", name="g", train_images="/t", val_labels="/vl", force_same_shape=False)
    assert g.cli_args("/o") == ["--kind", "generic", "/o", "-train-images", "/t", "-no-force-same-shape"]
    assert isinstance(dataset_spec_from_json(g.to_json()), GenericDatasetSpec)
    assert isinstance(dataset_spec_from_json({"name": "c"}), DatasetSpec)
    with pytest.raises(ValueError):
        GenericDatasetSpec(kind="classification", name="x").cli_args("/o")
    assert job_type_name({"kind": "dataset", "spec": {"kind": "generic"}}) == "Generic Image Dataset"
    assert job_type_name({"kind": "dataset", "spec": {"kind": "segmentation"}}) == "Generic Dataset"
    assert job_type_name({"kind": "model", "spec": {"kind": "generic"}}) == "Generic Image Model"
    assert job_type_name({"kind": "dataset", "spec": {}}) == "Image Classification Dataset"


# ----------------------------------------------------------------------------- errors (no job runs)

def errors_of(r) -> dict:
    assert r.status_code == 400, r.text
    return r.json()["errors"]


def test_prebuilt_errors(world, tmp_path):
    c = world["client"]
    e = errors_of(c.post(PREBUILT, data={}))
    assert set(e) >= {"dataset_name", "prebuilt_train_images"}
    e = errors_of(c.post(PREBUILT, data={"dataset_name": "x", "prebuilt_train_images": str(world["data"] / "nope"),
                                         "prebuilt_mean_file": str(world["data"] / "nope.binaryproto")}))
    assert e["prebuilt_train_images"] == ["Folder does not exist"]
    assert e["prebuilt_mean_file"] == ["File does not exist"]
    e = errors_of(c.post(PREBUILT, data={"dataset_name": "x", "prebuilt_train_images": str(world["pairs"][0])}))
    assert e["prebuilt_train_images"] == ["Not an LMDB folder (it has no data.mdb)"]
    e = errors_of(c.post(PREBUILT, data={"dataset_name": "x", "prebuilt_train_images": str(tmp_path)}))
    assert "outside the server's data roots" in e["prebuilt_train_images"][0]
    e = errors_of(c.post(PREBUILT, data={"dataset_name": "x", "prebuilt_train_images": str(world["pairs"][0]),
                                         "force_same_shape": "2", "method": "folder"}))
    assert e["force_same_shape"] == ["Not a valid choice"] and e["method"] == ["Not a valid choice"]


def test_extension_errors_are_merged(world):
    c = world["client"]
    r = c.post("/datasets/generic/create/image-nothing.json", data={"dataset_name": "x"})
    assert r.status_code == 404
    e = errors_of(c.post(PROCESSING, data={"dsopts_num_threads": "0", "folder_pct_val": "101",
                                           "feature_folder": str(world["data"] / "missing")}))
    assert e["dataset_name"] == ["This field is required."]
    assert e["feature_folder"] == ["Folder does not exist or is not reachable"]
    assert e["label_folder"] == ["This field is required."]
    assert "dsopts_num_threads" in e and "folder_pct_val" in e
    e = errors_of(c.post(PROCESSING, data={"dataset_name": "x", "feature_folder": str(world["pairs"][0]),
                                           "label_folder": str(world["pairs"][1]), "has_val_folder": "y"}))
    assert set(e) == {"validation_feature_folder", "validation_label_folder"}
    e = errors_of(c.post(GRADIENTS, data={"dataset_name": "x", "dsopts_label_encoding": "png",
                                          "train_image_count": "0", "dsopts_feature_encoding": "gif"}))
    assert e["dsopts_label_encoding"] == ["Float labels (image gradients) need label encoding none"]
    assert "train_image_count" in e and e["dsopts_feature_encoding"] == ["Not a valid choice"]


def test_segmentation_colormap_errors(world):
    c = world["client"]
    images, labels, _ = world["shapes"]
    base = {"dataset_name": "x", "feature_folder": images, "label_folder": labels, "colormap_method": "textfile"}
    e = errors_of(c.post(SEGMENTATION, data=base))
    assert e["colormap_text_file"] == ["This field is required."]
    e = errors_of(c.post(SEGMENTATION, data=base, files={"colormap_text_file": ("c.txt", b"0 0 0\n1 x 3\n")}))
    assert e["colormap_text_file"] == ["Your color map file seems to be badly formatted: 'x' is not an integer"]
    e = errors_of(c.post(SEGMENTATION, data={**base, "colormap_text_file": str(Path(images).parent / "no.txt")}))
    assert e["colormap_text_file"] == ["File does not exist"]
    e = errors_of(c.post(SEGMENTATION, data={**base, "colormap_method": "label"},
                         files={"class_labels_file": ("l.txt", b"\n\n")}))
    assert e["class_labels_file"] == ["The class labels file names no class"]
    # nothing of the refused forms stays behind
    assert not [p for p in (world["root"] / "jobs").iterdir() if p.name[0].isdigit() and
                not (p / "job.json").is_file()]


def test_new_pages(world):
    c = world["client"]
    r = c.get("/datasets/images/generic/new")
    assert r.status_code == 200 and "New Image Dataset" in r.text and 'name="prebuilt_train_images"' in r.text
    for ext, title, field in (("image-gradients", "Gradients", "train_image_count"),
                              ("image-processing", "Processing", "feature_folder"),
                              ("image-segmentation", "Segmentation", "colormap_method")):
        r = c.get(f"/datasets/generic/new/{ext}")
        assert r.status_code == 200 and title in r.text and f'name="{field}"' in r.text
        assert f'action="/datasets/generic/create/{ext}.json"' in r.text
    assert c.get("/datasets/generic/new/image-nothing").status_code == 404
    home = c.get("/").text
    for href in ("/datasets/images/generic/new", "/datasets/generic/new/image-gradients",
                 "/datasets/generic/new/image-processing", "/datasets/generic/new/image-segmentation"):
        assert f'href="{href}"' in home


# ----------------------------------------------------------------------------- real jobs, one per kind

def test_gradients_dataset(world, gradients):
    c = world["client"]
    d = c.get(f"/datasets/{gradients}.json").json()
    assert d["feature_dims"] == [8, 8, 1] and d["extension_id"] == "image-gradients"
    tasks = {t["stage"]: t for t in d["create_db_tasks"]}
    assert tasks["train_db"] == {"name": "Create train_db DB", "stage": "train_db", "entry_count": 20,
                                 "feature_db_path": "train_db/features", "label_db_path": "train_db/labels"}
    assert tasks["val_db"]["entry_count"] == 6
    assert tasks["test_db"]["entry_count"] == 0 and tasks["test_db"]["feature_db_path"] is None
    assert d["stages"]["train"]["label_shape"] == [1, 1, 2]
    status = wait_status(c, "datasets", gradients)
    assert status["type"] == "Generic Dataset"
    rec = c.get(f"/datasets/{gradients}/generic/records.json?stage=val&per_page=4").json()
    assert rec["total"] == 6 and len(rec["items"]) == 4 and rec["pages"] == 2
    label = rec["items"][0]["label"]
    assert label["type"] == "values" and len(label["values"]) == 2
    assert all(-0.5 <= v < 0.5 for v in label["values"])
    png = c.get(rec["items"][0]["feature"])
    assert png.status_code == 200 and Image.open(io.BytesIO(png.content)).size == (8, 8)
    mean = c.get(f"/datasets/{gradients}/generic/mean.png")
    assert mean.status_code == 200 and Image.open(io.BytesIO(mean.content)).mode == "L"
    page = c.get(f"/datasets/{gradients}")
    assert page.status_code == 200 and "Generic Dataset" in page.text and 'id="dataset-data"' in page.text
    assert c.get(f"/datasets/{gradients}/generic/train/labels/99.png").status_code == 404
    assert c.get(f"/datasets/{gradients}/generic/train/nope/0.png").status_code == 400
    assert c.get(f"/datasets/{gradients}/generic/test/features/0.png").status_code == 404


def test_processing_dataset(world):
    c = world["client"]
    inp, tgt = world["pairs"]
    job_id = created(c.post(PROCESSING, data={"dataset_name": "pairs", "feature_folder": str(inp),
                                              "label_folder": str(tgt), "folder_pct_val": "20"}))
    done(c, job_id)
    d = c.get(f"/datasets/{job_id}.json").json()
    assert [t["entry_count"] for t in d["create_db_tasks"]] == [8, 2, 0]
    assert d["feature_dims"] == [12, 12, 1]
    item = c.get(f"/datasets/{job_id}/generic/records.json").json()["items"][0]
    assert item["label"]["type"] == "image"
    feat = np.asarray(Image.open(io.BytesIO(c.get(item["feature"] + "?full=1").content)))
    target = np.asarray(Image.open(io.BytesIO(c.get(item["label"]["url"] + "?full=1").content)))
    assert np.array_equal(target, 255 - feat)   # the pair stays a pair


def test_segmentation_dataset(world, segmentation):
    c = world["client"]
    d = c.get(f"/datasets/{segmentation}.json").json()
    assert d["class_labels"] == ["background", "square", "disc", "triangle"]
    assert d["feature_dims"] == [16, 16, 3] and d["stages"]["train"]["entries"] == 8
    counts = d["class_pixel_counts"]["train"]
    assert sum(counts) == 8 * 16 * 16 and all(n > 0 for n in counts[:4])
    rec = c.get(f"/datasets/{segmentation}/generic/records.json").json()
    label = rec["items"][0]["label"]
    assert label["type"] == "mask"
    mask = np.asarray(Image.open(io.BytesIO(c.get(label["url"] + "&full=1").content)))
    assert mask.shape == (16, 16, 3)
    # the mask's colours are the dataset's palette colours
    summary = json.loads((world["root"] / "jobs" / segmentation / "summary.json").read_text())
    pal = np.asarray(summary["color_palette"]).reshape(-1, 3)[:4]
    assert {tuple(p) for p in mask.reshape(-1, 3)} <= {tuple(p) for p in pal}
    over = c.get(label["overlay"])
    assert over.status_code == 200
    assert c.get(f"/datasets/{segmentation}/generic/train/features/0.png?view=color").status_code == 400
    page = c.get(f"/datasets/{segmentation}").text
    assert "Pixels per class" in page and "plotly.min.js" in page
    explore = c.get(f"/datasets/generic/explore?job_id={segmentation}&db=train_db%2Flabels&page=0&size=5")
    assert explore.status_code == 200 and explore.text.count("<figure") == 5 and "view=color" in explore.text
    assert c.get(f"/datasets/generic/explore?job_id={segmentation}&db=x").status_code == 400
    assert c.get("/datasets/generic/explore").status_code == 400


def test_prebuilt_dataset_from_lmdbs(world, gradients):
    c = world["client"]
    src = world["root"] / "jobs" / gradients
    # LMDBs under the data root, as a user would have them
    target = world["data"] / "lmdbs"
    import shutil
    shutil.copytree(src / "train_db", target / "train_db")
    shutil.copytree(src / "val_db", target / "val_db")
    job_id = created(c.post(PREBUILT, data={
        "dataset_name": "other", "prebuilt_train_images": str(target / "train_db" / "features"),
        "prebuilt_train_labels": str(target / "train_db" / "labels"),
        "prebuilt_val_images": str(target / "val_db" / "features"),
        "prebuilt_val_labels": str(target / "val_db" / "labels"),
        "prebuilt_mean_file": str(target / "train_db" / "mean.binaryproto")}))
    done(c, job_id)
    d = c.get(f"/datasets/{job_id}.json").json()
    assert d["id"] == job_id and d["kind"] == "generic" and "create_db_tasks" not in d
    assert d["stages"]["train"]["entries"] == 20 and d["stages"]["val"]["entries"] == 6
    assert wait_status(c, "datasets", job_id)["type"] == "Generic Image Dataset"
    rows = {r["id"]: r for r in c.get("/completed_jobs.json").json()["datasets"]}
    assert rows[job_id]["type"] == "Generic Image Dataset" and rows[gradients]["type"] == "Generic Dataset"
    assert c.get(f"/datasets/{job_id}/generic/records.json").json()["total"] == 20


def test_clone_and_delete(world, gradients):
    c = world["client"]
    r = c.get(f"/clone/{gradients}", follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == f"/datasets/generic/new/image-gradients?clone={gradients}"
    page = c.get(r.headers["location"]).text
    assert 'value="20"' in page and 'name="seed" value="5"' in page
    # a clone of another kind is refused
    r = c.post(PROCESSING, data={"clone": gradients})
    assert r.status_code == 400 and "gradients" in r.text
    r = c.post(f"/api/v1/jobs/{gradients}/clone")
    assert r.status_code == 201, r.text
    clone_id = r.json()["id"]
    assert r.json()["type"] == "Generic Dataset"
    done(c, clone_id)
    a = c.get(f"/datasets/{gradients}/generic/records.json?stage=val").json()["items"]
    b = c.get(f"/datasets/{clone_id}/generic/records.json?stage=val").json()["items"]
    assert [x["label"]["values"] for x in a] == [x["label"]["values"] for x in b]   # same seed, same data
    r = c.delete(f"/datasets/{clone_id}")
    assert r.status_code == 200 and r.text == "Job deleted."
    assert c.get(f"/datasets/{clone_id}.json").status_code == 404
    assert not (world["root"] / "jobs" / clone_id).exists()


def test_html_create_redirects_and_new_page_json(world):
    c = world["client"]
    r = c.post("/datasets/generic/create/image-gradients", data={"dataset_name": "html", "train_image_count": "2",
                                                                  "val_image_count": "0", "image_width": "4",
                                                                  "image_height": "4"},
               follow_redirects=False)
    assert r.status_code == 302
    job_id = r.headers["location"].rsplit("/", 1)[-1]
    assert r.headers["location"] == f"/datasets/{job_id}"
    done(c, job_id)
    r = c.get(f"/datasets/generic/new/image-gradients?clone={job_id}", headers={"Accept": "application/json"})
    assert r.status_code == 200
    fields = r.json()["fields"]
    assert fields["dataset_name"] == "html" and fields["seed"].isdigit()
    assert c.get(f"/datasets/generic/new/image-processing?clone={job_id}").status_code == 400
    r = c.post("/datasets/images/generic", data={}, follow_redirects=False)
    assert r.status_code == 400 and "prebuilt_train_images" in r.json()["errors"]
    assert c.delete(f"/datasets/{job_id}").status_code == 200
