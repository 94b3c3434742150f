"""The scheduler: a queue of jobs, resource slots, the steps' subprocesses, abort/resume and
recovery after the server was killed.

The database (queried through the job store, :class:`~brewnet.server.store.jobstore.JobStore`)
is the truth for every job's state; each change is one transaction, followed by an atomic
rewrite of the job's ``job.json``.  The scheduler knows no HTTP: a refused call raises a job
error (``JobNotFound``, ``JobStateError``, ``JobRequestError``) that the routes answer.  \
The loop (an asyncio task, one tick every
``config.poll_interval_s``) polls the running steps with ``Popen.poll()`` (never blocking the
event loop), updates progress and summaries (throttled to about once a second), finishes jobs
whose last step ended and starts waiting jobs whose resources are free.

Resources: ``config.cpu_slots`` CPU jobs at once; a GPU job takes its GPUs (indices from
``config.gpus``) and no CPU slot.  A job's ``resources``: ``{"gpus": [i, ...]}`` (DIGITS'
``select_gpus``) or ``{"gpu_count": n}`` (``select_gpu_count``); neither: a CPU job.  Waiting jobs
are considered in queue order (``queue_seq``); a job whose resources are busy waits while later
jobs needing other resources may start (as DIGITS did).  A model waits for its dataset to be Done
and is Aborted when the dataset ended otherwise.

``listeners`` (callables taking job.json's dict) are called after every committed change, in
the thread that made it, outside any database session; within a tick, jobs that ended are
published before waiting jobs are considered (so a listener can prepare a model's files when
its dataset becomes Done).  Call ``submit``/``abort``/``resume`` outside your own
``db.session()`` block: each opens its own transaction.

``submit``/``abort``/``resume``/``queue``/``slots`` may be called from any thread (FastAPI runs
plain ``def`` routes in a thread pool); steps are only ever started from the loop's thread,
because PR_SET_PDEATHSIG follows the thread that forked the child.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import BrewnetError
from .errors import JobError, JobNotFound, JobRequestError, JobStateError
from .jobs import states
from .jobs.jobdir import (JOB_JSON, is_job_id, job_dir, job_from_dict, job_to_dict, read_job_json,
                          write_job_json)
from .jobs.process import last_error_line, pid_alive, process_start_time, signal_group, start_step
from .jobs.progress import progress_from_file, read_metrics, read_plan
from .jobs.summaries import all_records, dataset_summary, inference_summary, model_summary
from .jobs.tasks import newest_solverstate, python_path, steps_for
from .store.jobstore import JobStore
from .store.models import Job

log = logging.getLogger("brewnet.server")

#: a Waiting state shorter than this disappears from the status history (as in DIGITS)
SHORT_WAIT_S = 1.0
#: how often a running job's progress and summary are refreshed (seconds)
UPDATE_EVERY_S = 1.0
#: how long recovery waits for a trainer of the killed server to snapshot and exit
RECOVERY_WAIT_S = 30.0

StepsOverride = Callable[[Job, bool], list[list[str]]]


@dataclass
class _Run:
    """A job whose steps are running (this server started them)."""
    job_id: str
    kind: str
    jobdir: Path
    proc: object                    # subprocess.Popen of the current step
    steps: list[list[str]]          # steps still to run after the current one
    gpus: list[int]
    uses_cpu_slot: bool
    aborting: bool = False
    kill_at: float | None = None    # SIGKILL the group at this time (abort grace period)
    last_update: float = 0.0
    metrics_offset: int = 0
    metric_records: list[dict] = field(default_factory=list)  # non-train records (best values)
    newest_iter: int | None = None
    python_path: list[str] = field(default_factory=list)   # module folders of its steps (tasks.python_path)


# ---------------------------------------------------------------- the scheduler

class Scheduler:
    """Queue, slots and subprocesses of the server's jobs (see the module docstring)."""

    def __init__(self, config, db, *, abort_grace_s: float | None = None,
                 train_abort_grace_s: float | None = None, recovery_wait_s: float = RECOVERY_WAIT_S,
                 steps_override: StepsOverride | None = None):
        """``abort_grace_s`` (default 10) / ``train_abort_grace_s`` (default 120): seconds between
        an abort's SIGTERM and SIGKILL (a trainer first writes its snapshot).  ``steps_override``
        (tests only) replaces :func:`steps_for`: ``(job, resume) -> [argv, ...]``."""
        self.config = config
        self.db = db
        self.store = JobStore(db)
        self.abort_grace_s = abort_grace_s if abort_grace_s is not None else \
            float(getattr(config, "abort_grace_s", 10.0))
        self.train_abort_grace_s = train_abort_grace_s if train_abort_grace_s is not None else \
            float(getattr(config, "train_abort_grace_s", 120.0))
        self.recovery_wait_s = recovery_wait_s
        self.steps_override = steps_override
        self.listeners: list[Callable[[dict], None]] = []   # called with job.json's dict on each change
        self._lock = threading.RLock()
        self._running: dict[str, _Run] = {}
        self._waiting_for: dict[str, str] = {}
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Recover from the previous run (see :meth:`recover`), then start the loop."""
        self.config.ensure_dirs()
        await self.recover()
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task = asyncio.create_task(self._run_loop(), name="brewnet-scheduler")

    async def stop(self, timeout_s: float = 30.0) -> None:
        """Graceful shutdown: the loop ends, running steps get SIGTERM (a trainer snapshots and
        exits), SIGKILL after ``timeout_s``; their jobs become Interrupted (Aborted if an abort
        was pending).  Waiting jobs stay queued for the next start."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        with self._lock:
            runs = list(self._running.values())
            for run in runs:
                signal_group(run.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while any(r.proc.poll() is None for r in runs) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        with self._lock:
            for run in runs:
                if run.proc.poll() is None:
                    signal_group(run.proc.pid, signal.SIGKILL)
                    try:
                        run.proc.wait(timeout=5)
                    except Exception:  # noqa: BLE001 - a process that cannot be reaped stays a zombie
                        pass
                rc = run.proc.poll()
                self._finish(run, rc if rc is not None else -9)
        self._loop = None

    async def _run_loop(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - one bad job must not stop the scheduler
                log.exception("scheduler tick failed")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.config.poll_interval_s)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    def _poke(self) -> None:
        """Wake the loop now (from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(wake.set)
            except RuntimeError:  # the loop closed meanwhile
                pass

    # ------------------------------------------------------------ helpers

    def _dir(self, job_id: str) -> Path:
        return job_dir(self.config, job_id)

    @staticmethod
    def _set_status(job: Job, status: str, now: float) -> None:
        history = [list(x) for x in (job.status_history or [])]
        if status == states.RUNNING and history and history[-1][0] == states.WAITING \
                and now - float(history[-1][1]) < SHORT_WAIT_S:
            history.pop()
        history.append([status, now])
        job.status_history = history
        job.status = status
        if status in states.FINISHED:
            job.finished = now
            job.queue_seq = None
            job.pid = job.pid_start = None
            job.assigned = {}

    def _publish(self, d: dict) -> None:
        """job.json (atomic) and the listeners, after the transaction committed."""
        jobdir = Path(self.config.jobs_dir) / d["id"]
        if jobdir.is_dir():
            try:
                write_job_json(jobdir, d)
            except OSError:
                log.exception("could not write %s", jobdir / JOB_JSON)
        for fn in list(self.listeners):
            try:
                fn(d)
            except Exception:  # noqa: BLE001 - a listener's bug must not break the scheduler
                log.exception("scheduler listener failed")

    def _change(self, job_id: str, mutate: Callable[[Job, object], object]) -> tuple[dict | None, object]:
        """One transaction: load the job, ``mutate(job, session)``, commit, publish.
        Returns (job dict or None if there is no such job, mutate's result)."""
        job, result = self.store.update_job(job_id, mutate)
        if job is None:
            return None, None
        d = job_to_dict(job)
        self._publish(d)
        return d, result

    # ------------------------------------------------------------ public API

    def submit(self, job_id: str) -> None:
        """Queue an Initialized job (Initialized -> Waiting, at the end of the queue).  A job
        already Waiting stays where it is (recovery may have queued it); other states raise
        JobStateError, an unknown job JobNotFound."""
        with self._lock:
            def go(job, s):
                if job.status == states.WAITING:
                    return
                if job.status != states.INITIALIZED:
                    raise JobStateError(f"job {job_id} is {job.status}, not {states.INITIALIZED}")
                job.queue_seq = self.store.next_queue_seq(s)
                self._set_status(job, states.WAITING, time.time())
            d, _ = self._change(job_id, go)
            if d is None:
                raise JobNotFound()
        self._poke()

    def abort(self, job_id: str, grace_s: float | None = None) -> bool:
        """Waiting/Initialized -> Aborted at once; Running -> SIGTERM to its process group (a
        trainer snapshots first), Aborted when it exits, SIGKILL after the grace period
        (``grace_s``, default the job kind's; a second abort with a shorter one brings the
        SIGKILL forward).  False when the job is unknown or not active."""
        with self._lock:
            run = self._running.get(job_id)
            if run is not None:
                if run.proc.poll() is not None and not run.steps:
                    return False   # its last step has ended: the next tick records how
                if grace_s is None:
                    grace_s = self.train_abort_grace_s if run.kind == states.MODEL else self.abort_grace_s
                kill_at = time.monotonic() + grace_s
                if not run.aborting:
                    run.aborting = True
                    run.kill_at = kill_at
                    signal_group(run.proc.pid, signal.SIGTERM)
                elif run.kill_at is not None:
                    run.kill_at = min(run.kill_at, kill_at)
                self._poke()
                return True

            def go(job, s):
                if job.status not in states.ACTIVE:
                    return False
                # Running without a process of ours (not recovered yet): nothing runs for it here
                self._set_status(job, states.ABORTED, time.time())
                return True
            d, ok = self._change(job_id, go)
            self._waiting_for.pop(job_id, None)
            return bool(ok)

    def resume(self, job_id: str) -> None:
        """A model job that ended Aborted/Interrupted/Error with a solverstate goes back to the
        queue; its step then passes ``-snapshot <newest solverstate>`` and the trainer continues
        at that iteration, appending to the same metrics file."""
        with self._lock:
            def go(job, s):
                if job.kind != states.MODEL:
                    raise JobRequestError(f"only a model job can be resumed ({job_id} is a {job.kind} job)")
                if job.status not in states.RESUMABLE:
                    raise JobStateError(f"job {job_id} is {job.status}: only an Aborted, Interrupted "
                                        "or Error job can be resumed")
                if newest_solverstate(self._dir(job_id)) is None:
                    raise JobRequestError(f"job {job_id} has no snapshot (.solverstate) to resume from")
                job.resume_requested = True
                job.error = None
                job.finished = None
                job.queue_seq = self.store.next_queue_seq(s)
                self._set_status(job, states.WAITING, time.time())
            d, _ = self._change(job_id, go)
            if d is None:
                raise JobNotFound()
        self._poke()

    def queue(self) -> list[dict]:
        """Waiting jobs in queue order: ``{"id", "name", "kind", "position" (1-based),
        "waiting_for"}`` (what the job waits for, as the last tick saw it)."""
        rows = self.store.queue(states.WAITING)
        return [{"id": jid, "name": name, "kind": kind, "position": i + 1,
                 "waiting_for": self._waiting_for.get(jid, "its turn")} for i, (jid, name, kind) in enumerate(rows)]

    def slots(self) -> dict:
        """``{"cpu": {"total", "used"}, "gpus": [{"index", "job_id"}]}``."""
        with self._lock:
            runs = list(self._running.values())
        owner = {g: r.job_id for r in runs for g in r.gpus}
        return {"cpu": {"total": int(self.config.cpu_slots), "used": sum(r.uses_cpu_slot for r in runs)},
                "gpus": [{"index": g, "job_id": owner.get(g)} for g in self.config.gpus]}

    def running_ids(self) -> list[str]:
        """Ids of the jobs whose steps run now."""
        with self._lock:
            return list(self._running)

    # ------------------------------------------------------------ the tick

    def tick(self) -> None:
        """One round: poll running steps (progress, next step, finish), then start what can."""
        with self._lock:
            self._poll_running()
            if not self._stopping:
                self._schedule()

    def _poll_running(self) -> None:
        now = time.monotonic()
        for run in list(self._running.values()):
            rc = run.proc.poll()
            if rc is None:
                if run.kill_at is not None and now >= run.kill_at:
                    log.warning("job %s did not stop after SIGTERM: SIGKILL", run.job_id)
                    signal_group(run.proc.pid, signal.SIGKILL)
                    run.kill_at = None
                if now - run.last_update >= UPDATE_EVERY_S:
                    run.last_update = now
                    self._refresh(run)
                continue
            if rc == 0 and run.steps and not run.aborting and not self._stopping:
                self._next_step(run)
                continue
            self._finish(run, rc)

    def _read_new_metrics(self, run: _Run) -> None:
        records, run.metrics_offset = read_metrics(run.jobdir, run.metrics_offset)
        for r in records:
            if r.get("phase") == "train":
                it = r.get("iter")
                if isinstance(it, int) and (run.newest_iter is None or it > run.newest_iter):
                    run.newest_iter = it
            else:
                run.metric_records.append(r)

    def _refresh(self, run: _Run) -> None:
        """Progress and summary of a running job (written only when they changed)."""
        try:
            if run.kind == states.MODEL:
                self._read_new_metrics(run)

                def go(job, s):
                    plan = read_plan(run.jobdir)
                    if run.newest_iter is not None and plan.get("max_iter"):
                        p = min(1.0, run.newest_iter / float(plan["max_iter"]))
                    else:
                        p = job.progress
                    summary = model_summary(run.jobdir, job.spec or {}, run.metric_records, run.newest_iter)
                    if abs((job.progress or 0) - (p or 0)) < 1e-4 and summary == (job.summary or {}):
                        return
                    job.progress = p
                    job.summary = summary
            else:
                p_file = progress_from_file(run.jobdir)

                def go(job, s):
                    if p_file is None or abs((job.progress or 0) - p_file) < 1e-4:
                        return
                    job.progress = p_file
            def changed(job, s) -> bool:
                before = (job.progress, job.summary)
                go(job, s)
                return (job.progress, job.summary) != before
            job, was_changed = self.store.update_job(run.job_id, changed)
            if job is None or not was_changed:
                return
            self._publish(job_to_dict(job))
        except Exception:  # noqa: BLE001 - a progress read must not end the job
            log.exception("progress update of %s failed", run.job_id)

    def _next_step(self, run: _Run) -> None:
        argv = run.steps.pop(0)
        try:
            run.proc = start_step(argv, run.jobdir, run.gpus, python_path=run.python_path)
        except OSError as e:
            self._finish(run, None, error=f"could not start {argv[:4]}: {e}")
            return

        started = process_start_time(run.proc.pid)  # not reaped yet: its /proc entry is there

        def go(job, s):
            job.pid, job.pid_start = run.proc.pid, started
        self._change(run.job_id, go)

    def _finish(self, run: _Run, rc: int | None, error: str | None = None) -> None:
        """The job's last step ended (or could not start): Done, Error, Aborted or, while the
        server stops, Interrupted; summary and progress from its files."""
        self._running.pop(run.job_id, None)
        # stragglers of the group (data loader workers): the group id cannot be reused while any
        # member lives, so this reaches only our processes
        signal_group(run.proc.pid, signal.SIGKILL)
        if run.aborting:
            status = states.ABORTED
        elif self._stopping:
            status = states.INTERRUPTED
        elif rc == 0 and error is None:
            status = states.DONE
        else:
            status = states.ERROR
            if error is None:
                why = f"killed by signal {-rc}" if rc is not None and rc < 0 else f"exit code {rc}"
                line = last_error_line(run.jobdir)
                error = line or f"task failed ({why})"

        def go(job, s):
            self._set_status(job, status, time.time())
            job.error = error if status == states.ERROR else None
            self._update_results(job, run)
        self._change(run.job_id, go)
        self._poke()

    def _update_results(self, job: Job, run: _Run | None) -> None:
        """Summary and progress from the job's files (after it ran or was interrupted)."""
        jobdir = self._dir(job.id)
        if job.kind == states.MODEL:
            records = all_records(jobdir)
            job.summary = model_summary(jobdir, job.spec or {}, records)
            plan = read_plan(jobdir)
            it = job.summary.get("iteration")
            if it is not None and plan.get("max_iter"):
                job.progress = min(1.0, it / float(plan["max_iter"]))
        elif job.kind == states.DATASET:
            if job.status == states.DONE:
                job.summary = dataset_summary(jobdir)
        elif job.kind == states.INFERENCE:
            if job.status == states.DONE:
                job.summary = inference_summary(jobdir)
        if job.status == states.DONE:
            job.progress = 1.0
        elif job.kind != states.MODEL:
            p = progress_from_file(jobdir)
            if p is not None:
                job.progress = p

    def _wanted_gpus(self, job: Job, busy: set[int]) -> tuple[list[int] | None, str | None, str | None]:
        """(gpus to give or None to wait, what it waits for, an error that makes it unrunnable)."""
        res = job.resources or {}
        wanted = [int(g) for g in (res.get("gpus") or [])]
        count = int(res.get("gpu_count") or 0)
        have = [int(g) for g in self.config.gpus]
        if wanted:
            missing = [g for g in wanted if g not in have]
            if missing:
                return None, None, (f"GPU {', '.join(map(str, missing))} is not available on this server "
                                    f"(it has {', '.join(map(str, have)) or 'no GPU'})")
            taken = [g for g in wanted if g in busy]
            if taken:
                return None, f"GPU {', '.join(map(str, taken))}", None
            return wanted, None, None
        if count:
            if count > len(have):
                return None, None, f"{count} GPUs asked for, this server has {len(have)}"
            free = [g for g in have if g not in busy]
            if len(free) < count:
                return None, f"{count} free GPU{'s' if count > 1 else ''}", None
            return free[:count], None, None
        return [], None, None

    def _schedule(self) -> None:
        busy = {g for r in self._running.values() for g in r.gpus}
        cpu_used = sum(r.uses_cpu_slot for r in self._running.values())
        waiting = self.store.queue_with_datasets(states.WAITING, states.MODEL)
        seen = set()
        for job_id, kind, dataset_id, ds_status, resources in waiting:
            seen.add(job_id)
            if ds_status is not None and ds_status != states.DONE:
                if ds_status == "missing":
                    self._end_waiting(job_id, states.ABORTED, f"dataset {dataset_id} not found")
                    continue
                if ds_status in states.FINISHED:
                    self._end_waiting(job_id, states.ABORTED, f"dataset {dataset_id} ended {ds_status}")
                    continue
                self._waiting_for[job_id] = f"dataset {dataset_id}"
                continue
            fake = Job(id=job_id, resources=resources)
            gpus, wait_for, error = self._wanted_gpus(fake, busy)
            if error is not None:
                self._end_waiting(job_id, states.ERROR, error)
                continue
            if gpus is None:
                self._waiting_for[job_id] = wait_for
                continue
            if not gpus and cpu_used >= int(self.config.cpu_slots):
                self._waiting_for[job_id] = "a CPU slot"
                continue
            if self._start_job(job_id, gpus):
                if gpus:
                    busy.update(gpus)
                else:
                    cpu_used += 1
        for k in list(self._waiting_for):
            if k not in seen or k in self._running:
                self._waiting_for.pop(k, None)

    def _end_waiting(self, job_id: str, status: str, error: str) -> None:
        def go(job, s):
            if job.status != states.WAITING:
                return
            self._set_status(job, status, time.time())
            job.error = error
        self._change(job_id, go)
        self._waiting_for.pop(job_id, None)

    def _start_job(self, job_id: str, gpus: list[int]) -> bool:
        """Build the steps and start the first one; Running with its pid in one transaction.
        A job whose steps cannot be built (no snapshot, bad spec) ends Error."""
        jobdir = self._dir(job_id)
        started: dict = {}

        def go(job, s):
            if job.status != states.WAITING:
                return False
            job.assigned = {"gpus": list(gpus)} if gpus else {}
            resume = bool(job.resume_requested)
            try:
                if not jobdir.is_dir():
                    raise BrewnetError(f"job directory {jobdir} is missing")
                steps = (self.steps_override(job, resume) if self.steps_override is not None
                         else steps_for(job, self.config, resume=resume))
                if not steps:
                    raise BrewnetError("the job has no step to run")
                started["python_path"] = python_path(job, self.config)
                proc = start_step(steps[0], jobdir, gpus, python_path=started["python_path"])
            except (BrewnetError, JobError, OSError, ValueError, KeyError, TypeError, ImportError) as e:
                msg = getattr(e, "message", None) or str(e) or type(e).__name__
                self._set_status(job, states.ERROR, time.time())
                job.error = msg
                log.warning("job %s cannot start: %s", job_id, msg)
                return False
            started["proc"], started["steps"], started["kind"] = proc, steps[1:], job.kind
            job.resume_requested = False
            job.pid, job.pid_start = proc.pid, process_start_time(proc.pid)
            job.started = time.time()
            job.finished = None
            job.error = None
            if not resume:
                job.progress = 0.0
            self._set_status(job, states.RUNNING, time.time())
            return True
        try:
            d, ok = self._change(job_id, go)
        except Exception:
            # the row could not be written: the step must not run unknown to the database
            if "proc" in started:
                signal_group(started["proc"].pid, signal.SIGKILL)
                started["proc"].wait()
            raise
        if not ok:
            return False
        self._running[job_id] = _Run(job_id=job_id, kind=started["kind"], jobdir=jobdir.resolve(),
                                     proc=started["proc"], steps=started["steps"], gpus=list(gpus),
                                     uses_cpu_slot=not gpus, python_path=started["python_path"])
        self._waiting_for.pop(job_id, None)
        return True

    # ------------------------------------------------------------ recovery

    async def recover(self) -> None:
        """Make the database and the job directories agree after the server stopped, however it
        stopped (SIGKILL included):

        - rows whose directory vanished are deleted;
        - directories with a job.json and no row are re-imported from job.json;
        - Running jobs become Interrupted (a step of the old server still alive, checked to be
          ours by pid, start time and working directory (jobs.process.pid_alive), is given
          ``recovery_wait_s`` to finish: PR_SET_PDEATHSIG made a trainer snapshot and exit;
          then SIGKILL);
        - Initialized and Waiting jobs are queued again, keeping their queue order;
        - every job.json is rewritten from its row where it differs.
        """
        jobs_root = Path(self.config.jobs_dir)
        with self._lock:
            with self.store.transaction() as s:
                rows = {j.id: j for j in self.store.all_jobs(s)}
                for jid, job in list(rows.items()):
                    if not (jobs_root / jid).is_dir():
                        log.warning("job %s: its directory is gone; removing it from the database", jid)
                        self.store.delete_row(s, job)
                        del rows[jid]
                # directories the database does not know (a lost or new database)
                imported = []
                if jobs_root.is_dir():
                    for d in sorted(jobs_root.iterdir()):
                        if not is_job_id(d.name) or d.name in rows or not (d / JOB_JSON).is_file():
                            continue
                        try:
                            data = read_job_json(d)
                        except (ValueError, OSError) as e:
                            log.warning("job directory %s: %s; not imported", d, e)
                            continue
                        if data.get("id") != d.name:
                            log.warning("job directory %s: job.json names %s; not imported", d, data.get("id"))
                            continue
                        job = job_from_dict(data)
                        self.store.add_row(s, job)
                        rows[job.id] = job
                        imported.append(job.id)
                s.flush()
                alive = {jid: (j.pid, j.pid_start) for jid, j in rows.items()
                         if j.status == states.RUNNING and pid_alive(j.pid, jobs_root / jid, j.pid_start)}
        if imported:
            log.info("re-imported %d job(s) from their job.json: %s", len(imported), ", ".join(imported))
        # a trainer of the killed server got SIGTERM from PR_SET_PDEATHSIG: let it snapshot
        deadline = time.monotonic() + self.recovery_wait_s
        while alive and time.monotonic() < deadline:
            alive = {jid: who for jid, who in alive.items() if pid_alive(who[0], jobs_root / jid, who[1])}
            if alive:
                await asyncio.sleep(0.2)
        for jid, (pid, started) in alive.items():
            if pid_alive(pid, jobs_root / jid, started):  # checked again just before the signal
                log.warning("job %s: process %d of the previous server still runs; SIGKILL", jid, pid)
                signal_group(pid, signal.SIGKILL)
        with self._lock:
            changed = []
            with self.store.transaction() as s:
                jobs = self.store.all_jobs(s, queue_order=True)
                seq = max([j.queue_seq or 0 for j in jobs] + [0])
                now = time.time()
                for job in jobs:
                    if job.status == states.RUNNING:
                        self._set_status(job, states.INTERRUPTED, now)
                        job.error = None
                        self._update_results(job, None)
                        job.resume_requested = False
                    elif job.status in (states.INITIALIZED, states.WAITING):
                        if job.status == states.INITIALIZED:
                            self._set_status(job, states.WAITING, now)
                        if job.queue_seq is None:
                            seq += 1
                            job.queue_seq = seq
                        job.pid = job.pid_start = None
                        job.assigned = {}
                    elif job.pid is not None or job.pid_start is not None or job.assigned:
                        job.pid = job.pid_start = None
                        job.assigned = {}
                s.flush()
                for job in jobs:
                    changed.append(job_to_dict(job))
            for d in changed:
                jobdir = jobs_root / d["id"]
                try:
                    old = read_job_json(jobdir)
                except (ValueError, OSError):
                    old = None
                if old is None or {k: v for k, v in old.items() if k != "brewnet_version"} != \
                        {k: v for k, v in d.items() if k != "brewnet_version"}:
                    self._publish(d)
