"""brewnet's own JSON API under ``/api/v1`` (described at ``/api/v1/openapi.json``).

Everything DIGITS' routes do, with one shape per resource: jobs (list with filters, one job,
control, edit), datasets and models created from JSON bodies that use DIGITS' form field names,
metric series, log tails and file listings, the queue and the resource slots, the standard
networks, the linter, the learning-rate curve, and inference (one image at once; many images or
a labelled split as a job).

Access: reading needs a login once users have passwords (in local mode anyone may read, as in
DIGITS); changing needs a user, CSRF-checked when it comes with a session cookie; abort, delete,
resume and edit need the job's owner or an admin (the service checks).  Blocking work (database,
files) runs in the thread pool; the Server raises ApiError/FormErrors, which become 4xx JSON.
Its request and response models, and the builders of them, are in server/schemas.py.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse

from .. import security
from ..app_state import server_of
from ..digits.generic_model_files import analyze_generic_network
from ..digits.model_files import NetworkError, analyze_network, lint_findings, parse_network
from ..digits.networks import STANDARD_NETWORKS, network_prototxt
from ..digits.solver_form import lr_curves, parse_lr_fields
from ..errors import ApiError
from ..formdata import read_form
from ..jobs import states
from ..jobs.epochs import parse_epoch
from ..jobs.jobdir import confine_server_path
from ..schemas import (
    ClassifyOut,
    DatasetCreate,
    FileEntry,
    FileList,
    FormBody,
    InferenceStarted,
    JobDetail,
    JobList,
    JobOut,
    JobPatch,
    LintOut,
    LintRequest,
    LogOut,
    LrCurveOut,
    Message,
    MetricsOut,
    ModelCreate,
    ModelsCreated,
    NetworkOut,
    NetworkText,
    ParseError,
    QueueEntry,
    QueueOut,
    SnapshotOut,
    TestRequest,
    form_fields,
    job_out,
    queue_positions,
)
from ..store.models import Job, User
from ..threads import in_thread
from . import digits_bool

router = APIRouter(prefix="/api/v1", tags=["api"])

MAX_FILES_LISTED = 10000


# ----------------------------------------------------------------------- helpers

def _job_detail(server, job: Job) -> JobDetail:
    base = job_out(job, queue_positions(server))
    snaps = None
    if job.kind == states.MODEL:
        snaps = [{"iteration": s["iteration"], "epoch": s["epoch"]} for s in server.snapshot_list(job)]
    return JobDetail(**base.model_dump(), spec=job.spec or {}, snapshots=snaps)


# ----------------------------------------------------------------------- jobs

@router.get("/jobs", response_model=JobList)
async def list_jobs(request: Request,
                    kind: str | None = Query(None, description="dataset | model | inference"),
                    status: str | None = Query(None, description="a status, or 'active' / 'finished'"),
                    owner: str | None = None,
                    _user: User | None = Depends(security.read_access)):
    """Every job, newest first, filtered by kind, status and owner."""
    if kind is not None and kind not in states.KINDS:
        raise ApiError(400, f"Unknown kind {kind!r}: one of {', '.join(states.KINDS)}", field="kind")
    wanted = None
    if status is not None:
        wanted = {"active": states.ACTIVE, "finished": states.FINISHED}.get(status.lower())
        if wanted is None:
            if status not in states.ALL:
                raise ApiError(400, f"Unknown status {status!r}: one of {', '.join(states.ALL)}, active, finished",
                               field="status")
            wanted = (status,)
    server = server_of(request)

    def answer():
        jobs = server.list_jobs(kind)
        positions = queue_positions(server)
        return [job_out(j, positions) for j in jobs
                if (wanted is None or j.status in wanted) and (owner is None or j.owner == owner)]
    return JobList(jobs=await in_thread(answer))


@router.get("/jobs/{job_id}", response_model=JobDetail)
async def get_job(request: Request, job_id: str, _user: User | None = Depends(security.read_access)):
    """One job with its settings (and a model's snapshots)."""
    server = server_of(request)
    return await in_thread(lambda: _job_detail(server, server.get_job(job_id)))


@router.post("/datasets", response_model=JobOut, status_code=201)
async def create_dataset(request: Request, body: DatasetCreate, user: User = Depends(security.api_user)):
    """A dataset job from DIGITS' dataset fields (server paths under a --data-root); queued."""
    server = server_of(request)

    def make():
        job = server.create_dataset(form_fields(body), {}, user)
        return job_out(server.get_job(job.id), queue_positions(server))
    return await in_thread(make)


@router.post("/models", response_model=ModelsCreated, status_code=201)
async def create_models(request: Request, body: ModelCreate, user: User = Depends(security.api_user)):
    """Model jobs from DIGITS' model fields: one job, or one per learning rate x batch size of a
    sweep (all made or none); queued behind their dataset."""
    server = server_of(request)

    def make():
        jobs = server.create_models(form_fields(body), {}, user)
        positions = queue_positions(server)
        fresh = [server.get_job(j.id) for j in jobs]
        findings = {j.id: list((j.spec or {}).get("lint_findings") or []) for j in fresh
                    if (j.spec or {}).get("lint_findings")}
        return ModelsCreated(jobs=[job_out(j, positions) for j in fresh], lint_findings=findings)
    return await in_thread(make)


async def _control(request: Request, job_id: str, action: str, user: User):
    server = server_of(request)
    fn = getattr(server, action)
    await in_thread(fn, job_id, user)
    return await in_thread(lambda: job_out(server.get_job(job_id), queue_positions(server)))


@router.post("/jobs/{job_id}/abort", response_model=JobOut,
             responses={403: {"description": "not the owner, or the job is not active"}})
async def abort_job(request: Request, job_id: str, user: User = Depends(security.api_user)):
    """Abort a waiting or running job (a training snapshots first, then ends Aborted)."""
    return await _control(request, job_id, "abort", user)


@router.post("/jobs/{job_id}/resume", response_model=JobOut)
async def resume_job(request: Request, job_id: str, user: User = Depends(security.api_user)):
    """Queue an Aborted/Interrupted/Error model again; it continues from its last solverstate."""
    return await _control(request, job_id, "resume", user)


@router.post("/jobs/{job_id}/clone", response_model=JobOut, status_code=201)
async def clone_job(request: Request, job_id: str, user: User = Depends(security.api_user)):
    """A new job with the same settings (owned by the caller), queued."""
    server = server_of(request)

    def make():
        job = server.clone(job_id, user)
        return job_out(server.get_job(job.id), queue_positions(server))
    return await in_thread(make)


@router.delete("/jobs/{job_id}", response_model=Message)
async def delete_job(request: Request, job_id: str, user: User = Depends(security.api_user)):
    """Delete a finished job and its directory (refused while it runs, or when models use the dataset)."""
    await in_thread(server_of(request).delete, job_id, user)
    return Message(message="Job deleted.")


@router.patch("/jobs/{job_id}", response_model=JobOut)
async def edit_job(request: Request, job_id: str, body: JobPatch, user: User = Depends(security.api_user)):
    """Rename a job, change its notes or group (owner or admin)."""
    server = server_of(request)

    def change():
        server.edit(job_id, user, name=body.name, notes=body.notes, group=body.group)
        return job_out(server.get_job(job_id), queue_positions(server))
    return await in_thread(change)


@router.get("/jobs/{job_id}/metrics", response_model=MetricsOut)
async def job_metrics(request: Request, job_id: str,
                      max_points: int | None = Query(None, ge=2, le=1_000_000,
                                                     description="at most this many points per series; "
                                                                 "the first, last and best validation "
                                                                 "points are always kept"),
                      _user: User | None = Depends(security.read_access)):
    """A model's metric series from its metrics.jsonl (other jobs: empty series)."""
    server = server_of(request)

    def answer():
        series = server.metrics(server.get_job(job_id), max_points)
        series.setdefault("train", {})
        series.setdefault("test", {})
        return MetricsOut(job_id=job_id, **series)
    return await in_thread(answer)


@router.get("/jobs/{job_id}/log", response_model=LogOut)
async def job_log(request: Request, job_id: str, lines: int = Query(200, ge=1, le=100_000),
                  _user: User | None = Depends(security.read_access)):
    """The last ``lines`` lines of the job's log.txt."""
    server = server_of(request)

    def answer():
        text = server.log_tail(server.get_job(job_id), lines)
        return LogOut(job_id=job_id, lines=text.splitlines())
    return await in_thread(answer)


def _list_files(root: Path, job_id: str) -> FileList:
    out: list[FileEntry] = []
    truncated = False
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            try:
                st = full.lstat()
            except FileNotFoundError:
                continue   # removed while listing (a rotating snapshot, a temporary file)
            if not full.is_file() or full.is_symlink():
                continue
            if len(out) >= MAX_FILES_LISTED:
                truncated = True
                break
            rel = full.relative_to(root).as_posix()
            out.append(FileEntry(path=rel, size=st.st_size, modified=st.st_mtime, url=f"/files/{job_id}/{rel}"))
        if truncated:
            break
    return FileList(job_id=job_id, files=out, truncated=truncated)


@router.get("/jobs/{job_id}/files", response_model=FileList)
async def job_files(request: Request, job_id: str, _user: User | None = Depends(security.read_access)):
    """The files of the job's directory (each downloadable at its ``url``)."""
    server = server_of(request)

    def answer():
        server.get_job(job_id)
        return _list_files(server.job_dir(job_id), job_id)
    return await in_thread(answer)


@router.get("/jobs/{job_id}/result")
async def job_result(request: Request, job_id: str, _user: User | None = Depends(security.read_access)):
    """A finished inference job's answer: DIGITS' ``classifications`` for a classify-many,
    brewnet classify's JSON (``result``) for both kinds."""
    server = server_of(request)

    def answer():
        job = server.get_job(job_id, states.INFERENCE)
        if job.status != states.DONE:
            raise ApiError(409, f"Job {job_id} is {job.status}: its result comes when it is Done")
        path = server.job_dir(job_id) / "result.json"
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ApiError(500, f"The result of job {job_id} cannot be read ({type(e).__name__})") from None
        out = {"job_id": job_id, "kind": (job.spec or {}).get("kind"), "result": result}
        if out["kind"] == "classify_many":
            out.update(server.classifications(job))
        return out
    return await in_thread(answer)


# ----------------------------------------------------------------------- server

@router.get("/queue", response_model=QueueOut)
async def queue(request: Request, _user: User | None = Depends(security.read_access)):
    """The waiting jobs in the order they will start (position 1 first) and what each waits for."""
    return QueueOut(queue=[QueueEntry(**q) for q in await in_thread(server_of(request).scheduler.queue)])


@router.get("/resources")
async def resources(request: Request, _user: User | None = Depends(security.read_access)) -> dict[str, Any]:
    """The resource slots: ``{"cpu": {"total", "used"}, "gpus": [{"index", "job_id"}]}``."""
    return await in_thread(server_of(request).scheduler.slots)


@router.get("/networks", response_model=list[NetworkOut])
async def networks(_user: User | None = Depends(security.read_access)):
    """The standard networks brewnet builds."""
    return [NetworkOut(id=k, title=v) for k, v in STANDARD_NETWORKS.items()]


@router.get("/networks/{name}", response_model=NetworkText)
async def network(name: str, _user: User | None = Depends(security.read_access)):
    """A standard network as DIGITS-style prototxt (train/val/deploy stages)."""
    if name not in STANDARD_NETWORKS:
        raise ApiError(404, f"Unknown network {name!r}: one of {', '.join(STANDARD_NETWORKS)}")
    text = await in_thread(network_prototxt, name)
    return NetworkText(id=name, title=STANDARD_NETWORKS[name], prototxt=text)


def _parse_error(message: str) -> ParseError:
    """``Bad network: 12: message`` -> line 12."""
    text = message[len("Bad network: "):] if message.startswith("Bad network: ") else message
    m = re.match(r"(\d+):\s*(.*)", text, re.S)
    if m:
        return ParseError(line=int(m.group(1)), message=m.group(2))
    return ParseError(line=None, message=text)


def _lint(body: LintRequest) -> LintOut:
    try:
        if body.digits and body.generic:
            _net, findings = analyze_generic_network(body.prototxt)
        elif body.digits:
            _net, findings = analyze_network(body.prototxt, body.num_classes)
        else:
            findings = lint_findings(parse_network(body.prototxt), body.prototxt)
    except NetworkError as e:
        return LintOut(valid=False, parse_error=_parse_error(str(e)), findings=[])
    return LintOut(valid=True, findings=findings)


@router.post("/lint", response_model=LintOut)
async def lint_network(body: LintRequest, _user: User | None = Depends(security.read_access)):
    """``brewnet lint`` of a prototxt: findings with line numbers, or where it does not parse."""
    return await in_thread(_lint, body)


@router.post("/lr-curve", response_model=LrCurveOut)
async def lr_curve(body: FormBody, _user: User | None = Depends(security.read_access)):
    """The learning rate over a run for DIGITS' solver fields (``learning_rate`` (a list: a sweep),
    ``lr_policy`` and its ``lr_*`` parameters)."""
    fields = form_fields(body)

    def answer():
        rates, _policy, _params = parse_lr_fields(fields)
        return LrCurveOut(learning_rates=[float(r) for r in rates], curves=lr_curves(fields))
    return await in_thread(answer)


# ----------------------------------------------------------------------- models: inference, files

async def _read_form(request: Request):
    return await read_form(request, server_of(request).config)


def _epoch_field(value) -> float | None:
    return parse_epoch(value)


def _image_of(server, form) -> Path:
    """The ``image_file`` upload, else ``image_path`` on the server (under a --data-root)."""
    up = form.files.get("image_file")
    if up is not None and (up.size > 0 or up.filename):
        return up.path
    path = (form.get("image_path") or "").strip()
    if not path:
        raise ApiError(400, "Send the image as the image_file upload, or image_path on the server",
                       field="image_file")
    full = confine_server_path(path, server.config.data_roots, "image_path")
    if not full.is_file():
        raise ApiError(400, f"Image not found: {path}", field="image_path")
    return full


@router.post("/models/{job_id}/classify", response_model=ClassifyOut,
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                 "type": "object", "properties": {
                     "image_file": {"type": "string", "format": "binary"},
                     "image_path": {"type": "string", "description": "server path under a --data-root"},
                     "snapshot_epoch": {"type": "number"},
                     "show_visualizations": {"type": "boolean"}}}}}}})
