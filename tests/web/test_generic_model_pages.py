"""The generic model pages in real browsers (Chromium through Playwright, Firefox over BiDi): the New
Image Model form (the standard networks fitting the chosen dataset's kind, the generic lint as you
type, the learning-rate preview, errors next to their fields, a model created) and the model page's
task-metric graphs: RMSE and MAE of a regression model, mean IoU, pixel accuracy and per-class IoU
(named from the dataset's class labels) of a segmentation model.  Screenshots as the other web
tests keep them (``generic_*.png``, ``firefox_generic_*.png``)."""
from __future__ import annotations

import pytest
from generic_datasets import FCN, add_dataset_job, make_gradients_dataset, make_segmentation_dataset

from .test_firefox import CHART_DRAWN, HEADING, WIDTHS, ff_page, firefox, firefox_logged_in  # noqa: F401 (fixtures)

POINTS = "Number(document.querySelector('{0}').dataset.points) > 0"


@pytest.fixture(scope="session")
def generic_datasets(live) -> dict[str, str]:
    server = live.app.state.server
    return {"gradients": add_dataset_job(server, "gradients", "gradients",
                                         lambda d: make_gradients_dataset(d, 64, 16, 16)),
            "segmentation": add_dataset_job(server, "shapes", "segmentation",
                                            lambda d: make_segmentation_dataset(d, 8, 4, 16))}


def _train(live, form: dict, path: str = "/models/images/generic.json") -> str:
    r = live.api("POST", path, data=form)
    assert r.status_code == 200, r.text
    job = live.wait(r.json()["id"])
    assert job["status"] == "Done", live.api("GET", f"/api/v1/jobs/{job['id']}/log").text
    return job["id"]


@pytest.fixture(scope="session")
def regression_model(live, generic_datasets) -> str:
    return _train(live, {"model_name": "gradients-lenet", "dataset": generic_datasets["gradients"],
                         "method": "standard", "standard_networks": "regression_lenet", "train_epochs": "2",
                         "batch_size": "16", "learning_rate": "0.001", "solver_type": "ADAM", "lr_policy": "fixed",
                         "random_seed": "7"})


@pytest.fixture(scope="session")
def segmentation_model(live, generic_datasets) -> str:
    return _train(live, {"model_name": "shapes-fcn", "dataset": generic_datasets["segmentation"], "method": "custom",
                         "custom_network": FCN, "train_epochs": "2", "batch_size": "4", "learning_rate": "0.001",
                         "solver_type": "ADAM", "lr_policy": "fixed", "random_seed": "7"},
                  "/models/images/generic/image-segmentation.json")


def visible_networks(page) -> list[str]:
    return page.evaluate("[...document.querySelectorAll('#pane-standard tr[data-kinds]')]"
                         ".filter((tr) => !tr.hidden).map((tr) => tr.querySelector('input').value)")


def test_new_generic_model_form_offers_the_networks_of_the_dataset_kind(page, live, generic_datasets, shot):
    page.goto("/models/images/generic/new")
    assert page.locator("h1").inner_text() == "New Image Model"
    page.select_option("#f-dataset", generic_datasets["segmentation"])
    assert visible_networks(page) == ["fcn_alexnet", "fcn_small"]
    page.select_option("#f-dataset", generic_datasets["gradients"])
    assert visible_networks(page) == ["regression_lenet"]
    assert page.locator("#no-standard").is_hidden()
    page.wait_for_function(POINTS.format("#lr-chart"))
    # "Customize": the generic network's prototxt in the editor, linted by the generic rules
    page.click("button.customize[data-network=regression_lenet]")
    page.wait_for_selector("#tab-custom[aria-selected=true]")
    page.wait_for_function("document.querySelector('#f-custom_network').value.includes('EuclideanLoss')")
    page.wait_for_function("document.querySelector('#lint-status').textContent === 'No findings.'")
    text = page.locator("#f-custom_network").input_value()
    page.locator("#f-custom_network").fill(text.replace("num_output: 2\n", "\n", 1))
    page.wait_for_function("document.querySelector('#lint-findings').textContent.includes('num_output unset')")
    shot(page, "generic_new_model")
    # create: the error next to its field, then a model made from the fixed network
    page.problems.expected_errors.append("/models/images/generic.json")
    page.fill("#f-model_name", "from-the-form")
    page.fill("#f-train_epochs", "1")
    page.click("#create")
    page.wait_for_selector('.field-error[data-for="custom_network"]:not(:empty)')
    error = page.locator('.field-error[data-for="custom_network"]').inner_text()
    assert "num_output unset for generic networks" in error
    page.locator("#f-custom_network").fill(text)
    page.click("#create")
    page.wait_for_url("**/models/*")
    job_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    assert live.api("GET", f"/models/{job_id}.json").json()["dataset kind"] == "gradients"
    live.wait(job_id)


def test_regression_model_page_graphs_rmse_and_mae(page, regression_model, shot):
    page.goto(f"/models/{regression_model}")
    page.wait_for_function(POINTS.format("#chart-task"))
    assert page.locator("#chart-task").get_attribute("data-series").split("|") == ["MAE", "RMSE"]
    assert page.locator("#chart-iou").count() == 0
    rows = page.evaluate("[...document.querySelectorAll('#task-latest tr[data-metric]')].map((r) => r.dataset.metric)")
    assert rows == ["mae", "rmse"]
    # the task metrics are not drawn a second time among the net's outputs
    names = page.evaluate("document.querySelector('#chart-main').data.map((t) => t.name)")
    assert names and not any(n.startswith(("rmse", "mae")) for n in names)
    shot(page, "generic_model_regression")


def test_segmentation_model_page_graphs_iou_with_class_names(page, segmentation_model, shot):
    page.goto(f"/models/{segmentation_model}")
    page.wait_for_function(POINTS.format("#chart-iou"))
    assert set(page.locator("#chart-task").get_attribute("data-series").split("|")) == {"mean IoU", "pixel accuracy"}
    per_class = page.locator("#chart-iou").get_attribute("data-series").split("|")
    assert "IoU background (0)" in per_class and "IoU square (1)" in per_class and "IoU disc (2)" in per_class
    shot(page, "generic_model_segmentation")
    page.goto(f"/models/images/generic/large_graph?job_id={segmentation_model}")
    page.wait_for_function(POINTS.format("#chart-loss") + " && " + POINTS.format("#chart-iou"))
    shot(page, "generic_large_graph")


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("name", ["new", "regression", "segmentation"])
def test_generic_pages_in_firefox(ff_page,  # noqa: F811 (test_firefox's fixture)
                                  generic_datasets, regression_model, segmentation_model, name, width):
    path = {"new": "/models/images/generic/new", "regression": f"/models/{regression_model}",
            "segmentation": f"/models/{segmentation_model}"}[name]
    ff_page.goto(path, width, WIDTHS[width])
    if name != "new":
        ff_page.wait_for(CHART_DRAWN, timeout=20)
        ff_page.wait_for(POINTS.format("#chart-task"), timeout=20)
    else:
        ff_page.wait_for(POINTS.format("#lr-chart"), timeout=20)
    ff_page.settle()
    assert ff_page.evaluate(HEADING)
    overflow = ff_page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    ff_page.screenshot(f"firefox_generic_{name}_{width}")
    assert overflow <= 0, f"{name} at {width}px scrolls sideways by {overflow}px"
