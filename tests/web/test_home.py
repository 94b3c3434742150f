"""The home page in a real browser: datasets and models with state, progress and a loss
sparkline; a job created elsewhere appears and finishes without a reload; filters."""
from __future__ import annotations


def test_jobs_appear_and_change_live_and_filters_hide_them(page, live, dataset_id, model_id, shot):
    page.goto("/")
    page.wait_for_selector("#live.ok")
    assert page.locator(f'tr.job[data-id="{dataset_id}"] .status').inner_text() == "Done"
    model_row = page.locator(f'tr.job[data-id="{model_id}"]')
    page.wait_for_function(f"""Number((document.querySelector('tr.job[data-id="{model_id}"] td.spark') || {{}})"""
                           ".dataset?.points || 0) > 1")
    assert model_row.locator("td.spark svg polyline").count() == 1
    # a dataset made over the API shows up, runs and finishes while the page stays open
    r = live.api("POST", "/api/v1/datasets", json={
        "dataset_name": "appears-live", "method": "folder", "folder_train": str(live.data / "train"),
        "folder_pct_val": 25, "resize_channels": 1, "resize_width": 28, "resize_height": 28})
    assert r.status_code == 201, r.text
    new_id = r.json()["id"]
    row = page.locator(f'tr.job[data-id="{new_id}"]')
    row.wait_for()
    page.wait_for_function(f"""document.querySelector('tr.job[data-id="{new_id}"]').dataset.status === 'Done'""",
                           timeout=120_000)
    assert row.locator(".pct").inner_text() == "100 %"
    # filters: text, then state
    page.fill("#filter-text", "appears")
    assert row.is_visible() and not model_row.is_visible()
    assert "q=appears" in page.url
    page.fill("#filter-text", "")
    page.select_option("#filter-status", "active")
    assert not row.is_visible()
    page.select_option("#filter-status", "")
    assert row.is_visible() and model_row.is_visible()
    shot(page, "home_jobs")
    # deleted elsewhere: the row goes
    assert live.api("DELETE", f"/api/v1/jobs/{new_id}").status_code == 200
    row.wait_for(state="detached")


def test_selected_jobs_grouped_then_deleted(page, live):
    ids = []
    for name in ("bulk-one", "bulk-two"):
        r = live.api("POST", "/api/v1/datasets", json={
            "dataset_name": name, "method": "folder", "folder_train": str(live.data / "train"),
            "resize_channels": 1, "resize_width": 8, "resize_height": 8})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    for job_id in ids:
        live.wait(job_id)
    page.goto("/")
    page.wait_for_selector("#live.ok")
    assert page.locator("#bulk").is_hidden()
    page.fill("#filter-text", "bulk-")
    page.check('#dataset-jobs thead input.pick-all')   # every dataset shown: the two
    assert page.locator("#bulk-count").inner_text() == "2 jobs selected"
    page.fill("#bulk-group", "sweep 7")
    page.click("#bulk-set-group")
    page.wait_for_function("document.querySelector('#flash').textContent === 'Group of 2 jobs set.'")
    for job_id in ids:
        assert page.locator(f'tr.job[data-id="{job_id}"] .group').inner_text() == "sweep 7"
        assert live.api("GET", f"/api/v1/jobs/{job_id}").json()["group"] == "sweep 7"
    page.once("dialog", lambda d: d.accept())
    page.click("#bulk-delete")
    for job_id in ids:
        page.locator(f'tr.job[data-id="{job_id}"]').wait_for(state="detached")
        assert live.api("GET", f"/api/v1/jobs/{job_id}").status_code == 404
    assert page.locator("#bulk").is_hidden()
