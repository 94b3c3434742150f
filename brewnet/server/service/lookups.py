"""Reading jobs, for every service of the server: their rows (through the job store), directories,
a dataset's facts, a model's snapshots by epoch (jobs.epochs' rule), metrics, logs and files."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import anyio

from ..errors import ApiError
from ..jobs import states
from ..jobs.epochs import epoch_label, snapshot_epoch
from ..jobs.jobdir import is_job_id, job_dir, job_to_dict, safe_join
from ..jobs.progress import metric_series, read_metrics, read_plan
from ..jobs.summaries import dataset_summary
from ..jobs.tasks import snapshots
from ..store.jobstore import JobStore
from ..store.models import Job
from ..threads import in_thread


class JobLookups:
    """What every service reads: jobs by id or kind, their directories, datasets' facts, models'
    snapshots, metrics (read incrementally, cached per job), logs and files."""

    def __init__(self, config, db, scheduler, pool):
        self.config = config
        self.db = db
        self.store = JobStore(db)
        self.scheduler = scheduler
        self.pool = pool
        self._metrics_cache: dict[str, tuple[int, list[dict]]] = {}
        self._metrics_lock = threading.Lock()

    # ------------------------------------------------------------------ jobs

    def job_dir(self, job_id: str) -> Path:
        """The job's directory (an id not shaped like one is a JobNotFound, 404)."""
        return job_dir(self.config, job_id)

    def list_jobs(self, kind: str | None = None) -> list[Job]:
        """Every job (of ``kind``), newest first."""
        return self.store.list_jobs(kind)

    def get_job(self, job_id: str, kind: str | None = None) -> Job:
        """The job ``job_id`` (of ``kind`` when given), else ApiError 404 "Job not found"."""
        self.job_dir(job_id)  # an id not shaped like one is a 404 too
        job = self.store.get_job(job_id)
        if job is None or (kind is not None and job.kind != kind):
            raise ApiError(404, "Job not found")
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
        d["directory"] = str(self.job_dir(job.id))
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
            d.update(self.dataset_info(job))
        return d

    def dependents(self, job: Job) -> list[Job]:
        """Models that use a dataset job."""
        if job.kind != states.DATASET:
            return []
        return self.store.jobs_of_dataset(states.MODEL, job.id)

    # ------------------------------------------------------------------ datasets' facts, snapshots

    def dataset_info(self, ds: Job) -> dict:
        """What a model needs of its dataset: the summary (from the scheduler, else from the
        files), labels, image size, counts, the LMDBs and the mean file."""
        summary = dict(ds.summary or {})
        if not summary and ds.status == states.DONE:
            summary = dataset_summary(self.job_dir(ds.id))
        d = self.job_dir(ds.id)
        image = summary.get("image") or {}
        return {"summary": summary, "labels": summary.get("labels") or [],
                "num_classes": summary.get("num_classes") or len(summary.get("labels") or []),
                "image": image, "counts": summary.get("counts") or {},
                "dbs": summary.get("dbs") or {}, "mean_file": summary.get("mean_file"),
                "labels_file": str(d / "labels.txt"), "resize_mode": summary.get("resize_mode")}

    def snapshot_list(self, job: Job) -> list[dict]:
        """A model's snapshots ``[{"iteration", "epoch", "path"}]``, ascending (from its files:
        a snapshot written after the last summary counts too)."""
        d = self.job_dir(job.id)
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

    # ------------------------------------------------------------------ metrics, logs, files

    def _records(self, job: Job) -> list[dict]:
        """All metric records of a model (read incrementally: only new lines are parsed)."""
        d = self.job_dir(job.id)
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

    def forget_metrics(self, job_id: str) -> None:
        """Drop the cached metric records of a job (it was deleted)."""
        with self._metrics_lock:
            self._metrics_cache.pop(job_id, None)

    def log_tail(self, job: Job, lines: int = 200) -> str:
        """The last ``lines`` lines of the job's log.txt ('' when there is none yet)."""
        path = self.job_dir(job.id) / "log.txt"
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

    def job_file(self, rel: str) -> Path:
        """``/files/<rel>``: a file inside a job's directory (no ``..``, absolute path or symlink
        escape: 400; the database and other files of the jobs folder itself: 404)."""
        full = safe_join(self.config.jobs_dir, rel)
        first = Path(rel.replace("\\", "/")).parts[0] if rel else ""
        if not is_job_id(first) or not full.is_file():
            raise ApiError(404, "File not found")
        return full

    async def wait_finished(self, job_id: str, poll_s: float = 0.25) -> Job:
        """Await a job's end without blocking the event loop."""
        while True:
            job = await in_thread(self.get_job, job_id)
            if job.status in states.FINISHED:
                return job
            await anyio.sleep(poll_s)
