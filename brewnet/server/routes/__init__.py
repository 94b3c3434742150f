"""The server's routes, one module per part, each with ``router = APIRouter(...)``:

    digits.py     DIGITS' REST routes and its plain HTML job pages
    api_v1.py     brewnet's own JSON API under /api/v1 (OpenAPI at /api/v1/openapi.json); its
                  request and response models are server/schemas.py
    accounts.py   login, logout, users and tokens
    events.py     Server-Sent Events of a job and of the whole server

Helpers every route module may use are here (the request's Server: server/app_state.py).
"""
from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from types import ModuleType

from starlette.requests import Request

from .. import security
from ..app_state import server_of
from ..errors import ApiError
from ..jobs.jobdir import confine_server_path


def optional_module(name: str) -> ModuleType | None:
    """The module ``name``, or None when it does not exist (an ImportError inside an existing
    module is raised, not hidden)."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        return None


def _quality(accept: str, mime: str) -> float:
    """The q-value ``accept`` gives ``mime`` (exact type, then ``type/*``, then ``*/*``)."""
    best, best_spec = 0.0, -1
    major = mime.split("/")[0]
    for part in accept.split(","):
        bits = [b.strip() for b in part.split(";")]
        rng = bits[0].lower()
        q = 1.0
        for b in bits[1:]:
            if b.startswith("q="):
                try:
                    q = float(b[2:])
                except ValueError:
                    q = 0.0
        spec = 2 if rng == mime else 1 if rng == f"{major}/*" else 0 if rng == "*/*" else -1
        if spec > best_spec:
            best, best_spec = q, spec
    return best if best_spec >= 0 else 0.0


def wants_json(request: Request, json_suffix: bool = False) -> bool:
    """DIGITS' rule: JSON when the path ends in ``.json`` or ``Accept`` rates application/json
    strictly above text/html; HTML otherwise (a browser, curl's ``*/*``)."""
    if json_suffix:
        return True
    accept = request.headers.get("accept", "")
    if not accept.strip():
        return False
    return _quality(accept, "application/json") > _quality(accept, "text/html")


def digits_bool(value) -> bool:
    """A DIGITS BooleanField: missing, ``false`` and the empty string are False, anything else
    True."""
    if value is None:
        return False
    return str(value) not in ("", "false")   # WTForms' false_values, compared as they are


async def request_user(request: Request, *, required: bool = True):
    """The logged-in user (401 when ``required`` and there is none); forms sent with a login
    session's cookie must carry its CSRF token."""
    if not required:
        return await security.current_user(request)
    user = await security.require_user(request)
    if request.method not in ("GET", "HEAD"):
        r = security.csrf_protect(request, user)
        if inspect.isawaitable(r):
            await r
    return user


def posted_image(request: Request, form, path_fields: tuple[str, ...],
                 missing: str = "must provide image_path or image_file") -> tuple[Path, str]:
    """The image a classify_one/infer_one request names, and how to call it: the ``image_file``
    upload, else the first of ``path_fields`` given (form or query), a path on the server under a
    --data-root. URLs are refused (this server fetches nothing); ``missing`` is the 400's text."""
    up = form.files.get("image_file")
    if up is not None and (up.size > 0 or up.filename):
        return up.path, up.filename or "image_file"
    path = ""
    for name in path_fields:
        path = (form.get(name) or request.query_params.get(name) or "").strip()
        if path:
            break
    if not path:
        raise ApiError(400, missing, field="image_file")
    if "://" in path:
        raise ApiError(400, "URLs are not fetched by this server: upload the image as image_file",
                       field="image_path")
    full = confine_server_path(path, server_of(request).config.data_roots, "image_path")
    if not full.is_file():
        raise ApiError(400, f"Image not found: {path}", field="image_path")
    return full, path
