"""The bodies of brewnet's JSON API under ``/api/v1`` (routes/api_v1.py): its request and response
models (pydantic; they make ``/api/v1/openapi.json``), and what builds or reads them:
:func:`job_out` (a job as the API and the web pages show it, with :func:`queue_positions`) and
:func:`form_fields` (a JSON body as DIGITS' form).  Below both the routes and the pages.
"""
from __future__ import annotations

from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field

from .errors import ApiError
from .jobs import states
from .store.models import Job

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
    generic: bool = Field(default=False, description="with digits: a generic net (DIGITS' generic rules: "
                                                     "Data layers by top, no Softmax needed)")


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


# ----------------------------------------------------------------------- builders

def queue_positions(server) -> dict[str, dict]:
    """The scheduler's queue by job id (what :func:`job_out` reads a job's place from)."""
    return {q["id"]: q for q in server.scheduler.queue()}


def job_out(job: Job, positions: dict[str, dict]) -> JobOut:
    """The API's view of a job (``positions``: the scheduler's queue by job id)."""
    q = positions.get(job.id) or {}
    return JobOut(
        id=job.id, kind=job.kind, type=states.job_type_name(job), name=job.name,
        group=job.group_name or "", notes=job.notes or "", owner=job.owner, status=job.status,
        status_history=[list(x) for x in (job.status_history or [])], progress=float(job.progress or 0.0),
        queue_position=q.get("position"), waiting_for=q.get("waiting_for"), created=job.created,
        started=job.started, finished=job.finished, dataset_id=job.dataset_id, parent_id=job.parent_id,
        error=job.error, resources=job.resources or {}, assigned=job.assigned or {}, summary=job.summary or {})



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
