"""The New Model page in a real browser: DIGITS' fields with labels, the learning-rate preview
following the solver fields, a custom network with brewnet lint's findings shown at their lines
as you type, the network's picture, errors next to their fields, and a model created."""
from __future__ import annotations

import re

UGS = "batch_norm_param { moving_average_fraction: 0.99 use_global_stats: true }"


def lr_points(page) -> int:
    return int(page.locator("#lr-chart").get_attribute("data-points") or 0)


def test_form_fields_are_labelled_and_the_lr_preview_follows_the_policy(page, live, dataset_id, shot):
    page.goto(f"/models/images/classification/new?dataset={dataset_id}")
    assert page.locator("#f-dataset").input_value() == dataset_id
    # every visible input, select and textarea has a label
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('#model-form input, #model-form select, #model-form textarea')]
        .filter((e) => e.type !== 'hidden' && e.type !== 'radio' && !(e.labels && e.labels.length))"""
        ".map((e) => e.name)")
    assert unlabelled == []
    page.wait_for_function("Number(document.querySelector('#lr-chart').dataset.points) > 0")
    step = page.evaluate("document.querySelector('#lr-chart').data[0].y")
    # step 33 %, gamma 0.1 (Caffe's rates are float32)
    assert len(step) == 101 and abs(step[0] / 0.01 - 1) < 1e-6 and abs(step[-1] / (0.01 * 0.1 ** 3) - 1) < 1e-5
    assert page.locator("#f-lr_step_size").is_visible() and not page.locator("#f-lr_poly_power").is_visible()
    page.select_option("#f-lr_policy", "poly")
    assert page.locator("#f-lr_poly_power").is_visible() and not page.locator("#f-lr_step_size").is_visible()
    page.wait_for_function("document.querySelector('#lr-chart').data[0].y[100] === 0")
    # a sweep: two learning rates, two curves
    page.fill("#f-learning_rate", "0.01, 0.05")
    page.wait_for_function("document.querySelector('#lr-chart').data.length === 2")
    # a bad policy field: the error shows next to it
    page.select_option("#f-lr_policy", "multistep")
    page.fill("#f-lr_multistep_values", "80,20")
    page.problems.expected_errors.append("/api/v1/lr-curve")
    page.wait_for_selector('.field-error[data-for="lr_multistep_values"]:not(:empty)')
    assert page.locator("#f-lr_multistep_values").get_attribute("aria-invalid") == "true"
    shot(page, "new_model")


def test_custom_network_shows_lint_findings_at_their_lines_and_its_picture(page, live, dataset_id, shot):
    page.goto(f"/models/images/classification/new?dataset={dataset_id}")
    page.click("button.customize[data-network=lenet_bn]")
    page.wait_for_selector("#tab-custom[aria-selected=true]")
    page.wait_for_function("document.querySelector('#f-custom_network').value.includes('LeNetBN')")
    page.wait_for_function("document.querySelector('#lint-status').textContent === 'No findings.'")
    text = page.locator("#f-custom_network").input_value()
    bad = text.replace("batch_norm_param { moving_average_fraction: 0.99 }", UGS, 1)
    # brewnet lint names the line of the layer's name
    line = bad.split("\n").index('  name: "conv1_bn"') + 1
    page.locator("#f-custom_network").fill(bad)   # typing: an input event
    finding = page.locator("#lint-findings li.finding").first
    finding.wait_for()
    assert "BN004" in finding.inner_text() and f"line {line}" in finding.inner_text()
    assert page.locator(f"#gutter .mark.warning:text-is('{line}')").count() == 1
    finding.locator("a.line").click()   # selects that line in the editor
    selected = page.evaluate("(() => { const e = document.querySelector('#f-custom_network'); "
                             "return e.value.slice(e.selectionStart, e.selectionEnd); })()")
    assert '"conv1_bn"' in selected
    # a parse error: its line is marked too
    page.locator("#f-custom_network").fill(bad + "\nlayer { name: \n")
    page.wait_for_function("document.querySelector('#lint-findings').textContent.includes('parse')")
    assert page.locator("#gutter .mark.error").count() == 1
    # back to the good net, drawn as SVG
    page.locator("#f-custom_network").fill(text)
    page.wait_for_function("document.querySelector('#lint-status').textContent === 'No findings.'")
    page.click("#draw-network")
    page.wait_for_function("(() => { const i = document.querySelector('#network-picture img'); "
                           "return i && i.complete && i.naturalWidth > 0; })()")
    shot(page, "new_model_custom")


def test_create_shows_errors_next_to_fields_then_creates(page, live, dataset_id):
    page.goto("/models/images/classification/new")
    page.problems.expected_errors.append("/models/images/classification.json")
    page.click("#create")
    page.wait_for_selector('.field-error[data-for="model_name"]:not(:empty)')
    assert page.locator('.field-error[data-for="dataset"]').inner_text().strip()
    page.select_option("#f-dataset", dataset_id)
    page.fill("#f-model_name", "from-the-form")
    page.fill("#f-train_epochs", "1")
    page.fill("#f-batch_size", "8")
    page.check("#net-lenet")
    page.click("#create")
    page.wait_for_url(re.compile(r"/models/[^/]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    job = live.api("GET", f"/api/v1/jobs/{job_id}").json()
    assert job["name"] == "from-the-form" and job["spec"]["standard_network"] == "lenet"
    assert job["spec"]["batch_size"] == 8 and job["spec"]["train_epochs"] == 1
    live.wait(job_id)


def test_network_svg_errors_are_json(live):
    r = live.api("POST", "/models/network.svg", json={"prototxt": "layer { name: "})
    assert r.status_code == 400 and "does not parse" in r.json()["error"]["message"]
    r = live.api("POST", "/models/network.svg", json={"prototxt": "", "rankdir": "XX"})
    assert r.status_code == 400 and r.json()["error"]["field"] == "rankdir"
