"""Job creation from DIGITS' forms: dataset jobs, model jobs (one per learning rate x batch size
of a sweep) and inference jobs of a model's snapshot, DIGITS' ``clone=<id>``, and a model's files
once its dataset is Done.

A new id, its directory, the spec from DIGITS' form (:mod:`brewnet.server.digits`), the job's
files, then its row and ``job.json`` in one transaction (the job store's ``add_job``), then
:meth:`Scheduler.submit`.  A creation that fails removes its directory, so nothing half made stays
behind.  A model whose dataset is not finished yet gets its prototxt and solver files when the
dataset is Done (DIGITS' epochs -> iterations needs the dataset's size): job control's scheduler
listener has them written before the model can start.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..digits.forms import parse_dataset_form, parse_model_form
from ..digits.generic_model_files import write_generic_model_files
from ..digits.model_files import write_model_files
from ..errors import ApiError, FormErrors
from ..formdata import safe_filename
from ..jobs import states
from ..jobs.epochs import parse_epoch
from ..jobs.jobdir import confine_server_path, write_job_json, write_json_atomic
from ..jobs.specs import ModelSpec
from ..store.db import new_job_id
from ..store.models import Job
from .lookups import JobLookups
from .presenters import DIGITS_TOP

log = logging.getLogger("brewnet.server")

FORM_FILE = "form.json"           # a job's submitted form fields (clone reads them)
#: form fields that are not settings (never saved for a clone)
NOT_SETTINGS = {"username", "csrf_token", "clone", "job_id"}
#: an inference job keeps every class's probability for datasets of up to this many classes
TOP_KEPT_MAX = 100



def image_list_entries(text: str, limit: int | None = None):
    """``(line number, path, label or None)`` for each non-blank line of a classify_many /
    infer_many image list (``path [integer label]``; a path may hold spaces), the first
    ``limit`` of them when it is given."""
    count = 0
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if limit is not None and count >= limit:
            return
        count += 1
        path, sep, last = line.rpartition(" ")
        if sep and last.lstrip("-").isdigit():
            yield lineno, path.strip(), int(last)
        else:
            yield lineno, line, None

class JobCreation(JobLookups):
    """Creation of jobs (see the module docstring)."""

    def __init__(self, config, db, scheduler, pool):
        super().__init__(config, db, scheduler, pool)
        self._files_lock = threading.Lock()      # model files written once (creation vs listener)

    # ------------------------------------------------------------------ creation helpers

    def _new_dir(self) -> tuple[str, Path]:
        self.config.ensure_dirs()
        for _ in range(20):
            job_id = new_job_id()
            d = self.job_dir(job_id)
            try:
                d.mkdir()
            except FileExistsError:
                continue
            if self.store.get_job(job_id) is None:
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
        d = self.job_dir(src.id)
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
        self.store.add_job(job, before_commit=lambda row: write_job_json(jobdir, row))

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
        return self._new_dataset_job(form, uploads, user,
                                     lambda fields, moved: parse_dataset_form(fields, moved, self.config))

    def _new_dataset_job(self, form: Mapping[str, str], uploads: Mapping[str, Path], user, parse) -> Job:
        """A dataset job from a form: ``parse(fields, uploads moved into the job) -> spec``; the
        form is saved for clones (with the spec's ``seed`` when it drew one); queued."""
        form, uploads, copies = self._merge_clone(form, uploads, states.DATASET)
        job_id, d = self._new_dir()
        try:
            moved = self._move_uploads(uploads, d, copy=copies)
            spec = parse(form, moved)
            seed = getattr(spec, "seed", None)
            self._save_form(d, {**form, "seed": str(seed)} if seed is not None else form, moved)
            now = time.time()
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
        dataset = {**self.job_dict(ds), **self.dataset_info(ds)}
        write = write_generic_model_files if getattr(spec, "kind", None) == "generic" else write_model_files
        return write(jobdir, spec, dataset, self._previous_dict(spec))

    def create_models(self, form: Mapping[str, str], uploads: Mapping[str, Path], user,
                      parse=parse_model_form) -> list[Job]:
        """Model jobs from DIGITS' model form (``parse``: the form's parser; the generic form's
        for generic models): one per learning rate x batch size of a sweep; all made or none.
        The prototxts and solver are written now when the dataset is Done, else when it is."""
        form, uploads, copies = self._merge_clone(form, uploads, states.MODEL)
        specs = parse(form, {k: str(v) for k, v in uploads.items()}, self.config, self.lookup_job)
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
                now = time.time()
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
        self.store.delete_jobs(job_id for job_id, _ in made)
        for _, d in made:
            shutil.rmtree(d, ignore_errors=True)

    def _ensure_model_files(self, job_id: str) -> None:
        """Write a queued model's files once its dataset is Done (no-op when written); a model
        whose files cannot be made ends Error with the reason."""
        with self._files_lock:
            job = self.find_job(job_id)
            if job is None or job.kind != states.MODEL or job.status not in (states.INITIALIZED, states.WAITING):
                return
            d = self.job_dir(job_id)
            if (d / "plan.json").is_file():
                return
            ds = self.find_job(job.dataset_id or "")
            if ds is None or ds.status != states.DONE:
                return
            try:
                self._write_model_files(d, ModelSpec.from_json(job.spec or {}), ds)
            except Exception as e:  # noqa: BLE001 - the job records why it cannot run
                msg = e.message if isinstance(e, ApiError) else f"{type(e).__name__}: {e}"
                if isinstance(e, FormErrors):
                    msg = "; ".join(f"{k}: {' '.join(v)}" for k, v in e.errors.items())
                log.warning("model %s: its files could not be written: %s", job_id, msg)
                self._set_error(job_id, f"could not write the model's files: {msg}")

    def _set_error(self, job_id: str, message: str) -> None:
        def fail(job, s) -> bool:
            if job.status in states.FINISHED:
                return False
            now = time.time()
            job.status_history = [list(x) for x in (job.status_history or [])] + [[states.ERROR, now]]
            job.status = states.ERROR
            job.error = message
            job.finished = now
            job.queue_seq = None
            return True

        def write(job, failed: bool) -> None:
            if failed:
                write_job_json(self.job_dir(job_id), job)
        self.store.update_job(job_id, fail, before_commit=write)

    def prepare_pending_models(self) -> None:
        """At start-up (before the scheduler runs): queued models of finished datasets that have
        no files yet (the server was killed between the two) get them."""
        ids = self.store.job_ids(states.MODEL, [states.INITIALIZED, states.WAITING])
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
        num_classes = self.dataset_info(ds)["num_classes"] if ds is not None else 0
        job_id, d = self._new_dir()
        try:
            if kind == "classify_many":
                source = self._write_image_list(d, form, uploads, num_classes)
                name = f"Classify many: {model.name}"
            elif kind == "test":
                source, name = self._test_source(model, form), f"Test: {model.name}"
            else:
                raise ApiError(400, f"unknown inference kind {kind!r}: classify_many or test")
            # every class's probability is kept (up to TOP_KEPT_MAX classes), so the pages can rank
            # the top images of every class exactly; DIGITS' answers still show the best 5
            top = max(DIGITS_TOP, min(num_classes, TOP_KEPT_MAX))
            spec = {"kind": kind, "model_id": model.id, "iteration": iteration, "source": source, "top": top}
            job = self._insert_inference(job_id, d, model, name, spec, user)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        self.scheduler.submit(job_id)
        return job

    def _insert_inference(self, job_id: str, d: Path, model: Job, name: str, spec: dict, user) -> Job:
        """The row of a new inference job of ``model`` (directory ``d``, already made), not yet submitted."""
        now = time.time()
        resources = {"gpu_count": 1} if self.config.gpus else {}
        job = Job(id=job_id, kind=states.INFERENCE, name=name, group_name="", notes="",
                  owner=self._owner(user), status=states.INITIALIZED,
                  status_history=[[states.INITIALIZED, now]], created=now, progress=0.0,
                  dataset_id=model.dataset_id, parent_id=model.id, resources=resources,
                  assigned={}, spec=spec, summary={})
        self._insert(job, d)
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
        for lineno, path, label in image_list_entries(text, limit):
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
        db = self.job_dir(ds.id) / f"{split}_db"
        if split not in ("train", "val", "test") or not db.is_dir():
            raise FormErrors({"split": [f"dataset {ds.id} has no {split!r} split"]})
        return {"lmdb": str(db)}


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
