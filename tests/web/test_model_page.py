"""The model page (/models/<id>) in a real browser: graphs with points, smoothing, log scale and
the epoch axis change the plot, the best validation point is marked, BatchNorm health per layer,
snapshots with downloads that answer, rename and notes that persist; and a live training followed
without reload through abort and resume."""
from __future__ import annotations

import json
import os

POINTS = "Number(document.getElementById('charts').dataset.points)"


def _points(page) -> int:
    return page.evaluate(POINTS)


def _trace(page, div: str, name: str) -> dict:
    return page.evaluate("([div, name]) => { const t = document.getElementById(div).data.find((t) => t.name === name);"
                         " return t ? {x: Array.from(t.x), y: Array.from(t.y), yaxis: t.yaxis || 'y'} : null; }",
                         [div, name])


def test_finished_model_page(page, live, model_id, shot):
    job = live.api("GET", f"/api/v1/jobs/{model_id}").json()
    metrics = live.api("GET", f"/api/v1/jobs/{model_id}/metrics").json()
    page.goto(f"/models/{model_id}")
    assert page.locator("#job-name").inner_text() == job["name"]
    assert page.locator("#status").inner_text() == "Done"

    # every point of every series is on the graphs, the train loss and val accuracy among them
    total = sum(len(pts) for phase, names in metrics.items() if isinstance(names, dict) for pts in names.values())
    page.wait_for_function(f"{POINTS} === {total}")
    assert {"train", "test", "test_moving_bn"} <= set(metrics)
    names = page.evaluate("document.getElementById('chart-main').data.map((t) => t.name)")
    assert {"loss (train)", "accuracy (val)", "accuracy (val, moving-average BN)", "best val"} <= set(names), names
    acc = _trace(page, "chart-main", "accuracy (val)")
    raw_acc = [p[1] * 100 for p in metrics["test"]["accuracy"]]
    assert acc["yaxis"] == "y2" and len(acc["y"]) == len(raw_acc)
    assert page.evaluate("document.getElementById('chart-main').layout.yaxis2.range") == [0, 100]
    lr = _trace(page, "chart-lr", "learning rate")
    assert lr["y"] == [p[1] for p in metrics["train"]["lr"]]

    # the best validation point: marked where the highest val accuracy is
    best_it, best_v = max(((p[0], p[1]) for p in metrics["test"]["accuracy"]), key=lambda p: (p[1], -p[0]))
    assert page.locator("#charts").get_attribute("data-best") == str(best_it)
    star = _trace(page, "chart-main", "best val")
    assert star["x"] == [best_it] and abs(star["y"][0] - best_v * 100) < 1e-9
    assert "best val accuracy" in page.evaluate("document.getElementById('chart-main').layout.annotations[0].text")

    # smoothing: 0 shows the raw values, more smooths them (the raw line stays, faint)
    raw_loss = [p[1] for p in metrics["train"]["loss"]]
    page.locator("#smoothing").fill("0")
    assert _trace(page, "chart-main", "loss (train)")["y"] == raw_loss
    assert _trace(page, "chart-main", "loss (train) raw") is None
    page.locator("#smoothing").fill("0.9")
    assert page.locator("#smoothing-value").inner_text() == "0.90"
    smoothed = _trace(page, "chart-main", "loss (train)")["y"]
    expected, last = [], 0.0
    for n, v in enumerate(raw_loss, 1):     # TensorBoard's debiased exponential moving average
        last = last * 0.9 + 0.1 * v
        expected.append(last / (1 - 0.9 ** n))
    assert smoothed != raw_loss and all(abs(a - b) < 1e-9 * max(1.0, abs(b)) for a, b in zip(smoothed, expected))
    assert _trace(page, "chart-main", "loss (train) raw")["y"] == raw_loss

    # log scale for the loss axis; epochs on the x axis
    assert page.evaluate("document.getElementById('chart-main').layout.yaxis.type") == "linear"
    page.locator("#log-scale").check()
    assert page.evaluate("document.getElementById('chart-main').layout.yaxis.type") == "log"
    page.locator("#x-axis").select_option("epoch")
    assert page.evaluate("document.getElementById('chart-main').layout.xaxis.title.text") == "epoch"
    ipe = page.evaluate("JSON.parse(document.getElementById('model-boot').textContent).iters_per_epoch")
    assert _trace(page, "chart-main", "accuracy (val)")["x"] == [p[0] / ipe for p in metrics["test"]["accuracy"]]
    page.locator("#log-scale").uncheck()
    page.locator("#x-axis").select_option("iteration")

    # BatchNorm health: LeNet-BN's three layers, their statistics per snapshot, the measured gap
    snaps = live.api("GET", f"/api/v1/models/{model_id}/snapshots").json()
    assert len(snaps) == 3
    page.wait_for_function("document.querySelectorAll('#bn-layer option').length === 3")
    layers = page.evaluate("Array.from(document.querySelectorAll('#bn-layer option')).map((o) => o.value)")
    assert layers == ["conv1_bn", "conv2_bn", "ip1_bn"]
    bn_mean = _trace(page, "chart-bn", "running mean (channel mean)")
    assert bn_mean["x"] == [s["iteration"] for s in snaps] and all(v is not None for v in bn_mean["y"])
    page.locator("#bn-layer").select_option("ip1_bn")
    assert _trace(page, "chart-bn", "running variance (channel mean)")["y"] != \
        live.api("GET", f"/models/{model_id}/batchnorm.json").json()["snapshots"][0]["layers"]["conv1_bn"]["var"]
    page.wait_for_function("document.querySelectorAll('#bn-gap tbody tr').length === 3", timeout=180_000)
    gap_layers = page.evaluate("Array.from(document.querySelectorAll('#bn-gap tbody tr')).map((r) => r.dataset.layer)")
    assert gap_layers == layers
    acc_rows = page.locator("#bn-accuracy tbody tr").all_inner_texts()
    assert any("stored global statistics" in r for r in acc_rows)
    assert any("moving-average statistics" in r for r in acc_rows) and any("recalibrated" in r for r in acc_rows)

    # resources: a finished job runs no process
    page.wait_for_function("document.getElementById('usage-process').textContent === 'not running'")

    # snapshots: one row each, with the val accuracy at its iteration and downloads that answer
    rows = page.locator("#snapshot-table tbody tr")
    assert rows.count() == len(snaps)
    test_acc = {p[0]: p[1] for p in metrics["test"]["accuracy"]}
    for i, s in enumerate(snaps):
        row = rows.nth(i)
        assert row.get_attribute("data-iteration") == str(s["iteration"])
        assert row.locator("td").nth(2).inner_text() == f"{test_acc[s['iteration']] * 100:.1f} %"
        links = [a.get_attribute("href") for a in row.locator("a").all()]
        assert any("/api/v1/models/" in h and "bundle.tar.gz" in h for h in links)
        for href in links:
            r = page.request.get(href)
            assert r.status == 200 and len(r.body()) > 1000, href

    # abort is disabled for a finished job; resume too (Done is not resumable); clone links the form
    assert page.locator("#btn-abort").is_disabled() and page.locator("#btn-resume").is_disabled()
    assert page.locator("#btn-delete").is_enabled()
    assert page.locator("#btn-clone").get_attribute("href") == f"/models/images/classification/new?clone={model_id}"
    assert page.locator("#settings-table").inner_text().count("learning_rate") == 1
    assert page.locator("#history tbody tr").count() == len(job["status_history"])
    assert "snapshot" in page.locator("#log-text").inner_text().lower()
    shot(page, "model")
    # laptop width: nothing wider than the window
    page.set_viewport_size({"width": 1024, "height": 800})
    page.wait_for_function("document.documentElement.scrollWidth <= 1024")   # once plotly has resized
    shot(page, "model-1024")
    page.set_viewport_size({"width": 1366, "height": 900})

    # rename and notes persist after a reload; a blank name is refused next to its field
    try:
        page.fill("#edit-name", "lenet-bn <renamed>")
        page.fill("#edit-notes", "lr 0.01\n<b>not bold</b>")
        page.click("#edit-save")
        page.wait_for_function("document.getElementById('edit-saved').textContent === 'saved'")
        assert page.locator("#job-name").inner_text() == "lenet-bn <renamed>"
        page.reload()
        assert page.locator("#job-name").inner_text() == "lenet-bn <renamed>"
        assert page.locator("#edit-notes").input_value() == "lr 0.01\n<b>not bold</b>"
        assert live.api("GET", f"/api/v1/jobs/{model_id}").json()["notes"] == "lr 0.01\n<b>not bold</b>"
        page.problems.expected_errors.append(f"HTTP 400: {live.url}/api/v1/jobs/{model_id}")
        page.fill("#edit-name", "  ")
        page.click("#edit-save")
        err = page.locator('.field-error[data-for="job_name"]')
        err.wait_for()
        assert "blank" in err.inner_text()
    finally:
        r = live.api("PATCH", f"/api/v1/jobs/{model_id}", json={"name": job["name"], "notes": job["notes"]})
        assert r.status_code == 200, r.text


