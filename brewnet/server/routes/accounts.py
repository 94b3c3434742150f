"""Logging in and out, API tokens and users.

DIGITS' browser routes (``GET/POST /login``, ``GET/POST /logout``) keep DIGITS' behaviour in local
mode (loopback, no user with a password): a bare ``username`` sets DIGITS' ``username`` cookie and
answers 302.  Once a user has a password, ``/login`` checks it (argon2) and starts a login session
(cookie ``brewnet_session`` + a CSRF token).  The JSON side lives under ``/api/v1``: login/logout,
``me``, the caller's API tokens, and the users (admins only; anyone may change their own password).
"""
from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from pydantic import BaseModel, Field

from .. import auth, security
from ..errors import ApiError
from ..formdata import read_form
from ..store.models import ApiToken, User
from ..threads import in_thread
from ..web.account_pages import render_login
from . import wants_json

router = APIRouter()


# ----------------------------------------------------------------------- models

class UserOut(BaseModel):
    """A user as the API shows it (never the password hash)."""
    name: str
    is_admin: bool
    has_password: bool
    created: float


class LoginRequest(BaseModel):
    username: str = Field(max_length=auth.MAX_NAME_LENGTH)
    password: str | None = Field(default=None, max_length=auth.MAX_PASSWORD_LENGTH,
                                 description="required once any user has a password")


class LoginOut(BaseModel):
    user: UserOut
    csrf_token: str | None = Field(description="send as X-CSRF-Token with unsafe requests made with the "
                                               "session cookie (None in local mode)")


class MeOut(BaseModel):
    user: UserOut
    auth: str = Field(description="token | session | local")
    csrf_token: str | None
    local_mode: bool


class TokenOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="the first characters after 'bnt_', to tell tokens apart")
    created: float
    expires: float | None
    last_used: float | None


class TokenCreate(BaseModel):
    name: str = Field(default="", max_length=auth.MAX_TOKEN_NAME_LENGTH)
    ttl_days: float | None = Field(default=None, gt=0, description="lifetime in days; none: never expires")


class TokenCreated(TokenOut):
    token: str = Field(description="the token itself, shown only this once")


class UserCreate(BaseModel):
    username: str = Field(max_length=auth.MAX_NAME_LENGTH)
    password: str = Field(max_length=auth.MAX_PASSWORD_LENGTH)
    is_admin: bool = False


class UserPatch(BaseModel):
    password: str | None = Field(default=None, max_length=auth.MAX_PASSWORD_LENGTH)
    is_admin: bool | None = None


class Message(BaseModel):
    message: str


def user_out(user: User) -> UserOut:
    """The API's view of ``user``."""
    return UserOut(name=user.name, is_admin=bool(user.is_admin), has_password=user.password_hash is not None,
                   created=user.created)


def token_out(row: ApiToken) -> TokenOut:
    return TokenOut(id=row.id, name=row.name, prefix=row.prefix, created=row.created, expires=row.expires,
                    last_used=row.last_used)


# ----------------------------------------------------------------------- helpers

async def _db_call(request: Request, fn, *args):
    """``fn(session, *args)`` in one transaction, in the thread pool."""
    db = security.request_db(request)

    def run():
        with db.session() as s:
            return fn(s, *args)
    return await in_thread(run)


def safe_next(target: str | None) -> str:
    """Where to go after login: a local path only (``/...`` but not ``//host`` or a scheme), else '/'."""
    if not target or not isinstance(target, str):
        return "/"
    target = target.strip()
    if "\\" in target or any(ord(c) < 32 for c in target):
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


