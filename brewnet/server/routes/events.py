"""Server-Sent Events: one stream per job, one for the whole server (plain ``text/event-stream``).

Per job (``GET /api/v1/jobs/{id}/events``):

- ``status`` when the status changes (the first event: the current one), ``progress`` when the
  progress changes;
- ``metric``: every record appended to the job's ``metrics.jsonl``, read by byte offset.  Each
  metric event's ``id`` is the byte offset just after its line, so a client reconnecting with
  ``Last-Event-ID`` (EventSource does this itself) continues after the last record it got --
  no duplicates, none missed.  A first connection gets every record already written;
- ``done`` once the job has finished (Done/Aborted/Error/Interrupted), after its last records;
  the stream then ends (an EventSource must ``close()`` on it, or it reconnects);
- ``deleted`` if the job disappears meanwhile (the stream ends).

Server-wide (``GET /api/v1/events``): ``status`` and ``progress`` of every job (a first
connection gets every job's status), ``deleted``, and ``queue`` whenever the queue changes.

Both poll the database and the files every :data:`POLL_S` (the trainer writes the files; the
scheduler the database); a comment line every :data:`KEEPALIVE_S` keeps proxies from closing an
idle stream; a stream stops when its client disconnects.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import AsyncIterator

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from .. import security
from ..app_state import server_of
from ..errors import ApiError
from ..jobs import states
from ..store.models import User
from ..threads import in_thread

router = APIRouter(tags=["events"])

POLL_S = 0.5
KEEPALIVE_S = 15.0
MAX_READ = 4 * 1024 * 1024        # metric bytes read per poll: a huge backlog is sent in pieces
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_SSE_DOC = {200: {"content": {"text/event-stream": {}}, "description": "an event stream"}}


def sse(event: str, data: dict, event_id: str | int | None = None) -> str:
    """One Server-Sent Event (data as one line of JSON)."""
    head = f"event: {event}\n"
    if event_id is not None:
        head += f"id: {event_id}\n"
    return head + f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def read_metric_lines(path: Path, offset: int, limit: int = MAX_READ) -> tuple[list[tuple[int, dict]], int]:
    """Complete JSON lines of ``path`` from byte ``offset``: ``([(offset after the line, record),
    ...], new offset)``.  A partial last line waits for the next read; an unparsable complete
    line is skipped (its bytes are passed).  A file shorter than ``offset`` (rewritten) is read
    from 0 again."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < offset:
                offset = 0
            f.seek(offset)
            data = f.read(limit)
    except FileNotFoundError:
        return [], offset
    out: list[tuple[int, dict]] = []
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break
        line = data[pos:nl].strip()
        pos = nl + 1
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            out.append((offset + pos, rec))
    return out, offset + pos


def _last_event_id(request: Request) -> int:
    raw = request.headers.get("last-event-id") or request.query_params.get("last_event_id") or "0"
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"Last-Event-ID must be a byte offset (an integer), not {raw[:40]!r}") from None
    if value < 0:
        raise ApiError(400, "Last-Event-ID must not be negative")
    return value


def _status_data(job) -> dict:
    return {"id": job.id, "kind": job.kind, "name": job.name, "status": job.status, "error": job.error,
            "time": (job.status_history[-1][1] if job.status_history else job.created)}


class _Stream:
    """Shared loop of both streams: poll, yield events, keep-alives, stop on disconnect."""

    def __init__(self, request: Request):
        self.request = request
        self.last_sent = time.monotonic()

    async def run(self, poll) -> AsyncIterator[str]:
        first = True
        while True:
            if not first and await self.request.is_disconnected():
                return
            first = False
            chunks, finished = await poll()
            for chunk in chunks:
                yield chunk
            if chunks:
                self.last_sent = time.monotonic()
            if finished:
                return
            if time.monotonic() - self.last_sent >= KEEPALIVE_S:
                yield ": keep-alive\n\n"
                self.last_sent = time.monotonic()
            await anyio.sleep(POLL_S)


@router.get("/api/v1/jobs/{job_id}/events", responses=_SSE_DOC, response_class=StreamingResponse)
async def job_events(request: Request, job_id: str, _user: User | None = Depends(security.read_access)):
    """The job's events (status, progress, metric, done); ``Last-Event-ID`` resumes the metrics."""
    server = server_of(request)
    offset = _last_event_id(request)
    await in_thread(server.get_job, job_id)   # 404 before the stream starts
    metrics = server.job_dir(job_id) / "metrics.jsonl"
    seen = {"status": None, "progress": None, "offset": offset}

    def poll_sync() -> tuple[list[str], bool]:
        out: list[str] = []
        job = server.find_job(job_id)
        if job is None:
            return [sse("deleted", {"id": job_id})], True
        if job.status != seen["status"]:
            seen["status"] = job.status
            out.append(sse("status", _status_data(job)))
        progress = round(float(job.progress or 0.0), 4)
        if progress != seen["progress"]:
            seen["progress"] = progress
            out.append(sse("progress", {"id": job.id, "progress": progress}))
        finished = job.status in states.FINISHED
        while True:
            # a finished job's file is complete: read it to the end before `done`
            records, seen["offset"] = read_metric_lines(metrics, seen["offset"])
            for end, rec in records:
                out.append(sse("metric", rec, end))
            if not finished or not records:
                break
        if finished:
            out.append(sse("done", {"id": job.id, "status": job.status, "error": job.error}))
        return out, finished

    async def poll():
        return await in_thread(poll_sync)

    return StreamingResponse(_Stream(request).run(poll), media_type="text/event-stream", headers=HEADERS)


@router.get("/api/v1/events", responses=_SSE_DOC, response_class=StreamingResponse)
async def server_events(request: Request, _user: User | None = Depends(security.read_access)):
    """Every job's status and progress changes, deletions, and the queue."""
    server = server_of(request)
    known: dict[str, tuple[str, float]] = {}
    last_queue: list | None = None

    def poll_sync() -> tuple[list[str], bool]:
        nonlocal last_queue
        out: list[str] = []
        jobs = server.list_jobs()
        current = {}
        for job in reversed(jobs):     # oldest first: events in the order the jobs were made
            progress = round(float(job.progress or 0.0), 4)
            current[job.id] = (job.status, progress)
            before = known.get(job.id)
            if before is None or before[0] != job.status:
                out.append(sse("status", _status_data(job)))
            if before is None or before[1] != progress:
                out.append(sse("progress", {"id": job.id, "progress": progress}))
        for job_id in known.keys() - current.keys():
            out.append(sse("deleted", {"id": job_id}))
        known.clear()
        known.update(current)
        q = server.scheduler.queue()
        if q != last_queue:
            last_queue = q
            out.append(sse("queue", {"queue": q}))
        return out, False

    async def poll():
        return await in_thread(poll_sync)

    return StreamingResponse(_Stream(request).run(poll), media_type="text/event-stream", headers=HEADERS)
