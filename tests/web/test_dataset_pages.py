"""The dataset pages in a real browser: DIGITS' New Dataset form filled in for a server folder
(a folder outside the data root refused next to its field first), the four resize modes drawn on
an example picture as the size changes, then the dataset page: status live until Done, images per
class as a chart, the gallery of a class paged, the mean image, the files and the log; delete
refused while a model uses the dataset, and a delete that succeeds."""
from __future__ import annotations

import re

LOADED = "(img) => img.complete && img.naturalWidth > 0"


def loaded_examples(page) -> list[dict]:
    return page.evaluate("""() => [...document.querySelectorAll('.resize-examples img')].map((i) => (
        {mode: i.dataset.mode || 'original', ok: i.complete && i.naturalWidth > 0, """
                         "w: i.naturalWidth, h: i.naturalHeight}))")


def no_horizontal_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")


def test_new_dataset_from_a_folder_then_its_page(page, live, shot):
    page.goto("/datasets/images/classification/new")
    # every field in use has a label
    unlabelled = page.evaluate("""() => [...document.querySelectorAll('#dataset-form input, #dataset-form select')]
        .filter((e) => e.type !== 'hidden' && !(e.labels && e.labels.length)).map((e) => e.name)""")
    assert unlabelled == []
    # the four modes (and the original) drawn on the built-in picture at the default 256x256
    page.wait_for_function("document.querySelector('.resize-examples').dataset.size === '256x256x3'")
    ex = loaded_examples(page)
    assert [e["mode"] for e in ex] == ["original", "squash", "crop", "fill", "half_crop"]
    assert all(e["ok"] for e in ex)
    assert all((e["w"], e["h"]) == (256, 256) for e in ex[1:]) and ex[0]["w"] != ex[0]["h"]
    assert "built-in" in page.locator("#example-source").inner_text()

    # a folder outside the data root: refused next to folder_train
    page.fill("#f-dataset_name", "patterns from the browser")
    page.fill("#f-folder_train", str(live.data.parent))
    page.problems.expected_errors.append(f"HTTP 400: {live.url}/datasets/images/classification.json")
    page.click("#create")
    err = page.locator('.field-error[data-for="folder_train"]')
    err.wait_for(state="visible")
    page.wait_for_function("document.querySelector('.field-error[data-for=folder_train]').textContent.length > 0")
    assert "outside" in err.inner_text()
    assert page.locator("#f-folder_train").get_attribute("aria-invalid") == "true"
    assert page.url.endswith("/datasets/images/classification/new")

    # the real folder: the examples now show its first image, resized as the size changes
    page.fill("#f-folder_train", str(live.data / "train"))
    page.select_option("#f-resize_channels", "1")
    page.fill("#f-resize_width", "28")
    page.fill("#f-resize_height", "20")
    page.wait_for_function("document.querySelector('.resize-examples').dataset.size === '28x20x1'")
    assert "bars_000.png" in page.locator("#example-source").inner_text()
    ex = loaded_examples(page)
    assert all(e["ok"] for e in ex) and all((e["w"], e["h"]) == (28, 20) for e in ex[1:])
    assert (ex[0]["w"], ex[0]["h"]) == (28, 28)   # the folder's own 28x28 image
    # the corrected field's error is gone
    assert err.inner_text() == "" and page.locator("#f-folder_train").get_attribute("aria-invalid") is None
    # a click on an example chooses its mode
    page.click("button.pick-mode[data-mode=crop]")
    assert page.locator("#f-resize_mode").input_value() == "crop"
    assert page.locator("figure.example.chosen").get_attribute("data-mode") == "crop"
    assert no_horizontal_scroll(page)
    shot(page, "new_dataset")
    page.set_viewport_size({"width": 1024, "height": 900})
    assert no_horizontal_scroll(page)
    page.set_viewport_size({"width": 1366, "height": 900})
    page.fill("#f-resize_height", "28")
    page.wait_for_function("document.querySelector('.resize-examples').dataset.size === '28x28x1'")
    page.fill("#f-folder_pct_val", "25")

    page.click("#create")
    page.wait_for_url(re.compile(r"/datasets/\d{8}-\d{6}-[0-9a-f]{4}$"))
    job_id = page.url.rsplit("/", 1)[1]
    page.evaluate("window.__same_page = true")
    page.wait_for_function("document.querySelector('#status').textContent === 'Done'", timeout=180_000)
    # the status arrived live: the page was not reloaded
    assert page.evaluate("window.__same_page === true")
    assert page.locator("#progress").get_attribute("aria-valuenow") == "100"

    job = live.api("GET", f"/api/v1/jobs/{job_id}").json()
    assert (job["spec"]["resize_mode"] == "crop" and job["spec"]["channels"] == 1
            and job["name"] == "patterns from the browser")
    per_class = job["summary"]["per_class"]

    # images per class: a bar per class and split, the server's counts
    page.wait_for_function("document.querySelector('#counts-chart').dataset.traces === '2'")
    bars = page.evaluate("document.querySelector('#counts-chart').data.map((t) => [t.name, t.x, t.y])")
    assert bars == [["Training", list(per_class["train"]), list(per_class["train"].values())],
                    ["Validation", list(per_class["val"]), list(per_class["val"].values())]]
    assert page.locator("#counts-chart .main-svg").count() > 0
    assert page.locator("#counts-table tbody tr").count() == 3

    # the gallery: a class's images, paged
    gallery = page.locator("#gallery img")
    page.wait_for_function("document.querySelectorAll('#gallery img').length > 0")
    assert gallery.count() == per_class["train"]["bars"]
    page.select_option("#g-class", label="dots")
    page.select_option("#g-per-page", "12")
    page.wait_for_function("document.querySelector('#g-page').textContent.startsWith('Page 1 of 2')")
    assert gallery.count() == 12
    page.wait_for_function("[...document.querySelectorAll('#gallery img')]"
                           ".every((i) => i.complete && i.naturalWidth === 28)")
    assert all("dots" in t for t in gallery.evaluate_all("(imgs) => imgs.map((i) => i.title)"))
    first = gallery.evaluate_all("(imgs) => imgs.map((i) => i.dataset.index)")
    # each thumbnail links to its record as stored
    href = page.locator("#gallery a").first.get_attribute("href")
    assert href == f"/datasets/{job_id}/images/train/{first[0]}.png?full=1"
    assert page.request.get(href).headers["content-type"] == "image/png"
    assert page.locator("#g-prev").is_disabled()
    page.click("#g-next")
    page.wait_for_function("document.querySelector('#g-page').textContent.startsWith('Page 2 of 2')")
    assert gallery.count() == per_class["train"]["dots"] - 12
    assert page.locator("#g-next").is_disabled()
    second = gallery.evaluate_all("(imgs) => imgs.map((i) => i.dataset.index)")
    assert not set(first) & set(second)
    page.click("#g-prev")
    page.wait_for_function("document.querySelector('#g-page').textContent.startsWith('Page 1 of 2')")
    page.select_option("#g-split", "val")
    page.wait_for_function(f"document.querySelector('#g-page').textContent.endsWith('of {per_class['val']['dots']}')")

    # the mean image, the files and the log
    page.wait_for_function("(() => { const m = document.querySelector('#mean'); "
                           "return !m.hidden && m.complete && m.naturalWidth > 0; })()")
    assert page.evaluate("document.querySelector('#mean').naturalWidth") == 28
    page.wait_for_function("document.querySelectorAll('#files tbody a').length > 0")
    files = page.locator("#files tbody a").evaluate_all(
        "(as) => as.map((a) => [a.textContent, a.getAttribute('href')])")
    names = [f[0] for f in files]
    assert {"mean.binaryproto", "labels.txt", "train_db/data.mdb", "val_db/data.mdb"} <= set(names)
    assert all(href == f"/files/{job_id}/{name}" for name, href in files)
    r = page.request.get(f"/files/{job_id}/labels.txt")
    assert r.ok and r.text().split() == ["bars", "columns", "dots"]
    page.wait_for_function("document.querySelector('#log').textContent.length > 20")
    assert page.locator("#clone").get_attribute("href") == f"/datasets/images/classification/new?clone={job_id}"
    assert no_horizontal_scroll(page)
    shot(page, "dataset")
    page.set_viewport_size({"width": 1024, "height": 900})
    assert no_horizontal_scroll(page)

    # clone: the form again, with this dataset's values
    page.click("#clone")
    page.wait_for_url(re.compile(r"clone="))
    assert page.locator("#f-folder_train").input_value() == str(live.data / "train")
    assert page.locator("#f-resize_mode").input_value() == "crop"
    assert page.locator("#f-resize_channels").input_value() == "1"
    page.wait_for_function("document.querySelector('.resize-examples').dataset.size === '28x28x1'")


