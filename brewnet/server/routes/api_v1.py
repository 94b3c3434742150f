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
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Union

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from .. import security
from ..errors import ApiError
from ..jobs import states
from ..jobs.epochs import parse_epoch
from ..store.models import Job, User
from ..threads import in_thread
from . import server_of

router = APIRouter(prefix="/api/v1", tags=["api"])

MAX_FILES_LISTED = 10000
Scalar = Union[str, int, float, bool]
FieldValue = Union[Scalar, list[Scalar], None]


# ----------------------------------------------------------------------- models

class JobOut(BaseModel):
    """One job: its state, progress, place in the queue, owner and times (Unix seconds)."""
    id: str
    kind: str = Field(description="dataset | model | inference")
    type: str
    name: str
    group: str
    notes: str
    owner: str | None
    status: str = Field(description="Initialized | Waiting | Running | Done | Aborted | Error | Interrupted")
    status_history: list[list[Any]] = Field(description="[[status, time], ...]")
    progress: float = Field(description="0..1")
    queue_position: int | None = Field(description="1 = next to start; None when not waiting")
    waiting_for: str | None = None
    created: float
    started: float | None
    finished: float | None
    dataset_id: str | None
    parent_id: str | None
    error: str | None
    resources: dict[str, Any]
    assigned: dict[str, Any]
    summary: dict[str, Any]


class JobDetail(JobOut):
    spec: dict[str, Any] = Field(description="the job's settings (the form's fields, resolved)")
    snapshots: list[dict[str, Any]] | None = Field(default=None, description="model jobs: [{iteration, epoch}]")


class JobList(BaseModel):
    jobs: list[JobOut]


class FormBody(BaseModel):
    """Fields named as in DIGITS' form; any other DIGITS field is accepted as well."""
    model_config = ConfigDict(extra="allow")
    group_name: str | None = None
    clone: str | None = Field(default=None, description="copy this job's settings, then apply the given fields")


class DatasetCreate(FormBody):
    """DIGITS' image classification dataset form (digits-rest.md §3), as JSON."""
    dataset_name: str | None = None
    method: str | None = Field(default=None, description="folder | textfile")
    folder_train: str | None = Field(default=None, description="server folder under a --data-root")
    folder_pct_val: FieldValue = None
    folder_pct_test: FieldValue = None
    has_val_folder: FieldValue = None
    folder_val: str | None = None
    has_test_folder: FieldValue = None
    folder_test: str | None = None
    textfile_use_local_files: FieldValue = None
    textfile_local_train_images: str | None = None
    textfile_local_val_images: str | None = None
    textfile_local_test_images: str | None = None
    textfile_local_labels_file: str | None = None
    resize_channels: FieldValue = None
    resize_width: FieldValue = None
    resize_height: FieldValue = None
    resize_mode: str | None = None
    encoding: str | None = None


class ModelCreate(FormBody):
    """DIGITS' image classification model form (digits-rest.md §4), as JSON.  A list of learning
    rates and/or batch sizes is a sweep: one job each."""
    model_name: str | None = None
    dataset: str | None = Field(default=None, description="the dataset job's id")
    method: str | None = Field(default=None, description="standard | previous | pretrained | custom")
    standard_networks: str | None = None
    previous_networks: str | None = None
    custom_network: str | None = Field(default=None, description="prototxt text")
    train_epochs: FieldValue = None
    snapshot_interval: FieldValue = None
    val_interval: FieldValue = None
    batch_size: FieldValue = None
    batch_accumulation: FieldValue = None
    solver_type: str | None = None
    learning_rate: FieldValue = None
    lr_policy: str | None = None
    use_mean: str | None = None
    crop_size: FieldValue = None
    random_seed: FieldValue = None
    shuffle: FieldValue = None
    bn_recalibrate: FieldValue = None
    select_gpus: FieldValue = None
    select_gpu_count: FieldValue = None


class ModelsCreated(BaseModel):
    jobs: list[JobOut]
    lint_findings: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict, description="job id -> brewnet lint's findings of its custom network")


class JobPatch(BaseModel):
    name: str | None = None
    notes: str | None = None
    group: str | None = None


class Message(BaseModel):
    message: str


