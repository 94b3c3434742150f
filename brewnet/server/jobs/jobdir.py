"""Job directories: ``<jobs_dir>/<job_id>/`` and its ``job.json``, plus path confinement.

``job.json`` mirrors the job's database row in a readable file (never a pickle, unlike DIGITS'
``status.pickle``), so a jobs folder can be understood, backed up and re-imported without the
database.  It is always replaced whole (temporary file, fsync, rename): a reader, or a server
killed half way, sees either the old or the new file, never a mix.

Every path a request names goes through :func:`safe_join` (inside a job directory) or
:func:`confine_server_path` (a server folder under a ``--data-root``).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ... import __version__
from ...formats.atomic import atomic_write
from ..errors import ApiError, JobNotFound
from ..store.models import Job
from . import states

JOB_ID_PATTERN = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")
JOB_JSON = "job.json"


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (:func:`brewnet.formats.atomic.atomic_write`: a
    temporary file beside it, fsync, rename, fsync of the folder)."""
    atomic_write(path, (json.dumps(obj, indent=1, sort_keys=False, allow_nan=False) + "\n").encode("utf-8"))


def _brewnet_version() -> str:
    return __version__


def job_to_dict(job) -> dict:
    """The job.json form of a Job row (the keys of the contract, plus the scheduler's fields
    needed to re-import the job: queue order, times, assigned resources)."""
    return {
        "id": job.id,
        "kind": job.kind,
        "type": states.job_type_name(job),
        "name": job.name,
        "group": job.group_name or "",
        "notes": job.notes or "",
        "owner": job.owner,
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
        "status": job.status,
        "status_history": [list(x) for x in (job.status_history or [])],
        "spec": job.spec or {},
        "dataset_id": job.dataset_id,
        "parent_id": job.parent_id,
        "resources": job.resources or {},
        "assigned": job.assigned or {},
        "queue_seq": job.queue_seq,
        "pid": job.pid,
        "pid_start": job.pid_start,
        "resume_requested": bool(job.resume_requested),
        "error": job.error,
        "progress": float(job.progress or 0.0),
        "summary": job.summary or {},
        "brewnet_version": _brewnet_version(),
    }


def job_from_dict(d: dict):
    """A new (unsaved) Job row from a job.json dict (re-import of a directory without a row)."""
    status = d.get("status") if d.get("status") in states.ALL else states.ERROR
    return Job(
        id=d["id"], kind=d.get("kind") if d.get("kind") in states.KINDS else states.DATASET,
        name=str(d.get("name") or d["id"]), group_name=d.get("group") or "", notes=d.get("notes") or "",
        owner=d.get("owner"), status=status,
        status_history=[list(x) for x in (d.get("status_history") or [])],
        created=float(d.get("created") or 0.0), started=d.get("started"), finished=d.get("finished"),
        progress=float(d.get("progress") or 0.0), queue_seq=d.get("queue_seq"),
        dataset_id=d.get("dataset_id"), parent_id=d.get("parent_id"),
        resources=d.get("resources") or {}, assigned=d.get("assigned") or {}, pid=d.get("pid"),
        pid_start=d.get("pid_start"),
        error=d.get("error"), spec=d.get("spec") or {}, summary=d.get("summary") or {},
        resume_requested=bool(d.get("resume_requested")))


def write_job_json(jobdir: str | os.PathLike, job) -> None:
    """Rewrite ``<jobdir>/job.json`` from a Job row (or an already made job dict), atomically."""
    d = job if isinstance(job, dict) else job_to_dict(job)
    write_json_atomic(Path(jobdir) / JOB_JSON, d)


def read_job_json(jobdir: str | os.PathLike) -> dict:
    """``<jobdir>/job.json`` as a dict.  FileNotFoundError if absent, ValueError if unreadable."""
    with open(Path(jobdir) / JOB_JSON, encoding="utf-8") as f:
        try:
            d = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{Path(jobdir) / JOB_JSON}: not JSON ({e})") from None
    if not isinstance(d, dict) or "id" not in d:
        raise ValueError(f"{Path(jobdir) / JOB_JSON}: not a job description")
    return d


def is_job_id(text: str) -> bool:
    """True for ids shaped YYYYMMDD-HHMMSS-xxxx (the only names job_dir accepts)."""
    return bool(JOB_ID_PATTERN.match(text or ""))


def job_dir(config, job_id: str) -> Path:
    """``<jobs_dir>/<job_id>``.  An id that is not shaped like a job id (so could name another
    path: ``..``, slashes) is a 404, as an unknown job is."""
    if not is_job_id(job_id):
        raise JobNotFound()
    return Path(config.jobs_dir) / job_id


def safe_join(root: str | os.PathLike, rel: str) -> Path:
    """``root/rel`` for a relative path that stays inside ``root`` once symlinks are resolved.
    Absolute paths, ``..`` parts, NUL bytes and symlinks leading out are refused (400)."""
    if rel is None or rel == "":
        raise ApiError(400, "empty path")
    rel = str(rel)
    if "\x00" in rel:
        raise ApiError(400, "path contains a NUL byte")
    if rel.startswith(("/", "\\")) or os.path.isabs(rel) or re.match(r"^[A-Za-z]:", rel):
        raise ApiError(400, f"absolute path refused: {rel}")
    parts = re.split(r"[\\/]+", rel)
    if any(p == ".." for p in parts):
        raise ApiError(400, f"'..' refused in path: {rel}")
    root = Path(root).resolve()
    full = root.joinpath(*[p for p in parts if p not in ("", ".")])
    # resolve(strict=False) follows every symlink that exists; a link out of root shows here
    if not _is_within(full.resolve(), root):
        raise ApiError(400, f"path leaves its folder: {rel}")
    return full


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def confine_server_path(path: str, roots: list[Path], what: str) -> Path:
    """A server-side path given in a form (a dataset folder, a list file), resolved (symlinks
    followed) and accepted only under one of ``roots`` (``--data-root``).  Empty → 400; no data
    roots configured, or outside them → 403.  Existence is the caller's to check (a form error)."""
    if path is None or not str(path).strip():
        raise ApiError(400, f"{what}: no path given", field=what)
    text = str(path).strip()
    if "\x00" in text:
        raise ApiError(400, f"{what}: path contains a NUL byte", field=what)
    if not roots:
        raise ApiError(403, f"{what}: server paths are refused (start brewnet serve with --data-root DIR)",
                       field=what)
    p = Path(os.path.expanduser(text))
    if not p.is_absolute():
        raise ApiError(400, f"{what}: give an absolute server path, not {text!r}", field=what)
    resolved = p.resolve()
    for r in roots:
        if _is_within(resolved, Path(r).resolve()):
            return resolved
    raise ApiError(403, f"{what}: {text} is not under a --data-root folder", field=what)
