"""Rendering pages: the Jinja environment over ``templates/`` and the context every page gets.

Every template extends ``base.html`` and receives, besides its own values:

- ``user``: the logged-in :class:`~brewnet.server.store.models.User` or None; ``csrf_token``: the
  login session's CSRF token ("" without a session; scripts send it as ``X-CSRF-Token``, forms as
  the ``csrf_token`` field); ``local_mode``: DIGITS' username-only mode;
- ``title``; ``nav``: the name of the active navigation entry; ``version``: brewnet's version;
- ``static(name)``: the URL of ``static/<name>`` with a version query (cache busting).
"""
from __future__ import annotations

from pathlib import Path

from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from starlette.requests import Request

from ... import __version__
from .. import security

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

templates = Jinja2Templates(directory=str(TEMPLATES_DIR))


def _version() -> str:
    return __version__


def static_url(name: str) -> str:
    return f"/static/{name}?v={_version()}"


templates.env.globals["static"] = static_url


def page(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    """``templates/<name>`` rendered for ``request`` with the common context (see the module
    docstring).  The user is the one :mod:`~brewnet.server.security` already found for this
    request (routes that render pages depend on it, so it is cached on ``request.state``)."""
    user = getattr(request.state, "brewnet_user", None)
    config = request.app.state.config
    db = request.app.state.db
    common = {
        "user": user,
        "csrf_token": getattr(request.state, "csrf_token", None) or "",
        "local_mode": bool(security.local_mode(db, config)),
        "version": _version(),
        "nav": context.pop("nav", ""),
        "title": context.pop("title", "brewnet"),
    }
    return templates.TemplateResponse(request, name, {**common, **context}, status_code=status_code)