async def _read_login_form(request: Request) -> dict[str, str | None]:
    """username, password and next of a login: a form, or a JSON object."""
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("application/json"):
        try:
            body = await request.json()
        except ValueError:
            raise ApiError(400, "Body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "Body must be a JSON object")
        fields = {k: body.get(k) for k in ("username", "password", "next")}
    else:
        form = await read_form(request, security.request_config(request))
        try:
            fields = {k: form.get(k) for k in ("username", "password", "next")}
        finally:
            form.cleanup()
    fields["next"] = fields.get("next") or request.query_params.get("next")
    if fields.get("username") is None:
        fields["username"] = request.query_params.get("username")
    return {k: (v if isinstance(v, str) else None) for k, v in fields.items()}


def _password_login(s, name: str, password: str | None, hours: float):
    user = auth.authenticate_password(s, name, password or "")
    if user is None:
        return None
    cookie, csrf = auth.create_login_session(s, user, hours)
    return user, cookie, csrf


def _local_login(s, name: str, config):
    if not config.local_mode_possible or auth.users_with_passwords(s) != 0:
        return None
    return auth.ensure_local_user(s, name)


async def _login(request: Request, name: str | None, password: str | None):
    """(user, session cookie or None, csrf or None) of a login, or ApiError 400/401."""
    if not name:
        raise ApiError(400, "username is required", field="username")
    config = security.request_config(request)
    user = await _db_call(request, _local_login, name, config)
    if user is not None:
        return user, None, None
    auth.validate_username(name)
    found = await _db_call(request, _password_login, name, password, config.session_hours)
    if found is None:
        raise ApiError(401, "Wrong username or password")
    return found


def _login_page(request: Request, message: str = "", next_path: str = "/", status: int = 200) -> HTMLResponse:
    """The web app's login page (``message``: why the last try failed)."""
    return render_login(request, next_path, message, status)


# ----------------------------------------------------------------------- DIGITS' browser routes

@router.get("/login", include_in_schema=False)
async def login_page(request: Request):
    """A minimal login form (the web pages of the next issue bring their own)."""
    return _login_page(request, next_path=safe_next(request.query_params.get("next")))


@router.post("/login", include_in_schema=False)
async def login(request: Request):
    """DIGITS' login: local mode sets the ``username`` cookie; otherwise the password starts a
    login session.  Success: 302 to ``next`` (a local path); wrong password: 401."""
    fields = await _read_login_form(request)
    target = safe_next(fields["next"])
    try:
        user, cookie, _csrf = await _login(request, fields["username"], fields["password"])
    except ApiError as e:
        if wants_json(request) or e.status != 401:
            raise
        return _login_page(request, e.message, target, status=401)
    response = RedirectResponse(target, status_code=302)
    if cookie is None:
        security.set_username_cookie(response, request, user.name)
    else:
        security.set_session_cookie(response, request, cookie, security.request_config(request).session_hours)
        # a left-over DIGITS name must not outlive the switch to passwords
        response.delete_cookie(security.USERNAME_COOKIE, path="/")
    return response


async def _end_session(request: Request) -> None:
    cookie = request.cookies.get(security.SESSION_COOKIE)
    if cookie:
        await _db_call(request, auth.end_login_session, cookie)


@router.api_route("/logout", methods=["GET", "POST"], include_in_schema=False)
async def logout(request: Request):
    """Forget the login (session and DIGITS' cookie); 302 to ``next`` or '/'.  No CSRF token is
    asked: logging someone out is harmless, and the Origin check already refuses other sites."""
    await _end_session(request)
    response = RedirectResponse(safe_next(request.query_params.get("next")), status_code=302)
    security.clear_login_cookies(response, request)
    return response


# ----------------------------------------------------------------------- /api/v1: login

@router.post("/api/v1/login", response_model=LoginOut, tags=["accounts"],
             responses={401: {"description": "wrong username or password"}})
async def api_login(request: Request, body: LoginRequest):
    """Log in: the session cookie is set, and the CSRF token answered (send it as X-CSRF-Token).
    In local mode the password may be left out (DIGITS' ``username`` cookie is set instead)."""
    user, cookie, csrf = await _login(request, body.username, body.password)
    response = JSONResponse(LoginOut(user=user_out(user), csrf_token=csrf).model_dump())
    if cookie is None:
        security.set_username_cookie(response, request, user.name)
    else:
        security.set_session_cookie(response, request, cookie, security.request_config(request).session_hours)
    return response


@router.post("/api/v1/logout", response_model=Message, tags=["accounts"])
async def api_logout(request: Request):
    """End the login session (its cookie stops working at once)."""
    await _end_session(request)
    response = JSONResponse({"message": "Logged out."})
    security.clear_login_cookies(response, request)
    return response


@router.get("/api/v1/me", response_model=MeOut, tags=["accounts"])
async def me(request: Request, user: User = Depends(security.require_user)):
    """Who the caller is, how they authenticated, and the session's CSRF token."""
    local = await in_thread(security.local_mode, security.request_db(request),
                             security.request_config(request))
    return MeOut(user=user_out(user), auth=request.state.auth_method,
                 csrf_token=getattr(request.state, "csrf_token", None), local_mode=local)


# ----------------------------------------------------------------------- /api/v1: tokens

@router.get("/api/v1/tokens", response_model=list[TokenOut], tags=["accounts"])
async def list_tokens(request: Request, user: User = Depends(security.api_user)):
    """The caller's API tokens (never the tokens themselves: only their prefixes)."""
    rows = await _db_call(request, auth.list_tokens, user)
    return [token_out(r) for r in rows]


@router.post("/api/v1/tokens", response_model=TokenCreated, status_code=201, tags=["accounts"])
async def create_token(request: Request, body: TokenCreate, user: User = Depends(security.api_user)):
    """A new API token for the caller; the answer is the only time the token is shown."""
    def make(s):
        token = auth.create_token(s, user, name=body.name, ttl_days=body.ttl_days)
        row = auth.token_row(s, token)  # the row just made, found by its hash
        return token, token_out(row)
    token, out = await _db_call(request, make)
    return TokenCreated(token=token, **out.model_dump())


@router.delete("/api/v1/tokens/{token_id}", response_model=Message, tags=["accounts"])
async def revoke_token(request: Request, token_id: int, user: User = Depends(security.api_user)):
    """Revoke one of the caller's tokens (it stops working at once); 404 if the caller has no such token."""
    if not await _db_call(request, auth.revoke_token, user, token_id):
        raise ApiError(404, f"You have no token {token_id}")
    return Message(message="Token revoked.")


# ----------------------------------------------------------------------- /api/v1: users

@router.get("/api/v1/users", response_model=list[UserOut], tags=["accounts"])
async def list_users(request: Request, admin: User = Depends(security.api_admin)):
    """Every user (admins only)."""
    users = await _db_call(request, auth.list_users)
    return [user_out(u) for u in users]


@router.post("/api/v1/users", response_model=UserOut, status_code=201, tags=["accounts"],
             responses={409: {"description": "the name is taken"}})
async def create_user(request: Request, body: UserCreate, admin: User = Depends(security.api_admin)):
    """Add a user with a password (admins only).  Ends local mode: from now on a bare DIGITS
    username authenticates nobody."""
    user = await _db_call(request, auth.create_user, body.username, body.password, body.is_admin)
    return user_out(user)


def _named(s, name: str) -> User:
    user = auth.get_user(s, name)
    if user is None:
        raise ApiError(404, f"No user named {name!r:.80}")
    return user


@router.delete("/api/v1/users/{name}", response_model=Message, tags=["accounts"])
async def delete_user(request: Request, name: str, admin: User = Depends(security.api_admin)):
    """Remove a user, their tokens and sessions (admins only; not oneself).  Their jobs keep the
    owner's name, so only admins can change them afterwards."""
    if name == admin.name:
        raise ApiError(400, "You cannot delete yourself")

    def remove(s):
        auth.delete_user(s, _named(s, name))
    await _db_call(request, remove)
    return Message(message=f"User {name} deleted.")


@router.patch("/api/v1/users/{name}", response_model=UserOut, tags=["accounts"])
async def patch_user(request: Request, name: str, body: UserPatch, user: User = Depends(security.api_user)):
    """Change a password or the admin flag.  Admins may change anyone; a user only their own
    password.  An admin cannot take away their own admin flag (the last admin would lock
    everyone out of the users list)."""
    if not user.is_admin and (name != user.name or body.is_admin is not None):
        raise ApiError(403, "Only an admin may change other users or admin rights")
    if body.is_admin is False and name == user.name:
        raise ApiError(400, "You cannot remove your own admin rights")

    def change(s):
        target = _named(s, name)
        if body.password is not None:
            auth.set_password(target, body.password)
        if body.is_admin is not None:
            target.is_admin = body.is_admin
        s.flush()
        return user_out(target)
    return await _db_call(request, change)

