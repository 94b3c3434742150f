"""The inference pages in a real browser: a model's inference forms (/models/<id>/classify),
classify one (in place and as DIGITS' plain form POST) with per-layer images, histograms and
BatchNorm statistics, classify many and test a labelled set (job page: confusion matrix,
per-class table, misclassified images, top images per class), DIGITS' classify_many page."""
from __future__ import annotations

import re

import pytest

LOADED_IMAGES = """(sel) => {
  const imgs = Array.from(document.querySelectorAll(sel));
  return {total: imgs.length, complete: imgs.every((i) => i.complete),
          loaded: imgs.filter((i) => i.complete && i.naturalWidth > 0).length};
}"""


def _fits(page, width: int = 1024) -> None:
    """At a laptop width the page needs no sideways scrolling."""
    page.set_viewport_size({"width": width, "height": 800})
    over = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    try:   # plotly's responsive charts resize after the window's resize event
        page.wait_for_function(f"({over}) <= 0", timeout=5_000)
    except Exception:
        pytest.fail(f"{page.evaluate(over)} px wider than a {width} px window")


def _images_loaded(page, selector: str) -> dict:
    page.wait_for_function(f"Array.from(document.querySelectorAll({selector!r})).every((i) => i.complete)")
    return page.evaluate(LOADED_IMAGES, selector)


@pytest.fixture(scope="module")
def labels(live, dataset_id) -> list[str]:
    return live.api("GET", f"/datasets/{dataset_id}.json").json()["labels"]


@pytest.fixture(scope="module")
def visualizations(live, model_id) -> list[dict]:
    """What the API's classify gives for one image: the page must show every entry."""
    path = live.images["dots"][0]
    r = live.api("POST", f"/api/v1/models/{model_id}/classify", data={"image_path": str(path),
                                                                      "show_visualizations": "1"})
    assert r.status_code == 200, r.text
    return r.json()["visualizations"]


def _list_file(live, labels, name: str, per_class: int, mislabel: int = 0):
    """A list file under the data root, lines 'path label'; the first ``mislabel`` images of
    the first class are given the last class as their true label (the model must get them
    'wrong').  Returns (path, lines, the mislabelled paths)."""
    lines, wrong = [], []
    for c, label in enumerate(labels):
        for i, p in enumerate(live.images[label][:per_class]):
            if c == 0 and i < mislabel:
                lines.append(f"{p} {len(labels) - 1}")
                wrong.append(str(p))
            else:
                lines.append(f"{p} {c}")
    path = live.data / name
    path.write_text("\n".join(lines) + "\n")
    return path, lines, wrong


def _expected_cards(vis: list[dict]) -> tuple[int, int]:
    """(image cards the page draws: every activation and every learnable weight; BatchNorm
    layers: their statistics are a table and a chart)."""
    cards = [v for v in vis if v["kind"] == "activation" or v.get("role") != "statistics"]
    bn_layers = {v["layer"] for v in vis if v.get("role") == "statistics"}
    return len(cards), len(bn_layers)


