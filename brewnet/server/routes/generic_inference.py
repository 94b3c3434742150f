"""DIGITS' inference routes of generic models (doc digits-other-jobs.md §1.7), with DIGITS' fields,
messages (the typo ``does not exit`` kept) and JSON shapes:

    POST /models/images/generic/infer_one[.json]    image_path | image_file, snapshot_epoch, dont_resize
        → {"outputs": {blob: [[...]]}}              (the batch axis kept)
    POST /models/images/generic/infer_many[.json]   image_list (upload), image_folder, num_test_images, ...
        → {"outputs": {path as listed: {blob: [...]}}}
    POST /models/images/generic/infer_db[.json]     db_path, snapshot_epoch, dont_resize
        → {"outputs": {LMDB key: {blob: [...]}}}

``job_id`` comes from the query, then the form (400 when missing, 404 when unknown).  The forms
without ``.json`` also take GET and answer the result page, under the view picked by
``view_extension_id`` and its fields (default ``all-raw-data``; the JSON is always the raw
outputs).  infer_many and infer_db are inference jobs (``brewnet infer``) the request awaits
without blocking the event loop; a job that ends in Error answers 500 (with the outputs it has,
else the error JSON).  No login is needed to infer, as in DIGITS (read access only).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from .. import security
from ..app_state import server_of
from ..errors import ApiError
from ..formdata import ParsedForm, read_form
from ..jobs import states
from ..jobs.epochs import parse_epoch
from ..threads import in_thread
from ..web import generic_inference_pages as pages
from ..web.generic_views import check_view_against_dataset, parse_view_config
from . import digits_bool, posted_image, wants_json

router = APIRouter(include_in_schema=False, dependencies=[Depends(security.read_access)])
PREFIX = "/models/images/generic"


def _job_id(request: Request, form: ParsedForm) -> str:
    job_id = request.query_params.get("job_id") or form.get("job_id")
    if not job_id:
        raise ApiError(400, "job_id is a required field", field="job_id")
    return job_id


def _image(request: Request, form: ParsedForm) -> tuple[Path, str]:
    """infer_one's image and how it is named: the ``image_file`` upload, else ``image_path`` on
    the server (under a --data-root; URLs are not fetched)."""
    return posted_image(request, form, ("image_path",))


def _finite_lists(outputs: dict) -> dict:
    """``{name: nested list}``; ApiError 500 when a value is not finite (JSON has no NaN)."""
    out = {}
    for name, value in outputs.items():
        a = np.asarray(value)
        if not np.isfinite(a).all():
            raise ApiError(500, f"Inference failed: the output '{name}' has non-finite values")
        out[name] = a.tolist()
    return out


async def _view(request: Request, form: ParsedForm, model, as_json: bool) -> tuple[str, dict]:
    """The page's view and config (checked before inference runs: a bad view is a 400, not a
    wasted job); the JSON answers ignore them, as DIGITS' do."""
    if as_json:
        return "all-raw-data", {}
    view_id, config = parse_view_config({**request.query_params, **form.to_dict()})   # GET: the query
    facts = await in_thread(server_of(request).dataset_facts, model)
    check_view_against_dataset(view_id, config, facts)
    return view_id, config


async def _infer_one(request: Request, as_json: bool):
    server = server_of(request)
    form = await read_form(request, server.config)
    as_json = wants_json(request, as_json)
    try:
        model = await in_thread(server.get_job, _job_id(request, form), states.MODEL)
        image, source = _image(request, form)
        epoch = parse_epoch(form.get("snapshot_epoch"))
        view_id, config = await _view(request, form, model, as_json)
        try:
            dont_resize = digits_bool(form.get("dont_resize") or request.query_params.get("dont_resize"))
            result = await server.infer_one(model.id, image, epoch, dont_resize=dont_resize)
            answer = {"outputs": _finite_lists(result["outputs"])}
        except ApiError as e:
            if e.status < 500:
                raise
            return JSONResponse({"outputs": {}, **e.to_json()}, status_code=500)
        if as_json:
            return answer
        picture = await in_thread(pages.image_array, image)   # read before the upload is removed
    finally:
        form.cleanup()
    return await pages.render_infer_one(request, model, result, picture, view_id, config, source)


async def _infer_job(request: Request, kind: str, as_json: bool):
    server = server_of(request)
    form = await read_form(request, server.config)
    as_json = wants_json(request, as_json)
    try:
        model = await in_thread(server.get_job, _job_id(request, form), states.MODEL)
        view_id, config = await _view(request, form, model, as_json)
        user = await security.current_user(request)
        job = await in_thread(server.create_generic_inference, model.id, kind, form.to_dict(), form.upload_paths(),
                              user, digits_bool(form.get("dont_resize")))
    finally:
        form.cleanup()
    done = await server.wait_finished(job.id)
    if done.status != states.DONE:
        try:
            outputs = await in_thread(server.generic_outputs, done)
        except ApiError:
            raise ApiError(500, f"Inference failed: {done.error or done.status}") from None
        return JSONResponse(_json_safe(outputs), status_code=500)
    if not as_json:
        return await pages.render_infer_job(request, done, view_id, config)
    outputs = await in_thread(server.generic_outputs, done)
    return JSONResponse(_json_safe(outputs))


def _json_safe(value):
    """``value`` with non-finite floats as None (JSON has no NaN; DIGITS' numbers are finite)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


@router.post(f"{PREFIX}/infer_one.json")
async def infer_one_json(request: Request):
    return await _infer_one(request, True)


@router.api_route(f"{PREFIX}/infer_one", methods=["GET", "POST"])
async def infer_one(request: Request):
    return await _infer_one(request, False)


@router.post(f"{PREFIX}/infer_many.json")
async def infer_many_json(request: Request):
    return await _infer_job(request, "infer_many", True)


@router.api_route(f"{PREFIX}/infer_many", methods=["GET", "POST"])
async def infer_many(request: Request):
    return await _infer_job(request, "infer_many", False)


@router.post(f"{PREFIX}/infer_db.json")
async def infer_db_json(request: Request):
    return await _infer_job(request, "infer_db", True)


@router.api_route(f"{PREFIX}/infer_db", methods=["GET", "POST"])
async def infer_db(request: Request):
    return await _infer_job(request, "infer_db", False)
