"""Job control: abort, resume, clone, delete (a model's classifications with it), edit and DIGITS'
bulk actions; the scheduler's listener that writes a model's files when its dataset is Done."""
from __future__ import annotations

import os
import secrets
import shutil
import time

from .. import security
from ..errors import ApiError, FormErrors
from ..jobs import states
from ..jobs.jobdir import write_job_json
from ..store.models import Job
from .creation import JobCreation

DELETED_PREFIX = ".deleted-"      # a job directory being removed (never re-imported)
ABORT_WAIT_S = 60.0               # delete of a job being aborted waits this long for its end
DELETE_GRACE_S = 5.0              # a job aborted by its delete: SIGTERM, then SIGKILL after this


class JobControl(JobCreation):
    """Control of jobs (see the module docstring); creation is :class:`JobCreation`'s."""

    def __init__(self, config, db, scheduler, pool):
        super().__init__(config, db, scheduler, pool)
        self._aborting: set[str] = set()         # abort asked for, job not ended yet
        scheduler.listeners.append(self._on_job_change)

    def _on_job_change(self, d: dict) -> None:
        """Scheduler listener: a dataset that became Done gets its waiting models' files written
        before the scheduler can start them (called in the scheduler's tick, before it
        schedules)."""
        if d.get("status") in states.FINISHED:
            self._aborting.discard(d.get("id"))
        if d.get("kind") != states.DATASET or d.get("status") != states.DONE:
            return
        ids = self.store.job_ids(states.MODEL, [states.INITIALIZED, states.WAITING], dataset_id=d["id"])
        for job_id in ids:
            self._ensure_model_files(job_id)


    # ------------------------------------------------------------------ control

    def _check_owner(self, user, job: Job) -> None:
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
            children = self.store.children(states.INFERENCE, job.id)
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
        d = self.job_dir(job_id)
        aside = d.parent / f"{DELETED_PREFIX}{job_id}-{secrets.token_hex(3)}"
        moved = False
        if d.is_dir():
            os.rename(d, aside)
            moved = True
        try:
            self.store.delete_job(job_id)
        except BaseException:
            if moved:
                os.rename(aside, d)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        self.forget_metrics(job_id)

    def edit(self, job_id: str, user, name: str | None = None, notes: str | None = None,
             group: str | None = None) -> Job:
        """Rename a job, change its notes or group; a blank name is a 400."""
        job = self.get_job(job_id)
        self._check_owner(user, job)
        if name is not None and not name.strip():
            raise FormErrors({"job_name": ["Name cannot be blank"]})
        def change(row, s) -> None:
            if name is not None:
                row.name = name.strip()
            if notes is not None:
                row.notes = notes
            if group is not None:
                row.group_name = group.strip()
        row, _ = self.store.update_job(job_id, change,
                                       before_commit=lambda row, _: write_job_json(self.job_dir(job_id), row))
        if row is None:
            raise ApiError(404, "Job not found")
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