def test_classify_one_in_place(page, live, model_id, labels, visualizations, shot):
    page.goto(f"/models/{model_id}/classify")
    assert page.locator("#classify-one-form").is_visible()
    assert page.locator("#one-vis").is_checked()
    # every field has a label
    for form in ("#classify-one-form", "#classify-many-form", "#test-set-form", "#top-n-form"):
        for field in page.locator(f"{form} input:not([type=hidden]), {form} select").all():
            fid = field.get_attribute("id")
            assert fid and page.locator(f"label[for='{fid}']").count() == 1, (form, fid)
    page.set_input_files("#one-image-file", str(live.images["dots"][1]))
    url = page.url
    page.click("#classify-one-form button[type=submit]")
    rows = page.locator("#classify-one-output #predictions tbody tr")
    rows.first.wait_for(timeout=120_000)
    assert page.url == url, "the result is shown in place, without a reload"
    assert rows.count() == min(5, len(labels))
    assert rows.nth(0).locator("td").nth(1).inner_text() == "dots"
    assert page.locator("#classify-one-output #predictions .bar > span").count() == rows.count()
    # the uploaded image itself, and the per-layer images, all loaded
    cards, bn_layers = _expected_cards(visualizations)
    assert bn_layers >= 1, "LeNet-BN has BatchNorm layers"
    state = _images_loaded(page, "#classify-one-output .vis-card img.vis")
    assert state["total"] == cards and state["loaded"] == cards, state
    assert _images_loaded(page, "#classify-one-output img.original")["loaded"] == 1
    # a histogram per card, with bars
    assert page.locator("#classify-one-output .vis-card svg.hist").count() == cards
    assert page.locator("#classify-one-output .vis-card svg.hist rect").count() >= cards
    # BatchNorm: a statistics table and a per-channel chart (plotly) for each such layer
    assert page.locator("#classify-one-output .layer-vis.batchnorm").count() == bn_layers
    page.wait_for_function("document.querySelectorAll('#classify-one-output .bn-chart .main-svg').length >= %d"
                           % bn_layers, timeout=60_000)
    assert page.locator("#classify-one-output .bn-stats tbody tr").count() == 2 * bn_layers
    assert "eps" in page.locator("#classify-one-output .bn-info").first.inner_text()
    shot(page, "classify_one")
    _fits(page)
    shot(page, "classify_one_1024")


def test_classify_one_plain_form_post(page, live, model_id):
    """DIGITS' form POST works without the page's script: classify_one.html is the answer."""
    page.goto(f"/models/{model_id}/classify")
    page.set_input_files("#one-image-file", str(live.images["bars"][2]))
    with page.expect_navigation(timeout=120_000):
        page.evaluate("document.getElementById('classify-one-form').submit()")
    assert "/models/images/classification/classify_one" in page.url
    rows = page.locator("#predictions tbody tr")
    assert rows.count() >= 1
    assert rows.nth(0).locator("td").nth(1).inner_text() == "bars"
    state = _images_loaded(page, ".vis-card img.vis")
    assert state["total"] > 0 and state["loaded"] == state["total"], state
    assert page.locator("img.vis.input").count() == 1


def test_classify_one_server_path_and_errors_next_to_fields(page, live, model_id):
    page.goto(f"/models/{model_id}/classify")
    page.click("#classify-one-form button[type=submit]")   # nothing chosen: said before any request
    err = page.locator("#classify-one-form .field-error[data-for=image_file]")
    err.wait_for()
    assert "Choose an image" in err.inner_text()
    page.problems.expected_errors.append("HTTP 403")
    page.fill("#one-image-path", "/etc/hostname")           # outside the data root
    page.click("#classify-one-form button[type=submit]")
    err = page.locator("#classify-one-form .field-error[data-for=image_path]")
    err.wait_for()
    assert err.inner_text().strip()
    assert page.locator("#one-image-path").get_attribute("aria-invalid") == "true"
    assert page.locator("#classify-one-output #predictions").count() == 0
    # a file under the data root: classified in place, the error cleared
    page.fill("#one-image-path", str(live.images["columns"][3]))
    page.uncheck("#one-vis")
    page.click("#classify-one-form button[type=submit]")
    rows = page.locator("#classify-one-output #predictions tbody tr")
    rows.first.wait_for(timeout=120_000)
    assert rows.nth(0).locator("td").nth(1).inner_text() == "columns"
    assert page.locator("#one-image-path").get_attribute("aria-invalid") is None
    assert page.locator("#classify-one-output #no-visualizations").count() == 1


