"""The generic dataset pages in the browsers: the new-dataset forms of each generic kind (from
the home page's New dataset menu), their errors next to the fields, a segmentation dataset made
from its form and its page (stages, the records with their masks coloured, side by side and
overlaid, the pixels per class as a table and a plotly chart), a gradients dataset's label
values; the same pages in Firefox (WebDriver BiDi, as test_firefox.py).  Screenshots are kept
as the other web tests keep them."""
from __future__ import annotations

import pytest

from brewnet.data.generic.synthetic import make_shapes_dataset

from .firefox_bidi import BiDiTimeout
from .test_firefox import CHART_DRAWN, HEADING, WIDTHS, ff_page, firefox, firefox_logged_in  # noqa: F401, F811

FORMS = {"other": "/datasets/images/generic/new", "gradients": "/datasets/generic/new/image-gradients",
         "processing": "/datasets/generic/new/image-processing",
         "segmentation": "/datasets/generic/new/image-segmentation"}
IMAGES_LOADED = "[...document.querySelectorAll('#gallery img')].every(i => i.complete && i.naturalWidth > 0)"


@pytest.fixture(scope="session")
def shapes(live):
    return make_shapes_dataset(str(live.data / "shapes"), count=12, size=24, seed=2)


@pytest.fixture(scope="session")
def gradients_id(live) -> str:
    r = live.api("POST", "/datasets/generic/create/image-gradients.json",
                 data={"dataset_name": "gradients", "train_image_count": "12", "val_image_count": "4",
                       "image_width": "16", "image_height": "16"})
    assert r.status_code == 200, r.text
    assert live.wait(r.json()["id"])["status"] == "Done"
    return r.json()["id"]


@pytest.fixture(scope="session")
def segmentation_id(live, shapes) -> str:
    images, labels, classes = shapes
    r = live.api("POST", "/datasets/generic/create/image-segmentation.json",
                 data={"dataset_name": "shapes (api)", "feature_folder": images, "label_folder": labels,
                       "class_labels_file": classes, "folder_pct_val": "25"})
    assert r.status_code == 200, r.text
    assert live.wait(r.json()["id"])["status"] == "Done"
    return r.json()["id"]


def test_home_menu_reaches_every_form(page, shot):
    page.goto("/")
    page.click("#new-dataset-menu summary")
    links = page.locator("#new-dataset-menu a")
    assert links.count() == 5
    hrefs = [links.nth(i).get_attribute("href") for i in range(5)]
    assert set(FORMS.values()) <= set(hrefs)
    shot(page, "generic_home_menu")
    for name, path in FORMS.items():
        page.goto("/")
        page.click("#new-dataset-menu summary")
        page.click(f'#new-dataset-menu a[href="{path}"]')
        page.wait_for_url(f"**{path}")
        # every field in use has a label
        unlabelled = page.evaluate("""() => [...document.querySelectorAll('#dataset-form input, #dataset-form select')]
            .filter((e) => e.type !== 'hidden' && e.type !== 'radio' && !e.disabled && !(e.labels && e.labels.length)
                    && !e.getAttribute('aria-label')).map((e) => e.name)""")
        assert unlabelled == [], name
        shot(page, f"generic_new_{name}")


