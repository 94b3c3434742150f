"""The Compare page in a real browser: two LeNet-BN models trained on the same dataset with
different learning rates, picked on /compare, their curves overlaid (plotly traces), x by wall
time, smoothing, the learning_rate row marked as differing, the CSV download."""
from __future__ import annotations

import csv
from urllib.parse import parse_qs, urlsplit

import pytest


@pytest.fixture(scope="module")
def second_model_id(live, dataset_id) -> str:
    r = live.api("POST", "/api/v1/models", json={
        "model_name": "lenet-bn-lr0.02", "dataset": dataset_id, "method": "standard",
        "standard_networks": "lenet_bn", "train_epochs": 2, "batch_size": 8, "learning_rate": 0.02,
        "random_seed": 7, "bn_recalibrate": 5})
    assert r.status_code == 201, r.text
    (job,) = r.json()["jobs"]
    done = live.wait(job["id"])
    assert done["status"] == "Done", live.api("GET", f"/api/v1/jobs/{job['id']}/log").text
    return job["id"]


TRACES = "() => Array.from(document.getElementById('c-plot').data || [])" \
         ".map(t => ({meta: t.meta, name: t.name, x: Array.from(t.x), y: Array.from(t.y)}))"


def traces(page) -> list[dict]:
    return page.evaluate(TRACES)


def wait_traces(page, n: int) -> None:
    page.wait_for_function(f"() => (document.getElementById('c-plot').data || []).length === {n}")


def test_compare_two_models(page, live, model_id, second_model_id, shot, tmp_path):
    a, b = model_id, second_model_id
    metrics = {j: live.api("GET", f"/api/v1/jobs/{j}/metrics").json() for j in (a, b)}
    page.goto("/compare")
    assert page.locator("#c-models tbody tr").count() >= 2

    # the filter hides other names; picking goes into the URL
    page.fill("#c-filter", "lr0.02")
    assert page.locator(f"#c-models tr[data-id='{a}']").is_hidden()
    assert page.locator(f"#c-models tr[data-id='{b}']").is_visible()
    page.check(f"#pick-{b}")
    page.fill("#c-filter", "")
    page.check(f"#pick-{a}")
    page.wait_for_function("() => new URLSearchParams(location.search).getAll('job').length === 2")
    assert set(parse_qs(urlsplit(page.url).query)["job"]) == {a, b}

    # two traces of the default output (the validation accuracy), x by iteration
    wait_traces(page, 2)
    assert page.input_value("#c-output") == "test/accuracy"
    got = {t["meta"]: t for t in traces(page)}
    assert set(got) == {a, b}
    for j in (a, b):
        pts = metrics[j]["test"]["accuracy"]
        assert got[j]["x"] == [p[0] for p in pts]
        assert got[j]["y"] == pytest.approx([p[1] for p in pts])

    # another output: the training loss of each
    page.select_option("#c-output", "train/loss")
    page.wait_for_function("() => document.getElementById('c-plot').layout.title.text.includes('loss')")
    got = {t["meta"]: t for t in traces(page)}
    assert got[a]["x"] == [p[0] for p in metrics[a]["train"]["loss"]]

    # x by wall time: seconds since each job's first point
    page.select_option("#c-x", "time")
    page.wait_for_function("() => document.getElementById('c-plot').layout.xaxis.title.text.includes('wall time')")
    got = {t["meta"]: t for t in traces(page)}
    for j in (a, b):
        series = metrics[j]
        start = min(p[2] for ph, names in series.items() if ph != "job_id" for pts in names.values() for p in pts)
        assert got[j]["x"] == pytest.approx([p[2] - start for p in series["train"]["loss"]])
        assert min(got[j]["x"]) >= 0
    assert "x=time" in page.url

    # smoothing: the smoothed curves plus the raw ones, faint
    page.locator("#c-smooth").fill("0.6")
    wait_traces(page, 4)
    smoothed = {t["meta"]: t for t in traces(page)}
    raw = [p[1] for p in metrics[a]["train"]["loss"]]
    assert smoothed[f"{a}:raw"]["y"] == pytest.approx(raw)
    assert smoothed[a]["y"] != pytest.approx(raw) and smoothed[a]["y"][0] == pytest.approx(raw[0])

    # settings side by side: learning_rate differs, the network does not
    lr_row = page.locator("#c-settings tr[data-key='learning_rate']")
    assert "diff" in lr_row.get_attribute("class").split()
    assert sorted(lr_row.locator("td").all_text_contents()) == ["0.01", "0.02"]
    same = page.locator("#c-settings tr[data-key='standard_network']")
    assert "diff" not in (same.get_attribute("class") or "")
    page.check("#c-only-diff")
    assert same.is_hidden() and lr_row.is_visible()
    page.uncheck("#c-only-diff")
    assert same.is_visible()

    # the CSV download: every point of both jobs
    with page.expect_download() as info:
        page.click("#c-csv")
    download = info.value
    assert download.suggested_filename.endswith(".csv")
    path = tmp_path / "series.csv"
    download.save_as(path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for j in (a, b):
        want = sorted((ph, n, p[0], p[1]) for ph, names in metrics[j].items() if ph != "job_id"
                      for n, pts in names.items() for p in pts)
        got_rows = sorted((r["phase"], r["name"], int(r["iteration"]), float(r["value"]))
                          for r in rows if r["job_id"] == j)
        assert got_rows == want
    assert {r["job_name"] for r in rows} == {"lenet-bn", "lenet-bn-lr0.02"}

    # a reload keeps the picks and the view from the URL
    page.reload()
    wait_traces(page, 4)
    assert page.input_value("#c-x") == "time" and page.input_value("#c-output") == "train/loss"
    page.locator("#c-smooth").fill("0")
    wait_traces(page, 2)
    shot(page, "compare")
    page.set_viewport_size({"width": 1024, "height": 900})
    # plotly's responsive resize to the narrower (stacked) layout
    page.wait_for_function("() => { const d = document.getElementById('c-plot');"
                           " return d._fullLayout && Math.abs(d._fullLayout.width - d.clientWidth) <= 2; }")
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    shot(page, "compare-1024")

    # a job's name is text everywhere on the page (list, legend, settings), never markup
    evil = '<img src="/evil-img" onerror="window.__pwned=1">'
    r = live.api("PATCH", f"/api/v1/jobs/{b}", json={"name": evil})
    assert r.status_code == 200, r.text
    try:
        page.reload()
        wait_traces(page, 2)
        assert page.evaluate("window.__pwned") is None
        assert page.locator("img[src='/evil-img']").count() == 0
        assert page.locator(f"label[for='pick-{b}']").text_content() == evil
        assert evil in page.locator("#c-settings thead").text_content()
        assert evil in page.locator("#c-plot .legend").text_content()
    finally:
        live.api("PATCH", f"/api/v1/jobs/{b}", json={"name": "lenet-bn-lr0.02"})