def test_classify_many_job_page(page, live, model_id, labels, shot):
    path, lines, wrong = _list_file(live, labels, "many.txt", per_class=4, mislabel=2)
    page.goto(f"/models/{model_id}/classify")
    page.set_input_files("#many-list-file", str(path))
    page.click("#classify-many-form button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/[^/?#]+$"), timeout=60_000)
    job_id = page.url.rsplit("/", 1)[1]
    page.locator("#confusion .main-svg").first.wait_for(timeout=300_000)
    assert page.locator("#job-status").inner_text() == "Done"
    result = live.api("GET", f"/api/v1/jobs/{job_id}/result").json()["result"]
    assert result["count"] == len(lines)
    # the summary shows the job's own numbers
    assert page.locator(".summary-card.top1 .value").inner_text() == f"{100 * result['top1']:.1f} %"
    # the heat map has the class names on both axes
    texts = "(els) => els.map((e) => e.textContent)"
    assert sorted(page.eval_on_selector_all("#confusion .xtick text", texts)) == sorted(labels)
    assert sorted(page.eval_on_selector_all("#confusion .ytick text", texts)) == sorted(labels)
    rows = page.locator("#per-class tbody tr")
    assert rows.count() == len(labels) == 3
    assert rows.nth(0).locator("td").nth(0).inner_text() == labels[0]
    # the deliberately mislabelled images are among the misclassified, with true and predicted labels
    figs = page.locator("#misclassified figure.thumb")
    assert figs.count() >= len(wrong)
    names = [f.get_attribute("title") for f in figs.all()]
    for p in wrong:
        fig = figs.nth(names.index(p))
        assert fig.locator(".truth").inner_text() == f"true: {labels[-1]}"
        assert fig.locator(".predicted").inner_text().startswith("predicted: ")
    state = _images_loaded(page, "#misclassified figure.thumb img")
    assert state["loaded"] == state["total"] == figs.count(), state
    assert page.locator("#image-predictions tbody tr").count() == len(lines)
    shot(page, "inference_job")
    _fits(page)
    shot(page, "inference_job_1024")


def test_classify_many_without_labels(page, live, model_id, labels):
    """A list without true classes: predictions only, and the page says why there is no accuracy."""
    path = live.data / "unlabelled.txt"
    path.write_text("\n".join(str(live.images[c][5]) for c in labels) + "\n")
    page.goto(f"/models/{model_id}/classify")
    page.set_input_files("#many-list-file", str(path))
    page.click("#classify-many-form button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/[^/?#]+$"), timeout=60_000)
    page.locator("#image-predictions tbody tr").first.wait_for(timeout=300_000)
    assert page.locator("#image-predictions tbody tr").count() == len(labels)
    assert "No image had a true class" in page.locator("#report-summary").inner_text()
    assert page.locator("#report-confusion").is_hidden() and page.locator("#report-per-class").is_hidden()
    assert page.locator("#confusion .main-svg").count() == 0
    assert page.locator(".summary-card.top1 .value").inner_text() == "–"


def test_top_images_from_a_server_list(page, live, model_id, labels):
    path, _, _ = _list_file(live, labels, "top.txt", per_class=3)
    page.goto(f"/models/{model_id}/classify")
    page.fill("#top-list-path", str(path))
    page.fill("#top-n", "2")
    page.click("#top-n-form button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/[^/?#]+\?top_n=2#top-images$"), timeout=60_000)
    page.locator("#top-images .top-class").first.wait_for(timeout=300_000)
    classes = page.locator("#top-images .top-class")
    assert classes.count() == len(labels)
    counts = [c.locator("figure.thumb").count() for c in classes.all()]
    assert all(n == 2 for n in counts), counts   # every image's top list holds all 3 classes
    assert classes.nth(0).locator("h3").inner_text() == labels[0]


def test_server_list_errors_next_to_field(page, live, model_id):
    page.goto(f"/models/{model_id}/classify")
    page.problems.expected_errors.append("HTTP 400")
    page.fill("#many-list-path", str(live.data / "no-such-list.txt"))
    page.click("#classify-many-form button[type=submit]")
    err = page.locator("#classify-many-form .field-error[data-for=image_list_path]")
    err.wait_for()
    assert "No such file" in err.inner_text()


def test_digits_classify_many_form_post(page, live, model_id, labels, shot):
    """DIGITS' HTML route waits for the job and answers classify_many.html: the same report."""
    path, lines, _ = _list_file(live, labels, "digits-many.txt", per_class=2)
    page.goto(f"/models/{model_id}/classify")
    page.set_input_files("#many-list-file", str(path))
    with page.expect_navigation(timeout=300_000):
        page.evaluate("document.getElementById('classify-many-form').submit()")
    assert "/models/images/classification/classify_many" in page.url
    page.locator("#confusion .main-svg").first.wait_for(timeout=60_000)
    assert page.locator("#per-class tbody tr").count() == len(labels)
    assert page.locator("#classifications tbody tr").count() == len(lines)
    assert "No misclassified images" in page.locator("#misclassified").inner_text() or \
        page.locator("#misclassified figure.thumb").count() > 0
    shot(page, "classify_many")


