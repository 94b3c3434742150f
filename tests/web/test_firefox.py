"""The pages in Firefox (issue 13, item 9): Debian's ``firefox-esr`` driven over WebDriver BiDi
(:mod:`firefox_bidi`; there is no geckodriver in Debian and Playwright's Firefox is a patched
build).  Each page at a desktop (1366x900) and a laptop (1024x768) width: no console error or
JavaScript exception, no HTTP error, nothing requested from another host, its heading shown, its
charts drawn; a screenshot of each as ``firefox_<page>_<width>.png``.

Without Firefox the tests are skipped, unless ``BREWNET_REQUIRE_BROWSER=1`` makes that a failure.
"""
from __future__ import annotations

import time
from urllib.parse import urlsplit

import pytest

from .conftest import SCREENSHOTS, USER, free_port, require_browser
from .firefox_bidi import FIREFOX, BiDi, BiDiTimeout, Firefox

WIDTHS = {1366: 900, 1024: 768}

# name -> (path, with charts); {dataset} / {model} are the shared fixtures' jobs
PAGES = {
    "home": ("/", False),
    "new_dataset": ("/datasets/images/classification/new", False),
    "new_model": ("/models/images/classification/new", False),
    "dataset": ("/datasets/{dataset}", True),
    "model": ("/models/{model}", True),
    "compare": ("/compare?job={model}", True),
    "login": ("/login", False),
    "account": ("/account", False),
    "inference_forms": ("/models/{model}/classify", False),
}

# a plotly chart is drawn when its <div> got plotly's class and holds a laid-out main SVG
CHART_DRAWN = """[...document.querySelectorAll('.js-plotly-plot')].some(d => {
  const svg = d.querySelector('svg.main-svg'); const r = d.getBoundingClientRect();
  return svg !== null && r.width > 0 && r.height > 0; })"""

# the page's main heading: the first <h1> (in <main> when the page has one), with text
HEADING = """(() => { const h = document.querySelector('main h1') || document.querySelector('h1');
  return h ? h.textContent.trim() : null; })()"""


@pytest.fixture(scope="session")
def firefox():
    """One headless Firefox (fresh profile, BiDi session) for the whole run, always stopped."""
    require_browser(FIREFOX, "firefox-esr")
    ff = Firefox()
    try:
        ff.bidi.new_session()
        yield ff
    finally:
        ff.stop()


