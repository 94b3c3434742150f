"""Browser tests of the web app: a real ``brewnet serve`` application under uvicorn on a free
loopback port (in this process, scheduler and job subprocesses real), driven by Playwright in
Debian's headless Chromium (``/usr/bin/chromium``; ``.ci/run`` installs it).

Fixtures:
- ``live``: the server (session-wide): ``live.url``, ``live.app``, ``live.data`` (a --data-root
  with ``live.images``: generated 28x28 grey PNGs, three classes), ``live.api(method, path,
  **kw)`` (an httpx call as user ``alice``, DIGITS' local mode), ``live.wait(job_id)``.
- ``dataset_id`` / ``model_id``: a finished dataset of those images and a LeNet-BN trained on it
  for 3 epochs (session-wide, made once over /api/v1).
- ``page``: a new browser page logged in as ``alice``, failing the test at teardown when the page
  logged a console error, threw, or requested anything from another host.
- ``shot(page, name)``: a full-page screenshot into the screenshots directory (``screenshots/``
  at the repository root, or ``$BREWNET_SCREENSHOTS``), named ``<name>.png``.

Every test here is marked slow (CI's second run skips them).  Without Chromium the tests are
skipped, unless ``BREWNET_REQUIRE_BROWSER=1`` (``.ci/run`` sets it) makes that a failure.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("BREWNET_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(os.environ.get("BREWNET_SCREENSHOTS") or ROOT / "screenshots")
USER = "alice"
FINISHED = ("Done", "Aborted", "Error", "Interrupted")


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.slow)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_images(root: Path, n: int = 24, size: int = 28) -> dict[str, list[Path]]:
    """Three grey patterns (bars, columns, dots) with noise, ``n`` PNGs each."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    patterns = {"bars": (yy // 4) % 2 == 0, "columns": (xx // 4) % 2 == 0,
                "dots": ((yy % 6) < 2) & ((xx % 6) < 2)}
    out: dict[str, list[Path]] = {}
    for name, mask in patterns.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        out[name] = []
        for i in range(n):
            a = np.where(mask, 200.0, 40.0) + rng.normal(0, 25, (size, size))
            p = root / name / f"{name}_{i:03d}.png"
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(p)
            out[name].append(p)
    return out


class Live:
    def __init__(self, tmp: Path):
        import uvicorn

        from brewnet.server.app import create_app
        from brewnet.server.config import ServerConfig

        self.data = tmp / "data"
        self.images = make_images(self.data / "train")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = ServerConfig(jobs_dir=tmp / "jobs", data_roots=[self.data], port=self.port)
        config.cpu_slots = 2   # a training and a classify-many may run side by side
        self.app = create_app(config, scheduler_options={"train_abort_grace_s": 60})
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        self.client = httpx.Client(base_url=self.url, params={"username": USER}, timeout=60)

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        return self.client.request(method, path, **kw)

    def wait(self, job_id: str, timeout_s: float = 600) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.api("GET", f"/api/v1/jobs/{job_id}").json()
            if job["status"] in FINISHED:
                return job
            assert time.monotonic() < deadline, job
            time.sleep(0.3)

    def close(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=60)


@pytest.fixture(scope="session")
def live(tmp_path_factory):
    server = Live(tmp_path_factory.mktemp("web"))
    yield server
    server.close()


@pytest.fixture(scope="session")
def dataset_id(live) -> str:
    r = live.api("POST", "/api/v1/datasets", json={
        "dataset_name": "patterns", "method": "folder", "folder_train": str(live.data / "train"),
        "folder_pct_val": 25, "resize_channels": 1, "resize_width": 28, "resize_height": 28,
        "encoding": "png", "backend": "lmdb"})
    assert r.status_code == 201, r.text
    job = live.wait(r.json()["id"])
    assert job["status"] == "Done", job
    return job["id"]


