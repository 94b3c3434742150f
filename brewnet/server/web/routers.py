"""What every page module of the web app builds its routes with."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from .. import security


def page_router() -> APIRouter:
    """A router for pages and their data: every route needs read access (open in DIGITS' local
    mode, a login once users have passwords); routes that change something check more."""
    return APIRouter(include_in_schema=False, dependencies=[Depends(security.read_access)])
