"""Generic dataset jobs (docs: digits-other-jobs.md §1.2, §1.3): DIGITS' "Other" dataset of
pre-built LMDBs and the data extensions' datasets, created from their forms, cloned, and their
DIGITS JSON (``/datasets/<id>.json``).

A generic dataset job is a dataset job (kind ``dataset``) whose spec is a
:class:`~brewnet.server.jobs.specs.GenericDatasetSpec` (its ``kind`` says which); its one step is
``brewnet dataset create --kind KIND`` into the job's folder (jobs/tasks.py), which writes the
dataset directory of the contract (``train_db/features``, ``summary.json``, ...).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..digits.generic_forms import parse_extension_form, parse_prebuilt_form
from ..errors import ApiError
from ..jobs import states
from ..jobs.specs import EXTENSION_KINDS, GENERIC_KINDS, KIND_EXTENSIONS
from ..jobs.summaries import dataset_summary
from ..store.models import Job
from .control import JobControl

STAGES = ("train", "val", "test")


def generic_kind(job: Job) -> str | None:
    """The generic kind of a dataset job (generic, gradients, processing, segmentation), or
    None for a classification dataset and any other job."""
    if job.kind != states.DATASET:
        return None
    kind = (job.spec or {}).get("kind")
    return kind if kind in GENERIC_KINDS else None


def _relative(path: str | None, jobdir: Path) -> str | None:
    """DIGITS' relative DB path (``train_db/features``) of a path inside the job's folder."""
    if not path:
        return None
    p = Path(path)
    try:
        return p.relative_to(jobdir).as_posix()
    except ValueError:
        return str(p)


class GenericDatasets(JobControl):
    """Creation, clones and DIGITS' JSON of generic dataset jobs (see the module docstring)."""

    def create_generic_dataset(self, extension_id: str | None, form: Mapping[str, str],
                               uploads: Mapping[str, Path], user) -> Job:
        """A generic dataset job from DIGITS' form: ``extension_id`` None for the "Other" form
        (pre-built LMDBs), else a data extension's id (``image-gradients``, ...; another id is a
        404).  ``clone=<id>`` copies a generic dataset's saved fields (of the same kind)."""
        kind = "generic" if extension_id is None else EXTENSION_KINDS.get(extension_id)
        if kind is None:
            raise ApiError(404, f"Unknown data extension {extension_id!r}: one of {', '.join(EXTENSION_KINDS)}")
        clone = str(form.get("clone") or "").strip()
        if clone:
            src = self.get_job(clone)
            src_kind = generic_kind(src) or (src.kind if src.kind != states.DATASET else "classification")
            if src_kind != kind:
                raise ApiError(400, f"Job {clone} is a {src_kind} dataset, not a {kind} one", field="clone")

        def parse(fields, moved):
            if extension_id is None:
                return parse_prebuilt_form(fields, self.config)
            return parse_extension_form(extension_id, fields, moved, self.config)
        return self._new_dataset_job(form, uploads, user, parse)

    def clone(self, job_id: str, user) -> Job:
        src = self.get_job(job_id)
        kind = generic_kind(src)
        if kind is None:
            return super().clone(job_id, user)
        return self.create_generic_dataset(KIND_EXTENSIONS.get(kind), {"clone": job_id}, {}, user)

    # ------------------------------------------------------------------ reading

    def generic_summary(self, job: Job) -> dict:
        """The job's summary (the scheduler's copy, else its summary.json); {} while none."""
        summary = dict(job.summary or {})
        if not summary.get("stages"):
            summary = dataset_summary(self.job_dir(job.id))
        return summary if summary.get("kind") in GENERIC_KINDS else {}

    def dataset_json(self, job: Job) -> dict:
        """DIGITS' GET /datasets/<id>.json; a generic dataset's (§1.2, §1.3): id, name, status,
        directory, and for an extension's ``create_db_tasks`` and ``feature_dims``.  brewnet's
        additions: kind, progress, error, per stage its entries and shapes, the mean file, the
        class labels and pixel counts of a segmentation dataset."""
        kind = generic_kind(job)
        if kind is None:
            return super().dataset_json(job)
        jobdir = self.job_dir(job.id)
        s = self.generic_summary(job)
        stages = s.get("stages") or {}
        out = {"id": job.id, "name": job.name, "status": job.status, "directory": str(jobdir)}
        if kind != "generic":
            out["extension_id"] = KIND_EXTENSIONS[kind]
            out["create_db_tasks"] = [
                {"name": f"Create {k}_db DB", "stage": f"{k}_db",
                 "entry_count": int((stages.get(k) or {}).get("entries") or 0),
                 "feature_db_path": _relative((stages.get(k) or {}).get("features"), jobdir),
                 "label_db_path": _relative((stages.get(k) or {}).get("labels"), jobdir)}
                for k in STAGES]
        out["feature_dims"] = s.get("feature_dims")
        # brewnet's
        out.update({"kind": kind, "progress": round(float(job.progress or 0.0), 4), "error": job.error,
                    "stages": {k: {"entries": v.get("entries"), "feature_shape": v.get("feature_shape"),
                                   "label_shape": v.get("label_shape"),
                                   "features": _relative(v.get("features"), jobdir),
                                   "labels": _relative(v.get("labels"), jobdir)} for k, v in stages.items()},
                    "mean_file": s.get("mean_file"), "force_same_shape": s.get("force_same_shape"),
                    "class_labels": s.get("class_labels"), "num_classes": s.get("num_classes"),
                    "label_range": s.get("label_range"), "class_pixel_counts": s.get("class_pixel_counts")})
        return out

    def table_row(self, job: Job) -> dict:
        row = super().table_row(job)
        kind = generic_kind(job)
        if kind is not None:
            row["dataset_kind"] = kind
        return row

