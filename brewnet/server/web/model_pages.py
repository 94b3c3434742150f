"""The model page (DIGITS' /models/<id>, issue 13 item 5) and its two data routes.

    GET /models/<id>                  render_model (routes/digits.py calls it): live graphs of every
                                      train/val output and the learning rate (plotly; the series from
                                      /api/v1/jobs/<id>/metrics, then new points from the job's SSE
                                      stream), BatchNorm health, CPU/GPU/memory use, the log's tail,
                                      status history, the solver settings, snapshots with their val
                                      accuracy and downloads, abort/resume/clone/delete/rename/notes
    GET /models/<id>/batchnorm.json   per BatchNorm layer its statistics in every snapshot and the
                                      train-vs-global gap of the newest (see :mod:`.batchnorm_stats`)
    GET /models/<id>/usage.json       the job's processes now: CPU %, resident memory, threads (from
                                      /proc/<pid> of the step the scheduler started, and its process
                                      group), the GPUs assigned to it and their memory where
                                      nvidia-smi says; ``running: false`` when no process runs

Changes (abort, resume, delete, rename, notes) go from the page's script to /api/v1.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from fastapi import Request

from ...child_processes import die_with_parent
from .. import security
from ..app_state import server_of
from ..errors import ApiError
from ..jobs import states
from ..jobs.process import pid_alive
from ..jobs.progress import read_plan
from ..schemas import job_out
from ..threads import in_thread
from . import batchnorm_stats
from .generic_inference_pages import forms_context as generic_forms_context
from .render import page
from .routers import page_router

router = page_router()

LOG_LINES = 80                 # lines of the log shown
INITIAL_MAX_POINTS = 5000      # per series in the page's first load (the SSE adds the rest)


# ----------------------------------------------------------------------- the page

def metrics_offset(jobdir: Path) -> int:
    """The byte offset just after the last complete line of metrics.jsonl (0 without one): the
    page's event stream starts there (``last_event_id``), the metrics route gave what was before."""
    path = jobdir / "metrics.jsonl"
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":
                return size
            start = max(0, size - 65536)
            f.seek(start)
            data = f.read()
    except OSError:
        return 0
    nl = data.rfind(b"\n")
    return start + nl + 1 if nl >= 0 else 0


def snapshot_rows(snapshots: list[dict], series: dict) -> list[dict]:
    """The snapshots ``[{"iteration", "epoch", "file", "accuracy"}]`` with the validation
    accuracy (phase "test", the first output named with 'accuracy') at their iteration, or None."""
    test = series.get("test") or {}
    name = next((n for n in sorted(test) if "accuracy" in n.lower()), None)
    by_iter = {p[0]: p[1] for p in test.get(name, [])} if name else {}
    return [{"iteration": s["iteration"], "epoch": s["epoch"], "file": Path(s["path"]).name,
             "accuracy": by_iter.get(s["iteration"]), "accuracy_name": name} for s in snapshots]


def _can_change(user, job) -> bool:
    try:
        security.check_owner(user, job)
        return True
    except ApiError:
        return False


def _settings(job) -> list[tuple[str, str]]:
    """The job's spec as (setting, text) rows, in the spec's order, empty ones left out."""
    rows = []
    for k, v in (job.spec or {}).items():
        if v is None or v == "" or v == [] or v == {} or k in ("custom_network", "lint_findings"):
            continue
        if isinstance(v, dict):
            v = ", ".join(f"{a}={b}" for a, b in v.items())
        elif isinstance(v, list):
            v = ", ".join(str(x) for x in v)
        rows.append((k, str(v)))
    return rows


def _context(request: Request, server, job) -> dict:
    d = server.job_dir(job.id)
    plan = read_plan(d)
    snaps = server.snapshot_list(job)
    series = server.metrics(job)
    dataset = server.find_job(job.dataset_id or "")
    positions = {q["id"]: q for q in server.scheduler.queue()}
    info = job_out(job, positions).model_dump()
    user = getattr(request.state, "brewnet_user", None)
    boot = {"job": info, "iters_per_epoch": plan.get("iters_per_epoch"), "metrics_offset": metrics_offset(d),
            "max_points": INITIAL_MAX_POINTS, "can_change": _can_change(user, job),
            "active": list(states.ACTIVE), "resumable": list(states.RESUMABLE), "finished": list(states.FINISHED)}
    return {"job": job, "info": info, "boot": boot, "plan": plan, "settings": _settings(job),
            "custom_network": (job.spec or {}).get("custom_network"),
            "lint_findings": (job.spec or {}).get("lint_findings") or [],
            "snapshot_rows": snapshot_rows(snaps, series),
            "snapshots": [{"iteration": s["iteration"], "epoch": s["epoch"]} for s in snaps],
            "dataset": dataset, "log": server.log_tail(job, LOG_LINES), "can_change": boot["can_change"],
            "status_css": states.CSS.get(job.status, "default"),
            "inference_datasets": [{"id": j.id, "name": j.name} for j in server.list_jobs(states.DATASET)
                                   if j.status == states.DONE],
            "data_roots": [str(r) for r in server.config.data_roots],
            "generic_forms": generic_forms_context(server, job) if plan.get("kind") == "generic" else None}


