"""Accounts in a real browser, on a server whose users have passwords: a page asks for a login
and comes back after it, a wrong password is refused on the page, the account page makes and
revokes an API token (shown once; it works, then it does not), an admin adds a user, and the
users page is refused to a non-admin; logout ends the session."""
from __future__ import annotations

import httpx
import pytest

from .conftest import Live, watched_page

ADMIN, ADMIN_PW = "root", "root-password-1"


@pytest.fixture(scope="module")
def locked(tmp_path_factory):
    from brewnet.server import auth

    server = Live(tmp_path_factory.mktemp("locked"))
    with server.app.state.db.session() as s:
        auth.create_user(s, ADMIN, ADMIN_PW, is_admin=True)
    yield server
    server.close()


@pytest.fixture
def anon(browser, locked):
    with watched_page(browser, locked.url, 1024, 800, username=None) as p:
        yield p


def login(page, name, password):
    page.fill("#f-username", name)
    page.fill("#f-password", password)
    page.click("form.login button[type=submit]")


def test_login_tokens_users_logout(anon, locked, shot):
    page = anon
    page.goto("/account")
    assert "/login?next=%2Faccount" in page.url
    shot(page, "login")
    page.problems.expected_errors.append("HTTP 401")
    login(page, ADMIN, "wrong")
    assert page.locator("form.login .flash").inner_text() == "Wrong username or password"
    login(page, ADMIN, ADMIN_PW)
    page.wait_for_url("**/account")
    assert page.locator("#me-name").inner_text() == ADMIN
    # an API token, shown once, works over HTTP, then is revoked
    page.fill("#f-token-name", "ci-script")
    page.fill("#f-token-ttl", "7")
    page.click("#token-form button[type=submit]")
    page.locator("#new-token").wait_for()
    token = page.locator("#new-token-value").inner_text()
    assert token.startswith("bnt_")
    page.locator("#tokens tbody tr").first.wait_for()
    assert page.locator("#tokens tbody tr").count() == 1
    r = httpx.get(f"{locked.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["user"]["name"] == ADMIN
    shot(page, "account")
    page.once("dialog", lambda d: d.accept())
    page.click("#tokens button.revoke")
    page.locator("#no-tokens").wait_for()
    assert httpx.get(f"{locked.url}/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    # users: an empty password is refused next to its field, then a user is added
    page.goto("/admin/users")
    page.locator("#users tbody tr").first.wait_for()
    page.fill("#f-username", "bob")
    page.problems.expected_errors.append("/api/v1/users")
    page.click("#user-form button[type=submit]")   # the browser's own check: password required
    page.fill("#f-new-password", "bob-password-1")
    page.click("#user-form button[type=submit]")
    page.locator('#users tr[data-name="bob"]').wait_for()
    page.fill("#f-username", "bob")
    page.fill("#f-new-password", "x")
    page.click("#user-form button[type=submit]")
    page.wait_for_selector('.field-error[data-for="username"]:not(:empty)')
    assert "already exists" in page.locator('.field-error[data-for="username"]').inner_text()
    shot(page, "admin_users")
    # logout, then bob is no admin
    page.click("header form button")
    page.goto("/admin/users")
    assert "/login" in page.url
    login(page, "bob", "bob-password-1")
    page.wait_for_load_state()
    assert page.url.endswith("/admin/users")
    assert "Only an admin" in page.content()
    page.problems.expected_errors.append("HTTP 403")