def test_live_training_abort_resume(page, live, dataset_id, shot):
    r = live.api("POST", "/api/v1/models", json={
        "model_name": "lenet-bn live", "dataset": dataset_id, "method": "standard", "standard_networks": "lenet_bn",
        "train_epochs": 300, "snapshot_interval": 100, "batch_size": 8, "learning_rate": 0.01, "random_seed": 3})
    assert r.status_code == 201, r.text
    (job,) = r.json()["jobs"]
    job_id = job["id"]
    try:
        page.goto(f"/models/{job_id}")
        page.evaluate("window.__sameDocument = true")
        page.wait_for_function("document.getElementById('status').textContent === 'Running'", timeout=120_000)
        page.wait_for_function(f"{POINTS} > 0", timeout=120_000)
        p0 = _points(page)
        page.wait_for_function(f"{POINTS} > {p0 + 10}", timeout=120_000)
        page.wait_for_function("document.getElementById('usage-process').textContent.startsWith('pid ')",
                               timeout=60_000)
        assert page.locator("#btn-resume").is_disabled() and page.locator("#btn-delete").is_disabled()

        page.click("#btn-abort")
        page.wait_for_function("document.getElementById('status').textContent === 'Aborted'", timeout=120_000)
        page.wait_for_function("!document.getElementById('btn-resume').disabled")
        assert page.locator("#btn-abort").is_disabled()
        aborted_points = _points(page)
        assert aborted_points > p0 + 10

        page.click("#btn-resume")
        page.wait_for_function("document.getElementById('status').textContent === 'Running'", timeout=120_000)
        page.wait_for_function(f"{POINTS} > {aborted_points + 10}", timeout=120_000)
        assert live.api("GET", f"/api/v1/jobs/{job_id}").json()["status"] == "Running"
        shot(page, "model-live")

        page.click("#btn-abort")
        page.wait_for_function("document.getElementById('status').textContent === 'Aborted'", timeout=120_000)
        page.wait_for_function("document.getElementById('usage-process').textContent === 'not running'")
        assert page.evaluate("window.__sameDocument") is True    # all of it without a reload
        # the status history follows, with every change the server recorded
        server_history = [h[0] for h in live.api("GET", f"/api/v1/jobs/{job_id}").json()["status_history"]]
        assert server_history.count("Aborted") == 2 and server_history.count("Running") == 2, server_history
        page.wait_for_function("(want) => JSON.stringify(Array.from(document.querySelectorAll("
                               "'#history tbody tr td:first-child')).map((td) => td.textContent)) === want",
                               arg=json.dumps(server_history, separators=(",", ":")))
        # the page holds what the server has: every metric record it wrote
        metrics = live.api("GET", f"/api/v1/jobs/{job_id}/metrics").json()
        total = sum(len(pts) for names in metrics.values() if isinstance(names, dict) for pts in names.values())
        page.wait_for_function(f"{POINTS} === {total}")
    finally:
        if (live.api("GET", f"/api/v1/jobs/{job_id}").json()["status"]
                not in ("Done", "Aborted", "Error", "Interrupted")):
            live.api("POST", f"/api/v1/jobs/{job_id}/abort")
        assert live.wait(job_id)["status"] == "Aborted"