def test_delete_is_refused_while_a_model_uses_the_dataset(page, live, dataset_id, model_id):
    page.goto(f"/datasets/{dataset_id}")
    # the models on this dataset (other tests of the session may have trained more on it)
    models = [j for j in live.api("GET", "/api/v1/jobs", params={"kind": "model"}).json()["jobs"]
              if j["dataset_id"] == dataset_id]
    n = len(models)
    text = page.locator("#dependents").inner_text()
    assert f"Used by {n} model{'s' if n > 1 else ''}" in text and "lenet-bn (Done)" in text
    page.problems.expected_errors.append(f"HTTP 403: {live.url}/api/v1/jobs/{dataset_id}")
    page.on("dialog", lambda d: d.accept())
    page.click("#delete")
    flash = page.locator("#flash")
    flash.wait_for(state="visible")
    page.wait_for_function("document.querySelector('#flash').textContent.includes('Cannot delete')")
    assert "lenet-bn" in flash.inner_text()
    assert live.api("GET", f"/api/v1/jobs/{dataset_id}").status_code == 200


def test_delete_a_dataset(page, live):
    r = live.api("POST", "/api/v1/datasets", json={
        "dataset_name": "to delete", "method": "folder", "folder_train": str(live.data / "train"),
        "resize_channels": 1, "resize_width": 8, "resize_height": 8})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert live.wait(job_id)["status"] == "Done"
    page.goto(f"/datasets/{job_id}")
    page.wait_for_function("document.querySelectorAll('#gallery img').length > 0")
    page.on("dialog", lambda d: d.accept())
    page.click("#delete")
    page.wait_for_url(f"{live.url}/")
    assert live.api("GET", f"/api/v1/jobs/{job_id}").status_code == 404


