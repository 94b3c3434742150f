"""Static files: our own scripts and styles from ``static/``, and plotly.js served from the
installed ``plotly`` Python package (the chart library; never copied into this repository)."""
from __future__ import annotations

import importlib.resources

from fastapi import APIRouter
from fastapi.responses import FileResponse

from ..errors import ApiError
from .render import STATIC_DIR

router = APIRouter(include_in_schema=False)

CACHE = {"Cache-Control": "public, max-age=86400"}
MEDIA = {".js": "application/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png"}


def plotly_js_path():
    """plotly.min.js inside the installed plotly package."""
    path = importlib.resources.files("plotly") / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise ApiError(500, "plotly.min.js is missing from the installed plotly package")
    return path


@router.get("/static/vendor/plotly.min.js")
async def plotly_js():
    return FileResponse(str(plotly_js_path()), media_type=MEDIA[".js"], headers=CACHE)


@router.get("/static/{name}")
async def static_file(name: str):
    """A file of ``static/`` by its plain name (no folders, so nothing outside can be named)."""
    path = (STATIC_DIR / name).resolve()
    if "/" in name or "\\" in name or name.startswith(".") or path.parent != STATIC_DIR or not path.is_file():
        raise ApiError(404, f"No static file {name!r}")
    return FileResponse(str(path), media_type=MEDIA.get(path.suffix, "application/octet-stream"), headers=CACHE)
