"""The home page (``/``): datasets, models and inference jobs with their state, progress, place in
the queue and (models) a small sparkline of the training loss; filters by text, state and owner;
live without reload: the page follows ``/api/v1/events`` (status, progress, queue, deletions) and
asks ``/api/v1/jobs/<id>`` for jobs it has not seen.  The resource slots and the queue are shown
beside the tables, as DIGITS' home hid them (its issues #127, #729)."""
from __future__ import annotations

from fastapi import APIRouter, Request

from ..app_state import server_of
from ..jobs import states
from ..schemas import job_out, queue_positions
from ..threads import in_thread
from .render import page

router = APIRouter(include_in_schema=False)   # the page itself is DIGITS' route "/"


def _context(server) -> dict:
    positions = queue_positions(server)
    jobs = [job_out(j, positions).model_dump() for j in server.list_jobs()]
    groups = {k: [j for j in jobs if j["kind"] == k] for k in states.KINDS}
    return {"datasets": groups[states.DATASET], "models": groups[states.MODEL],
            "inference": groups[states.INFERENCE], "css": states.CSS,
            "queue": server.scheduler.queue(), "slots": server.scheduler.slots()}


async def render_home(request: Request):
    server = server_of(request)
    ctx = await in_thread(_context, server)
    return page(request, "jobs_home.html", title="Jobs", nav="home", **ctx)
