"""Security of brewnet serve through the real application and FastAPI's TestClient: the cross-site
check (Origin, Referer), bearer tokens (missing, wrong, expired, revoked), login sessions and CSRF,
DIGITS' local mode against a server with password users, job ownership, cookie flags, the refusal
of an unauthenticated public bind, and 500 answers without a trace."""
from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from brewnet.errors import BrewnetError
from brewnet.server import auth, security
from brewnet.server.app import create_app
from brewnet.server.config import ServerConfig
from brewnet.server.jobs.jobdir import write_job_json
from brewnet.server.store.db import Database, new_job_id
from brewnet.server.store.models import ApiToken, Job, User

JSON = {"Accept": "application/json"}


@pytest.fixture
def app(tmp_path):
    return create_app(ServerConfig(jobs_dir=tmp_path / "jobs", data_roots=[tmp_path]))


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


def add_user(app, name: str, password: str | None = None, admin: bool = False,
             ttl_days: float | None = None) -> str:
    """A user (and an API token of theirs, returned)."""
    with app.state.db.session() as s:
        user = auth.create_user(s, name, password, is_admin=admin)
        s.flush()
        return auth.create_token(s, user, name="test", ttl_days=ttl_days)


def add_job(app, owner: str | None, status: str = "Done", kind: str = "dataset") -> str:
    """A finished job row (and its directory) that needs no task."""
    config = app.state.config
    job_id = new_job_id()
    d = config.jobs_dir / job_id
    d.mkdir(parents=True)
    now = time.time()
    job = Job(id=job_id, kind=kind, name=f"job {job_id}", group_name="", notes="", owner=owner, status=status,
              status_history=[["Initialized", now], [status, now]], created=now, progress=1.0,
              resources={}, assigned={}, spec={}, summary={})
    with app.state.db.session() as s:
        s.add(job)
        s.flush()
        write_job_json(d, job)
    return job_id


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# ----------------------------------------------------------------------- cross-site requests

@pytest.mark.parametrize("header,value", [
    ("Origin", "http://evil.example"),
    ("Origin", "http://testserver:8080"),          # another port
    ("Origin", "https://testserver"),              # another scheme
    ("Origin", "null"),                            # sandboxed frames, file: pages
    ("Origin", "not a url"),
    ("Referer", "http://evil.example/page.html"),
])
def test_cross_site_requests_are_refused(client, header, value):
    for method, path in (("GET", "/api/v1/jobs"), ("POST", "/login"), ("GET", "/index.json")):
        r = client.request(method, path, headers={header: value},
                           data={"username": "bob"} if method == "POST" else None)
        assert r.status_code == 403, (method, path, r.text)
        err = r.json()["error"]
        assert "Cross-site request refused" in err["description"] and err["type"] == "Forbidden"
    # nothing was done: the local login did not create the user
    with client.app.state.db.session() as s:
        assert auth.get_user(s, "bob") is None


def test_same_origin_and_headerless_requests_pass(client):
    assert client.get("/api/v1/jobs", headers={"Origin": "http://testserver"}).status_code == 200
    assert client.get("/api/v1/jobs", headers={"Origin": "http://TESTSERVER:80"}).status_code == 200
    assert client.get("/api/v1/jobs", headers={"Referer": "http://testserver/models/x"}).status_code == 200
    assert client.get("/api/v1/jobs").status_code == 200
    # Origin decides when both are sent
    r = client.get("/api/v1/jobs", headers={"Origin": "http://testserver", "Referer": "http://evil.example/"})
    assert r.status_code == 200
    r = client.get("/api/v1/jobs", headers={"Origin": "http://evil.example", "Referer": "http://testserver/"})
    assert r.status_code == 403


def test_origin_check_with_a_host_port(app):
    with TestClient(app, base_url="http://127.0.0.1:5000") as c:
        assert c.get("/api/v1/jobs", headers={"Origin": "http://127.0.0.1:5000"}).status_code == 200
        assert c.get("/api/v1/jobs", headers={"Origin": "http://localhost:5000"}).status_code == 403
        assert c.get("/api/v1/jobs", headers={"Origin": "http://127.0.0.1:5001"}).status_code == 403


# ----------------------------------------------------------------------- tokens