@pytest.fixture(scope="session")
def model_id(live, dataset_id) -> str:
    r = live.api("POST", "/api/v1/models", json={
        "model_name": "lenet-bn", "dataset": dataset_id, "method": "standard", "standard_networks": "lenet_bn",
        "train_epochs": 3, "batch_size": 8, "learning_rate": 0.01, "random_seed": 7, "bn_recalibrate": 5})
    assert r.status_code == 201, r.text
    (job,) = r.json()["jobs"]
    done = live.wait(job["id"])
    assert done["status"] == "Done", live.api("GET", f"/api/v1/jobs/{job['id']}/log").text
    return job["id"]


def require_browser(path: str, package: str) -> None:
    """Skip the test when the browser at ``path`` is missing; fail instead under
    ``BREWNET_REQUIRE_BROWSER=1`` (CI)."""
    if os.path.exists(path):
        return
    message = f"{path} is missing (apt-get install {package}); .ci/run installs it"
    if os.environ.get("BREWNET_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def browser():
    require_browser(CHROMIUM, "chromium")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    b = pw.chromium.launch(executable_path=CHROMIUM,
                           args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                 "--disable-background-networking", "--disable-component-update",
                                 "--disable-sync", "--no-first-run", "--disable-quic"])
    yield b
    b.close()
    pw.stop()


class PageProblems:
    """What a page did wrong: console errors, uncaught exceptions, requests to other hosts."""

    def __init__(self, page, origin: str):
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.expected_errors: list[str] = []   # substrings of console errors a test provokes
        # a failed load is recorded with its URL by the response listener below
        page.on("console", lambda m: m.type == "error" and not m.text.startswith("Failed to load resource")
                and self.errors.append(f"console: {m.text}"))
        page.on("response", lambda r: r.status >= 400 and self.errors.append(f"HTTP {r.status}: {r.url}"))
        page.on("pageerror", lambda e: self.errors.append(f"exception: {e}"))

        def request(req):
            u = urlsplit(req.url)
            if u.scheme in ("data", "blob", "about"):
                return
            if f"{u.scheme}://{u.netloc}" != origin:
                self.foreign.append(req.url)
        page.on("request", request)

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(x in e for x in self.expected_errors)]


@contextlib.contextmanager
def watched_page(browser, url: str, width: int = 1366, height: int = 900, username: str | None = USER):
    """A new page on ``url`` (logged in as ``username`` by DIGITS' cookie unless None) whose
    problems fail the test when the block ends: console errors, exceptions, HTTP errors (other
    than ``page.problems.expected_errors``), requests to other hosts."""
    context = browser.new_context(base_url=url, viewport={"width": width, "height": height})
    if username:
        context.add_cookies([{"name": "username", "value": username, "url": url}])
    p = context.new_page()
    p.set_default_timeout(30_000)
    p.problems = PageProblems(p, url)
    try:
        yield p
    finally:
        problems = p.problems
        context.close()
    assert not problems.foreign, f"requests to other hosts: {problems.foreign}"
    assert not problems.unexpected(), "\n".join(problems.unexpected())


@pytest.fixture
def page(browser, live):
    with watched_page(browser, live.url) as p:
        yield p


@pytest.fixture(scope="session")
def shot():
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> Path:
        # The whole page, by growing the viewport to the document's height and back.  Playwright's
        # own full_page screenshot leaves Debian's Chromium 156 deaf to the next click (mousedown
        # focuses, no click event follows), which broke the tests that went on after a screenshot.
        path = SCREENSHOTS / f"{name}.png"
        viewport = page.viewport_size
        height = page.evaluate("Math.max(document.documentElement.scrollHeight, document.body.scrollHeight)")
        page.set_viewport_size({"width": viewport["width"], "height": max(viewport["height"], min(int(height), 16000))})
        try:
            page.screenshot(path=str(path))
        finally:
            page.set_viewport_size(viewport)
        return path
    return take


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_screenshot_tmp():
    yield
    shutil.rmtree(SCREENSHOTS / ".tmp", ignore_errors=True)
