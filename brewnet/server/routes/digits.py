"""DIGITS' REST routes (docs/digits-rest.md), so that scripts written for DIGITS run
unchanged; their page URLs render the web app's pages (``brewnet/server/web``).

Conventions kept from DIGITS: JSON when the path ends in ``.json`` or ``Accept`` prefers it,
HTML otherwise (a create then answers 302 to the job's page); ``job_id``, ``username`` and
``clone`` are read from the query string, then from the form; abort, delete and edit answer
plain text and only their errors are JSON; an unknown job's status is a 200
``{"error": "Job not found."}``; a delete of a running job aborts it, waits for its processes
(bounded) and removes it.  Create, abort, delete, edit and clone need a user
(``security.require_user``: DIGITS' username in local mode, a session or token otherwise);
abort, delete and edit also the owner (or an admin).

Routes call :class:`~brewnet.server.service.Server`; blocking work (database, files) runs in
the thread pool, inference in the worker process, and a classify-many is a job awaited without
blocking the event loop.
"""
from __future__ import annotations

import importlib
import json
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from .. import security
from ..app_state import server_of
from ..digits.model_files import customize as customize_network
from ..digits.solver_form import lr_curve
from ..errors import ApiError
from ..formdata import ParsedForm, read_form
from ..jobs import states
from ..jobs.epochs import parse_epoch
from ..jobs.specs import GENERIC_KINDS
from ..service.creation import read_form_file
from ..threads import in_thread
from ..web.render import page
from . import digits_bool, posted_image, request_user, wants_json
from .generic_datasets import new_form_path


async def _readers_only(request: Request) -> None:
    """Every DIGITS route needs read access: open in DIGITS' local mode, a login once users
    have passwords (routes that change something check the user themselves as well)."""
    await security.read_access(request)


router = APIRouter(include_in_schema=False, dependencies=[Depends(_readers_only)])

KIND_PATHS = {states.DATASET: "datasets", states.MODEL: "models"}
CREATE_PATHS = {states.DATASET: "/datasets/images/classification", states.MODEL: "/models/images/classification"}


# ----------------------------------------------------------------------- helpers

async def _form(request: Request) -> ParsedForm:
    return await read_form(request, server_of(request).config)


def _param(request: Request, form: ParsedForm | None, name: str) -> str | None:
    """DIGITS reads ``job_id``, ``username`` and ``clone`` from the query, then the form."""
    v = request.query_params.get(name)
    if v is None and form is not None:
        v = form.get(name)
    return v


def _text(message: str, status: int = 200) -> PlainTextResponse:
    return PlainTextResponse(message, status_code=status)


async def _web(request: Request, module: str, function: str, *args):
    """The page ``brewnet.server.web.<module>.<function>(request, *args)`` renders (the web app's
    renderers: see ``brewnet/server/web/__init__.py``)."""
    return await getattr(importlib.import_module(f"brewnet.server.web.{module}"), function)(request, *args)


def _page(request: Request, name: str, **context) -> HTMLResponse:
    """A page of the web app (brewnet/server/web): ``templates/<name>`` with the common context."""
    return page(request, name, **context)


def _job_url(job) -> str:
    path = KIND_PATHS.get(job.kind)
    return f"/{path}/{job.id}" if path else f"/jobs/{job.id}"


# ----------------------------------------------------------------------- listing

@router.get("/index.json")
async def index_json(request: Request):
    return await in_thread(server_of(request).index_json)


@router.get("/")
async def home(request: Request):
    if wants_json(request):
        return await in_thread(server_of(request).index_json)
    return await _web(request, "home", "render_home")


@router.get("/completed_jobs.json")
async def completed_jobs(request: Request):
    return await in_thread(server_of(request).completed_jobs_json)


@router.get("/jobs/{job_id}/table_data.json")
async def table_data(request: Request, job_id: str):
    server = server_of(request)
    job = await in_thread(server.get_job, job_id)
    return {"job": await in_thread(server.table_row, job)}


# ----------------------------------------------------------------------- create