def test_data_routes_refuse_what_is_not_a_model(live, dataset_id):
    for route in ("batchnorm.json", "usage.json"):
        r = live.api("GET", f"/models/{dataset_id}/{route}")
        assert r.status_code == 404 and r.json()["error"]["description"] == "Job not found", r.text
        r = live.api("GET", f"/models/20990101-000000-ffff/{route}")
        assert r.status_code == 404, r.text
        r = live.api("GET", f"/models/..%2F..%2Fetc/{route}")
        assert r.status_code in (400, 404), r.text


def test_process_usage_reads_proc(tmp_path):
    """CPU %, RSS and threads of a process group led by one of ours (started as start_step does:
    in the job's folder, its progress file in the environment); any other pid is 'not running'."""
    import subprocess
    import sys

    from brewnet.server.web.model_pages import process_usage

    burn = ("import sys, time\nx = b'x' * 30_000_000\nprint('ready', flush=True)\nt = time.time()\n"
            "while time.time() - t < 60: pass\n")
    env = {**os.environ, "BREWNET_PROGRESS_FILE": str(tmp_path / "progress.jsonl")}
    proc = subprocess.Popen([sys.executable, "-c", burn, "brewnet"], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "ready"      # its memory is touched
        first = process_usage(proc.pid, tmp_path)
        assert first["running"] and first["pid"] == proc.pid and first["processes"] == 1
        assert first["rss_bytes"] > 30_000_000 and first["threads"] >= 1 and first["cpu_percent"] >= 0
        assert process_usage(proc.pid, tmp_path / "elsewhere") == {"running": False}
        assert process_usage(os.getpid(), tmp_path) == {"running": False}
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert process_usage(proc.pid, tmp_path) == {"running": False}
    assert process_usage(None, tmp_path) == {"running": False}