def test_new_dataset_from_uploaded_list_files(page, live, tmp_path, shot):
    # a list of relative paths (under the training folder given as their prefix) and a labels file
    names = ["bars", "columns", "dots"]
    lines = [f"{name}/{p.name} {i}" for i, name in enumerate(names) for p in live.images[name][:6]]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")
    page.goto("/datasets/images/classification/new")
    page.check("#f-method-textfile")
    assert page.locator("#method-folder").is_hidden() and page.locator("#f-textfile_train_images").is_visible()
    assert page.locator("#f-textfile_local_train_images").is_hidden()
    page.check("#f-textfile_use_local_files")   # server paths instead of uploads ...
    assert (page.locator("#f-textfile_local_labels_file").is_visible()
            and page.locator("#f-textfile_labels_file").is_hidden())
    page.uncheck("#f-textfile_use_local_files")  # ... and back
    page.set_input_files("#f-textfile_train_images", str(tmp_path / "train.txt"))
    page.set_input_files("#f-textfile_labels_file", str(tmp_path / "labels.txt"))
    page.fill("#f-textfile_train_folder", str(live.data / "train"))
    page.fill("#f-resize_width", "16")
    page.fill("#f-resize_height", "16")
    page.fill("#f-dataset_name", "from lists")
    # the list method's examples use the built-in picture
    page.wait_for_function("document.querySelector('.resize-examples').dataset.size === '16x16x3'")
    assert "built-in" in page.locator("#example-source").inner_text()
    page.set_viewport_size({"width": 1024, "height": 900})
    assert no_horizontal_scroll(page)
    shot(page, "new_dataset_lists_1024")
    page.click("#create")
    page.wait_for_url(re.compile(r"/datasets/\d{8}-\d{6}-[0-9a-f]{4}$"))
    job_id = page.url.rsplit("/", 1)[1]
    page.wait_for_function("document.querySelector('#status').textContent === 'Done'", timeout=180_000)
    job = live.api("GET", f"/api/v1/jobs/{job_id}").json()
    assert job["spec"]["method"] == "textfile" and job["summary"]["per_class"]["train"] == {n: 6 for n in names}
    assert "train.txt" in page.locator("table.facts").first.inner_text() or "train.txt" in page.content()
    page.wait_for_function("document.querySelector('#counts-chart').dataset.traces === '1'")
    page.wait_for_function("document.querySelectorAll('#gallery img').length === 6")
