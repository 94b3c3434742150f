"""Inference of generic models (DIGITS' "Other": regression, image-to-image, segmentation; doc
digits-other-jobs.md §1.7): what the routes ``infer_one``, ``infer_many`` and ``infer_db`` call.

- :meth:`GenericInferenceServices.infer_one`: one image in the inference worker process (the bundle
  of the snapshot, loaded once and kept; :mod:`brewnet.server.inference`), every output blob.
- :meth:`~GenericInferenceServices.create_generic_inference`: an inference job over a list of images
  (``infer_many``) or an LMDB (``infer_db``); the scheduler runs ``brewnet infer`` on the bundle
  (jobs/tasks.py), which writes each item's output blobs as ``.npy`` files, and, for an LMDB of a
  labelled dataset stage, the evaluation against its labels (segmentation or regression metrics).
- :meth:`~GenericInferenceServices.generic_outputs`: DIGITS' JSON of a finished job
  (``{"outputs": {key: {blob: values}}}``); :meth:`~GenericInferenceServices.generic_items`: the
  same as arrays for the pages' views, with the labels of a labelled set.
- :meth:`~GenericInferenceServices.dataset_facts`: the facts of a model's dataset the views use
  (kind, class labels, palette, the stages' LMDBs), from its ``summary.json``.
"""
from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from ..errors import ApiError
from ..jobs import states
from ..jobs.jobdir import confine_server_path, write_json_atomic
from ..jobs.tasks import GENERIC_INFER_KINDS, INFER_INDEX, INFER_OUTPUT_DIR, python_path
from ..store.models import Job
from ..threads import in_thread
from .creation import JobCreation, image_list_entries

#: the dataset kinds whose labelled LMDBs are evaluated, and how (brewnet infer -evaluate)
EVALUATED_KINDS = {"segmentation": "segmentation", "gradients": "regression", "generic": "regression"}
SUMMARY_FILE = "summary.json"


def _as_path(value, base: Path) -> str | None:
    """A summary.json path: absolute as written, or relative to the dataset directory."""
    if not value:
        return None
    p = Path(str(value))
    return str(p if p.is_absolute() else base / p)


