"""DIGITS' generic model routes (digits-other-jobs.md §1.1, §1.5):

    GET  /models/images/generic/new[/<extension_id>]     the New Image Model page (JSON with
                                                         Accept: application/json: a clone's fields)
    POST /models/images/generic[.json]                   create generic model jobs (a sweep: {"jobs": [...]})
    POST /models/images/generic/<extension_id>[.json]    the same, the dataset of that extension
    GET  /models/images/generic/large_graph?job_id=      the training graphs of a model, full page

``extension_id``: ``image-gradients``, ``image-processing``, ``image-segmentation`` (registered
one by one, so that other ``/models/images/generic/<name>`` routes, inference's, stay theirs).
``/models/<id>.json`` is the shared route; its generic keys come from service/presenters.py.
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse

from .. import security
from ..app_state import server_of
from ..errors import ApiError
from ..formdata import read_form
from ..jobs import states
from ..jobs.specs import EXTENSION_KINDS
from ..service.creation import read_form_file
from ..threads import in_thread
from ..web import generic_model_pages
from . import request_user, wants_json


async def _readers_only(request: Request) -> None:
    await security.read_access(request)


router = APIRouter(include_in_schema=False, dependencies=[Depends(_readers_only)])
BASE = "/models/images/generic"


async def _create(request: Request, extension_id: str | None, as_json: bool):
    server = server_of(request)
    form = await read_form(request, server.config)
    try:
        user = await request_user(request)
        fields = form.to_fields()
        clone = request.query_params.get("clone") or form.get("clone")
        if clone:
            fields["clone"] = clone
        jobs = await in_thread(server.create_generic_models, fields, form.upload_paths(), user, extension_id)
    finally:
        form.cleanup()
    if not wants_json(request, as_json):
        return RedirectResponse(f"/models/{jobs[0].id}", status_code=302)
    answers = [await in_thread(server.model_json, j) for j in jobs]
    return {"jobs": answers} if len(answers) > 1 else answers[0]


async def _new(request: Request, extension_id: str | None):
    server = server_of(request)
    clone = request.query_params.get("clone")
    fields: dict = {}
    if clone:
        src = await in_thread(server.get_job, clone, states.MODEL)
        fields = (read_form_file(server.job_dir(src.id)) or {}).get("fields") or {}
    if wants_json(request):
        return {"clone": clone, "fields": fields, "extension_id": extension_id}
    return await generic_model_pages.render_new_generic_model(request, fields, clone, extension_id)


def _routes(extension_id: str | None) -> None:
    path = BASE if extension_id is None else f"{BASE}/{extension_id}"

    async def create_json(request: Request):
        return await _create(request, extension_id, True)

    async def create(request: Request):
        return await _create(request, extension_id, False)

    async def new(request: Request):
        return await _new(request, extension_id)

    router.add_api_route(f"{path}.json", create_json, methods=["POST"])
    router.add_api_route(path, create, methods=["POST"])
    router.add_api_route(f"{BASE}/new" + (f"/{extension_id}" if extension_id else ""), new, methods=["GET"])


for _ext in (None, *EXTENSION_KINDS):
    _routes(_ext)


@router.get(f"{BASE}/large_graph")
async def large_graph(request: Request):
    job_id = request.query_params.get("job_id")
    if not job_id:
        raise ApiError(400, "job_id is required", field="job_id")
    server = server_of(request)
    job = await in_thread(server.get_job, job_id, states.MODEL)
    return await generic_model_pages.render_large_graph(request, job)