async def _create(request: Request, kind: str, as_json: bool):
    server = server_of(request)
    form = await _form(request)
    try:
        user = await request_user(request)
        fields = form.to_fields()
        clone = _param(request, form, "clone")
        if clone:
            fields["clone"] = clone
        uploads = form.upload_paths()
        if kind == states.DATASET:
            jobs = [await in_thread(server.create_dataset, fields, uploads, user)]
        else:
            jobs = await in_thread(server.create_models, fields, uploads, user)
    finally:
        form.cleanup()
    if not wants_json(request, as_json):
        return RedirectResponse(_job_url(jobs[0]), status_code=302)
    if kind == states.DATASET:
        j = jobs[0]
        return {"id": j.id, "name": j.name, "status": j.status}
    answers = [await in_thread(server.model_json, j) for j in jobs]
    return {"jobs": answers} if len(answers) > 1 else answers[0]


@router.post("/datasets/images/classification.json")
async def create_dataset_json(request: Request):
    return await _create(request, states.DATASET, True)


@router.post("/datasets/images/classification")
async def create_dataset(request: Request):
    return await _create(request, states.DATASET, False)


@router.post("/models/images/classification.json")
async def create_model_json(request: Request):
    return await _create(request, states.MODEL, True)


@router.post("/models/images/classification")
async def create_model(request: Request):
    return await _create(request, states.MODEL, False)


async def _new_page(request: Request, kind: str):
    """The 'new job' page: the form's fields as plain inputs, filled from ``clone=<id>``."""
    server = server_of(request)
    clone = request.query_params.get("clone")
    fields: dict = {}
    if clone:
        src = await in_thread(server.get_job, clone, kind)
        fields = (read_form_file(server.job_dir(src.id)) or {}).get("fields") or {}
    if wants_json(request):
        return {"clone": clone, "fields": fields}
    module = "dataset_pages" if kind == states.DATASET else "new_model_pages"
    function = "render_new_dataset" if kind == states.DATASET else "render_new_model"
    return await _web(request, module, function, fields, clone)


@router.get("/datasets/images/classification/new")
async def new_dataset(request: Request):
    return await _new_page(request, states.DATASET)


@router.get("/models/images/classification/new")
async def new_model(request: Request):
    return await _new_page(request, states.MODEL)


# ----------------------------------------------------------------------- inference

def _classify_job_id(request: Request, form: ParsedForm) -> str:
    job_id = _param(request, form, "job_id")
    if not job_id:
        raise ApiError(400, "job_id is required", field="job_id")
    return job_id


def _image_of(request: Request, form: ParsedForm) -> Path:
    """classify_one's image: the ``image_file`` upload, else ``image_path`` (or DIGITS'
    ``image_url``, taken as a path: URLs are not fetched) on the server."""
    return posted_image(request, form, ("image_path", "image_url"),
                        missing="Must provide image_path or image_file")[0]


async def _classify_one(request: Request, as_json: bool):
    server = server_of(request)
    form = await _form(request)
    as_json = wants_json(request, as_json)
    try:
        job_id = _classify_job_id(request, form)
        model = await in_thread(server.get_job, job_id, states.MODEL)
        image = _image_of(request, form)
        epoch = parse_epoch(form.get("snapshot_epoch"))
        visualize = not as_json and digits_bool(form.get("show_visualizations"))
        try:
            result = await server.classify_one(model.id, image, epoch, visualize=visualize)
        except ApiError as e:
            if e.status < 500:
                raise
            # DIGITS answers a failed inference with 500 {"predictions": []}
            return JSONResponse({"predictions": [], **e.to_json()}, status_code=500)
    finally:
        form.cleanup()
    if as_json:
        return {"predictions": result["predictions"]}
    return _page(request, "classify_one.html", job=model, result=result,
                 title=f"Classify one: {model.name}")


@router.post("/models/images/classification/classify_one.json")
async def classify_one_json(request: Request):
    return await _classify_one(request, True)


@router.post("/models/images/classification/classify_one")
async def classify_one(request: Request):
    return await _classify_one(request, False)


