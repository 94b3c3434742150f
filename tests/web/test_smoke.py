"""The layout every page shares, in a real browser: navigation, our own static files, plotly.js
from the installed package, no console error, nothing from another host."""
from __future__ import annotations


def test_home_layout_and_static_files(page, live, shot):
    page.goto("/")
    assert page.title().endswith("brewnet")
    nav = page.locator("header nav a")
    assert nav.count() >= 4
    assert page.evaluate("typeof window.brewnet.api") == "function"
    r = page.request.get("/static/vendor/plotly.min.js")
    assert r.ok and b"plotly" in r.body()[:2000].lower()
    shot(page, "home")