class GenericInferenceServices(JobCreation):
    """infer_one / infer_many / infer_db of generic models (see the module docstring)."""

    # ------------------------------------------------------------------ the dataset's facts

    def dataset_facts(self, model: Job) -> dict:
        """What the views and the evaluation need of a model's dataset: ``{kind, dir,
        class_labels, color_palette, num_classes, label_range, stages: {stage: {features,
        labels}}}`` from the dataset's summary.json ({} values when the dataset is gone or not
        a generic one)."""
        ds = self.find_job(model.dataset_id or "")
        facts: dict = {"kind": None, "dir": None, "class_labels": None, "color_palette": None,
                       "num_classes": None, "label_range": None, "stages": {}}
        if ds is None:
            return facts
        d = self.job_dir(ds.id)
        facts["dir"] = str(d)
        try:
            summary = json.loads((d / SUMMARY_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return facts
        if not isinstance(summary, dict):
            return facts
        for key in ("kind", "class_labels", "color_palette", "num_classes", "label_range"):
            facts[key] = summary.get(key)
        for stage, st in (summary.get("stages") or {}).items():
            if isinstance(st, dict):
                facts["stages"][stage] = {"features": _as_path(st.get("features"), d),
                                          "labels": _as_path(st.get("labels"), d)}
        return facts

    @staticmethod
    def labels_of(db: Path, facts: Mapping) -> str | None:
        """The labels LMDB of a dataset stage whose features LMDB is ``db`` (summary.json's
        stages, else DIGITS' layout: ``<stage>_db/labels`` beside ``<stage>_db/features``)."""
        for st in (facts.get("stages") or {}).values():
            feats, labels = st.get("features"), st.get("labels")
            if feats and labels and Path(feats).resolve() == db and Path(labels).is_dir():
                return str(Path(labels).resolve())
        sibling = db.parent / "labels"
        if db.name == "features" and sibling.is_dir():
            return str(sibling)
        return None

    # ------------------------------------------------------------------ infer one

    async def infer_one(self, model_id: str, image_path: str | Path, snapshot_epoch: float | None = None,
                        dont_resize: bool = False) -> dict:
        """Every output blob of the model's snapshot (``snapshot_epoch``, default the newest)
        for one image file: ``{"outputs": {blob: ndarray with the batch axis (1, ...)},
        "snapshot_epoch"}``.  ApiError 400 when the image cannot be read, 500 when the net fails."""
        model = await in_thread(self.get_job, model_id, states.MODEL)
        snap = await in_thread(self.snapshot_for_epoch, model, snapshot_epoch)
        ds = await in_thread(self.find_job, model.dataset_id or "")
        modules = python_path(model, self.config)
        bundle = await self.pool.ensure_bundle(self.job_dir(model.id), int(snap["iteration"]),
                                               self.job_dir(ds.id) if ds is not None else None, modules)
        outputs = await self.pool.infer_one(bundle, image_path, dont_resize=dont_resize, python_path=modules)
        return {"outputs": outputs, "snapshot_epoch": snap["epoch"]}

    # ------------------------------------------------------------------ infer many / db (jobs)

    def create_generic_inference(self, model_id: str, kind: str, form: Mapping[str, str],
                                 uploads: Mapping[str, Path], user, dont_resize: bool = False) -> Job:
        """An inference job of a model's snapshot (``snapshot_epoch``, default the newest) that
        runs ``brewnet infer`` (jobs/tasks.py):

        - ``infer_many``: DIGITS' ``image_list`` upload (lines ``<path>[ <int>]``, the integer
          dropped), optional ``image_folder`` (prefix of relative paths) and ``num_test_images``;
        - ``infer_db``: ``db_path``, an LMDB under a ``--data-root`` or inside the jobs folder (a
          dataset's ``<stage>_db/features``; a stage folder ``<stage>_db`` means its features).
          When it is a stage of the model's dataset with a labels LMDB, the job also evaluates
          the outputs against the labels (segmentation: per-class IoU; regression: RMSE, MAE).

        ``dont_resize``: DIGITS' "do not resize".  Errors: ApiError 400 with DIGITS' messages."""
        if kind not in GENERIC_INFER_KINDS:
            raise ApiError(400, f"unknown generic inference {kind!r}: one of {', '.join(GENERIC_INFER_KINDS)}")
        model = self.get_job(model_id, states.MODEL)
        iteration = self._iteration(model, form)
        facts = self.dataset_facts(model)
        spec: dict = {"kind": kind, "model_id": model.id, "iteration": iteration,
                      "dont_resize": bool(dont_resize), "dataset_dir": facts["dir"]}
        if kind == "infer_db":
            db = self._db_path(form)
            spec["source"] = {"lmdb": str(db)}
            labels = self.labels_of(db, facts)
            evaluate = EVALUATED_KINDS.get(str(facts.get("kind") or ""))
            if labels and evaluate:
                spec["evaluate"] = {"kind": evaluate, "labels": labels}
        job_id, d = self._new_dir()
        try:
            if kind == "infer_many":
                spec["source"] = self._write_generic_list(d, form, uploads)
            name = f"{'Infer many' if kind == 'infer_many' else 'Infer DB'}: {model.name}"
            job = self._insert_inference(job_id, d, model, name, spec, user)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            raise
        self.scheduler.submit(job_id)
        return job

    def _db_path(self, form: Mapping[str, str]) -> Path:
        raw = str(form.get("db_path") or "").strip()
        if not raw:
            raise ApiError(400, "db_path is a required field", field="db_path")
        roots = [*self.config.data_roots, Path(self.config.jobs_dir).resolve()]
        db = confine_server_path(raw, roots, "db_path")
        if db.is_dir() and not (db / "data.mdb").is_file() and (db / "features" / "data.mdb").is_file():
            db = db / "features"      # a dataset stage folder: its features
        if not (db / "data.mdb").is_file():
            raise ApiError(400, f'DB "{raw}" does not exit', field="db_path")   # DIGITS' text, typo kept
        return db

    def _write_generic_list(self, d: Path, form: Mapping[str, str], uploads: Mapping[str, Path]) -> dict:
        """images.txt (absolute, confined paths) and listed.json (each line's key as DIGITS names
        it: the path as listed, joined with image_folder) from DIGITS' infer_many fields."""
        up = uploads.get("image_list")
        if up is None:
            raise ApiError(400, "image_list is a required field", field="image_list")
        folder = str(form.get("image_folder") or "").strip()
        base = None
        if folder:
            base = confine_server_path(folder, self.config.data_roots, "image_folder")
            if not base.is_dir():
                raise ApiError(400, f'image_folder "{folder}" does not exit', field="image_folder")  # DIGITS' typo
        limit = None
        if str(form.get("num_test_images") or "").strip():
            try:
                limit = int(str(form["num_test_images"]))
            except ValueError:
                raise ApiError(400, "num_test_images: Not a valid integer value", field="num_test_images") from None
        try:
            text = Path(up).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "image_list: the list is not UTF-8 text", field="image_list") from None
        paths, keys = [], []
        for lineno, path, _label in image_list_entries(text, limit):     # a trailing integer is dropped
            if "://" in path:
                raise ApiError(400, f"image_list line {lineno}: URLs are not fetched by this server ({path})",
                               field="image_list")
            if not os.path.isabs(path) and base is None:
                raise ApiError(400, f"image_list line {lineno}: relative path {path!r} without image_folder",
                               field="image_list")
            full = Path(path) if os.path.isabs(path) else base / path
            where = confine_server_path(str(full), self.config.data_roots, "image_list")
            paths.append(str(where))
            keys.append([os.path.join(folder, path) if folder else path, str(where)])
        if not paths:
            raise ApiError(400, "image_list: no image in the list", field="image_list")
        (d / "images.txt").write_text("\n".join(paths) + "\n", encoding="utf-8")
        write_json_atomic(d / "listed.json", {"keys": keys, "skipped": []})
        self._move_uploads({"image_list": Path(up)}, d, copy=True)
        return {"list": "images.txt"}

    # ------------------------------------------------------------------ results

    def _generic_index(self, job: Job) -> tuple[Path, dict]:
        """The job's folder and ``outputs/index.json`` (brewnet infer's OutputWriter: ``{"outputs":
        {key: {blob: {"file", "shape"}}}, "count", "errors", "evaluation"?}``)."""
        d = self.job_dir(job.id)
        try:
            index = json.loads((d / INFER_INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ApiError(500, f"Inference failed: its outputs cannot be read ({e})") from None
        return d, index if isinstance(index, dict) else {}

    def generic_items(self, job: Job, limit: int | None = None):
        """The finished job's items in order: an iterator of ``(key, source, {blob: ndarray})``
        (``key``: DIGITS' key, the listed path joined with image_folder or the LMDB key;
        ``source``: the image file or ``<db>:<key>``), at most ``limit``."""
        import numpy as np

        d, index = self._generic_index(job)
        listed: dict[str, list[str]] = {}
        if (d / "listed.json").is_file():
            for key, full in json.loads((d / "listed.json").read_text(encoding="utf-8")).get("keys") or []:
                listed.setdefault(full, []).append(key)
        db = ((job.spec or {}).get("source") or {}).get("lmdb")
        n = 0
        for key, blobs in (index.get("outputs") or {}).items():
            arrays = {b: np.load(d / INFER_OUTPUT_DIR / entry["file"]) for b, entry in blobs.items()}
            source = key if db is None else f"{db}:{key}"
            for name in (listed.get(key) or [key]) if db is None else [key]:
                if limit is not None and n >= limit:
                    return
                yield name, source, arrays
                n += 1

    def generic_outputs(self, job: Job) -> dict:
        """DIGITS' infer_many / infer_db answer from a finished job: ``{"outputs": {key: {blob:
        nested list without the batch axis}}}`` (unreadable images left out)."""
        return {"outputs": {key: {b: a.tolist() for b, a in arrays.items()}
                            for key, _, arrays in self.generic_items(job)}}

    def generic_evaluation(self, job: Job) -> dict:
        """The job's evaluation against the labels (brewnet infer -evaluate's metrics), {} without one."""
        _, index = self._generic_index(job)
        ev = index.get("evaluation") or {}
        return ev if isinstance(ev, dict) else {}