class MetricsOut(BaseModel):
    """Series by phase: ``train``, ``test``, and any other phase the trainer wrote (e.g.
    ``test_moving_bn``: validation with the moving-average BatchNorm statistics) under its own key."""
    model_config = ConfigDict(extra="allow")
    job_id: str
    train: dict[str, list[list[Any]]] = Field(description="name -> [[iteration, value, time], ...]")
    test: dict[str, list[list[Any]]]


class LogOut(BaseModel):
    job_id: str
    lines: list[str]


class FileEntry(BaseModel):
    path: str = Field(description="relative to the job's directory")
    size: int
    modified: float
    url: str


class FileList(BaseModel):
    job_id: str
    files: list[FileEntry]
    truncated: bool


class QueueEntry(BaseModel):
    id: str
    name: str
    kind: str
    position: int
    waiting_for: str | None = None


class QueueOut(BaseModel):
    queue: list[QueueEntry]


class NetworkOut(BaseModel):
    id: str
    title: str


class NetworkText(NetworkOut):
    prototxt: str


class LintRequest(BaseModel):
    prototxt: str = Field(max_length=4 * 1024 * 1024)
    digits: bool = Field(default=False, description="a DIGITS-style net with train/val/deploy stages: "
                                                    "split as a model job would, then linted")
    num_classes: int = Field(default=2, ge=1, description="for InnerProducts without num_output (digits)")


class ParseError(BaseModel):
    line: int | None
    message: str


class LintOut(BaseModel):
    valid: bool = Field(description="parsed (and, for digits, split) without error")
    parse_error: ParseError | None = None
    findings: list[dict[str, Any]] = Field(description="[{rule, severity, layer, line?, message, fix}]")


class LrCurveOut(BaseModel):
    learning_rates: list[float]
    curves: list[list[float]] = Field(description="per learning rate: 101 values, at 0 %, 1 %, ... 100 % of the run")


class ClassifyOut(BaseModel):
    predictions: list[list[Any]] = Field(description="[[label, confidence %], ...] best first")
    snapshot_epoch: float | int | None = None
    visualizations: list[dict[str, Any]] | None = None
    visualization_dir: str | None = None


class InferenceStarted(BaseModel):
    job_id: str
    job: JobOut


class TestRequest(BaseModel):
    dataset: str | None = Field(default=None, description="a Done dataset job (default: the model's)")
    split: str = Field(default="val", description="train | val | test")
    snapshot_epoch: float | None = None


class SnapshotOut(BaseModel):
    iteration: int
    epoch: float | int
    file: str


# ----------------------------------------------------------------------- helpers

def _positions(server) -> dict[str, dict]:
    return {q["id"]: q for q in server.scheduler.queue()}


def job_out(job: Job, positions: dict[str, dict]) -> JobOut:
    """The API's view of a job (``positions``: the scheduler's queue by job id)."""
    q = positions.get(job.id) or {}
    return JobOut(
        id=job.id, kind=job.kind, type=states.TYPE_NAMES.get(job.kind, job.kind), name=job.name,
        group=job.group_name or "", notes=job.notes or "", owner=job.owner, status=job.status,
        status_history=[list(x) for x in (job.status_history or [])], progress=float(job.progress or 0.0),
        queue_position=q.get("position"), waiting_for=q.get("waiting_for"), created=job.created,
        started=job.started, finished=job.finished, dataset_id=job.dataset_id, parent_id=job.parent_id,
        error=job.error, resources=job.resources or {}, assigned=job.assigned or {}, summary=job.summary or {})


def _job_detail(server, job: Job) -> JobDetail:
    base = job_out(job, _positions(server))
    snaps = None
    if job.kind == states.MODEL:
        snaps = [{"iteration": s["iteration"], "epoch": s["epoch"]} for s in server.snapshot_list(job)]
    return JobDetail(**base.model_dump(), spec=job.spec or {}, snapshots=snaps)


def form_fields(body: BaseModel) -> dict[str, Any]:
    """A JSON body as DIGITS' form: None left out, booleans as DIGITS' checkboxes ('y' / 'false'),
    numbers as text, lists (sweeps, GPU lists) as lists of text."""
    def text(v):
        if isinstance(v, bool):
            return "y" if v else "false"
        return str(v)
    out: dict[str, Any] = {}
    for k, v in body.model_dump(exclude_none=True).items():
        if isinstance(v, (dict,)):
            raise ApiError(400, f"Field {k!r} must be a value or a list of values, not an object", field=k)
        if isinstance(v, list):
            if any(isinstance(x, (dict, list)) for x in v):
                raise ApiError(400, f"Field {k!r} must be a list of plain values", field=k)
            out[k] = [text(x) for x in v]
        else:
            out[k] = text(v)
    return out


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
        positions = _positions(server)
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
        return job_out(server.get_job(job.id), _positions(server))
    return await in_thread(make)


