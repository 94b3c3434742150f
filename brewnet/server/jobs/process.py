"""Running one step of a job: a subprocess of the brewnet CLI in the job's directory.

Each step gets its own session (``start_new_session``), so the server signals the whole process
group (the trainer and any data-loading children) and a terminal's Ctrl-C never reaches it.  On
Linux the child also asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``):
a trainer whose server was killed with SIGKILL then snapshots and exits by itself
(``-sigint_effect stop``), and the restarted server finds the snapshot.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so steps must be started
from a thread that lives as long as the server (the scheduler's event-loop thread), never from a
short-lived worker thread (brewnet.child_processes).

A step's process is identified by its pid, its start time (:func:`process_start_time`, recorded
with the job when the step is spawned) and the job's directory (:func:`pid_alive`), so a pid
that another process reused is never signalled.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ...child_processes import die_with_parent
from ...reporting.progress_file import ENV as PROGRESS_ENV

LOG_FILE = "log.txt"
PROGRESS_FILE = "progress.jsonl"
#: proc(5): the process's start time, in clock ticks after boot, is field 22 of /proc/<pid>/stat
STARTTIME_FIELD = 22


def step_label(argv: list[str]) -> str:
    """``brewnet train -solver ...`` for ``[python, -m, brewnet, train, -solver, ...]``."""
    if len(argv) >= 3 and argv[1] == "-m":
        return " ".join([argv[2].split(".")[-1] if argv[2].startswith("brewnet.") else argv[2], *argv[3:]])
    return " ".join(argv)


def start_step(argv: list[str], jobdir: str | os.PathLike, gpus: list[int] | None = None,
               extra_env: dict[str, str] | None = None, python_path: list[str] | None = None
               ) -> subprocess.Popen:
    """Start ``argv`` in ``jobdir``: stdout and stderr appended to log.txt after a header line
    ``==> <time> brewnet <verb> ...``, BREWNET_PROGRESS_FILE=<jobdir>/progress.jsonl,
    CUDA_VISIBLE_DEVICES set to the assigned GPU indices (empty: no GPU), PYTHONPATH leading to
    this server's own brewnet package and then ``python_path`` (the Python layer folder), the
    job's folder never on the import path (PYTHONSAFEPATH), a new session, and SIGTERM on the
    server's death (Linux)."""
    jobdir = Path(jobdir).resolve()
    env = dict(os.environ)
    env[PROGRESS_ENV] = str(jobdir / PROGRESS_FILE)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus) if gpus else ""
    env["PYTHONUNBUFFERED"] = "1"  # log lines reach log.txt as they are printed
    # the step runs the same brewnet as this server, whatever else `python -m brewnet` would find
    # on the path; nothing in the job's folder (uploads) is importable: Python >= 3.11 leaves the
    # working directory off sys.path with PYTHONSAFEPATH
    package_parent = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *(python_path or []),
                                         *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONSAFEPATH"] = "1"
    if extra_env:
        env.update(extra_env)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(jobdir / LOG_FILE, "ab") as log:
        log.write(f"==> {stamp} {step_label(argv)}\n".encode("utf-8"))
        log.flush()
        kwargs = {}
        if os.name == "posix":
            kwargs["preexec_fn"] = die_with_parent(os.getpid(), signal.SIGTERM)
        return subprocess.Popen(argv, cwd=str(jobdir), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                                close_fds=True, **kwargs)


def signal_group(pid: int, sig: int) -> bool:
    """Send ``sig`` to the process group led by ``pid`` (each step leads its own session).
    False if there is no such group any more."""
    try:
        os.killpg(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def _stat_fields(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the parenthesised command name (which may hold
    spaces or parentheses): ``[state, ppid, pgrp, ...]``, so field N of proc(5) is item N-3.
    None when there is no such process."""
    try:
        stat = Path(f"/proc/{int(pid)}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError, ValueError):
        return None
    return stat[stat.rindex(")") + 2:].split()


def process_start_time(pid: int | None) -> int | None:
    """When process ``pid`` started: field 22 of ``/proc/<pid>/stat`` (clock ticks after boot),
    which no later process with the same pid can share; None when there is no such process or
    no /proc (not Linux).  Record it when the process is spawned (a child not yet reaped keeps
    its entry, so reading it right after ``Popen`` is safe)."""
    if not pid or pid <= 0:
        return None
    fields = _stat_fields(pid)
    try:
        return int(fields[STARTTIME_FIELD - 3]) if fields else None
    except (IndexError, ValueError):
        return None


def _environ_value(pid: int, name: str) -> str | None:
    """``name`` in the environment process ``pid`` was started with (None: absent, unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    prefix = name.encode() + b"="
    for item in raw.split(b"\x00"):
        if item.startswith(prefix):
            return item[len(prefix):].decode("utf-8", "surrogateescape")
    return None


def pid_alive(pid: int | None, jobdir: str | os.PathLike | None = None,
              start_time: int | None = None) -> bool:
    """True if ``pid`` is a live (not zombie) process that is the one we spawned: its start time
    is ``start_time`` (:func:`process_start_time` when it was spawned) and, when ``jobdir`` is
    given, its working directory is that job's directory.  A pid recycled by another process
    therefore never qualifies, whatever its command line says.

    Without ``start_time`` (a job row written by a brewnet that did not record it), the process
    must be one that :func:`start_step` started in that directory: its environment names the
    job's progress file (``BREWNET_PROGRESS_FILE=<jobdir>/progress.jsonl``, set by every
    version).  Elsewhere than Linux only existence can be checked."""
    if not pid or pid <= 0:
        return False
    if not Path("/proc/self").exists():  # not Linux: only existence can be checked
        try:
            os.kill(pid, 0)
            return True
        except (ProcessLookupError, PermissionError):
            return False
    fields = _stat_fields(pid)
    if not fields or fields[0] in ("Z", "X"):
        return False
    try:
        cwd = os.path.realpath(os.readlink(f"/proc/{pid}/cwd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if jobdir is not None and cwd != os.path.realpath(jobdir):
        return False
    if start_time is not None:
        return process_start_time(pid) == int(start_time)
    marker = _environ_value(pid, PROGRESS_ENV)
    return marker is not None and os.path.realpath(marker) == os.path.join(cwd, PROGRESS_FILE)


def last_error_line(jobdir: str | os.PathLike, tail_bytes: int = 65536) -> str | None:
    """The last line of log.txt containing 'error' (any case), stripped, or None."""
    path = Path(jobdir) / LOG_FILE
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    for line in reversed(text.splitlines()):
        if "error" in line.lower():
            line = line.strip()
            return line[:1000]
    return None