def test_bearer_tokens(client):
    app = client.app
    token = add_user(app, "alice", "correct horse")
    r = client.get("/api/v1/me", headers=bearer(token))
    assert r.status_code == 200 and r.json()["user"]["name"] == "alice" and r.json()["auth"] == "token"
    # users exist: no token, no access
    r = client.get("/api/v1/jobs")
    assert r.status_code == 401 and "Authentication required" in r.json()["error"]["description"]
    assert r.headers.get("www-authenticate") == "Bearer"
    assert client.get("/api/v1/jobs", headers=bearer(token)).status_code == 200
    # a wrong token, or another scheme
    assert client.get("/api/v1/me", headers=bearer("bnt_" + "x" * 43)).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Basic YWxpY2U6eA=="}).status_code == 401
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer"}).status_code == 401


def test_expired_token_is_refused(client):
    app = client.app
    token = add_user(app, "alice", "pw-alice", ttl_days=1)
    assert client.get("/api/v1/me", headers=bearer(token)).status_code == 200
    with app.state.db.session() as s:
        for row in s.query(ApiToken).all():
            row.expires = time.time() - 1
    r = client.get("/api/v1/me", headers=bearer(token))
    assert r.status_code == 401 and "expired" in r.json()["error"]["description"]


def test_revoked_token_is_refused(client):
    app = client.app
    token = add_user(app, "alice", "pw-alice")
    r = client.post("/api/v1/tokens", json={"name": "second"}, headers=bearer(token))
    assert r.status_code == 201
    second = r.json()
    assert second["token"].startswith("bnt_") and second["name"] == "second"
    listed = client.get("/api/v1/tokens", headers=bearer(token)).json()
    assert [t["name"] for t in listed] == ["test", "second"] and all("token" not in t for t in listed)
    assert client.delete(f"/api/v1/tokens/{second['id']}", headers=bearer(token)).status_code == 200
    assert client.get("/api/v1/me", headers=bearer(second["token"])).status_code == 401
    assert client.delete(f"/api/v1/tokens/{second['id']}", headers=bearer(token)).status_code == 404


def test_invalid_token_wins_over_a_valid_session(client):
    app = client.app
    add_user(app, "alice", "pw-alice")
    assert client.post("/api/v1/login", json={"username": "alice", "password": "pw-alice"}).status_code == 200
    assert client.get("/api/v1/me").status_code == 200            # the session cookie
    r = client.get("/api/v1/me", headers=bearer("bnt_revoked-or-wrong"))
    assert r.status_code == 401


# ----------------------------------------------------------------------- sessions and CSRF

def test_session_login_and_csrf(client):
    app = client.app
    add_user(app, "alice", "pw-alice")
    r = client.post("/api/v1/login", json={"username": "alice", "password": "nope"})
    assert r.status_code == 401 and "Wrong username or password" in r.json()["error"]["description"]
    r = client.post("/api/v1/login", json={"username": "alice", "password": "pw-alice"})
    assert r.status_code == 200
    csrf = r.json()["csrf_token"]
    assert csrf and r.json()["user"] == {**r.json()["user"], "name": "alice", "has_password": True}
    cookie = r.headers["set-cookie"]
    assert "brewnet_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie                                  # plain http
    me = client.get("/api/v1/me").json()
    assert me["auth"] == "session" and me["csrf_token"] == csrf and me["local_mode"] is False
    # unsafe requests with the session cookie need the CSRF token
    r = client.post("/api/v1/tokens", json={"name": "t"})
    assert r.status_code == 403 and "CSRF" in r.json()["error"]["description"]
    r = client.post("/api/v1/tokens", json={"name": "t"}, headers={"X-CSRF-Token": "wrong"})
    assert r.status_code == 403
    assert client.post("/api/v1/tokens", json={"name": "t"}, headers={"X-CSRF-Token": csrf}).status_code == 201
    # a DIGITS form route takes the token as the form field csrf_token
    job = add_job(app, owner="alice", status="Done")
    r = client.put(f"/jobs/{job}", data={"job_name": "renamed"})
    assert r.status_code == 403
    r = client.put(f"/jobs/{job}", data={"job_name": "renamed", "csrf_token": csrf})
    assert r.status_code == 200, r.text
    # logout ends the session at once
    assert client.post("/api/v1/logout").status_code == 200
    assert client.get("/api/v1/me").status_code == 401


def test_bearer_requests_need_no_csrf(client):
    token = add_user(client.app, "alice", "pw-alice")
    assert client.post("/api/v1/tokens", json={"name": "t"}, headers=bearer(token)).status_code == 201


