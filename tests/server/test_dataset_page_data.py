"""The dataset pages' data routes (brewnet/server/web/dataset_pages.py) through TestClient on a
real dataset job: the gallery's pages per class against the LMDB read independently, a record
as PNG against its stored Datum, the mean against mean.binaryproto, the resize examples against
brewnet's own dataset resize, and the two pages' HTML (DIGITS' field names, a clone's values)."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import lmdb
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from brewnet.proto import caffe_pb2
from brewnet.server.app import create_app
from brewnet.server.config import ServerConfig

USER = "alice"
CLASSES = {"cats": 7, "dogs": 5, "owls": 3}


def make_images(root: Path) -> None:
    """Colour images of 12x8 (wider than tall), a different count per class; each image's
    first pixel row encodes its class and number, so a record shows where it came from."""
    rng = np.random.default_rng(1)
    for ci, (name, n) in enumerate(CLASSES.items()):
        (root / name).mkdir(parents=True)
        for i in range(n):
            a = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)
            a[..., ci] = 255
            Image.fromarray(a).save(root / name / f"{name}_{i:02d}.png")


def png(body: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(body))
    im.load()
    return im


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("dspages")
    data = root / "data"
    make_images(data / "train")
    outside = root / "outside"
    make_images(outside)
    config = ServerConfig(jobs_dir=root / "jobs", data_roots=[data], poll_interval_s=0.1)
    app = create_app(config)
    with TestClient(app) as client:
        client.cookies.set("username", USER)
        r = client.post("/datasets/images/classification.json", data={
            "dataset_name": "pets <b>", "method": "folder", "folder_train": str(data / "train"),
            "folder_pct_val": "34", "folder_train_min_per_class": "2", "resize_channels": "3",
            "resize_width": "12", "resize_height": "8", "resize_mode": "squash", "encoding": "png",
            "backend": "lmdb", "username": USER})
        assert r.status_code == 200, r.text
        job_id = r.json()["id"]
        deadline = time.monotonic() + 120
        while (status := client.get(f"/api/v1/jobs/{job_id}").json())["status"] not in ("Done", "Error", "Aborted"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert status["status"] == "Done", client.get(f"/api/v1/jobs/{job_id}/log").text
        yield {"client": client, "id": job_id, "data": data, "outside": outside,
               "dir": Path(config.jobs_dir) / job_id, "summary": status["summary"]}


def lmdb_records(db: Path) -> list[caffe_pb2.Datum]:
    """Every Datum of an LMDB in key order, read with the lmdb package directly."""
    env = lmdb.open(str(db), readonly=True, lock=False)
    try:
        with env.begin() as txn:
            out = []
            for _, v in txn.cursor():
                d = caffe_pb2.Datum()
                d.ParseFromString(v)
                out.append(d)
            return out
    finally:
        env.close()


def test_gallery_pages_hold_each_class_records_in_lmdb_order(world):
    c, job_id = world["client"], world["id"]
    labels = (world["dir"] / "labels.txt").read_text().split()
    assert labels == list(CLASSES)
    for split in ("train", "val"):
        records = lmdb_records(world["dir"] / f"{split}_db")
        for label, name in enumerate(labels):
            want = [i for i, d in enumerate(records) if d.label == label]
            assert len(want) == world["summary"]["per_class"][split][name]
            got = []
            page, pages = 1, None
            while pages is None or page <= pages:
                g = c.get(f"/datasets/{job_id}/gallery.json",
                          params={"split": split, "label": label, "page": page, "per_page": 2}).json()
                assert g["total"] == len(want) and g["label_name"] == name and g["page"] == page
                assert len(g["items"]) == min(2, len(want) - 2 * (page - 1))
                pages = g["pages"]
                got += [it["index"] for it in g["items"]]
                page += 1
            assert got == want
            assert pages == max(1, -(-len(want) // 2))
    # a page past the end is the last page
    g = c.get(f"/datasets/{job_id}/gallery.json",
              params={"split": "train", "label": 0, "page": 99, "per_page": 2}).json()
    assert g["page"] == g["pages"]


def test_record_png_is_the_stored_datum(world):
    c, job_id = world["client"], world["id"]
    records = lmdb_records(world["dir"] / "train_db")
    g = c.get(f"/datasets/{job_id}/gallery.json", params={"split": "train", "label": 2}).json()
    for item in g["items"]:
        r = c.get(item["url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        got = np.asarray(png(r.content).convert("RGB"))
        datum = records[item["index"]]
        assert datum.encoded and datum.label == 2
        stored = np.asarray(Image.open(io.BytesIO(datum.data)).convert("RGB"))
        assert got.shape == (8, 12, 3)
        np.testing.assert_array_equal(got, stored)
        assert (got[..., 2] == 255).all()   # the owls' channel (RGB order kept)


def test_thumbnails_keep_small_images_and_shrink_big_ones(world):
    from brewnet.server.web.dataset_pages import THUMB_SIDE, thumbnail

    small = Image.new("RGB", (THUMB_SIDE, 40))
    assert thumbnail(small) is small
    assert thumbnail(Image.new("L", (512, 256))).size == (THUMB_SIDE, THUMB_SIDE // 2)
    assert thumbnail(Image.new("RGB", (100, 1000))).size == (13, THUMB_SIDE)
    c, job_id = world["client"], world["id"]
    full = c.get(f"/datasets/{job_id}/images/train/0.png", params={"full": 1})
    assert full.status_code == 200 and png(full.content).size == (12, 8)


def test_record_and_gallery_errors(world):
    c, job_id = world["client"], world["id"]
    n = world["summary"]["counts"]["train"]
    assert c.get(f"/datasets/{job_id}/images/train/{n}.png").status_code == 404
    assert c.get(f"/datasets/{job_id}/images/test/0.png").status_code == 404
    r = c.get(f"/datasets/{job_id}/images/nope/0.png")
    assert r.status_code == 400 and r.json()["error"]["field"] == "split"
    r = c.get(f"/datasets/{job_id}/gallery.json", params={"split": "train", "label": 3})
    assert r.status_code == 400 and "label" in r.text
    assert c.get(f"/datasets/{job_id}/gallery.json", params={"split": "test"}).status_code == 404
    assert c.get("/datasets/20000101-000000-abcd/gallery.json").status_code == 404
    assert c.get("/datasets/20000101-000000-abcd/mean.png").status_code == 404
    assert "Traceback" not in r.text


def test_mean_png_is_the_mean_binaryproto(world):
    c, job_id = world["client"], world["id"]
    r = c.get(f"/datasets/{job_id}/mean.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    got = np.asarray(png(r.content).convert("RGB")).astype(int)
    blob = caffe_pb2.BlobProto()
    blob.ParseFromString((world["dir"] / "mean.binaryproto").read_bytes())
    mean = np.asarray(blob.data, np.float64).reshape(3, 8, 12)   # stored BGR
    want = np.clip(np.rint(mean[::-1].transpose(1, 2, 0)), 0, 255).astype(int)
    np.testing.assert_array_equal(got, want)
    # the train images' own mean (PNG records are lossless)
    train = np.stack([np.asarray(Image.open(io.BytesIO(d.data)).convert("RGB"), np.float64)
                      for d in lmdb_records(world["dir"] / "train_db")])
    assert np.abs(train.mean(0) - want).max() <= 0.5 + 1e-9


@pytest.mark.parametrize("mode", ["squash", "crop", "fill", "half_crop"])
def test_resize_examples_are_brewnets_resize(world, mode):
    from brewnet.data.image import digits_resize
    from brewnet.server.web.dataset_pages import builtin_example

    c = world["client"]
    r = c.get("/datasets/resize-example.png", params={"mode": mode, "width": 64, "height": 64, "channels": 3})
    assert r.status_code == 200 and r.headers["x-example-source"] == "built-in"
    got = np.asarray(png(r.content))
    src = builtin_example()
    assert src.width != src.height
    want = np.asarray(digits_resize(src.convert("RGB"), 64, 64, mode, np.random.default_rng(0)))
    np.testing.assert_array_equal(got, want)
    grey = png(c.get("/datasets/resize-example.png",
                     params={"mode": mode, "width": 30, "height": 50, "channels": 1}).content)
    assert grey.mode == "L" and grey.size == (30, 50)


def test_resize_modes_differ_and_the_original_is_shown(world):
    c = world["client"]
    got = {m: np.asarray(png(c.get("/datasets/resize-example.png",
                                   params={"mode": m, "width": 80, "height": 80}).content))
           for m in ("squash", "crop", "fill", "half_crop")}
    for a in got:
        for b in got:
            if a < b:
                assert not np.array_equal(got[a], got[b]), (a, b)
    orig = png(c.get("/datasets/resize-example.png", params={"mode": "original", "width": 5, "height": 5}).content)
    from brewnet.server.web.dataset_pages import EXAMPLE_SIZE
    assert orig.size == EXAMPLE_SIZE


def test_resize_example_of_a_training_folder_is_confined(world):
    from brewnet.data.image import digits_resize

    c = world["client"]
    folder = world["data"] / "train"
    r = c.get("/datasets/resize-example.png", params={"mode": "crop", "width": 6, "height": 6, "folder": str(folder)})
    assert r.status_code == 200 and r.headers["x-example-source"] == "cats_00.png"
    want = digits_resize(Image.open(folder / "cats" / "cats_00.png").convert("RGB"), 6, 6, "crop")
    np.testing.assert_array_equal(np.asarray(png(r.content)), np.asarray(want))
    # outside the data roots (directly, or by ..): the built-in picture, never the folder's image
    # a class folder linked from outside: not followed out of the data root
    linked = world["data"] / "linked"
    linked.mkdir()
    (linked / "aaa").symlink_to(world["outside"] / "cats")
    (linked / "bbb").mkdir()
    for bad in (str(world["outside"]), f"{folder}/../../outside", "relative/path", "/etc", str(linked)):
        r = c.get("/datasets/resize-example.png", params={"mode": "squash", "width": 6, "height": 6, "folder": bad})
        assert r.status_code == 200 and r.headers["x-example-source"] == "built-in", bad


def test_resize_example_refuses_bad_values(world):
    c = world["client"]
    for params, field in (({"mode": "stretch"}, "resize_mode"), ({"width": 0}, "resize_width"),
                          ({"height": 5000}, "resize_height"), ({"channels": 2}, "resize_channels")):
        r = c.get("/datasets/resize-example.png", params=params)
        assert r.status_code == 400 and r.json()["error"]["field"] == field, (params, r.text)
    assert c.get("/datasets/resize-example.png", params={"width": "x"}).status_code in (400, 422)


def test_new_dataset_form_has_digits_fields_and_a_clones_values(world):
    c, job_id = world["client"], world["id"]
    html = c.get("/datasets/images/classification/new").text
    for name in ("dataset_name", "group_name", "method", "folder_train", "folder_pct_val", "folder_pct_test",
                 "has_val_folder", "folder_val", "has_test_folder", "folder_test", "folder_train_min_per_class",
                 "folder_train_max_per_class", "textfile_use_local_files", "textfile_local_train_images",
                 "textfile_local_val_images", "textfile_local_test_images", "textfile_local_labels_file",
                 "textfile_train_images", "textfile_labels_file", "resize_channels", "resize_width",
                 "resize_height", "resize_mode", "encoding", "backend"):
        assert f'name="{name}"' in html, name
    assert 'action="/datasets/images/classification.json"' in html
    assert str(world["data"]) in html   # the data roots are named in the folder's help
    html = c.get(f"/datasets/images/classification/new?clone={job_id}").text
    assert 'value="pets &lt;b&gt;"' in html and "<b>" not in html.split("<main>")[1].split("Settings copied")[0]
    assert 'id="f-folder_pct_val" name="folder_pct_val" type="number" value="34"' in html
    assert 'value="12"' in html and 'value="8"' in html


def test_dataset_page_renders_with_its_data(world):
    c, job_id = world["client"], world["id"]
    r = c.get(f"/datasets/{job_id}")
    assert r.status_code == 200
    html = r.text
    assert "pets &lt;b&gt;" in html and "pets <b>" not in html
    data = json.loads(html.split('<script type="application/json" id="dataset-data">')[1].split("</script>")[0])
    assert data["labels"] == list(CLASSES) and data["has_mean"] is True
    assert data["per_class"]["train"] == world["summary"]["per_class"]["train"]
    assert f'href="/datasets/images/classification/new?clone={job_id}"' in html
    assert c.get("/datasets/20000101-000000-abcd").status_code == 404
