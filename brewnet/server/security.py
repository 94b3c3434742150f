"""Who is asking, and may they: the authentication dependencies every route uses, the
cross-site (Origin/Referer) check, CSRF tokens, and the refusal of an unauthenticated public bind.

Authentication, in this order (the first that is *present* decides):

1. ``Authorization: Bearer bnt_...`` -- an API token.  A token that is present but unknown,
   expired or revoked is a 401 even when a session cookie is also sent: a script must learn that
   its token stopped working instead of silently acting as whoever's browser cookie it carries.
2. The ``brewnet_session`` cookie of a password login (``POST /login``, ``POST /api/v1/login``).
3. DIGITS' local mode -- only while the server listens on loopback *and* no user has a password:
   DIGITS' ``username`` cookie, query parameter or form field names the user (created passwordless
   on first use, as DIGITS did).  Once any user has a password, a bare name authenticates nobody.

``request.state.auth_method`` records which one it was ("token" | "session" | "local"), because
CSRF only concerns the session cookie: a browser sends cookies to cross-site forms by itself,
but never an Authorization header, and local mode has no secret to protect.
"""
from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import BrewnetError
from . import auth
from .config import is_loopback
from .errors import ApiError
from .formdata import read_form
from .store.models import User
from .threads import in_thread

SESSION_COOKIE = "brewnet_session"
USERNAME_COOKIE = "username"          # DIGITS' own cookie name
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
_UNSET = object()


# ---------------------------------------------------------------------------- plumbing

def request_config(request: Request):
    """The running application's ServerConfig."""
    state = request.app.state
    cfg = getattr(state, "config", None)
    return cfg if cfg is not None else state.server.config


def request_db(request: Request):
    """The running application's Database (the job store's)."""
    state = request.app.state
    db = getattr(state, "db", None)
    return db if db is not None else state.server.db


def _is_form(request: Request) -> bool:
    return request.headers.get("content-type", "").lower().startswith(_FORM_TYPES)


async def _form_field(request: Request, name: str) -> str | None:
    """A text field of the request's form, parsed once through :func:`formdata.read_form` (which
    caches it on the request, so the route later reads the same form and cleans its uploads)."""
    if request.method not in UNSAFE_METHODS or not _is_form(request):
        return None
    form = await read_form(request, request_config(request))
    value = form.get(name)
    return value if isinstance(value, str) else None


# ---------------------------------------------------------------------------- authentication

def _bearer(request: Request) -> str | None:
    """The token of an ``Authorization`` header; ApiError 401 for any other scheme (a header
    that is sent must work or fail loudly)."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise ApiError(401, "Authorization header must be 'Bearer <token>'")
    return value.strip()


def _token_user(db, token: str) -> User | None:
    with db.session() as s:
        return auth.user_for_token(s, token)


def _session_user(db, cookie: str):
    with db.session() as s:
        found = auth.user_for_session(s, cookie)
        if found is None:
            return None
        user, login = found
        return user, login.csrf_token


def local_mode(db, config) -> bool:
    """True while DIGITS' username-only login is allowed: loopback bind and no user with a password."""
    if not config.local_mode_possible:
        return False
    with db.session() as s:
        return auth.users_with_passwords(s) == 0


def _local_user(db, config, name: str) -> User | None:
    with db.session() as s:
        # checked in the same transaction as the creation: a password user added meanwhile wins
        if not config.local_mode_possible or auth.users_with_passwords(s) != 0:
            return None
        return auth.ensure_local_user(s, name)


