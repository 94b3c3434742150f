"""Running one step of a job: a subprocess of the brewnet CLI in the job's directory.

Each step gets its own session (``start_new_session``), so the server signals the whole process
group (the trainer and any data-loading children) and a terminal's Ctrl-C never reaches it.  On
Linux the child also asks the kernel for SIGTERM when its parent dies (``PR_SET_PDEATHSIG``):
a trainer whose server was killed with SIGKILL then snapshots and exits by itself
(``-sigint_effect stop``), and the restarted server finds the snapshot.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so steps must be started
from a thread that lives as long as the server (the scheduler's event-loop thread), never from a
short-lived worker thread (brewnet.child_processes).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from ...child_processes import die_with_parent

LOG_FILE = "log.txt"
PROGRESS_FILE = "progress.jsonl"
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
    env["BREWNET_PROGRESS_FILE"] = str(jobdir / PROGRESS_FILE)
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


def pid_alive(pid: int | None, jobdir: str | os.PathLike | None = None) -> bool:
    """True if ``pid`` is a live (not zombie) process that is one of ours: its command line
    mentions brewnet and, when ``jobdir`` is given, its working directory is that job's
    directory.  A pid recycled by an unrelated process is therefore never signalled."""
    if not pid or pid <= 0:
        return False
    proc = Path(f"/proc/{pid}")
    if not Path("/proc/self").exists():  # not Linux: only existence can be checked
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return False
    try:
        stat = (proc / "stat").read_text()
        # state is the field after the parenthesised command name (which may hold spaces)
        state = stat[stat.rindex(")") + 2:].split(" ", 1)[0]
        if state in ("Z", "X"):
            return False
        cmdline = (proc / "cmdline").read_bytes().replace(b"\x00", b" ").decode("utf-8", "replace")
        if "brewnet" not in cmdline:
            return False
        if jobdir is not None:
            cwd = os.readlink(proc / "cwd")
            if os.path.realpath(cwd) != os.path.realpath(jobdir):
                return False
        return True
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return False


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