async def render_model(request: Request, job):
    server = server_of(request)
    ctx = await in_thread(_context, request, server, job)
    return page(request, "model.html", title=job.name, nav="", **ctx)


# ----------------------------------------------------------------------- BatchNorm data

@router.get("/models/{job_id}/batchnorm.json")
async def batchnorm_json(request: Request, job_id: str):
    """Per BatchNorm layer: its running mean/variance (channel means) in every snapshot, and the
    train-vs-global gap of the newest snapshot (``gap.status`` "computing" until measured)."""
    server = server_of(request)

    def answer():
        job = server.get_job(job_id, states.MODEL)
        return batchnorm_stats.batchnorm_json(server.job_dir(job.id), server.snapshot_list(job))
    return await in_thread(answer)


# ----------------------------------------------------------------------- process usage

_cpu_seen: dict[int, tuple[float, float]] = {}    # pid -> (cpu seconds, monotonic time) at the last look
_cpu_lock = threading.Lock()


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100


def _proc_stat(pid: int) -> dict | None:
    """utime+stime (s), start time (s after boot), process group, threads, RSS of /proc/<pid>."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    # fields after the command name, 0-based from field 3 (state): pgrp 5, utime 14, stime 15,
    # num_threads 20, starttime 22 (proc(5) numbers them 3, 5, 14, 15, 20, 22 from 1)
    tck = _clock_ticks()
    rss_kb = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss_kb = int(line.split()[1])
    return {"state": rest[0], "pgrp": int(rest[2]), "cpu_s": (int(rest[11]) + int(rest[12])) / tck,
            "threads": int(rest[17]), "start_s": int(rest[19]) / tck, "rss": rss_kb * 1024}


def _group_pids(leader: int) -> list[int]:
    """The live processes of the step's process group (the trainer and its data loaders) and
    their descendants (a data-parallel job's ranks run in sessions of their own)."""
    group, parents = [], {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            parents[int(entry.name)] = int(fields[1])
            if int(fields[2]) == leader:
                group.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    found = set(group)
    while True:
        more = {pid for pid, ppid in parents.items() if ppid in found and pid not in found}
        if not more:
            break
        found |= more
    return sorted(found) or [leader]


def _uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def _gpu_memory(pids: set[int]) -> dict[str, int]:
    """{gpu uuid: MiB} used by ``pids``, from nvidia-smi (empty without it)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return {}
    kwargs = {"preexec_fn": die_with_parent(os.getpid())} if os.name == "posix" else {}
    try:
        out = subprocess.run([exe, "--query-compute-apps=pid,gpu_uuid,used_memory", "--format=csv,noheader,nounits"],
                             capture_output=True, timeout=3, text=True, **kwargs).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    used: dict[str, int] = {}
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3 and parts[0].isdigit() and int(parts[0]) in pids:
            try:
                used[parts[1]] = used.get(parts[1], 0) + int(parts[2])
            except ValueError:
                continue
    return used


def process_usage(pid: int | None, jobdir: Path, start_time: int | None = None) -> dict:
    """CPU % (since the last look, else since the process started; 100 = one core), RSS and
    threads of a step's process group; ``{"running": False}`` when it is not one of ours."""
    if not pid or not Path("/proc/self").exists() or not pid_alive(pid, jobdir, start_time):
        return {"running": False}
    pids = _group_pids(pid)
    stats = {p: s for p in pids if (s := _proc_stat(p)) is not None}
    if not stats:
        return {"running": False}
    cpu_s = sum(s["cpu_s"] for s in stats.values())
    now = time.monotonic()
    with _cpu_lock:
        before = _cpu_seen.get(pid)
        _cpu_seen[pid] = (cpu_s, now)
        for old in [p for p, (_, t) in _cpu_seen.items() if now - t > 600]:
            del _cpu_seen[old]
    if before is not None and now - before[1] > 0.2 and cpu_s >= before[0]:
        cpu_pct = 100.0 * (cpu_s - before[0]) / (now - before[1])
    else:
        lead = stats.get(pid) or next(iter(stats.values()))
        age = _uptime() - lead["start_s"]
        cpu_pct = 100.0 * cpu_s / age if age > 0 else 0.0
    return {"running": True, "pid": pid, "processes": len(stats), "cpu_percent": round(cpu_pct, 1),
            "rss_bytes": sum(s["rss"] for s in stats.values()),
            "threads": sum(s["threads"] for s in stats.values()),
            "gpu_memory_mib": _gpu_memory(set(stats))}


@router.get("/models/{job_id}/usage.json")
async def usage_json(request: Request, job_id: str):
    """The job's CPU, memory and GPU use now (``running: false`` when no process of it runs)."""
    server = server_of(request)

    def answer():
        job = server.get_job(job_id, states.MODEL)
        slots = server.scheduler.slots()
        out = {"job_id": job.id, "status": job.status, "assigned": job.assigned or {},
               "resources": job.resources or {}, "cpu_count": os.cpu_count(),
               "gpus": [g["index"] for g in slots.get("gpus", []) if g.get("job_id") == job.id],
               "slots": slots}
        running = job.status == states.RUNNING
        out.update(process_usage(job.pid, server.job_dir(job.id), job.pid_start) if running else {"running": False})
        return out
    return await in_thread(answer)