async def classify(request: Request, job_id: str, _user: User | None = Depends(security.read_access)):
    """Classify one image (uploaded as ``image_file``, or ``image_path`` on the server) with a
    model's snapshot (``snapshot_epoch``, default the newest): the top 5 predictions, and the
    per-layer visualisations when ``show_visualizations`` is set."""
    server = server_of(request)
    form = await _read_form(request)
    try:
        model = await in_thread(server.get_job, job_id, states.MODEL)
        image = _image_of(server, form)
        epoch = _epoch_field(form.get("snapshot_epoch"))
        visualize = digits_bool(form.get("show_visualizations"))
        result = await server.classify_one(model.id, image, epoch, visualize=visualize)
    finally:
        form.cleanup()
    return ClassifyOut(predictions=result.get("predictions") or [], snapshot_epoch=result.get("snapshot_epoch"),
                       visualizations=result.get("visualizations") if visualize else None,
                       visualization_dir=result.get("visualization_dir"))


async def _start_inference(request: Request, job_id: str, kind: str, user: User, form_dict: dict, uploads: dict):
    server = server_of(request)

    def make():
        job = server.create_inference(job_id, kind, form_dict, uploads, user)
        return job_out(server.get_job(job.id), queue_positions(server))
    job = await in_thread(make)
    return JSONResponse(InferenceStarted(job_id=job.id, job=job).model_dump(), status_code=202)


