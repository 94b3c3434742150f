"""``create_app(config)``: the FastAPI application of ``brewnet serve``.

Its lifespan opens and migrates the database, refuses an unauthenticated non-loopback bind,
starts the scheduler (which first reconciles the jobs folder with the database) and the
inference pool, and stops them on shutdown.  ``app.state.server`` is the
:class:`~brewnet.server.service.Server` every route calls.

Every error is JSON: ApiError/FormErrors their own shapes (DIGITS' ``{"error": {...}}`` and
``{"errors": {field: [...]}}``), a request FastAPI cannot validate a 400 naming the field, any
other exception a 500 without a trace (the traceback goes to the server's log only).
"""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .config import ServerConfig
from .errors import ApiError, FormErrors

log = logging.getLogger("brewnet.server")

#: route modules of other parts of the server, included when present (each has ``router``)
OPTIONAL_ROUTERS = ("api_v1", "accounts", "events", "generic_models", "generic_datasets")
OPTIONAL_ROUTERS += ("generic_inference",)   # DIGITS' infer_one / infer_many / infer_db of generic models


def _field_of(loc: tuple | list) -> str:
    """The form/query field a validation error is about (the last string of its location)."""
    names = [str(x) for x in loc if not isinstance(x, int) and x not in ("body", "query", "path", "header", "cookie")]
    return names[-1] if names else "request"


def install_error_handlers(app: FastAPI) -> None:
    """JSON answers for every error (see the module docstring)."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        if exc.status == 401 and _browser_page_request(request):
            # a browser asking for a page: the login form, then back here
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(exc.to_json(), status_code=exc.status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors: dict[str, list[str]] = {}
        for e in exc.errors():
            errors.setdefault(_field_of(e.get("loc") or ()), []).append(str(e.get("msg") or "invalid"))
        return JSONResponse(FormErrors(errors or {"request": ["invalid request"]}).to_json(), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        detail = exc.detail if isinstance(exc.detail, str) else "Error"
        if exc.status_code == 404 and detail == "Not Found":
            detail = "The requested URL was not found on the server"
        return JSONResponse(ApiError(exc.status_code, detail).to_json(), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        err = ApiError(500, f"an unexpected {type(exc).__name__} (the server's log has the details)")
        return JSONResponse(err.to_json(), status_code=500)


def _browser_page_request(request: Request) -> bool:
    """A GET of a page (not JSON, not the API) by a browser, which sends Accept: text/html."""
    path = request.url.path
    return (request.method == "GET" and "text/html" in request.headers.get("accept", "")
            and not path.endswith(".json") and not path.startswith("/api/"))


def _optional_router(name: str):
    from .routes import optional_module

    module = optional_module(name)
    return getattr(module, "router", None) if module is not None else None


def create_app(config: ServerConfig, *, scheduler_options: dict[str, Any] | None = None) -> FastAPI:
    """The application for ``config`` (``scheduler_options``: extra keyword arguments of the
    Scheduler, e.g. shorter grace periods in tests)."""
    from .. import __version__
    from . import security
    from .routes import digits

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from .formdata import UPLOAD_PREFIX, clean_stale_folders
        from .inference import InferencePool
        from .scheduler import Scheduler
        from .service import Server
        from .service.control import DELETED_PREFIX
        from .store.db import Database
        from .threads import in_thread

        config.ensure_dirs()
        clean_stale_folders(config.jobs_dir, (UPLOAD_PREFIX, DELETED_PREFIX))
        db = Database(config.database_url)
        try:
            db.migrate()
            security.refuse_insecure_bind(config, db)
            scheduler = Scheduler(config, db, **(scheduler_options or {}))
            pool = InferencePool()
            server = Server(config, db, scheduler, pool)
            # a model queued on a dataset that finished just before a kill gets its files first
            server.prepare_pending_models()
            await scheduler.start()
        except BaseException:
            db.dispose()
            raise
        app.state.server = server
        app.state.db = db
        app.state.scheduler = scheduler
        app.state.pool = pool
        log.info("brewnet serve: jobs in %s, database %s", config.jobs_dir, db)
        try:
            yield
        finally:
            try:
                await scheduler.stop()
            finally:
                await in_thread(pool.close)
                db.dispose()

    app = FastAPI(title="brewnet", version=__version__, lifespan=lifespan,
                  description="brewnet serve: DIGITS' REST routes and brewnet's own /api/v1",
                  openapi_url="/api/v1/openapi.json",
                  docs_url=None, redoc_url=None)  # FastAPI's docs pages load from a CDN
    app.state.config = config
    install_error_handlers(app)
    app.add_middleware(security.OriginCheckMiddleware)
    for name in OPTIONAL_ROUTERS:
        router = _optional_router(f"brewnet.server.routes.{name}")
        if router is None:
            continue
        if name == "api_v1" and not router.prefix:
            app.include_router(router, prefix="/api/v1")
        else:
            app.include_router(router)
    from .web import PAGE_ROUTERS
    for name in PAGE_ROUTERS:  # the web app's own pages and static files
        router = _optional_router(f"brewnet.server.web.{name}")
        if router is not None:
            app.include_router(router)
    # DIGITS' routes last: their /models/{id} patterns must not shadow the others
    app.include_router(digits.router)
    return app