async def _classify_many(request: Request, as_json: bool):
    server = server_of(request)
    form = await _form(request)
    try:
        job_id = _classify_job_id(request, form)
        user = await request_user(request, required=False)
        job = await in_thread(server.create_inference, job_id, "classify_many", form.to_dict(),
                         form.upload_paths(), user)
    finally:
        form.cleanup()
    # a job like any other (progress, abort); the request awaits it without blocking the loop
    done = await server.wait_finished(job.id)
    if done.status != states.DONE:
        raise ApiError(500, f"Inference failed: {done.error or done.status}")
    result = await in_thread(server.classifications, done)
    if wants_json(request, as_json):
        return result
    return _page(request, "classify_many.html", job=done, result=result["classifications"],
                 title=f"Classify many: {done.name}")


@router.post("/models/images/classification/classify_many.json")
async def classify_many_json(request: Request):
    return await _classify_many(request, True)


@router.post("/models/images/classification/classify_many")
async def classify_many(request: Request):
    return await _classify_many(request, False)


# ----------------------------------------------------------------------- helpers of the model form

@router.post("/models/customize")
async def customize(request: Request):
    form = await _form(request)
    try:
        network = request.query_params.get("network") or form.get("network") or ""
    finally:
        form.cleanup()
    try:
        text = customize_network(network)
    except KeyError:
        raise ApiError(404, f"Unknown network {network!r}", field="network") from None
    return {"network": text}


@router.post("/models/visualize-lr")
async def visualize_lr(request: Request):
    form = await _form(request)
    try:
        fields = form.to_dict()
    finally:
        form.cleanup()
    values = lr_curve(fields)
    return {"data": {"columns": [["Learning Rate 0", *values]]}}


# ----------------------------------------------------------------------- downloads

async def _download(request: Request, job_id: str, ext: str):
    server = server_of(request)
    form = await _form(request) if request.method == "POST" else None
    try:
        raw = request.query_params.get("epoch")
        if raw is None and form is not None:
            raw = form.get("snapshot_epoch")
        epoch = parse_epoch(raw, "epoch")
    finally:
        if form is not None:
            form.cleanup()
    path = await server.download_async(job_id, epoch, ext)
    return FileResponse(path, filename=path.name, media_type="application/octet-stream")


@router.api_route("/models/{job_id}/download", methods=["GET", "POST"])
async def download(request: Request, job_id: str):
    return await _download(request, job_id, "tar.gz")


@router.api_route("/models/{job_id}/download.{ext}", methods=["GET", "POST"])
async def download_ext(request: Request, job_id: str, ext: str):
    return await _download(request, job_id, ext)


# ----------------------------------------------------------------------- job control

def _status_answer(server, job_id: str) -> dict:
    try:
        job = server.get_job(job_id)
    except ApiError as e:
        if e.status != 404:
            raise
        return {"error": "Job not found."}
    return server.status_json(job)


async def _status(request: Request, job_id: str):
    body = await in_thread(_status_answer, server_of(request), job_id)
    # DIGITS answers this JSON as text/html
    return Response(json.dumps(body), media_type="text/html")


async def _abort(request: Request, job_id: str):
    server = server_of(request)
    form = await _form(request)
    try:
        user = await request_user(request)
        await in_thread(server.abort, job_id, user)
    finally:
        form.cleanup()
    return _text("Job aborted.")


async def _delete(request: Request, job_id: str):
    server = server_of(request)
    form = await _form(request)
    try:
        user = await request_user(request)
        # DIGITS aborts a running job, then deletes it
        await in_thread(server.delete, job_id, user, abort_running=True)
    finally:
        form.cleanup()
    return _text("Job deleted.")


for _prefix in ("jobs", "datasets", "models"):
    router.add_api_route(f"/{_prefix}/{{job_id}}/status", _status, methods=["GET"])
    router.add_api_route(f"/{_prefix}/{{job_id}}/abort", _abort, methods=["POST"])
for _prefix in ("jobs", "datasets", "models", "pretrained_models"):
    router.add_api_route(f"/{_prefix}/{{job_id}}", _delete, methods=["DELETE"])


@router.post("/jobs/{job_id}/resume")
async def resume(request: Request, job_id: str):
    """brewnet's addition: an Aborted/Interrupted model continues from its last solverstate."""
    server = server_of(request)
    form = await _form(request)
    try:
        user = await request_user(request)
        await in_thread(server.resume, job_id, user)
    finally:
        form.cleanup()
    return _text("Job resumed.")