def test_session_cookie_is_secure_over_https(app):
    with TestClient(app, base_url="https://testserver") as c:
        add_user(app, "alice", "pw-alice")
        r = c.post("/api/v1/login", json={"username": "alice", "password": "pw-alice"})
        assert r.status_code == 200 and "Secure" in r.headers["set-cookie"]


# ----------------------------------------------------------------------- DIGITS' login

def test_local_mode_digits_login(client):
    r = client.get("/login")
    assert r.status_code == 200 and "<form" in r.text and 'name="username"' in r.text
    r = client.post("/login", data={"username": "bob"}, follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/"
    assert "username=bob" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
    me = client.get("/api/v1/me").json()           # the cookie is now sent
    assert me["user"]["name"] == "bob" and me["auth"] == "local" and me["local_mode"] is True
    # the name in the query or form works without the cookie, as in DIGITS
    client.cookies.clear()
    assert client.get("/api/v1/me", params={"username": "carol"}).json()["user"]["name"] == "carol"
    assert client.get("/api/v1/me").status_code == 401
    # a bad name is a 400 naming the field
    r = client.post("/login", data={"username": "Bad Name"}, headers=JSON, follow_redirects=False)
    assert r.status_code == 400 and r.json()["error"]["field"] == "username"
    r = client.post("/login", data={}, headers=JSON, follow_redirects=False)
    assert r.status_code == 400
    # logout forgets the cookie
    client.post("/login", data={"username": "bob"}, follow_redirects=False)
    r = client.get("/logout", follow_redirects=False)
    assert r.status_code == 302 and 'username=""' in r.headers["set-cookie"]


def test_users_exist_mode_digits_login(client):
    app = client.app
    client.post("/login", data={"username": "bob"}, follow_redirects=False)   # local mode, bob's cookie
    assert client.get("/api/v1/me").status_code == 200
    add_user(app, "alice", "pw-alice")
    # once a user has a password the username cookie (or field) authenticates nobody
    assert client.get("/api/v1/me").status_code == 401
    assert client.get("/api/v1/me", params={"username": "bob"}).status_code == 401
    r = client.post("/login", data={"username": "bob"}, headers=JSON, follow_redirects=False)
    assert r.status_code == 401
    r = client.post("/login", data={"username": "alice", "password": "wrong"}, follow_redirects=False)
    assert r.status_code == 401 and "Wrong username or password" in r.text and "<form" in r.text
    r = client.post("/login", data={"username": "alice", "password": "wrong"}, headers=JSON)
    assert r.status_code == 401 and r.json()["error"]["type"] == "Unauthorized"
    r = client.post("/login?next=/models/123", data={"username": "alice", "password": "pw-alice"},
                    follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/models/123"
    assert "brewnet_session=" in r.headers["set-cookie"]
    assert client.get("/api/v1/me").json()["user"]["name"] == "alice"


def test_digits_reads_need_a_login_once_users_have_passwords(client):
    app = client.app
    job = add_job(app, owner=None)
    # local mode: DIGITS' reads are open
    assert client.get("/index.json").status_code == 200
    assert client.get(f"/datasets/{job}.json").status_code == 200
    add_user(app, "alice", "pw-alice")
    for path in ("/index.json", "/completed_jobs.json", f"/datasets/{job}.json", f"/jobs/{job}/table_data.json"):
        r = client.get(path, headers=JSON)
        assert r.status_code == 401 and r.json()["error"]["type"] == "Unauthorized", path
    # a browser asking for a page is sent to the login form, and comes back after it
    r = client.get(f"/datasets/{job}?x=1", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=%2Fdatasets%2F{job}%3Fx%3D1"
    r = client.post(r.headers["location"], data={"username": "alice", "password": "pw-alice"},
                    follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == f"/datasets/{job}?x=1"
    assert client.get(f"/datasets/{job}.json").json()["id"] == job
    assert client.get("/index.json").status_code == 200


@pytest.mark.parametrize("target", ["//evil.example/x", "https://evil.example/", "/\\evil.example",
                                    "javascript:alert(1)", "relative/path", ""])
def test_login_next_is_a_local_path_only(client, target):
    r = client.post("/login", data={"username": "bob", "next": target}, follow_redirects=False)
    assert r.status_code == 302 and r.headers["location"] == "/"


def test_local_mode_needs_loopback(tmp_path):
    """A non-loopback server never has local mode (its start is refused anyway without users)."""
    config = ServerConfig(jobs_dir=tmp_path, host="0.0.0.0")
    db = Database(f"sqlite:///{tmp_path / 'x.sqlite3'}")
    db.migrate()
    try:
        assert security.local_mode(db, config) is False
        assert security.local_mode(db, ServerConfig(jobs_dir=tmp_path)) is True
    finally:
        db.dispose()


# ----------------------------------------------------------------------- ownership

def test_another_users_job_is_forbidden_admin_may(client):
    app = client.app
    alice = add_user(app, "alice", "pw-alice")
    bob = add_user(app, "bob", "pw-bob")
    admin = add_user(app, "root", "pw-root", admin=True)
    job = add_job(app, owner="alice", status="Done")
    for method, path, body in (("PATCH", f"/api/v1/jobs/{job}", {"name": "x"}),
                               ("POST", f"/api/v1/jobs/{job}/abort", None),
                               ("DELETE", f"/api/v1/jobs/{job}", None)):
        r = client.request(method, path, json=body, headers=bearer(bob))
        assert r.status_code == 403 and "belongs to alice" in r.json()["error"]["description"], (method, r.text)
    # DIGITS' routes check the same
    assert client.put(f"/jobs/{job}", data={"job_name": "x"}, headers=bearer(bob)).status_code == 403
    assert client.delete(f"/jobs/{job}", headers=bearer(bob)).status_code == 403
    # the owner and an admin may
    r = client.patch(f"/api/v1/jobs/{job}", json={"name": "by alice"}, headers=bearer(alice))
    assert r.status_code == 200 and r.json()["name"] == "by alice"
    r = client.patch(f"/api/v1/jobs/{job}", json={"notes": "by root"}, headers=bearer(admin))
    assert r.status_code == 200 and r.json()["notes"] == "by root"
    assert client.delete(f"/api/v1/jobs/{job}", headers=bearer(admin)).status_code == 200
    assert client.get(f"/api/v1/jobs/{job}", headers=bearer(alice)).status_code == 404


def test_check_owner_rules():
    alice = User(name="alice", is_admin=False, created=0.0)
    root = User(name="root", is_admin=True, created=0.0)
    security.check_owner(alice, {"id": "j", "owner": "alice"})
    security.check_owner(root, {"id": "j", "owner": "alice"})
    security.check_owner(alice, {"id": "j", "owner": None})          # ownerless: anyone logged in
    with pytest.raises(Exception) as e:
        security.check_owner(User(name="bob", is_admin=False, created=0.0), {"id": "j", "owner": "alice"})
    assert e.value.status == 403
    with pytest.raises(Exception) as e:
        security.check_owner(None, {"id": "j", "owner": None})
    assert e.value.status == 401


# ----------------------------------------------------------------------- users (admin)

def test_user_administration(client):
    app = client.app
    admin = add_user(app, "root", "pw-root", admin=True)
    bob = add_user(app, "bob", "pw-bob")
    assert client.get("/api/v1/users", headers=bearer(bob)).status_code == 403
    assert client.post("/api/v1/users", json={"username": "eve", "password": "x"},
                       headers=bearer(bob)).status_code == 403
    r = client.post("/api/v1/users", json={"username": "carol", "password": "pw-carol"}, headers=bearer(admin))
    assert r.status_code == 201 and r.json()["name"] == "carol" and r.json()["is_admin"] is False
    assert client.post("/api/v1/users", json={"username": "carol", "password": "y"},
                       headers=bearer(admin)).status_code == 409
    assert client.post("/api/v1/users", json={"username": "Bad", "password": "y"},
                       headers=bearer(admin)).status_code == 400
    names = [u["name"] for u in client.get("/api/v1/users", headers=bearer(admin)).json()]
    assert names == ["bob", "carol", "root"]
    assert all("password_hash" not in u for u in client.get("/api/v1/users", headers=bearer(admin)).json())
    # PATCH: admin flag and password by an admin; one's own password by anyone
    r = client.patch("/api/v1/users/carol", json={"is_admin": True}, headers=bearer(admin))
    assert r.status_code == 200 and r.json()["is_admin"] is True
    assert client.patch("/api/v1/users/carol", json={"password": "x"}, headers=bearer(bob)).status_code == 403
    assert client.patch("/api/v1/users/bob", json={"is_admin": True}, headers=bearer(bob)).status_code == 403
    assert client.patch("/api/v1/users/bob", json={"password": "new-bob"}, headers=bearer(bob)).status_code == 200
    assert client.post("/api/v1/login", json={"username": "bob", "password": "pw-bob"}).status_code == 401
    assert client.post("/api/v1/login", json={"username": "bob", "password": "new-bob"}).status_code == 200
    client.cookies.clear()
    assert client.patch("/api/v1/users/root", json={"is_admin": False}, headers=bearer(admin)).status_code == 400
    assert client.patch("/api/v1/users/nobody", json={"password": "x"}, headers=bearer(admin)).status_code == 404
    # DELETE: not oneself; the user's tokens stop working
    assert client.delete("/api/v1/users/root", headers=bearer(admin)).status_code == 400
    assert client.delete("/api/v1/users/bob", headers=bearer(admin)).status_code == 200
    assert client.get("/api/v1/me", headers=bearer(bob)).status_code == 401
    assert client.delete("/api/v1/users/bob", headers=bearer(admin)).status_code == 404


# ----------------------------------------------------------------------- binding

def test_refuse_insecure_bind(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'b.sqlite3'}")
    db.migrate()
    try:
        security.refuse_insecure_bind(ServerConfig(jobs_dir=tmp_path, host="127.0.0.1"), db)
        security.refuse_insecure_bind(ServerConfig(jobs_dir=tmp_path, host="::1"), db)
        with pytest.raises(BrewnetError, match=r"refuses to listen on 0\.0\.0\.0 without authentication: "
                                               r"add a user with `brewnet serve --add-user NAME`"):
            security.refuse_insecure_bind(ServerConfig(jobs_dir=tmp_path, host="0.0.0.0"), db)
        with db.session() as s:          # a passwordless (DIGITS) user is no authentication
            auth.create_user(s, "bob", None)
        with pytest.raises(BrewnetError):
            security.refuse_insecure_bind(ServerConfig(jobs_dir=tmp_path, host="192.168.1.7"), db)
        with db.session() as s:
            auth.create_user(s, "alice", "pw-alice")
        security.refuse_insecure_bind(ServerConfig(jobs_dir=tmp_path, host="0.0.0.0"), db)
    finally:
        db.dispose()


def test_app_refuses_to_start_on_a_public_host_without_users(tmp_path):
    app = create_app(ServerConfig(jobs_dir=tmp_path / "jobs", host="0.0.0.0"))
    with pytest.raises(BrewnetError, match="without authentication"):
        with TestClient(app):
            pass


# ----------------------------------------------------------------------- errors

def test_500_bodies_carry_no_trace(app, monkeypatch):
    def broken(*a, **k):
        raise RuntimeError("secret internal detail /etc/passwd")
    with TestClient(app, raise_server_exceptions=False) as c:
        monkeypatch.setattr(app.state.server, "list_jobs", broken)
        r = c.get("/api/v1/jobs")
        assert r.status_code == 500
        body = r.text
        assert "Traceback" not in body and "secret internal detail" not in body and 'File "' not in body
        assert r.json()["error"]["type"] == "InternalServerError"


def test_refused_uploads_leave_nothing(client):
    """A multipart request refused by authentication or CSRF after its form was read (to find
    DIGITS' username or the csrf_token field) leaves no upload behind."""
    from brewnet.server.formdata import UPLOAD_PREFIX

    app = client.app
    jobs = app.state.config.jobs_dir
    model = add_job(app, owner=None, kind="model")
    files = {"image_list": ("list.txt", b"/x.png\n" * 1000, "text/plain")}
    r = client.post(f"/api/v1/models/{model}/classify-many", files=files, data={"note": "no username"})
    assert r.status_code == 401
    add_user(app, "alice", "pw-alice")
    assert client.post("/api/v1/login", json={"username": "alice", "password": "pw-alice"}).status_code == 200
    r = client.post(f"/api/v1/models/{model}/classify-many", files=files, data={"csrf_token": "wrong"})
    assert r.status_code == 403 and "CSRF" in r.text
    assert not [p.name for p in jobs.iterdir() if p.name.startswith(UPLOAD_PREFIX)]


def test_no_page_loads_anything_from_another_host(client):
    """FastAPI's /docs pages would load Swagger UI from a CDN: they are off; our pages name no
    other host."""
    import re

    assert client.get("/api/v1/docs").status_code == 404
    assert client.get("/api/v1/openapi.json").json()["info"]["title"] == "brewnet"
    for path in ("/", "/login", "/datasets/images/classification/new", "/models/images/classification/new"):
        r = client.get(path, params={"username": "bob"}, headers={"Accept": "text/html"})
        assert r.status_code == 200 and "<html" in r.text.lower(), path
        assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:)?//""", r.text, re.I), path