class FirefoxPage:
    """A new tab of the session's Firefox, logged in as ``alice``, recording what went wrong:
    console errors and JavaScript exceptions (``log.entryAdded``), HTTP errors and requests to
    other hosts (``network.*``), only for this tab."""

    def __init__(self, bidi: BiDi, base_url: str):
        self.bidi = bidi
        self.base_url = base_url
        self.origin = "{0.scheme}://{0.netloc}".format(urlsplit(base_url))
        self.context = bidi.new_tab()
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self._in_flight: set[str] = set()
        self._changed = time.monotonic()
        self._unhook = [
            bidi.on("log.entryAdded", self._log),
            bidi.on("network.beforeRequestSent", self._request),
            bidi.on("network.responseCompleted", self._response),
            bidi.on("network.fetchError", self._fetch_error),
        ]
        self._subscription = bidi.subscribe(
            ["log.entryAdded", "network.beforeRequestSent", "network.responseCompleted",
             "network.fetchError"], contexts=[self.context])

    def _mine(self, params: dict) -> bool:
        return params.get("context") == self.context or params.get("source", {}).get("context") == self.context

    def _log(self, p: dict) -> None:
        if self._mine(p) and (p.get("level") == "error" or p.get("type") == "javascript"):
            where = (p.get("stackTrace") or {}).get("callFrames") or [{}]
            self.errors.append(f"{p.get('type')} {p.get('level')}: {p.get('text')} "
                               f"(at {where[0].get('url', '?')}:{where[0].get('lineNumber', '?')})")

    def _request(self, p: dict) -> None:
        if not self._mine(p):
            return
        url = p["request"]["url"]
        u = urlsplit(url)
        if u.scheme not in ("data", "blob", "about") and f"{u.scheme}://{u.netloc}" != self.origin:
            self.foreign.append(url)
        self._in_flight.add(p["request"]["request"])
        self._changed = time.monotonic()

    def _response(self, p: dict) -> None:
        if not self._mine(p):
            return
        status = p["response"]["status"]
        if status >= 400:
            self.errors.append(f"HTTP {status}: {p['request']['url']}")
        self._in_flight.discard(p["request"]["request"])
        self._changed = time.monotonic()

    def _fetch_error(self, p: dict) -> None:
        if not self._mine(p):
            return
        # a request the page itself cancels (an EventSource closed on "done", a navigation away)
        # is reported as a fetch error too; only a real network failure counts
        if "NS_BINDING_ABORTED" not in p.get("errorText", ""):
            self.errors.append(f"request failed: {p['request']['url']}: {p.get('errorText')}")
        self._in_flight.discard(p["request"]["request"])
        self._changed = time.monotonic()

    def goto(self, path: str, width: int, height: int) -> None:
        self.bidi.set_viewport(self.context, width, height)
        self.bidi.navigate(self.context, self.base_url + path, wait="complete", timeout=60)

    def settle(self, quiet_s: float = 1.0, limit_s: float = 20.0) -> None:
        """Wait until the set of open requests stopped changing for ``quiet_s`` (a live page
        keeps its event streams open, so "none open" would never come), at most ``limit_s``."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline and time.monotonic() - self._changed < quiet_s:
            time.sleep(0.1)
        # and one animation frame, so that what the last answers changed is laid out and drawn
        self.bidi.evaluate(self.context, "new Promise(r => requestAnimationFrame(() => setTimeout(r, 0)))")

    def evaluate(self, expression: str):
        return self.bidi.evaluate(self.context, expression)

    def wait_for(self, expression: str, timeout: float = 20.0):
        return self.bidi.wait_for(self.context, expression, timeout=timeout)

    def screenshot(self, name: str):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.bidi.screenshot(self.context, path, full_page=True)
        return path

    def close(self) -> None:
        for unhook in self._unhook:
            unhook()
        if self._subscription:
            self.bidi.command("session.unsubscribe", {"subscriptions": [self._subscription]})
        self.bidi.close_context(self.context)


@pytest.fixture(scope="session")
def firefox_logged_in(firefox, live):
    """The session's Firefox with DIGITS' ``username`` cookie for the live server."""
    firefox.bidi.set_cookie("username", USER, live.url)
    return firefox


@pytest.fixture
def ff_page(firefox_logged_in, live):
    p = FirefoxPage(firefox_logged_in.bidi, live.url)
    yield p
    p.close()
    listener_errors = firefox_logged_in.bidi.listener_errors
    assert not listener_errors, listener_errors
    assert not p.foreign, f"requests to other hosts: {p.foreign}"
    assert not p.errors, "\n".join(p.errors)


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("name", list(PAGES))
def test_page_in_firefox(ff_page, dataset_id, model_id, name, width):
    path, charts = PAGES[name]
    ff_page.goto(path.format(dataset=dataset_id, model=model_id), width, WIDTHS[width])
    assert ff_page.evaluate("location.origin") == ff_page.origin   # not sent elsewhere
    if charts:
        try:
            ff_page.wait_for(CHART_DRAWN, timeout=20)
        except BiDiTimeout:
            ff_page.screenshot(f"firefox_{name}_{width}")
            count = ff_page.evaluate("document.querySelectorAll('.js-plotly-plot').length")
            pytest.fail(f"{name}: no plotly chart drawn within 20 s ({count} .js-plotly-plot); "
                        f"page errors: {ff_page.errors}")
    ff_page.settle()
    heading = ff_page.evaluate(HEADING)
    assert heading, f"{name}: no main heading (h1)"
    # the page fits its width: nothing wider than the viewport makes the whole page scroll sideways
    overflow = ff_page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    ff_page.screenshot(f"firefox_{name}_{width}")
    assert overflow <= 0, f"{name} at {width}px scrolls sideways by {overflow}px"


def test_firefox_harness_sees_problems(firefox_logged_in, live):
    """The checks above can fail: a console error, an uncaught exception, an HTTP error and a
    request to another host (``localhost`` is not the server's ``127.0.0.1``; a free port refuses
    at once, nothing leaves the machine) are each recorded, for this tab only."""
    # not port 1 or another of Firefox's banned ports: those are refused before any request
    foreign = f"http://localhost:{free_port()}/brewnet-test.png"
    p = FirefoxPage(firefox_logged_in.bidi, live.url)
    other = FirefoxPage(firefox_logged_in.bidi, live.url)   # a second tab, left blank
    try:
        p.goto("/login", 1024, 768)
        p.evaluate("""console.error('brewnet-test console error');
            setTimeout(() => { throw new Error('brewnet-test uncaught'); }, 0);
            fetch('/api/v1/jobs/no-such-job').catch(() => {});
            new Image().src = '%s';""" % foreign)
        p.bidi.wait_for(p.context, "true")   # a round trip: the page's events were sent before it
        deadline = time.monotonic() + 20
        while (len(p.errors) < 3 or not p.foreign) and time.monotonic() < deadline:
            time.sleep(0.1)
        text = "\n".join(p.errors)
        assert "console error: brewnet-test console error" in text, text
        assert "javascript error: Error: brewnet-test uncaught" in text, text
        assert "HTTP 404: " + live.url + "/api/v1/jobs/no-such-job" in text, text
        assert p.foreign == [foreign], p.foreign
        assert p.evaluate(HEADING) == "Log in"
        assert other.errors == [] and other.foreign == []   # the first tab's events are not its
    finally:
        p.close()
        other.close()
