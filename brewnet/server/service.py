"""What the server does, shared by DIGITS' routes and ``/api/v1``: list, create, abort, resume,
clone, delete and edit jobs, their DIGITS JSON, metrics and logs, classify and download.

Every method raises :class:`~brewnet.server.errors.ApiError` / ``FormErrors`` for a bad request;
routes only translate HTTP to these calls and back.

Job creation (dataset, model, inference): a new id, its directory, the spec from DIGITS' form
(:mod:`brewnet.server.digits`), the job's files, then its row and ``job.json`` in one
transaction, then :meth:`Scheduler.submit`.  A creation that fails removes its directory, so
nothing half made stays behind.  A model whose dataset is not finished yet gets its prototxt
and solver files when the dataset is Done (DIGITS' epochs -> iterations needs the dataset's
size): a scheduler listener writes them before the model can start.
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import select

from .errors import ApiError, FormErrors
from .jobs import states
from .jobs.epochs import epoch_label, parse_epoch, snapshot_epoch
from .jobs.jobdir import confine_server_path, job_dir, job_to_dict, write_job_json, write_json_atomic
from .jobs.progress import metric_series, read_metrics, read_plan
from .jobs.tasks import python_path, snapshots
from .store.models import Job

log = logging.getLogger("brewnet.server")

DIGITS_VERSION = "6.1.1"          # the DIGITS whose REST API we answer
FORM_FILE = "form.json"           # a job's submitted form fields (clone reads them)
DELETED_PREFIX = ".deleted-"      # a job directory being removed (never re-imported)
ABORT_WAIT_S = 60.0               # delete of a job being aborted waits this long for its end
DELETE_GRACE_S = 5.0              # a job aborted by its delete: SIGTERM, then SIGKILL after this
VIS_KEEP = 5                      # classify-one visualisation folders kept per model
#: form fields that are not settings (never saved for a clone)
NOT_SETTINGS = {"username", "csrf_token", "clone", "job_id"}


#: predictions per image in DIGITS' classify answers
DIGITS_TOP = 5
#: an inference job keeps every class's probability for datasets of up to this many classes
TOP_KEPT_MAX = 100


def _now() -> float:
    return time.time()


class Server:
    """The server's services over its config, database, scheduler and inference pool."""

    def __init__(self, config, db, scheduler, pool):
        self.config = config
        self.db = db
        self.scheduler = scheduler
        self.pool = pool
        self._files_lock = threading.Lock()      # model files written once (creation vs listener)
        self._metrics_cache: dict[str, tuple[int, list[dict]]] = {}
        self._metrics_lock = threading.Lock()
        self._aborting: set[str] = set()         # abort asked for, job not ended yet
        scheduler.listeners.append(self._on_job_change)

    # ------------------------------------------------------------------ lookups

    def _dir(self, job_id: str) -> Path:
        return job_dir(self.config, job_id)

    def list_jobs(self, kind: str | None = None) -> list[Job]:
        """Every job (of ``kind``), newest first."""
        with self.db.session() as s:
            q = select(Job).order_by(Job.created.desc(), Job.id.desc())
            if kind is not None:
                q = q.where(Job.kind == kind)
            jobs = list(s.execute(q).scalars().all())
            s.expunge_all()
        return jobs

    def get_job(self, job_id: str, kind: str | None = None) -> Job:
        """The job ``job_id`` (of ``kind`` when given), else ApiError 404 "Job not found"."""
        self._dir(job_id)  # an id not shaped like one is a 404 too
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or (kind is not None and job.kind != kind):
                raise ApiError(404, "Job not found")
            s.expunge(job)
        return job

    def find_job(self, job_id: str) -> Job | None:
        """The job or None (no error)."""
        try:
            return self.get_job(job_id)
        except ApiError:
            return None

    def job_dict(self, job: Job) -> dict:
        """job.json's dict of ``job`` plus its ``directory``."""
        d = job_to_dict(job)
        d["directory"] = str(self._dir(job.id))
        return d

    def lookup_job(self, job_id: str) -> dict | None:
        """For the forms: a job's dict with its directory, snapshots (model) and dataset summary
        (dataset), or None when there is no such job."""
        job = self.find_job(str(job_id or ""))
        if job is None:
            return None
        d = self.job_dict(job)
        if job.kind == states.MODEL:
            d["snapshots"] = self.snapshot_list(job)
        elif job.kind == states.DATASET:
            d.update(self._dataset_info(job))
        return d

    # ------------------------------------------------------------------ datasets' facts

    def _dataset_info(self, ds: Job) -> dict:
        """What a model needs of its dataset: the summary (from the scheduler, else from the
        files), labels, image size, counts, the LMDBs and the mean file."""
        from .scheduler import dataset_summary

        summary = dict(ds.summary or {})
        if not summary and ds.status == states.DONE:
            summary = dataset_summary(self._dir(ds.id))
        d = self._dir(ds.id)
        image = summary.get("image") or {}
        return {"summary": summary, "labels": summary.get("labels") or [],
                "num_classes": summary.get("num_classes") or len(summary.get("labels") or []),
                "image": image, "counts": summary.get("counts") or {},
                "dbs": summary.get("dbs") or {}, "mean_file": summary.get("mean_file"),
                "labels_file": str(d / "labels.txt"), "resize_mode": summary.get("resize_mode")}

    def snapshot_list(self, job: Job) -> list[dict]:
        """A model's snapshots ``[{"iteration", "epoch", "path"}]``, ascending (from its files:
        a snapshot written after the last summary counts too)."""
        d = self._dir(job.id)
        plan = read_plan(d)
        out = []
        for it, path in snapshots(d):
            e = snapshot_epoch(it, plan, (job.spec or {}).get("train_epochs"))
            out.append({"iteration": it, "epoch": e if e is not None else it, "path": str(path)})
        return out

    def snapshot_for_epoch(self, job: Job, epoch: float | None) -> dict:
        """The snapshot of ``epoch`` (None: the newest); ApiError 404 when there is none."""
        snaps = self.snapshot_list(job)
        if not snaps:
            raise ApiError(404, f"Model {job.id} has no snapshot yet")
        if epoch is None:
            return snaps[-1]
        for sn in snaps:
            if abs(float(sn["epoch"]) - float(epoch)) < 1e-6:
                return sn
        raise ApiError(404, f"Model {job.id} has no snapshot at epoch {epoch_label(epoch)} "
                            f"(it has {', '.join(str(s['epoch']) for s in snaps)})")

    # ------------------------------------------------------------------ creation helpers

    def _new_dir(self) -> tuple[str, Path]:
        from .store.db import new_job_id

        self.config.ensure_dirs()
        for _ in range(20):
            job_id = new_job_id()
            d = self._dir(job_id)
            try:
                d.mkdir()
            except FileExistsError:
                continue
            with self.db.session() as s:
                if s.get(Job, job_id) is None:
                    return job_id, d
            shutil.rmtree(d, ignore_errors=True)
        raise ApiError(500, "could not allocate a job id")

    @staticmethod
    def _move_uploads(uploads: Mapping[str, Path], jobdir: Path, copy: bool = False) -> dict[str, str]:
        """The uploads moved (or copied) into ``<jobdir>/uploads/`` as ``<field>__<name>``."""
        out: dict[str, str] = {}
        if not uploads:
            return out
        target = jobdir / "uploads"
        target.mkdir(exist_ok=True)
        from .formdata import safe_filename

        for fld, path in uploads.items():
            path = Path(path)
            dest = target / f"{safe_filename(fld)}__{safe_filename(path.name)}"
            if copy:
                shutil.copyfile(path, dest)
            else:
                shutil.move(str(path), dest)
            out[fld] = str(dest)
        return out

    def _saved_form(self, source_id: str) -> tuple[Job, dict, dict[str, Path]]:
        """A clone source's saved form fields and its uploads (field -> file)."""
        src = self.get_job(source_id)
        d = self._dir(src.id)
        try:
            saved = json.loads((d / FORM_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ApiError(400, f"Job {source_id} has no saved form to clone") from None
        fields = dict(saved.get("fields") or {})
        uploads = {}
        for fld, rel in (saved.get("uploads") or {}).items():
            p = d / rel
            if p.is_file():
                uploads[fld] = p
        return src, fields, uploads

    def _merge_clone(self, form: Mapping[str, str], uploads: Mapping[str, Path], kind: str
                     ) -> tuple[dict, dict, bool]:
        """DIGITS' ``clone=<id>``: that job's saved fields copied over the submitted ones; its
        uploads used for fields that carry none.  Returns (form, uploads, uploads_are_copies)."""
        form = dict(form)
        clone = str(form.pop("clone", "") or "").strip()
        if not clone:
            return form, dict(uploads), False
        src, saved, saved_uploads = self._saved_form(clone)
        if src.kind != kind:
            raise ApiError(400, f"Job {clone} is a {src.kind} job, not a {kind} job", field="clone")
        form.update(saved)
        ups = dict(saved_uploads)
        ups.update(uploads)
        return form, ups, True

    @staticmethod
    def _save_form(jobdir: Path, form: Mapping[str, str], uploads: Mapping[str, str]) -> None:
        fields = {k: v for k, v in form.items() if k not in NOT_SETTINGS}
        rel = {k: os.path.relpath(v, jobdir) for k, v in uploads.items()}
        write_json_atomic(jobdir / FORM_FILE, {"fields": fields, "uploads": rel})

    def _insert(self, job: Job, jobdir: Path) -> None:
        """The row and job.json, one transaction (job.json written before the commit: a crash
        between leaves a directory recovery re-imports, never a row without its file)."""
        with self.db.session() as s:
            s.add(job)
            s.flush()
            write_job_json(jobdir, job)
            s.expunge(job)

    @staticmethod
    def _owner(user) -> str | None:
        return getattr(user, "name", None) if user is not None else None

    def _gpu_resources(self, spec) -> dict:
        """A model's wanted resources from DIGITS' select_gpus / select_gpu_count.  On a server
        without GPUs a count means the CPU (as DIGITS without GPUs); named GPUs it lacks are a
        form error."""
        have = [int(g) for g in self.config.gpus]
        wanted = [int(g) for g in (getattr(spec, "select_gpus", None) or [])]
        if wanted:
            missing = [g for g in wanted if g not in have]
            if missing:
                raise FormErrors({"select_gpus": [
                    f"GPU {', '.join(map(str, missing))} is not available on this server "
                    f"(it has {', '.join(map(str, have)) or 'no GPU'})"]})
            return {"gpus": wanted}
        count = int(getattr(spec, "select_gpu_count", 0) or 0)
        if not have or count <= 0:
            return {}
        if count > len(have):
            raise FormErrors({"select_gpu_count": [f"{count} GPUs asked for, this server has {len(have)}"]})
        return {"gpu_count": count}

    # ------------------------------------------------------------------ create: datasets

    def create_dataset(self, form: Mapping[str, str], uploads: Mapping[str, Path], user) -> Job:
        """A dataset job from DIGITS' dataset form (``uploads``: field -> saved file); queued."""
        from .digits.forms import parse_dataset_form

        form, uploads, copies = self._merge_clone(form, uploads, states.DATASET)
        job_id, d = self._new_dir()
        try:
            moved = self._move_uploads(uploads, d, copy=copies)
            spec = parse_dataset_form(form, moved, self.config)
            self._save_form(d, form, moved)
            now = _now()
            job = Job(id=job_id, kind=states.DATASET, name=spec.name, group_name=spec.group or "",
                      notes="", owner=self._owner(user), status=states.INITIALIZED,
                      status_history=[[states.INITIALIZED, now]], created=now, progress=0.0,
                      resources={}, assigned={}, spec=spec.to_json(), summary={})
            self._insert(job, d)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        self.scheduler.submit(job_id)
        return job   # as created (DIGITS answers "Initialized")

    # ------------------------------------------------------------------ create: models

    def _dataset_for_model(self, dataset_id: str) -> Job:
        ds = self.find_job(dataset_id)
        if ds is None or ds.kind != states.DATASET:
            raise FormErrors({"dataset": ["Not a valid choice"]})
        return ds

    def _previous_dict(self, spec) -> dict | None:
        prev_id = getattr(spec, "previous_job_id", None) or getattr(spec, "pretrained_job_id", None)
        return self.lookup_job(prev_id) if prev_id else None

    def _write_model_files(self, jobdir: Path, spec, ds: Job):
        from .digits.model_files import write_model_files

        dataset = {**self.job_dict(ds), **self._dataset_info(ds)}
        return write_model_files(jobdir, spec, dataset, self._previous_dict(spec))

    def create_models(self, form: Mapping[str, str], uploads: Mapping[str, Path], user) -> list[Job]:
        """Model jobs from DIGITS' model form: one per learning rate x batch size of a sweep;
        all made or none.  The prototxts and solver are written now when the dataset is Done,
        else when it is."""
        from .digits.forms import parse_model_form
        from .jobs.specs import ModelSpec

        form, uploads, copies = self._merge_clone(form, uploads, states.MODEL)
        specs = parse_model_form(form, {k: str(v) for k, v in uploads.items()}, self.config,
                                 self.lookup_job)
        made: list[tuple[str, Path]] = []
        created: list[Job] = []
        try:
            for spec in specs:
                ds = self._dataset_for_model(spec.dataset_id)
                resources = self._gpu_resources(spec)
                job_id, d = self._new_dir()
                made.append((job_id, d))
                moved = self._move_uploads(uploads, d, copy=True)
                # the spec names the uploads where parse_model_form saw them: point at the copies
                sj = spec.to_json()
                repl = {str(uploads[k]): v for k, v in moved.items()}
                sj = _replace_strings(sj, repl)
                spec = ModelSpec.from_json(sj)
                if ds.status == states.DONE:
                    self._write_model_files(d, spec, ds)
                fields = dict(form)
                # a sweep's job saves its own learning rate and batch size (a clone is one job)
                for key in ("learning_rate", "batch_size"):
                    if key in fields and getattr(spec, key, None) is not None:
                        fields[key] = str(getattr(spec, key))
                self._save_form(d, fields, moved)
                now = _now()
                prev = getattr(spec, "previous_job_id", None) or getattr(spec, "pretrained_job_id", None)
                job = Job(id=job_id, kind=states.MODEL, name=spec.name, group_name=spec.group or "",
                          notes="", owner=self._owner(user), status=states.INITIALIZED,
                          status_history=[[states.INITIALIZED, now]], created=now, progress=0.0,
                          dataset_id=ds.id, parent_id=prev or None, resources=resources,
                          assigned={}, spec=spec.to_json(), summary={})
                self._insert(job, d)
                created.append(job)
        except BaseException:
            self._remove_made(made)
            raise
        for job_id, d in made:
            # the dataset may have finished while the rows were written: files now, if so
            self._ensure_model_files(job_id)
            self.scheduler.submit(job_id)
        return created   # as created (DIGITS answers "Initialized")

    def _remove_made(self, made: list[tuple[str, Path]]) -> None:
        with self.db.session() as s:
            for job_id, _ in made:
                row = s.get(Job, job_id)
                if row is not None:
                    s.delete(row)
        for _, d in made:
            shutil.rmtree(d, ignore_errors=True)

    def _ensure_model_files(self, job_id: str) -> None:
        """Write a queued model's files once its dataset is Done (no-op when written); a model
        whose files cannot be made ends Error with the reason."""
        with self._files_lock:
            job = self.find_job(job_id)
            if job is None or job.kind != states.MODEL or job.status not in (states.INITIALIZED, states.WAITING):
                return
            d = self._dir(job_id)
            if (d / "plan.json").is_file():
                return
            ds = self.find_job(job.dataset_id or "")
            if ds is None or ds.status != states.DONE:
                return
            try:
                from .jobs.specs import ModelSpec

                self._write_model_files(d, ModelSpec.from_json(job.spec or {}), ds)
            except Exception as e:  # noqa: BLE001 - the job records why it cannot run
                msg = e.message if isinstance(e, ApiError) else f"{type(e).__name__}: {e}"
                if isinstance(e, FormErrors):
                    msg = "; ".join(f"{k}: {' '.join(v)}" for k, v in e.errors.items())
                log.warning("model %s: its files could not be written: %s", job_id, msg)
                self._set_error(job_id, f"could not write the model's files: {msg}")

    def _set_error(self, job_id: str, message: str) -> None:
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None or job.status in states.FINISHED:
                return
            now = _now()
            job.status_history = [list(x) for x in (job.status_history or [])] + [[states.ERROR, now]]
            job.status = states.ERROR
            job.error = message
            job.finished = now
            job.queue_seq = None
            s.flush()
            write_job_json(self._dir(job_id), job)

    def _on_job_change(self, d: dict) -> None:
        """Scheduler listener: a dataset that became Done gets its waiting models' files written
        before the scheduler can start them (called in the scheduler's tick, before it
        schedules)."""
        if d.get("status") in states.FINISHED:
            self._aborting.discard(d.get("id"))
        if d.get("kind") != states.DATASET or d.get("status") != states.DONE:
            return
        with self.db.session() as s:
            ids = list(s.execute(select(Job.id).where(
                Job.kind == states.MODEL, Job.dataset_id == d["id"],
                Job.status.in_([states.INITIALIZED, states.WAITING]))).scalars().all())
        for job_id in ids:
            self._ensure_model_files(job_id)

    def prepare_pending_models(self) -> None:
        """At start-up (before the scheduler runs): queued models of finished datasets that have
        no files yet (the server was killed between the two) get them."""
        with self.db.session() as s:
            ids = list(s.execute(select(Job.id).where(
                Job.kind == states.MODEL, Job.status.in_([states.INITIALIZED, states.WAITING]))).scalars().all())
        for job_id in ids:
            self._ensure_model_files(job_id)

    # ------------------------------------------------------------------ create: inference

    def _iteration(self, model: Job, form: Mapping[str, str]) -> int:
        epoch = parse_epoch(form.get("snapshot_epoch"))
        return int(self.snapshot_for_epoch(model, epoch)["iteration"])

    def create_inference(self, model_id: str, kind: str, form: Mapping[str, str],
                         uploads: Mapping[str, Path], user) -> Job:
        """An inference job of a model's snapshot (``snapshot_epoch``, default the newest):

        - ``classify_many``: DIGITS' ``image_list`` upload (lines ``path [label]``), optional
          ``image_folder`` (prefix of relative paths) and ``num_test_images``; every image must
          be under a ``--data-root``.
        - ``test``: a labelled split of a dataset job as it is (``dataset``, default the
          model's; ``split`` val (default), test or train).
        """
        model = self.get_job(model_id, states.MODEL)
        iteration = self._iteration(model, form)
        ds = self.find_job(model.dataset_id or "")
        num_classes = self._dataset_info(ds)["num_classes"] if ds is not None else 0
        job_id, d = self._new_dir()
        try:
            if kind == "classify_many":
                source = self._write_image_list(d, form, uploads, num_classes)
                name = f"Classify many: {model.name}"
            elif kind == "test":
                source, name = self._test_source(model, form), f"Test: {model.name}"
            else:
                raise ApiError(400, f"unknown inference kind {kind!r}: classify_many or test")
            now = _now()
            # every class's probability is kept (up to TOP_KEPT_MAX classes), so the pages can rank
            # the top images of every class exactly; DIGITS' answers still show the best 5
            top = max(DIGITS_TOP, min(num_classes, TOP_KEPT_MAX))
            spec = {"kind": kind, "model_id": model.id, "iteration": iteration, "source": source, "top": top}
            resources = {"gpu_count": 1} if self.config.gpus else {}
            job = Job(id=job_id, kind=states.INFERENCE, name=name, group_name="", notes="",
                      owner=self._owner(user), status=states.INITIALIZED,
                      status_history=[[states.INITIALIZED, now]], created=now, progress=0.0,
                      dataset_id=model.dataset_id, parent_id=model.id, resources=resources,
                      assigned={}, spec=spec, summary={})
            self._insert(job, d)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        self.scheduler.submit(job_id)
        return job

    def _write_image_list(self, d: Path, form: Mapping[str, str], uploads: Mapping[str, Path],
                          num_classes: int) -> dict:
        """images.txt (absolute, confined paths with their labels) and listed.json (each line's
        key as DIGITS names it: the path as listed, joined with image_folder)."""
        up = uploads.get("image_list")
        if up is None:
            raise FormErrors({"image_list": ["This field is required."]})
        folder = str(form.get("image_folder") or "").strip()
        base = None
        if folder:
            base = confine_server_path(folder, self.config.data_roots, "image_folder")
            if not base.is_dir():
                raise FormErrors({"image_folder": ["Folder does not exist"]})
        limit = None
        if str(form.get("num_test_images") or "").strip():
            try:
                limit = int(form["num_test_images"])
            except ValueError:
                raise FormErrors({"num_test_images": ["Not a valid integer value"]}) from None
        try:
            text = Path(up).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise FormErrors({"image_list": ["The list is not UTF-8 text"]}) from None
        lines, keys, skipped = [], [], []
        for lineno, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line:
                continue
            if limit is not None and len(keys) >= limit:
                break
            path, sep, last = line.rpartition(" ")
            label = None
            if sep and last.lstrip("-").isdigit():
                label = int(last)
                path = path.strip()
            else:
                path = line
            key = os.path.join(folder, path) if folder else path
            if "://" in path:
                skipped.append({"line": lineno, "path": path, "why": "URLs are not fetched"})
                continue
            full = Path(path) if os.path.isabs(path) else (base / path if base is not None else None)
            if full is None:
                raise FormErrors({"image_list": [f"line {lineno}: relative path {path!r} without image_folder"]})
            where = confine_server_path(str(full), self.config.data_roots, "image_list")
            if label is not None and not 0 <= label < max(num_classes, 1):
                label = None  # a ground truth the model cannot have: only shown, never scored
            lines.append(f"{where}" + (f" {label}" if label is not None else ""))
            keys.append([key, str(where)])
        if not lines:
            raise FormErrors({"image_list": ["No image to classify in the list"]})
        (d / "images.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        write_json_atomic(d / "listed.json", {"keys": keys, "skipped": skipped})
        self._move_uploads({"image_list": Path(up)}, d, copy=True)
        return {"list": "images.txt"}

    def _test_source(self, model: Job, form: Mapping[str, str]) -> dict:
        ds_id = str(form.get("dataset") or model.dataset_id or "")
        ds = self.find_job(ds_id)
        if ds is None or ds.kind != states.DATASET or ds.status != states.DONE:
            raise FormErrors({"dataset": ["Not a valid choice (a finished dataset job)"]})
        split = str(form.get("split") or "val")
        db = self._dir(ds.id) / f"{split}_db"
        if split not in ("train", "val", "test") or not db.is_dir():
            raise FormErrors({"split": [f"dataset {ds.id} has no {split!r} split"]})
        return {"lmdb": str(db)}

    def classifications(self, job: Job) -> dict:
        """DIGITS' classify_many answer from a finished inference job: ``{"classifications":
        {key: [[label, conf %], ...]}}`` (unreadable images left out, as DIGITS did)."""
        d = self._dir(job.id)
        try:
            result = json.loads((d / "result.json").read_text(encoding="utf-8"))
            listed = json.loads((d / "listed.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ApiError(500, f"Inference failed: its result cannot be read ({e})") from None
        by_path: dict[str, list[str]] = {}
        for key, full in listed.get("keys") or []:
            by_path.setdefault(full, []).append(key)
        out: dict[str, list] = {}
        for p in result.get("predictions") or []:
            for key in by_path.get(str(p.get("source")), []):
                out[key] = [[lab, round(100.0 * float(prob), 2)] for lab, prob in (p.get("top") or [])[:DIGITS_TOP]]
        return {"classifications": out}

    # ------------------------------------------------------------------ control

    def _check_owner(self, user, job: Job) -> None:
        from . import security

        security.check_owner(user, job)

    def abort(self, job_id: str, user) -> None:
        """Abort a waiting or running job (a training snapshots first); ApiError 403 "Job not
        aborted" when it is not active."""
        job = self.get_job(job_id)
        self._check_owner(user, job)
        if not self.scheduler.abort(job_id):
            raise ApiError(403, "Job not aborted")
        self._aborting.add(job_id)

    def resume(self, job_id: str, user) -> Job:
        """Queue an Aborted/Interrupted/Error model again; it continues from its solverstate."""
        job = self.get_job(job_id)
        self._check_owner(user, job)
        self.scheduler.resume(job_id)
        return self.get_job(job_id)

    def clone(self, job_id: str, user) -> Job:
        """A new job with the same settings (the saved form of ``job_id``), queued."""
        src = self.get_job(job_id)
        if src.kind == states.DATASET:
            return self.create_dataset({"clone": job_id}, {}, user)
        if src.kind == states.MODEL:
            return self.create_models({"clone": job_id}, {}, user)[0]
        raise ApiError(400, f"Job {job_id} is an {src.kind} job; only datasets and models are cloned")

    def dependents(self, job: Job) -> list[Job]:
        """Models that use a dataset job."""
        if job.kind != states.DATASET:
            return []
        with self.db.session() as s:
            rows = list(s.execute(select(Job).where(Job.kind == states.MODEL, Job.dataset_id == job.id)
                                  .order_by(Job.created)).scalars().all())
            s.expunge_all()
        return rows

    def delete(self, job_id: str, user, *, abort_running: bool = False) -> None:
        """Delete a job and its directory (a model's classify jobs with it).  Refused (403) for
        another user and for a dataset a model uses (before anything is aborted, as DIGITS does).

        A queued job is aborted and deleted.  A running one (or a running classification of the
        model): with ``abort_running`` (DIGITS' DELETE routes) it is aborted, its processes get
        DELETE_GRACE_S to end before SIGKILL, and the delete waits at most ABORT_WAIT_S for them;
        409 if they still run then.  Without it (brewnet's /api/v1) a running job is a 403
        unless an abort asked for earlier ends within ABORT_WAIT_S."""
        job = self.get_job(job_id)
        self._check_owner(user, job)
        deps = self.dependents(job)
        if deps:
            n = len(deps)
            raise ApiError(403, f'Cannot delete "{job.name}" because {n} model{"s" if n > 1 else ""} '
                                f'depend{"s" if n == 1 else ""} on it: '
                                + ", ".join(f'"{m.name}" ({m.id})' for m in deps))
        children = []
        if job.kind == states.MODEL:
            with self.db.session() as s:
                children = list(s.execute(select(Job).where(Job.kind == states.INFERENCE,
                                                            Job.parent_id == job.id)).scalars().all())
                s.expunge_all()
        targets = [*children, job]
        if abort_running:
            for j in targets:
                if j.status in states.ACTIVE:
                    self.scheduler.abort(j.id, grace_s=DELETE_GRACE_S)
            still = self._wait_ended([j.id for j in targets], ABORT_WAIT_S)
            if still:
                raise ApiError(409, f"Job is still running {ABORT_WAIT_S:g} s after its abort "
                                    f"({', '.join(still)}): delete it again later")
        else:
            if job.status in (states.INITIALIZED, states.WAITING):
                self.scheduler.abort(job_id)   # a queued job is not running yet: DIGITS deletes it
            if job_id in self._aborting:
                # an abort asked for before: wait for it (a snapshot) to end
                self._wait_ended([job_id], ABORT_WAIT_S)
            if self.get_job(job_id).status in states.ACTIVE:
                raise ApiError(403, "Job is running: abort it first")
            if any(c.status in states.ACTIVE for c in children):
                raise ApiError(403, "Job is running: a classification of this model runs; abort it first")
        for j in targets:
            self._remove(j.id)

    def _wait_ended(self, job_ids: list[str], timeout_s: float) -> list[str]:
        """Wait until none of ``job_ids`` is active and the scheduler runs no step of them (its
        tick that ended one has finished writing it); returns those still going after
        ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            running = set(self.scheduler.running_ids())
            left = [jid for jid in job_ids if jid in running
                    or ((job := self.find_job(jid)) is not None and job.status in states.ACTIVE)]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.1)

    def _remove(self, job_id: str) -> None:
        """Rename the directory aside (atomic: recovery never re-imports half a job), delete the
        row, then remove the files."""
        d = self._dir(job_id)
        aside = d.parent / f"{DELETED_PREFIX}{job_id}-{secrets.token_hex(3)}"
        moved = False
        if d.is_dir():
            os.rename(d, aside)
            moved = True
        try:
            with self.db.session() as s:
                row = s.get(Job, job_id)
                if row is not None:
                    s.delete(row)
        except BaseException:
            if moved:
                os.rename(aside, d)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        with self._metrics_lock:
            self._metrics_cache.pop(job_id, None)

    def edit(self, job_id: str, user, name: str | None = None, notes: str | None = None,
             group: str | None = None) -> Job:
        """Rename a job, change its notes or group; a blank name is a 400."""
        job = self.get_job(job_id)
        self._check_owner(user, job)
        if name is not None and not name.strip():
            raise FormErrors({"job_name": ["Name cannot be blank"]})
        with self.db.session() as s:
            row = s.get(Job, job_id)
            if row is None:
                raise ApiError(404, "Job not found")
            if name is not None:
                row.name = name.strip()
            if notes is not None:
                row.notes = notes
            if group is not None:
                row.group_name = group.strip()
            s.flush()
            write_job_json(self._dir(job_id), row)
            s.expunge(row)
        return row

    def bulk(self, action: str, job_ids: list[str], user, group: str | None = None) -> None:
        """DIGITS' DELETE /jobs, POST /abort_jobs and POST /group over ``job_ids[]``: each job it
        can; then 400 naming how many were not found, forbidden or failed."""
        not_found = forbidden = failed = 0
        reasons = []
        for job_id in job_ids:
            try:
                if action == "delete":
                    self.delete(job_id, user, abort_running=True)   # only DIGITS' DELETE /jobs
                elif action == "abort":
                    self.abort(job_id, user)
                elif action == "group":
                    self.edit(job_id, user, group=group or "")
                else:
                    raise ValueError(action)
            except ApiError as e:
                if e.status == 404:
                    not_found += 1
                elif e.status in (401, 403) and e.message != "Job not aborted" \
                        and not e.message.startswith(("Job is running", "Cannot delete")):
                    forbidden += 1
                else:
                    failed += 1
                    reasons.append(f"{job_id}: {e.message}")
        parts = []
        if not_found:
            parts.append(f"{not_found} job{'s' if not_found > 1 else ''} not found.")
        if forbidden:
            parts.append(f"{forbidden} job{'s' if forbidden > 1 else ''} not permitted.")
        if failed:
            parts.append(f"{failed} job{'s' if failed > 1 else ''} failed: " + "; ".join(reasons))
        if parts:
            raise ApiError(400, " ".join(parts))

    # ------------------------------------------------------------------ DIGITS' JSON

    @staticmethod
    def _created_text(job: Job) -> str:
        t = job.status_history[0][1] if job.status_history else job.created
        return str(datetime.datetime.fromtimestamp(float(t)))

    def model_json(self, job: Job, epoch: float | None = None, verbose: bool = False) -> dict:
        """DIGITS' short model JSON (the create answer, index.json's entries, the download's
        info.json), for the snapshot of ``epoch`` (None: the newest); ``verbose`` adds
        ``directory`` and ``snapshots`` (epochs, ascending) as GET /models/<id>.json does.
        brewnet's additions: progress, error, the best validation numbers (with and without
        precise BN), the lint findings of a custom network, bn_recalibrate."""
        ds = self.find_job(job.dataset_id or "")
        info = self._dataset_info(ds) if ds is not None else {}
        image = info.get("image") or {}
        dims = [image.get("height"), image.get("width"), image.get("channels")] if image else None
        snaps = self.snapshot_list(job)
        snap_file = "no snapshots"
        if snaps:
            chosen = snaps[-1]
            if epoch is not None:
                chosen = next((sn for sn in snaps if abs(float(sn["epoch"]) - float(epoch)) < 1e-6), chosen)
            snap_file = Path(chosen["path"]).name
        spec = job.spec or {}
        from .. import __version__

        d = {
            "id": job.id, "name": job.name, "status": job.status,
            "dataset_id": job.dataset_id,
            "job id": job.id,
            "creation time": self._created_text(job),
            "username": job.owner,
            "framework": "caffe",
            "image dimensions": dims,
            "image resize mode": info.get("resize_mode") or "squash",
            "labels file": "labels.txt",
            "mean file": "mean.binaryproto",
            "snapshot file": snap_file,
            "solver file": "solver.prototxt",
            "train_val file": "train_val.prototxt",
            "deploy file": "deploy.prototxt",
            "model file": "original.prototxt",
            "caffe flavor": "BVLC",
            "caffe version": f"brewnet {__version__}",
            "digits version": DIGITS_VERSION,
            # brewnet's
            "progress": round(float(job.progress or 0.0), 4),
            "error": job.error,
            "bn_recalibrate": spec.get("bn_recalibrate"),
            "best": (job.summary or {}).get("best"),
            "best_moving_bn": (job.summary or {}).get("best_moving_bn"),
            "lint": spec.get("lint_findings") or [],
        }
        if verbose:
            d["directory"] = str(self._dir(job.id))
            d["snapshots"] = [epoch_label(sn["epoch"]) for sn in snaps]
        return d

    def dataset_json(self, job: Job) -> dict:
        """DIGITS' GET /datasets/<id>.json: id, name, status, directory, ParseFolderTasks and
        CreateDbTasks (DIGITS' quirk kept: ``image_width`` holds the height and
        ``image_height`` the width)."""
        spec = job.spec or {}
        info = self._dataset_info(job)
        s = info["summary"]
        counts = info["counts"]
        image = info["image"] or {}
        labels = info["num_classes"] or None
        parse = []
        if spec.get("method", "folder") == "folder":
            sets = s.get("sets") or {}
            separate = {k for k in ("val", "test") if sets.get(k)}
            parse.append({"name": "Parse Folder (train" + ("" if "val" in separate else "/val") + ")",
                          "label_count": labels, "train_count": counts.get("train"),
                          "val_count": 0 if "val" in separate else counts.get("val", 0),
                          "test_count": 0 if "test" in separate else counts.get("test", 0)})
            for k in sorted(separate):
                parse.append({"name": f"Parse Folder ({k})", "label_count": labels, "train_count": 0,
                              "val_count": counts.get(k, 0) if k == "val" else 0,
                              "test_count": counts.get(k, 0) if k == "test" else 0})
        splits = [k for k in ("train", "val", "test") if k in counts] or ["train"]
        backend = spec.get("backend") or "lmdb"
        encoding = s.get("encoding") or spec.get("encoding") or "png"
        create = [{"name": f"Create DB ({k})", "entries": counts.get(k),
                   "image_width": image.get("height") or spec.get("height"),
                   "image_height": image.get("width") or spec.get("width"),
                   "image_channels": image.get("channels") or spec.get("channels"),
                   "backend": backend, "encoding": encoding,
                   "compression": spec.get("compression") or "none"} for k in splits]
        return {"id": job.id, "name": job.name, "status": job.status,
                "directory": str(self._dir(job.id)),
                "ParseFolderTasks": parse, "CreateDbTasks": create,
                # brewnet's
                "progress": round(float(job.progress or 0.0), 4), "error": job.error,
                "labels": info["labels"], "counts": counts}

    def status_json(self, job: Job) -> dict:
        """DIGITS' /jobs/<id>/status answer."""
        return {"status": job.status, "name": job.name,
                "type": states.TYPE_NAMES.get(job.kind, job.kind), "error": job.error}

    def short_json(self, job: Job) -> dict:
        """index.json's entry: a dataset's {id, name, status}, a model's create answer."""
        if job.kind == states.MODEL:
            return self.model_json(job)
        return {"id": job.id, "name": job.name, "status": job.status}

    def table_row(self, job: Job) -> dict:
        """DIGITS' completed_jobs.json / table_data.json entry."""
        first = job.status_history[0][1] if job.status_history else job.created
        if job.started is not None:
            elapsed = (job.finished or _now()) - job.started if job.status != states.WAITING else 0.0
        else:
            elapsed = 0.0
        row = {"id": job.id, "name": job.name, "group": job.group_name or "", "status": job.status,
               "status_css": states.CSS.get(job.status, "default"), "submitted": first,
               "elapsed": round(max(0.0, elapsed), 3), "progress": round(float(job.progress or 0.0), 4),
               "type": states.TYPE_NAMES.get(job.kind, job.kind), "owner": job.owner}
        if job.kind == states.DATASET:
            row["backend"] = (job.spec or {}).get("backend") or "lmdb"
        elif job.kind == states.MODEL:
            row["framework"] = "caffe"
            row["dataset_id"] = job.dataset_id
            for phase, label in (("train", "train"), ("test", "val")):
                for name, points in self.metrics(job).get(phase, {}).items():
                    values = [p[1] for p in points if p[1] is not None]
                    if values:
                        row[f"{name} ({label}) last"] = values[-1]
                        row[f"{name} ({label}) min"] = min(values)
                        row[f"{name} ({label}) max"] = max(values)
        return row

    def index_json(self) -> dict:
        """DIGITS' /index.json: running jobs first, then the others, newest first in each."""
        jobs = self.list_jobs()
        running = [j for j in jobs if j.status in states.ACTIVE]
        rest = [j for j in jobs if j.status not in states.ACTIVE]
        ordered = running + rest
        out = {"version": DIGITS_VERSION, "jobs_dir": str(self.config.jobs_dir),
               "datasets": [self.short_json(j) for j in ordered if j.kind == states.DATASET],
               "models": [self.short_json(j) for j in ordered if j.kind == states.MODEL]}
        if self.config.server_name:
            out["server_name"] = self.config.server_name
        return out

    def completed_jobs_json(self) -> dict:
        """DIGITS' /completed_jobs.json."""
        jobs = [j for j in self.list_jobs() if j.kind in (states.DATASET, states.MODEL)]
        running = [self.table_row(j) for j in jobs if j.status in states.ACTIVE]
        done = [j for j in jobs if j.status not in states.ACTIVE]
        models = [self.table_row(j) for j in done if j.kind == states.MODEL]
        fields = sorted({k for m in models for k in m if k.endswith((" last", " min", " max"))})
        return {"running": running,
                "datasets": [self.table_row(j) for j in done if j.kind == states.DATASET],
                "models": models, "pretrained_models": [], "model_output_fields": fields}

    # ------------------------------------------------------------------ metrics, logs

    def _records(self, job: Job) -> list[dict]:
        """All metric records of a model (read incrementally: only new lines are parsed)."""
        d = self._dir(job.id)
        with self._metrics_lock:
            offset, records = self._metrics_cache.get(job.id, (0, []))
        new, new_offset = read_metrics(d, offset)
        if new_offset < offset:  # the file was rewritten
            records = []
        if new or new_offset != offset:
            records = records + new
            with self._metrics_lock:
                self._metrics_cache[job.id] = (new_offset, records)
        return records

    def metrics(self, job: Job, max_points: int | None = None) -> dict:
        """A model's metric series ``{"train": {name: [[iter, value, time], ...]}, "test": ...}``,
        at most ``max_points`` per series (the best validation point always kept)."""
        if job.kind != states.MODEL:
            return {"train": {}, "test": {}}
        return metric_series(self._records(job), max_points)

    def log_tail(self, job: Job, lines: int = 200) -> str:
        """The last ``lines`` lines of the job's log.txt ('' when there is none yet)."""
        path = self._dir(job.id) / "log.txt"
        try:
            with open(path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 256 * 1024))
                data = f.read()
        except FileNotFoundError:
            return ""
        text = data.decode("utf-8", "replace").splitlines()
        return "\n".join(text[-max(0, int(lines)):])

    # ------------------------------------------------------------------ inference

    async def classify_one(self, model_id: str, image_path: str | Path, snapshot_epoch: float | None = None,
                           visualize: bool = False) -> dict:
        """DIGITS' classify_one of one image file: ``{"predictions": [[label, conf %], ...]}``
        (top 5); with ``visualize``, the per-layer visualisations (PNGs under the model's
        ``classify_one/`` folder, served by /files)."""
        import anyio

        model = await anyio.to_thread.run_sync(self.get_job, model_id, states.MODEL)
        snap = await anyio.to_thread.run_sync(self.snapshot_for_epoch, model, snapshot_epoch)
        ds = await anyio.to_thread.run_sync(self.find_job, model.dataset_id or "")
        ds_dir = self._dir(ds.id) if ds is not None else None
        modules = python_path(model, self.config)  # the model's own Python layer file, if any
        bundle = await self.pool.ensure_bundle(self._dir(model.id), int(snap["iteration"]), ds_dir, modules)
        vis_dir = None
        if visualize:
            vis_root = self._dir(model.id) / "classify_one"
            vis_root.mkdir(exist_ok=True)
            vis_dir = vis_root / f"{int(_now() * 1000)}-{secrets.token_hex(2)}"
            vis_dir.mkdir()
            old = sorted(p for p in vis_root.iterdir() if p.is_dir())[:-VIS_KEEP]
            for p in old:
                shutil.rmtree(p, ignore_errors=True)
        result = await self.pool.classify_one(bundle, image_path, top=5, visualize=visualize, vis_dir=vis_dir,
                                              python_path=modules)
        if vis_dir is not None:
            result["visualization_dir"] = str(vis_dir.relative_to(self.config.jobs_dir))
        result["snapshot_epoch"] = snap["epoch"]
        return result

    async def wait_finished(self, job_id: str, poll_s: float = 0.25) -> Job:
        """Await a job's end without blocking the event loop."""
        import anyio

        while True:
            job = await anyio.to_thread.run_sync(self.get_job, job_id)
            if job.status in states.FINISHED:
                return job
            await anyio.sleep(poll_s)

    def download(self, model_id: str, epoch: float | None, ext: str) -> Path:
        """DIGITS' download archive of a model's snapshot (``epoch`` None: the newest): the flat
        archive with info.json (the model's JSON for that epoch).  Builds the deploy bundle
        in this process when it is missing (:meth:`download_async` builds it in the worker)."""
        from .inference import ARCHIVE_FORMATS, bundle_archive

        if ext not in ARCHIVE_FORMATS:
            raise ApiError(400, f"Unsupported archive extension '{ext}': use one of {', '.join(ARCHIVE_FORMATS)}")
        model = self.get_job(model_id, states.MODEL)
        snap = self.snapshot_for_epoch(model, epoch)
        ds = self.find_job(model.dataset_id or "")
        info = self.model_json(model, snap["epoch"])
        return bundle_archive(self._dir(model.id), int(snap["iteration"]), self._dir(ds.id) if ds else None,
                              ext, info, epoch=snap["epoch"])

    async def download_async(self, model_id: str, epoch: float | None, ext: str) -> Path:
        """:meth:`download` with the bundle built in the inference worker (the event loop and the
        server process never load the net)."""
        import anyio

        from .inference import ARCHIVE_FORMATS

        if ext not in ARCHIVE_FORMATS:
            raise ApiError(400, f"Unsupported archive extension '{ext}': use one of {', '.join(ARCHIVE_FORMATS)}")
        model = await anyio.to_thread.run_sync(self.get_job, model_id, states.MODEL)
        snap = await anyio.to_thread.run_sync(self.snapshot_for_epoch, model, epoch)
        ds = await anyio.to_thread.run_sync(self.find_job, model.dataset_id or "")
        await self.pool.ensure_bundle(self._dir(model.id), int(snap["iteration"]),
                                      self._dir(ds.id) if ds is not None else None,
                                      python_path(model, self.config))
        return await anyio.to_thread.run_sync(self.download, model_id, epoch, ext)

    # ------------------------------------------------------------------ files

    def job_file(self, rel: str) -> Path:
        """``/files/<rel>``: a file inside a job's directory (no ``..``, absolute path or symlink
        escape: 400; the database and other files of the jobs folder itself: 404)."""
        from .jobs.jobdir import is_job_id, safe_join

        full = safe_join(self.config.jobs_dir, rel)
        first = Path(rel.replace("\\", "/")).parts[0] if rel else ""
        if not is_job_id(first) or not full.is_file():
            raise ApiError(404, "File not found")
        return full


def _replace_strings(obj: Any, repl: dict[str, str]) -> Any:
    """``obj`` with every string equal to a key of ``repl`` replaced (a spec's upload paths)."""
    if not repl:
        return obj
    if isinstance(obj, str):
        return repl.get(obj, obj)
    if isinstance(obj, list):
        return [_replace_strings(x, repl) for x in obj]
    if isinstance(obj, dict):
        return {k: _replace_strings(v, repl) for k, v in obj.items()}
    return obj


def read_form_file(jobdir: Path) -> dict:
    """A job's saved form (``form.json``), {} when absent."""
    try:
        return json.loads((jobdir / FORM_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}

