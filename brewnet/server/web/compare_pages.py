"""The Compare page: several model jobs side by side (issue 13, item 7).

    GET /compare?job=<id>&job=<id>...          the page: a list of model jobs to pick (filter by
                                               name; the picks go into the URL), their curves
                                               overlaid (any output of any phase, x by iteration
                                               or wall time, smoothing), their settings side by
                                               side with the differing rows marked
    GET /compare/export.csv?job=..&job=..      every point of their series as CSV
    GET /compare/export-tensorboard.zip?job=.. one TensorBoard event file per job, a run folder
    GET /compare/export-tensorboard.tar.gz?..  each (see :mod:`.export`)

The page's script reads the data from ``/api/v1/jobs/<id>`` and ``/api/v1/jobs/<id>/metrics``;
the page itself only lists the model jobs.  Every route needs read access.
"""
from __future__ import annotations

from fastapi import Query, Request
from fastapi.responses import Response

from ..app_state import server_of
from ..errors import ApiError
from ..jobs import states
from ..threads import in_thread
from . import export
from .render import page
from .routers import page_router

router = page_router()

#: the most jobs one export or comparison takes
MAX_JOBS = 50


def _network(spec: dict) -> str:
    method = spec.get("method") or "standard"
    if method == "standard":
        return spec.get("standard_network") or "standard"
    if method == "previous":
        return f"previous ({spec.get('previous_job_id') or '?'})"
    if method == "pretrained":
        return f"pretrained ({spec.get('pretrained_job_id') or '?'})"
    return method


def _model_rows(server) -> list[dict]:
    """The model jobs the page offers, newest first, with network and dataset names."""
    jobs = server.list_jobs()
    names = {j.id: j.name for j in jobs if j.kind == states.DATASET}
    rows = []
    for j in jobs:
        if j.kind != states.MODEL:
            continue
        spec = j.spec or {}
        rows.append({"id": j.id, "name": j.name, "status": j.status, "created": j.created,
                     "owner": j.owner or "", "group": j.group_name or "", "network": _network(spec),
                     "dataset_id": j.dataset_id or "", "dataset": names.get(j.dataset_id or "", "")})
    return rows


@router.get("/compare")
async def compare_page(request: Request, job: list[str] = Query(default=[])):
    server = server_of(request)
    rows = await in_thread(_model_rows, server)
    known = {r["id"] for r in rows}
    selected = [j for j in dict.fromkeys(job) if j in known][:MAX_JOBS]
    missing = [j for j in dict.fromkeys(job) if j not in known]
    return page(request, "compare.html", title="Compare models", nav="compare",
                models=rows, selected=selected, missing=missing, max_jobs=MAX_JOBS)


def _series(server, job_ids: list[str]) -> list[export.JobSeries]:
    """The chosen model jobs' full series (ApiError 4xx, field "job", for a bad choice)."""
    ids = list(dict.fromkeys(job_ids))
    if not ids:
        raise ApiError(400, "Choose at least one model job (?job=<id>)", field="job")
    if len(ids) > MAX_JOBS:
        raise ApiError(400, f"At most {MAX_JOBS} jobs at once", field="job")
    out = []
    for job_id in ids:
        try:
            job = server.get_job(job_id)
        except ApiError:
            raise ApiError(404, f"No job {job_id!r}", field="job") from None
        if job.kind != states.MODEL:
            raise ApiError(400, f"Job {job_id!r} is not a model job", field="job")
        out.append(export.JobSeries(job.id, job.name, server.metrics(job)))
    return out


def _attachment(data: bytes | str, filename: str, media_type: str) -> Response:
    return Response(content=data, media_type=media_type,
                    headers={"Content-Disposition": f'attachment; filename="{filename}"',
                             "Cache-Control": "no-store"})


def _stem(jobs: list[export.JobSeries]) -> str:
    if len(jobs) == 1:
        return f"brewnet-{export.safe_name(jobs[0].job_name)}-{export.safe_name(jobs[0].job_id, 'id')}"
    return f"brewnet-compare-{len(jobs)}-models"


async def _export(request: Request, job: list[str], build, suffix: str, media_type: str) -> Response:
    """The chosen jobs' series written by ``build(jobs)``, as an attachment ``<stem><suffix>``."""
    server = server_of(request)

    def make():
        jobs = _series(server, job)
        return build(jobs), _stem(jobs)
    data, stem = await in_thread(make)
    return _attachment(data, f"{stem}{suffix}", media_type)


@router.get("/compare/export.csv")
async def export_csv(request: Request, job: list[str] = Query(default=[])):
    return await _export(request, job, lambda jobs: export.to_csv(jobs).encode("utf-8"), ".csv",
                         "text/csv; charset=utf-8")


@router.get("/compare/export-tensorboard.zip")
async def export_tensorboard_zip(request: Request, job: list[str] = Query(default=[])):
    return await _export(request, job, export.tensorboard_zip, "-tensorboard.zip", "application/zip")


@router.get("/compare/export-tensorboard.tar.gz")
async def export_tensorboard_tar_gz(request: Request, job: list[str] = Query(default=[])):
    return await _export(request, job, export.tensorboard_tar_gz, "-tensorboard.tar.gz", "application/gzip")