@router.post("/models/{job_id}/classify-many", response_model=InferenceStarted, status_code=202,
             openapi_extra={"requestBody": {"content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["image_list"], "properties": {
                     "image_list": {"type": "string", "format": "binary",
                                    "description": "lines 'path [label]'"},
                     "image_folder": {"type": "string"}, "num_test_images": {"type": "integer"},
                     "snapshot_epoch": {"type": "number"}}}}}}})
async def classify_many(request: Request, job_id: str, user: User = Depends(security.api_user)):
    """Classify a list of images as an inference job (progress, abort); 202 with its id.  The
    answer comes from ``GET /api/v1/jobs/{id}/result`` once it is Done."""
    form = await _read_form(request)
    try:
        return await _start_inference(request, job_id, "classify_many", user, form.to_dict(), form.upload_paths())
    finally:
        form.cleanup()


@router.post("/models/{job_id}/test", response_model=InferenceStarted, status_code=202)
async def test_model(request: Request, job_id: str, body: TestRequest, user: User = Depends(security.api_user)):
    """Classify a labelled split of a dataset (default: the model's validation set) as an
    inference job; 202 with its id."""
    fields = {"split": body.split}
    if body.dataset:
        fields["dataset"] = body.dataset
    if body.snapshot_epoch is not None:
        fields["snapshot_epoch"] = str(body.snapshot_epoch)
    return await _start_inference(request, job_id, "test", user, fields, {})


@router.get("/models/{job_id}/snapshots", response_model=list[SnapshotOut])
async def model_snapshots(request: Request, job_id: str, _user: User | None = Depends(security.read_access)):
    """A model's snapshots, oldest first."""
    server = server_of(request)

    def answer():
        job = server.get_job(job_id, states.MODEL)
        return [SnapshotOut(iteration=s["iteration"], epoch=s["epoch"], file=Path(s["path"]).name)
                for s in server.snapshot_list(job)]
    return await in_thread(answer)


@router.get("/models/{job_id}/bundle.tar.gz", response_class=FileResponse,
            responses={200: {"content": {"application/gzip": {}}, "description": "the deploy archive"}})
async def model_bundle(request: Request, job_id: str,
                       epoch: float | None = Query(None, description="the snapshot's epoch; default the newest"),
                       _user: User | None = Depends(security.read_access)):
    """The model's deploy archive for one snapshot (prototxts, labels, mean, weights, info.json)."""
    path = await server_of(request).download_async(job_id, epoch, "tar.gz")
    return FileResponse(path, filename=path.name, media_type="application/gzip")
