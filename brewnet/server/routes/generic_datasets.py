"""DIGITS' routes of generic datasets (docs: digits-other-jobs.md §1.1–1.3):

    GET  /datasets/images/generic/new                  the "Other" form (pre-built LMDBs)
    POST /datasets/images/generic[.json]               create one: {"id", "name", "status"}
    GET  /datasets/generic/new/<extension_id>          a data extension's form
    POST /datasets/generic/create/<extension_id>[.json] create one with that extension
    GET  /datasets/generic/explore?job_id=&db=train_db/features&page=0&size=25   the gallery

``extension_id``: ``image-gradients``, ``image-processing`` or ``image-segmentation`` (another: 404).
Errors are DIGITS' 400 ``{"errors": {field: [message, ...]}}``; without ``.json`` (and without
an ``Accept`` preferring JSON) a create answers 302 to the dataset's page.  The ``new`` pages
answer ``{"clone", "fields"}`` to a client that asks for JSON.
"""
from __future__ import annotations

import inspect

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse

from .. import security
from ..app_state import server_of
from ..errors import ApiError
from ..formdata import read_form
from ..jobs.specs import EXTENSION_KINDS, KIND_EXTENSIONS
from ..service.creation import read_form_file
from ..threads import in_thread
from ..web import generic_dataset_pages as pages
from . import wants_json

router = APIRouter(include_in_schema=False, dependencies=[Depends(security.read_access)])


def new_form_path(kind: str) -> str:
    """The new-dataset page of a generic kind (a clone of such a dataset goes there)."""
    if kind == "generic":
        return "/datasets/images/generic/new"
    return f"/datasets/generic/new/{KIND_EXTENSIONS[kind]}"


def _extension(extension_id: str) -> str:
    if extension_id not in EXTENSION_KINDS:
        raise ApiError(404, f"Unknown data extension {extension_id!r}: one of {', '.join(EXTENSION_KINDS)}")
    return extension_id


async def _create(request: Request, extension_id: str | None, as_json: bool):
    server = server_of(request)
    form = await read_form(request, server.config)
    try:
        user = await security.require_user(request)
        r = security.csrf_protect(request, user)
        if inspect.isawaitable(r):
            await r
        fields = form.to_dict()
        clone = request.query_params.get("clone") or form.get("clone")
        if clone:
            fields["clone"] = clone
        job = await in_thread(server.create_generic_dataset, extension_id, fields, form.upload_paths(), user)
    finally:
        form.cleanup()
    if not wants_json(request, as_json):
        return RedirectResponse(f"/datasets/{job.id}", status_code=302)
    return {"id": job.id, "name": job.name, "status": job.status}


@router.post("/datasets/images/generic.json")
async def create_prebuilt_json(request: Request):
    return await _create(request, None, True)


@router.post("/datasets/images/generic")
async def create_prebuilt(request: Request):
    return await _create(request, None, False)


@router.post("/datasets/generic/create/{extension_id}.json")
async def create_extension_json(request: Request, extension_id: str):
    return await _create(request, _extension(extension_id), True)


@router.post("/datasets/generic/create/{extension_id}")
async def create_extension(request: Request, extension_id: str):
    return await _create(request, _extension(extension_id), False)


async def _new_page(request: Request, kind: str):
    server = server_of(request)
    clone = request.query_params.get("clone")
    fields: dict = {}
    if clone:
        src = await in_thread(server.get_job, clone)
        if (src.spec or {}).get("kind") != kind:
            raise ApiError(400, f"Job {clone} is not a {kind} dataset", field="clone")
        fields = (read_form_file(server.job_dir(src.id)) or {}).get("fields") or {}
    if wants_json(request):
        return {"clone": clone, "fields": fields}
    return await pages.render_new_generic_dataset(request, kind, fields, clone)


@router.get("/datasets/images/generic/new")
async def new_prebuilt(request: Request):
    return await _new_page(request, "generic")


@router.get("/datasets/generic/new/{extension_id}")
async def new_extension(request: Request, extension_id: str):
    return await _new_page(request, EXTENSION_KINDS[_extension(extension_id)])


@router.get("/datasets/generic/explore")
async def explore(request: Request, job_id: str = "", db: str = "train_db/features", page: int = 0,
                  size: int = 25):
    if not job_id:
        raise ApiError(400, "job_id is required", field="job_id")
    return await pages.render_explore(request, job_id, db, page, size)