def test_segmentation_form_then_its_page(page, live, shapes, shot):
    images, labels, classes = shapes
    page.goto(FORMS["segmentation"])
    assert page.locator("#colormap-file").is_hidden()
    page.select_option("#f-colormap_method", "textfile")
    assert page.locator("#colormap-file").is_visible()
    page.select_option("#f-colormap_method", "label")
    page.fill("#f-dataset_name", "shapes from the browser")
    page.fill("#f-feature_folder", images)
    page.fill("#f-label_folder", images + "-missing")
    page.problems.expected_errors.append("HTTP 400:")
    page.click("#create")
    page.wait_for_function("document.querySelector('.field-error[data-for=label_folder]').textContent.length > 0")
    assert "does not exist" in page.locator('.field-error[data-for="label_folder"]').inner_text()
    assert page.locator("#f-label_folder").get_attribute("aria-invalid") == "true"
    shot(page, "generic_new_segmentation_error")
    page.fill("#f-label_folder", labels)
    assert page.locator('.field-error[data-for="label_folder"]').inner_text() == ""
    page.check('input[name="class_labels_file__source"][value="server"]')
    page.fill("#f-class_labels_file", classes)
    page.fill("#f-folder_pct_val", "25")
    page.click("#create")
    page.wait_for_url("**/datasets/*")
    page.wait_for_function("document.getElementById('status').textContent === 'Done'", timeout=120_000)
    page.wait_for_function("document.querySelectorAll('#gallery figure.record').length === 9", timeout=30_000)
    assert page.locator("#stages tr[data-stage=train] td").nth(1).inner_text() == "9"
    assert page.locator("#heading, h1").first.inner_text().startswith("shapes from the browser")
    # side by side: the image and its coloured mask, both loaded
    page.wait_for_function(IMAGES_LOADED)
    assert page.locator("#gallery figure.record").first.locator("img").count() == 2
    # the pixels per class: a row per class, with its palette colour, and the chart
    assert page.locator("#pixels-table tbody tr").count() == 4
    assert "square" in page.locator("#pixels-table").inner_text()
    page.wait_for_function(CHART_DRAWN)
    shot(page, "generic_dataset_segmentation")
    page.select_option("#g-view", "overlay")
    page.wait_for_function("""[...document.querySelectorAll('#gallery img')].length === 9 &&
        [...document.querySelectorAll('#gallery img')].every(i => i.src.includes('view=overlay'))""")
    page.wait_for_function(IMAGES_LOADED)
    shot(page, "generic_dataset_segmentation_overlay")
    # DIGITS' explore page of the same LMDB
    page.click("#g-explore")
    page.wait_for_url("**/datasets/generic/explore*")
    assert page.locator("#explore figure").count() == 9


def test_gradients_page_shows_label_values(page, gradients_id, shot):
    page.goto(f"/datasets/{gradients_id}")
    page.wait_for_function("document.querySelectorAll('#gallery figure.record .values').length === 12")
    text = page.locator("#gallery figure.record .values").first.inner_text()
    assert text.startswith("[") and text.count(",") == 1
    page.wait_for_function("document.getElementById('mean').naturalWidth === 16")
    assert "Label range" in page.locator("#dims").inner_text()
    shot(page, "generic_dataset_gradients")


FF_PAGES = {**{f"new_{k}": (v, False) for k, v in FORMS.items()},
            "segmentation": ("/datasets/{segmentation}", True), "gradients": ("/datasets/{gradients}", False)}


@pytest.mark.parametrize("name", list(FF_PAGES))
def test_generic_dataset_page_in_firefox(ff_page,  # noqa: F811
                                          segmentation_id, gradients_id, name):
    path, charts = FF_PAGES[name]
    width = 1366
    ff_page.goto(path.format(segmentation=segmentation_id, gradients=gradients_id), width, WIDTHS[width])
    if charts:
        try:
            ff_page.wait_for(CHART_DRAWN, timeout=20)
        except BiDiTimeout:
            ff_page.screenshot(f"firefox_generic_{name}_{width}")
            pytest.fail(f"{name}: no plotly chart drawn within 20 s; page errors: {ff_page.errors}")
    if name in ("segmentation", "gradients"):
        ff_page.wait_for("document.querySelectorAll('#gallery figure.record').length > 0", timeout=20)
    ff_page.settle()
    assert ff_page.evaluate(HEADING)
    overflow = ff_page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    ff_page.screenshot(f"firefox_generic_{name}_{width}")
    assert overflow <= 0, f"{name} scrolls sideways by {overflow}px"
