"""The whole DIGITS flow in one browser session, by clicks and typing only (issue 13, item 10):
create a dataset from a folder of generated images and see its gallery; create LeNet-BN from a
custom prototxt and see a lint finding inline; train and watch the graph gain points without a
reload; abort; resume; classify one image (per-layer images present); classify many (confusion
matrix present); compare two runs.  The ``page`` fixture fails the test on any console error,
exception, HTTP error or request to another host; every page is kept as ``flow_*.png``."""
from __future__ import annotations

import re

POINTS = "Number(document.getElementById('charts').dataset.points)"
UGS = "batch_norm_param { moving_average_fraction: 0.99 use_global_stats: true }"
TRACES = "(document.getElementById('c-plot').data || []).length"


def points(page) -> int:
    return int(page.evaluate(POINTS))


def wait_status(page, status: str, timeout: float = 180_000) -> None:
    page.wait_for_function(f"document.getElementById('status').textContent === {status!r}", timeout=timeout)


def test_the_whole_flow(page, live, model_id, shot):
    page.set_default_timeout(60_000)
    # ---------------------------------------------------------------- a dataset from a folder
    page.goto("/")
    shot(page, "flow_home")
    page.click("header nav >> text=New dataset")
    page.wait_for_url("**/datasets/images/classification/new")
    page.fill("#f-dataset_name", "flow patterns")
    page.fill("#f-folder_train", str(live.data / "train"))
    page.fill("#f-folder_pct_val", "25")
    page.select_option("#f-resize_channels", "1")
    page.fill("#f-resize_width", "28")
    page.fill("#f-resize_height", "28")
    page.wait_for_function("document.querySelector('.resize-examples').dataset.size === '28x28x1'")
    shot(page, "flow_new_dataset")
    page.click("#create")
    page.wait_for_url(re.compile(r"/datasets/[^/]+$"))
    dataset = page.url.rsplit("/", 1)[1]
    page.evaluate("window.__flowDocument = 'dataset'")
    wait_status(page, "Done")
    assert page.evaluate("window.__flowDocument") == "dataset"   # followed live, no reload
    page.wait_for_function("document.querySelectorAll('#gallery img').length > 0")
    page.wait_for_function("[...document.querySelectorAll('#gallery img')]"
                           ".every((i) => i.complete && i.naturalWidth > 0)")
    page.wait_for_function("(() => { const m = document.querySelector('#mean'); "
                           "return !m.hidden && m.naturalWidth > 0; })()")
    shot(page, "flow_dataset")

    # ---------------------------------------------------------------- LeNet-BN, custom, with lint
    page.click("#new-model")
    page.wait_for_url(re.compile(r"/models/images/classification/new"))
    assert page.locator("#f-dataset").input_value() == dataset
    page.click("button.customize[data-network=lenet_bn]")
    editor = page.locator("#f-custom_network")
    page.wait_for_function("document.querySelector('#lint-status').textContent === 'No findings.'")
    good = editor.input_value()
    editor.fill(good.replace("batch_norm_param { moving_average_fraction: 0.99 }", UGS, 1))
    finding = page.locator("#lint-findings li.finding").first
    finding.wait_for()
    text = finding.inner_text()
    line = good.split("\n").index('  name: "conv1_bn"') + 1
    assert "BN004" in text and f"line {line}" in text and "use_global_stats" in text
    assert page.locator("#gutter .mark.warning").count() == 1
    shot(page, "flow_new_model_lint")
    editor.fill(good)   # fixed as the finding says
    page.wait_for_function("document.querySelector('#lint-status').textContent === 'No findings.'")
    page.fill("#f-model_name", "flow lenet-bn")
    page.fill("#f-train_epochs", "300")
    page.fill("#f-snapshot_interval", "100")
    page.fill("#f-batch_size", "8")
    page.fill("#f-random_seed", "11")
    page.click("#create")
    page.wait_for_url(re.compile(r"/models/[^/]+$"))
    model = page.url.rsplit("/", 1)[1]
    assert live.api("GET", f"/api/v1/jobs/{model}").json()["spec"]["method"] == "custom"

    # ---------------------------------------------------------------- train, live; abort; resume
    try:
        page.evaluate("window.__flowDocument = 'model'")
        wait_status(page, "Running")
        page.wait_for_function(f"{POINTS} > 0", timeout=180_000)
        first = points(page)
        page.wait_for_function(f"{POINTS} > {first + 10}", timeout=180_000)
        shot(page, "flow_model_training")
        page.click("#btn-abort")
        wait_status(page, "Aborted")
        aborted = points(page)
        page.wait_for_function("!document.getElementById('btn-resume').disabled")
        page.click("#btn-resume")
        wait_status(page, "Running")
        page.wait_for_function(f"{POINTS} > {aborted + 10}", timeout=180_000)
        page.click("#btn-abort")
        wait_status(page, "Aborted")
        assert page.evaluate("window.__flowDocument") == "model"   # all of it without a reload
    finally:
        if live.api("GET", f"/api/v1/jobs/{model}").json()["status"] not in ("Done", "Aborted", "Error", "Interrupted"):
            live.api("POST", f"/api/v1/jobs/{model}/abort")
        live.wait(model)
    page.wait_for_function("document.querySelectorAll('#snapshot-table tbody tr').length > 0")
    shot(page, "flow_model")

    # ---------------------------------------------------------------- classify one
    page.reload()   # the inference forms list the snapshots the abort wrote
    page.set_input_files("#one-image-file", str(live.images["dots"][0]))
    page.click("#classify-one-form button[type=submit]")
    rows = page.locator("#classify-one-output #predictions tbody tr")
    rows.first.wait_for(timeout=120_000)
    assert 1 <= rows.count() <= 5
    page.wait_for_function("[...document.querySelectorAll('#classify-one-output .vis-card img.vis')]"
                           ".every((i) => i.complete)")
    layer_images = page.evaluate("[...document.querySelectorAll('#classify-one-output .vis-card img.vis')]"
                                 ".filter((i) => i.naturalWidth > 0).length")
    assert layer_images >= 8   # activations and weights of conv, BatchNorm/Scale, ip layers
    assert page.locator("#classify-one-output .layer-vis.batchnorm").count() == 3
    shot(page, "flow_classify_one")

    # ---------------------------------------------------------------- classify many
    labels = live.api("GET", f"/datasets/{dataset}.json").json()["labels"]
    listing = live.data / "flow_list.txt"
    listing.write_text("".join(f"{p} {c}\n" for c, name in enumerate(labels) for p in live.images[name][:4]))
    page.set_input_files("#many-list-file", str(listing))
    page.click("#classify-many-form button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/[^/?#]+$"))
    page.locator("#confusion .main-svg").first.wait_for(timeout=300_000)
    assert page.locator("#per-class tbody tr").count() == len(labels)
    shot(page, "flow_classify_many")

    # ---------------------------------------------------------------- compare the two runs
    page.click("header nav >> text=Compare")
    page.wait_for_url("**/compare**")
    page.check(f"#pick-{model_id}")
    page.check(f"#pick-{model}")
    page.wait_for_function(f"{TRACES} === 2")
    assert set(page.evaluate("document.getElementById('c-plot').data.map((t) => t.meta)")) == {model_id, model}
    page.wait_for_selector("tr.diff")
    shot(page, "flow_compare")

    # ---------------------------------------------------------------- and home shows it all
    page.click("header .brand")
    page.wait_for_selector(f'tr.job[data-id="{model}"][data-status="Aborted"]')
    assert page.locator(f'tr.job[data-id="{dataset}"]').get_attribute("data-status") == "Done"