def test_test_a_labelled_set(page, live, model_id, dataset_id, labels):
    page.goto(f"/models/{model_id}/classify")
    options = page.locator("#test-dataset option").all_inner_texts()
    assert any(dataset_id in o for o in options)
    page.select_option("#test-split", "val")
    page.click("#test-set-form button[type=submit]")
    page.wait_for_url(re.compile(r"/jobs/[^/?#]+$"), timeout=60_000)
    job_id = page.url.rsplit("/", 1)[1]
    page.locator("#confusion .main-svg").first.wait_for(timeout=300_000)
    result = live.api("GET", f"/api/v1/jobs/{job_id}/result").json()["result"]
    assert result["labelled"] == result["count"] > 0
    assert page.locator("#per-class tbody tr").count() == len(labels)
    # LMDB records are shown as thumbnails too
    page.locator("#image-predictions tbody tr").first.scroll_into_view_if_needed()
    assert page.locator("#image-predictions tbody tr").count() == result["count"]
    first = page.locator("#image-predictions tbody tr img").first
    first.scroll_into_view_if_needed()
    page.wait_for_function("(i) => i.complete && i.naturalWidth > 0", arg=first.element_handle())


def test_test_split_error_next_to_field(page, live, model_id):
    page.goto(f"/models/{model_id}/classify")
    page.problems.expected_errors.append("HTTP 400")
    page.select_option("#test-split", "test")       # the dataset has no test split
    page.click("#test-set-form button[type=submit]")
    err = page.locator("#test-set-form .field-error[data-for=split]")
    err.wait_for()
    assert "no 'test' split" in err.inner_text()


# ---------------------------------------------------------------- the routes without a browser

def test_routes_confine_what_they_serve(live, model_id, labels):
    path, _, _ = _list_file(live, labels, "routes.txt", per_class=1)
    r = live.api("POST", f"/api/v1/models/{model_id}/classify-many", files={"image_list": ("l.txt", path.read_bytes())})
    assert r.status_code == 202, r.text
    job_id = r.json()["job_id"]
    assert live.wait(job_id)["status"] == "Done"
    rep = live.api("GET", f"/inference/{job_id}/report.json", params={"username": "alice", "top_n": 1}).json()
    assert rep["count"] == len(labels) and len(rep["per_class"]) == len(labels)
    assert all(len(c["images"]) == 1 for c in rep["top_images"]["classes"])
    img = live.api("GET", f"/inference/{job_id}/images/0")
    assert img.status_code == 200 and img.headers["content-type"] == "image/png" and img.content[:4] == b"\x89PNG"
    assert live.api("GET", f"/inference/{job_id}/images/{len(labels)}").status_code == 404
    # a model is not an inference job; a list file outside the data root is refused
    assert live.api("GET", f"/inference/{model_id}/report.json").status_code == 404
    assert live.api("GET", "/inference/list-file", params={"path": "/etc/hostname"}).status_code == 403
    ok = live.api("GET", "/inference/list-file", params={"path": str(path)})
    assert ok.status_code == 200 and ok.text == path.read_text()


def test_forms_on_the_model_page(page, live, model_id):
    """The model page includes the same forms; classify one answers in place there too."""
    page.goto(f"/models/{model_id}")
    form = page.locator("#inference #classify-one-form")
    if form.count() == 0:
        pytest.fail("the model page does not include model_inference_forms.html")
    page.set_input_files("#one-image-file", str(live.images["columns"][4]))
    url = page.url
    page.click("#classify-one-form button[type=submit]")
    rows = page.locator("#classify-one-output #predictions tbody tr")
    rows.first.wait_for(timeout=120_000)
    assert page.url == url
    assert rows.nth(0).locator("td").nth(1).inner_text() == "columns"
    state = _images_loaded(page, "#classify-one-output .vis-card img.vis")
    assert state["total"] > 0 and state["loaded"] == state["total"], state