async def current_user(request: Request) -> User | None:
    """The user making ``request`` (see the module docstring for the order), or None.

    Raises ApiError 401 for an Authorization header that does not name a valid token, and 400
    for a malformed DIGITS ``username`` given in the query or form in local mode.  The answer is
    cached on the request.
    """
    cached = getattr(request.state, "brewnet_user", _UNSET)
    if cached is not _UNSET:
        return cached
    db = request_db(request)
    user: User | None = None
    method: str | None = None
    csrf: str | None = None

    token = _bearer(request)
    if token is not None:
        user = await in_thread(_token_user, db, token)
        if user is None:
            raise ApiError(401, "Invalid, expired or revoked API token")
        method = "token"
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        found = await in_thread(_session_user, db, cookie) if cookie else None
        if found is not None:
            user, csrf = found
            method = "session"
        else:
            config = request_config(request)
            if config.local_mode_possible:
                # the cookie first (DIGITS' login sets it); a malformed cookie is ignored rather
                # than breaking every page, a malformed explicit name is the caller's error
                name = request.cookies.get(USERNAME_COOKIE)
                explicit = False
                if not name:
                    name = request.query_params.get("username") or await _form_field(request, "username")
                    explicit = True
                if name:
                    try:
                        user = await in_thread(_local_user, db, config, name)
                    except ApiError:
                        if explicit:
                            raise
                        user = None
                    method = "local" if user is not None else None
    request.state.brewnet_user = user
    request.state.auth_method = method
    request.state.csrf_token = csrf
    return user


async def require_user(request: Request) -> User:
    """:func:`current_user`, or ApiError 401 when nobody is logged in."""
    user = await current_user(request)
    if user is None:
        config = request_config(request)
        hint = ("log in (POST /login with a username)" if await in_thread(local_mode, request_db(request), config)
                else "log in (POST /login or /api/v1/login) or send 'Authorization: Bearer <token>'")
        raise ApiError(401, f"Authentication required: {hint}")
    return user


async def require_admin(request: Request) -> User:
    """:func:`require_user` who is an admin, else ApiError 403."""
    user = await require_user(request)
    if not user.is_admin:
        raise ApiError(403, "Only an admin may do this")
    return user


async def read_access(request: Request) -> User | None:
    """Dependency of routes that only read: in local mode anyone (DIGITS' reads need no login);
    once users have passwords, a logged-in user (ApiError 401 otherwise)."""
    try:
        user = await current_user(request)
        if user is not None:
            return user
        if await in_thread(local_mode, request_db(request), request_config(request)):
            return None
        return await require_user(request)
    except BaseException:
        _discard_form(request)
        raise


def _owner_of(job: Any) -> str | None:
    if isinstance(job, dict):
        return job.get("owner")
    return getattr(job, "owner", None)


def check_owner(user: User | None, job: Any) -> None:
    """Allow the job's owner and admins (a job without an owner: anyone logged in); else ApiError
    403 (401 when nobody is logged in).  ``job``: a Job row or a job dict."""
    if user is None:
        raise ApiError(401, "Authentication required")
    owner = _owner_of(job)
    if owner is None or user.is_admin or owner == user.name:
        return
    job_id = job.get("id") if isinstance(job, dict) else getattr(job, "id", "?")
    raise ApiError(403, f"Job {job_id} belongs to {owner}: only its owner or an admin may change it")


# ---------------------------------------------------------------------------- CSRF

async def csrf_protect(request: Request, user: User | None = None) -> None:
    """Unsafe requests authenticated by the session cookie must carry the session's CSRF token
    (header ``X-CSRF-Token`` or form field ``csrf_token``), else ApiError 403.  Safe methods,
    tokens and local mode pass: see the module docstring for why."""
    if request.method not in UNSAFE_METHODS:
        return
    if getattr(request.state, "brewnet_user", _UNSET) is _UNSET:
        await current_user(request)
    if getattr(request.state, "auth_method", None) != "session":
        return
    expected = getattr(request.state, "csrf_token", None) or ""
    sent = request.headers.get(CSRF_HEADER)
    if sent is None:
        sent = await _form_field(request, CSRF_FIELD)
    if not (isinstance(sent, str) and expected and hmac.compare_digest(sent.encode(), expected.encode())):
        raise ApiError(403, f"CSRF token missing or wrong: send the {CSRF_HEADER} header or the "
                            f"{CSRF_FIELD} form field your login returned")


def _discard_form(request: Request) -> None:
    """Remove the uploads of a form read here when the request is refused before its route runs
    (the route, which would clean them up, never sees them)."""
    form = getattr(request.state, "brewnet_form", None)
    if form is not None:
        form.cleanup()