@router.put("/jobs/{job_id}")
async def edit(request: Request, job_id: str):
    server = server_of(request)
    form = await _form(request)
    try:
        user = await request_user(request)
        name = form.get("job_name")
        notes = form.get("job_notes")
        job = await in_thread(server.edit, job_id, user, name=name, notes=notes)
    finally:
        form.cleanup()
    return _text(f"{states.job_type_name(job) if job.kind in states.TYPE_NAMES else 'Job'} updated.")


async def _bulk(request: Request, action: str, done: str):
    server = server_of(request)
    form = await _form(request)
    try:
        user = await request_user(request)
        ids = form.getlist("job_ids[]") or request.query_params.getlist("job_ids[]")
        group = form.get("group_name")
        await in_thread(server.bulk, action, ids, user, group=group)
    finally:
        form.cleanup()
    return _text(done)


@router.delete("/jobs")
async def delete_jobs(request: Request):
    return await _bulk(request, "delete", "Jobs deleted.")


@router.post("/abort_jobs")
async def abort_jobs(request: Request):
    return await _bulk(request, "abort", "Jobs aborted.")


@router.post("/group")
async def group_jobs(request: Request):
    return await _bulk(request, "group", "Jobs regrouped.")


async def _clone(request: Request, job_id: str):
    server = server_of(request)
    form = await _form(request) if request.method == "POST" else None
    try:
        await request_user(request)
        job = await in_thread(server.get_job, job_id)
    finally:
        if form is not None:
            form.cleanup()
    if job.kind not in CREATE_PATHS:
        raise ApiError(400, f"Job {job_id} is an {job.kind} job; only datasets and models are cloned")
    if job.kind == states.DATASET and (job.spec or {}).get("kind") in GENERIC_KINDS:
        return RedirectResponse(f"{new_form_path(job.spec['kind'])}?clone={job.id}", status_code=302)
    path = CREATE_PATHS[job.kind]
    if job.kind == states.MODEL and (job.spec or {}).get("kind") == "generic":
        path = "/models/images/generic"
    return RedirectResponse(f"{path}/new?clone={job.id}", status_code=302)


router.add_api_route("/clone/{job_id}", _clone, methods=["GET", "POST"])


@router.get("/files/{path:path}")
async def files(request: Request, path: str):
    full = await in_thread(server_of(request).job_file, path)
    return FileResponse(full)


# ----------------------------------------------------------------------- job pages and JSON

@router.get("/jobs/{job_id}")
async def job_redirect(request: Request, job_id: str):
    server = server_of(request)
    job = await in_thread(server.get_job, job_id)
    if job.kind in KIND_PATHS:
        return RedirectResponse(_job_url(job), status_code=302)
    return await _job_page(request, job)


async def _job_page(request: Request, job):
    module, function = {states.DATASET: ("dataset_pages", "render_dataset"),
                        states.MODEL: ("model_pages", "render_model")}.get(
                            job.kind, ("inference_pages", "render_inference_job"))
    if job.kind == states.DATASET and (job.spec or {}).get("kind") in GENERIC_KINDS:
        module, function = "generic_dataset_pages", "render_generic_dataset"
    return await _web(request, module, function, job)


async def _show(request: Request, job_id: str, kind: str, as_json: bool):
    server = server_of(request)
    job = await in_thread(server.get_job, job_id, kind)
    if wants_json(request, as_json):
        if kind == states.MODEL:
            return await in_thread(server.model_json, job, None, True)
        return await in_thread(server.dataset_json, job)
    return await _job_page(request, job)


@router.get("/datasets/{job_id}.json")
async def dataset_json(request: Request, job_id: str):
    return await _show(request, job_id, states.DATASET, True)


@router.get("/datasets/{job_id}")
async def dataset_page(request: Request, job_id: str):
    return await _show(request, job_id, states.DATASET, False)


@router.get("/models/{job_id}.json")
async def model_json(request: Request, job_id: str):
    return await _show(request, job_id, states.MODEL, True)


@router.get("/models/{job_id}")
async def model_page(request: Request, job_id: str):
    return await _show(request, job_id, states.MODEL, False)

