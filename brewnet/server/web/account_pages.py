"""Accounts in the browser: the login page (``/login``, the form DIGITS' route posts), the user's
own page (``/account``: who they are, their password, their API tokens: create with a name and a
lifetime, shown once, revoke) and the admins' page of users (``/admin/users``: add, make admin or
not, set a password, delete).  The pages call ``/api/v1/me``, ``/api/v1/tokens`` and
``/api/v1/users``; those routes check the rights, the pages only hide what a user cannot do."""
from __future__ import annotations

from fastapi import APIRouter, Request

from .. import security
from ..errors import ApiError
from .render import page

router = APIRouter(include_in_schema=False)


def render_login(request: Request, next_path: str, message: str = "", status: int = 200):
    """The login page (``routes/accounts.py`` renders it for GET /login and a failed POST)."""
    return page(request, "login.html", status_code=status, title="Log in", nav="login",
                next_path=next_path, message=message,
                username=request.query_params.get("username", ""))


@router.get("/account")
async def account(request: Request):
    user = await security.require_user(request)
    return page(request, "account.html", title=f"Account: {user.name}", nav="account",
                auth_method=getattr(request.state, "auth_method", ""))


@router.get("/admin/users")
async def admin_users(request: Request):
    user = await security.require_user(request)
    if not user.is_admin:
        raise ApiError(403, "Only an admin may manage users")
    return page(request, "admin_users.html", title="Users", nav="admin")