@router.post("/models", response_model=ModelsCreated, status_code=201)
async def create_models(request: Request, body: ModelCreate, user: User = Depends(security.api_user)):
    """Model jobs from DIGITS' model fields: one job, or one per learning rate x batch size of a
    sweep (all made or none); queued behind their dataset."""
    server = server_of(request)

    def make():
        jobs = server.create_models(form_fields(body), {}, user)
        positions = _positions(server)
        fresh = [server.get_job(j.id) for j in jobs]
        findings = {j.id: list((j.spec or {}).get("lint_findings") or []) for j in fresh
                    if (j.spec or {}).get("lint_findings")}
        return ModelsCreated(jobs=[job_out(j, positions) for j in fresh], lint_findings=findings)
    return await in_thread(make)


async def _control(request: Request, job_id: str, action: str, user: User):
    server = server_of(request)
    fn = getattr(server, action)
    await in_thread(fn, job_id, user)
    return await in_thread(lambda: job_out(server.get_job(job_id), _positions(server)))


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
        return job_out(server.get_job(job.id), _positions(server))
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
        return job_out(server.get_job(job_id), _positions(server))
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
    from ..jobs.jobdir import job_dir

    server = server_of(request)

    def answer():
        server.get_job(job_id)
        return _list_files(job_dir(server.config, job_id), job_id)
    return await in_thread(answer)


@router.get("/jobs/{job_id}/result")
async def job_result(request: Request, job_id: str, _user: User | None = Depends(security.read_access)):
    """A finished inference job's answer: DIGITS' ``classifications`` for a classify-many,
    brewnet classify's JSON (``result``) for both kinds."""
    import json

    from ..jobs.jobdir import job_dir

    server = server_of(request)

    def answer():
        job = server.get_job(job_id, states.INFERENCE)
        if job.status != states.DONE:
            raise ApiError(409, f"Job {job_id} is {job.status}: its result comes when it is Done")
        path = job_dir(server.config, job_id) / "result.json"
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
    from ..digits.networks import STANDARD_NETWORKS

    return [NetworkOut(id=k, title=v) for k, v in STANDARD_NETWORKS.items()]


@router.get("/networks/{name}", response_model=NetworkText)
async def network(name: str, _user: User | None = Depends(security.read_access)):
    """A standard network as DIGITS-style prototxt (train/val/deploy stages)."""
    from ..digits.networks import STANDARD_NETWORKS, network_prototxt

    if name not in STANDARD_NETWORKS:
        raise ApiError(404, f"Unknown network {name!r}: one of {', '.join(STANDARD_NETWORKS)}")
    text = await in_thread(network_prototxt, name)
    return NetworkText(id=name, title=STANDARD_NETWORKS[name], prototxt=text)


def _parse_error(message: str) -> ParseError:
    """``Bad network: 12: message`` -> line 12."""
    import re

    text = message[len("Bad network: "):] if message.startswith("Bad network: ") else message
    m = re.match(r"(\d+):\s*(.*)", text, re.S)
    if m:
        return ParseError(line=int(m.group(1)), message=m.group(2))
    return ParseError(line=None, message=text)


def _lint(body: LintRequest) -> LintOut:
    from ..digits.model_files import analyze_network, lint_findings, parse_network
    from ..digits.specs import NetworkError

    try:
        if body.digits:
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
    from ..digits.solver_form import lr_curves, parse_lr_fields

    fields = form_fields(body)

    def answer():
        rates, _policy, _params = parse_lr_fields(fields)
        return LrCurveOut(learning_rates=[float(r) for r in rates], curves=lr_curves(fields))
    return await in_thread(answer)


# ----------------------------------------------------------------------- models: inference, files

async def _read_form(request: Request):
    from ..formdata import read_form

    return await read_form(request, server_of(request).config)


def _epoch_field(value) -> float | None:
    return parse_epoch(value)


def _image_of(server, form) -> Path:
    """The ``image_file`` upload, else ``image_path`` on the server (under a --data-root)."""
    from ..jobs.jobdir import confine_server_path

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
    from . import digits_bool

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
        return job_out(server.get_job(job.id), _positions(server))
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
