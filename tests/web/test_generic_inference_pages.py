"""The generic inference pages in real browsers (Chromium through Playwright, Firefox over BiDi): the
model page's forms of a generic model (test one image, a list, a DB; the view picker showing each
view's options), and the result pages under the views: the gradients arrow of a regression model,
the segmentation overlay with the dataset's palette and legend, the per-class IoU of a labelled
DB and the regression scatter and error histogram.  Screenshots as the other web tests keep them
(``generic_infer_*.png``, ``firefox_generic_infer_*.png``); the models are the generic model
pages' (test_generic_model_pages.py)."""
from __future__ import annotations

from urllib.parse import urlencode

import numpy as np
import pytest
from PIL import Image

from .test_firefox import HEADING, WIDTHS, ff_page, firefox, firefox_logged_in  # noqa: F401 (fixtures)
from .test_generic_model_pages import generic_datasets, regression_model, segmentation_model  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def inputs(live):
    """A gradient image and a shapes image under the data root."""
    folder = live.data / "generic-inputs"
    folder.mkdir(exist_ok=True)
    y, x = np.mgrid[0:16, 0:16]
    grad = np.clip(0.4 * 255 / 16 * (x - 8) - 0.2 * 255 / 16 * (y - 8) + 127.5, 0, 255).astype(np.uint8)
    Image.fromarray(grad).save(folder / "gradient.png")
    shapes = np.full((16, 16, 3), 20, np.uint8)
    shapes[4:10, 4:10] = 220
    Image.fromarray(shapes).save(folder / "square.png")
    return {"gradient": folder / "gradient.png", "square": folder / "square.png"}


def test_view_picker_and_infer_one_with_the_gradients_view(page, regression_model, inputs, shot):  # noqa: F811
    page.goto(f"/models/{regression_model}")
    form = page.locator("#infer-one-form")
    assert form.locator(".view-select").input_value() == "image-gradients"   # the dataset kind's view
    assert form.locator('fieldset[data-view="image-gradients"]').is_visible()
    form.locator(".view-select").select_option("image-image-output")
    assert not form.locator('fieldset[data-view="image-gradients"]').is_visible()
    assert form.locator('fieldset[data-view="image-image-output"]').is_visible()
    form.locator(".view-select").select_option("image-gradients")
    shot(page, "generic_infer_forms")
    form.locator("#g-one-path").fill(str(inputs["gradient"]))
    form.locator("#g-one-arrow_size").fill("60")
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    assert page.locator("#generic-result").get_attribute("data-view") == "image-gradients"
    arrow = page.locator("svg.grad-view line.arrow")
    assert arrow.count() == 1
    assert float(arrow.get_attribute("x2")) != float(arrow.get_attribute("x1"))
    assert page.locator("table.raw-data").count() == 0
    shot(page, "generic_infer_gradients")


def test_segmentation_overlay_with_the_dataset_palette(page, segmentation_model, inputs, shot):  # noqa: F811
    page.goto(f"/models/{segmentation_model}")
    form = page.locator("#infer-one-form")
    assert form.locator(".view-select").input_value() == "image-segmentation"
    assert form.locator("#g-one-colormap").input_value() == "dataset"      # the dataset has a palette
    form.locator("#g-one-path").fill(str(inputs["square"]))
    with page.expect_navigation():
        form.locator("button[type=submit]").click()
    overlay = page.locator("img.seg-overlay")
    assert overlay.count() == 1
    assert page.evaluate("document.querySelector('img.seg-overlay').naturalWidth") == 16
    names = page.locator("ul.legend li").all_inner_texts()
    assert names and all(n.split(" (")[0] in ("background", "square", "disc") for n in names)
    shot(page, "generic_infer_segmentation")


def test_infer_db_shows_per_class_iou(page, live, segmentation_model, generic_datasets, shot):  # noqa: F811
    db = live.app.state.server.job_dir(generic_datasets["segmentation"]) / "val_db" / "features"
    page.goto(f"/models/{segmentation_model}")
    form = page.locator("#infer-db-form")
    assert form.locator("#g-db-path").input_value() == str(db)
    with page.expect_navigation(timeout=120_000):
        form.locator("button[type=submit]").click()
    rows = page.locator("#iou-table tbody tr")
    assert rows.count() == 3 and "background" in rows.nth(0).inner_text()
    assert page.locator("#mean-iou").inner_text().endswith("%")
    assert page.locator("article.generic-item").count() == 4
    shot(page, "generic_infer_db_segmentation")


def test_regression_scatter_and_error_histogram(page, live, regression_model, generic_datasets, shot):  # noqa: F811
    db = live.app.state.server.job_dir(generic_datasets["gradients"]) / "val_db" / "features"
    page.goto(f"/models/{regression_model}")
    form = page.locator("#infer-db-form")
    assert form.locator("#g-db-path").input_value() == str(db)
    form.locator(".view-select").select_option("all-raw-data")
    with page.expect_navigation(timeout=120_000):
        form.locator("button[type=submit]").click()
    page.wait_for_function("document.getElementById('regression-charts').getAttribute('data-drawn') === '1'")
    assert page.locator("#regression-scatter .scatterlayer .point").count() >= 16
    assert page.locator("#regression-errors .barlayer .point").count() > 0
    assert page.locator("table.raw-data").count() == 16
    shot(page, "generic_infer_db_regression")


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("name", ["gradients", "segmentation"])
def test_generic_inference_in_firefox(ff_page, regression_model, segmentation_model, inputs,  # noqa: F811
                                      name, width):
    model, image, view = {"gradients": (regression_model, inputs["gradient"], "image-gradients"),
                          "segmentation": (segmentation_model, inputs["square"], "image-segmentation")}[name]
    ff_page.goto("/models/images/generic/infer_one?" + urlencode(
        {"job_id": model, "image_path": str(image), "view_extension_id": view}), width, WIDTHS[width])
    ff_page.wait_for("document.getElementById('generic-result') !== null")
    ff_page.settle()
    assert ff_page.evaluate(HEADING)
    selector = "svg.grad-view line.arrow" if name == "gradients" else "img.seg-overlay"
    assert ff_page.evaluate(f"document.querySelectorAll('{selector}').length") == 1
    overflow = ff_page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    ff_page.screenshot(f"firefox_generic_infer_{name}_{width}")
    assert overflow <= 0, f"{name} at {width}px scrolls sideways by {overflow}px"
    ff_page.goto(f"/models/{model}", width, WIDTHS[width])
    ff_page.wait_for("document.getElementById('infer-db-form') !== null")
    assert ff_page.evaluate("document.querySelector('#infer-one-form .view-select').value") == view