async def api_user(request: Request) -> User:
    """FastAPI dependency of the JSON API: a logged-in user, CSRF-checked for unsafe methods."""
    try:
        user = await require_user(request)
        await csrf_protect(request, user)
    except BaseException:
        _discard_form(request)
        raise
    return user


async def api_admin(request: Request) -> User:
    """:func:`api_user` who is an admin, else ApiError 403."""
    user = await api_user(request)
    if not user.is_admin:
        raise ApiError(403, "Only an admin may do this")
    return user


# ---------------------------------------------------------------------------- cookies

def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def set_session_cookie(response: Response, request: Request, value: str, hours: float) -> None:
    """The login session's cookie: HttpOnly (scripts cannot read it), SameSite=Lax (other sites'
    forms do not send it), Secure over https."""
    response.set_cookie(SESSION_COOKIE, value, max_age=int(hours * 3600), path="/", httponly=True,
                        samesite="lax", secure=_secure(request))


def set_username_cookie(response: Response, request: Request, name: str) -> None:
    """DIGITS' ``username`` cookie (local mode only)."""
    response.set_cookie(USERNAME_COOKIE, name, path="/", httponly=True, samesite="lax",
                        secure=_secure(request))


def clear_login_cookies(response: Response, request: Request) -> None:
    """Forget both login cookies in the browser."""
    for name in (SESSION_COOKIE, USERNAME_COOKIE):
        response.delete_cookie(name, path="/", httponly=True, samesite="lax", secure=_secure(request))


# ---------------------------------------------------------------------------- cross-site check

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _origin_tuple(scheme: str, netloc: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of ``scheme://netloc`` with the default port filled in; None if malformed."""
    try:
        parts = urlsplit(f"{scheme}://{netloc}")
        host = (parts.hostname or "").lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme.lower())
    except ValueError:
        return None
    if not host or port is None:
        return None
    return scheme.lower(), host, port


def _source_tuple(value: str) -> tuple[str, str, int] | None:
    try:
        parts = urlsplit(value.strip())
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return _origin_tuple(parts.scheme, parts.netloc)


class OriginCheckMiddleware:
    """Refuse (403 JSON) any request whose ``Origin`` -- or, without one, ``Referer`` -- is not this
    server (scheme, host and port of the request itself); ``Origin: null`` too.  A request with
    neither header (curl, scripts) passes.  Pure ASGI, so streamed answers (Server-Sent Events)
    pass through unbuffered."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {}
        for k, v in scope.get("headers") or ():
            key = k.decode("latin-1").lower()
            if key in ("origin", "referer", "host") and key not in headers:
                headers[key] = v.decode("latin-1")
        source_name, source = ("origin", headers.get("origin"))
        if source is None:
            source_name, source = ("referer", headers.get("referer"))
        if source is None:
            return await self.app(scope, receive, send)
        scheme = scope.get("scheme") or "http"
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        host = headers.get("host")
        if not host and scope.get("server"):
            srv_host, srv_port = scope["server"][0], scope["server"][1]
            host = f"[{srv_host}]:{srv_port}" if ":" in str(srv_host) else f"{srv_host}:{srv_port}"
        own = _origin_tuple(scheme, host or "")
        theirs = None if source.strip().lower() == "null" else _source_tuple(source)
        if own is not None and theirs is not None and theirs == own:
            return await self.app(scope, receive, send)
        shown = source if len(source) <= 200 else source[:200] + "..."
        err = ApiError(403, f"Cross-site request refused: {source_name.capitalize()} {shown!r} is not this server")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = JSONResponse(err.to_json(), status_code=403)
        await response(scope, receive, send)


# ---------------------------------------------------------------------------- bind check

def refuse_insecure_bind(config, db) -> None:
    """Raise BrewnetError when the server would listen on a non-loopback address while no user has
    a password (anyone who can reach it could then run jobs as anyone)."""
    if is_loopback(config.host):
        return
    with db.session() as s:
        if auth.users_with_passwords(s) > 0:
            return
    raise BrewnetError(
        f"brewnet serve refuses to listen on {config.host} without authentication: add a user with "
        f"`brewnet serve --add-user NAME` (password from stdin or --password-file), or serve on 127.0.0.1")
