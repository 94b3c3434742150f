"""DIGITS' JSON answers of jobs: a model's and a dataset's JSON, a job's status, index.json,
completed_jobs.json and its table rows, and the classifications of a classify_many job."""
from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

from ... import __version__
from ..digits.generic_model_files import generic_model_json
from ..errors import ApiError
from ..jobs.epochs import epoch_label
from ..jobs import states
from ..store.models import Job
from .lookups import JobLookups

DIGITS_VERSION = "6.1.1"          # the DIGITS whose REST API we answer
#: predictions per image in DIGITS' classify answers
DIGITS_TOP = 5


class DigitsPresenters(JobLookups):
    """DIGITS' JSON of jobs (what DIGITS' routes and their /api/v1 twins answer)."""

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
        info = self.dataset_info(ds) if ds is not None else {}
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
        if spec.get("kind") == "generic":
            d = generic_model_json(d, self.lookup_job(ds.id) if ds is not None else None)
        if verbose:
            d["directory"] = str(self.job_dir(job.id))
            d["snapshots"] = [epoch_label(sn["epoch"]) for sn in snaps]
        return d

    def dataset_json(self, job: Job) -> dict:
        """DIGITS' GET /datasets/<id>.json: id, name, status, directory, ParseFolderTasks and
        CreateDbTasks (DIGITS' quirk kept: ``image_width`` holds the height and
        ``image_height`` the width)."""
        spec = job.spec or {}
        info = self.dataset_info(job)
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
                "directory": str(self.job_dir(job.id)),
                "ParseFolderTasks": parse, "CreateDbTasks": create,
                # brewnet's
                "progress": round(float(job.progress or 0.0), 4), "error": job.error,
                "labels": info["labels"], "counts": counts}

    def status_json(self, job: Job) -> dict:
        """DIGITS' /jobs/<id>/status answer."""
        return {"status": job.status, "name": job.name,
                "type": states.job_type_name(job), "error": job.error}

    def short_json(self, job: Job) -> dict:
        """index.json's entry: a dataset's {id, name, status}, a model's create answer."""
        if job.kind == states.MODEL:
            return self.model_json(job)
        return {"id": job.id, "name": job.name, "status": job.status}

    def table_row(self, job: Job) -> dict:
        """DIGITS' completed_jobs.json / table_data.json entry."""
        first = job.status_history[0][1] if job.status_history else job.created
        if job.started is not None:
            elapsed = (job.finished or time.time()) - job.started if job.status != states.WAITING else 0.0
        else:
            elapsed = 0.0
        row = {"id": job.id, "name": job.name, "group": job.group_name or "", "status": job.status,
               "status_css": states.CSS.get(job.status, "default"), "submitted": first,
               "elapsed": round(max(0.0, elapsed), 3), "progress": round(float(job.progress or 0.0), 4),
               "type": states.job_type_name(job), "owner": job.owner}
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

    def classifications(self, job: Job) -> dict:
        """DIGITS' classify_many answer from a finished inference job: ``{"classifications":
        {key: [[label, conf %], ...]}}`` (unreadable images left out, as DIGITS did)."""
        d = self.job_dir(job.id)
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
