"""``brewnet train -gpu 0,1`` / ``-cpu_procs K``: one training process per device, as torchrun
would start them, watched until the job ends.

Each rank is ``python -m brewnet train <the same flags>`` with torchrun's variables (RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR=127.0.0.1, MASTER_PORT), so the code path
is the one ``torchrun --nproc-per-node K -m brewnet train`` takes.  The launcher:

- prints rank 0's output as it is (Caffe's log) and the other ranks' lines prefixed ``[rank r]``;
  on a terminal it draws rank 0's progress bar (read from its progress file) below them;
- forwards SIGINT, SIGTERM and SIGHUP once to every rank (the ranks run in sessions of their own,
  so a signal to the launcher's process group is not delivered twice); the ranks agree on the
  iteration at which to act (brewnet.solver.distributed);
- ends the job when a rank fails: the first rank to exit with an error or a signal is named with
  its last error line, the others get ``grace_s`` to leave and are then killed (a rank that hangs
  is named too).  Snapshots are written atomically by rank 0, so the last one stays intact.
- watches a heartbeat of every rank (a file each rank's background thread touches every second,
  :func:`start_heartbeat`, started first thing in each rank): a rank that shows no sign of life for
  ``hang_timeout_s`` (stopped, frozen, swapped out) ends the job then, whatever the collective
  timeout, which must also cover rank 0's test phases.  A rank waiting in a collective or busy
  in a long operation keeps beating.
- kills the ranks if the launcher itself is killed (PR_SET_PDEATHSIG), so none is orphaned.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from ..child_processes import die_with_parent
from ..errors import BrewnetError

log = logging.getLogger("brewnet")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class _Rank:
    def __init__(self, rank: int, proc: subprocess.Popen):
        self.rank, self.proc = rank, proc
        self.last_error = ""
        self.reader: threading.Thread | None = None


class _Screen:
    """The ranks' lines and, on a terminal, rank 0's progress bar under them."""

    def __init__(self, out, progress_path: str | None, bar_stream=None):
        from ..reporting.progress_bar import TerminalProgress

        self.out = out
        self.lock = threading.Lock()
        self.progress_path = progress_path
        self.bar = TerminalProgress(bar_stream or sys.stderr) if progress_path else None
        self.start: int | None = None
        self.next_look = 0.0

    def line(self, text: str) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.filter(None)
            try:
                self.out.write(text + "\n")
                self.out.flush()
            except (OSError, ValueError):
                pass

    def clear(self) -> None:
        with self.lock:
            if self.bar is not None:
                self.bar.filter(None)

    def update_bar(self) -> None:
        """Draw rank 0's newest progress line (at most a few times a second)."""
        if self.bar is None or time.monotonic() < self.next_look:
            return
        self.next_look = time.monotonic() + 0.25
        from ..reporting.progress_file import read_progress_file
        try:
            rows = [r for r in read_progress_file(self.progress_path) if r.get("task") == "train"]
        except (OSError, ValueError):
            return
        if rows:
            done, total = int(rows[-1]["done"]), int(rows[-1]["total"])
            if self.start is None:
                self.start = done
            with self.lock:
                self.bar(done, self.start, total)


def _relay(rank: _Rank, screen: _Screen) -> None:
    prefix = "" if rank.rank == 0 else f"[rank {rank.rank}] "
    for raw in iter(rank.proc.stdout.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        low = line.lower()
        if "error" in low or "failed" in low or "exception" in low:
            rank.last_error = line.strip()
        screen.line(prefix + line)
    rank.proc.stdout.close()


HEARTBEAT_ENV = "BREWNET_HEARTBEAT_DIR"


def start_heartbeat() -> None:
    """In a rank started by :func:`run_ranks`: a daemon thread touches
    ``$BREWNET_HEARTBEAT_DIR/rank<RANK>`` every second (nothing elsewhere)."""
    folder, rank = os.environ.get(HEARTBEAT_ENV), os.environ.get("RANK", "")
    if not folder or not rank.isdigit() or not os.path.isdir(folder):
        return
    path = os.path.join(folder, f"rank{rank}")

    def beat() -> None:
        while True:
            try:
                with open(path, "a"):
                    os.utime(path)
            except OSError:  # the launcher removed the folder: the job is over
                return
            time.sleep(1.0)

    threading.Thread(target=beat, name="brewnet-heartbeat", daemon=True).start()


def run_ranks(argv: list[str], world: int, grace_s: float = 10.0, hang_timeout_s: float = 120.0,
              out=None) -> int:
    """Start ``world`` ranks of ``python -m brewnet <argv>`` and wait for them; returns 0 when
    all succeed, else raises BrewnetError naming the failed rank."""
    if world < 2:
        raise BrewnetError(f"data-parallel training needs at least 2 processes, got {world}")
    out = out if out is not None else sys.stdout
    if hang_timeout_s <= 0:
        raise BrewnetError(f"the hang timeout must be positive, got {hang_timeout_s} s")
    port = free_port()
    beats = tempfile.mkdtemp(prefix="brewnet-heartbeat-")
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                LOCAL_WORLD_SIZE=str(world), GROUP_RANK="0", PYTHONUNBUFFERED="1",
                **{HEARTBEAT_ENV: beats})
    from ..reporting.progress_file import ENV as PROGRESS_ENV
    progress_path = None
    if sys.stderr.isatty() and not os.environ.get(PROGRESS_ENV):  # rank 0 reports, we draw
        progress_path = base[PROGRESS_ENV] = os.path.join(beats, "progress.jsonl")
    screen = _Screen(out, progress_path)
    ranks: list[_Rank] = []
    old_handlers = {}

    def forward(signum, frame):
        for r in ranks:
            if r.proc.poll() is None:
                try:
                    r.proc.send_signal(signum)
                except ProcessLookupError:
                    pass

    try:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            old_handlers[sig] = signal.signal(sig, forward)
    except ValueError:  # not the main thread: signals stay with the caller
        old_handlers = {}
    try:
        for r in range(world):
            env = dict(base, RANK=str(r), LOCAL_RANK=str(r))
            proc = subprocess.Popen([sys.executable, "-m", "brewnet", *argv], env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    preexec_fn=die_with_parent(os.getpid(), signal.SIGKILL))
            rank = _Rank(r, proc)
            rank.reader = threading.Thread(target=_relay, args=(rank, screen), daemon=True,
                                           name=f"brewnet-rank-{r}")
            rank.reader.start()
            ranks.append(rank)
        log.info("Started %d training processes (pids %s)", world, ", ".join(str(r.proc.pid) for r in ranks))
        return _watch(ranks, grace_s, beats, hang_timeout_s, screen)
    finally:
        screen.clear()
        shutil.rmtree(beats, ignore_errors=True)
        for r in ranks:
            if r.proc.poll() is None:
                r.proc.kill()
                r.proc.wait()
            if r.reader is not None:
                r.reader.join(timeout=5)
        for sig, h in old_handlers.items():
            signal.signal(sig, h)


def _silent_for(beats: str, rank: int, started: float) -> float:
    """Seconds since rank's last heartbeat (since the launch while it has not beaten yet)."""
    try:
        last = os.stat(os.path.join(beats, f"rank{rank}")).st_mtime
    except FileNotFoundError:
        last = started
    return time.time() - max(last, started)


def _watch(ranks: list[_Rank], grace_s: float, beats: str, hang_timeout_s: float, screen: _Screen) -> int:
    failed: _Rank | None = None
    failed_at = 0.0
    hung: list[int] = []
    silent: dict[int, float] = {}
    started = time.time()
    while True:
        running = [r for r in ranks if r.proc.poll() is None]
        if failed is None:
            silent = {r.rank: s for r in running if (s := _silent_for(beats, r.rank, started)) > hang_timeout_s}
            if silent:
                for r in ranks:
                    if r.proc.poll() is None:
                        r.proc.kill()
                        r.proc.wait()
                break
        if failed is None:
            # a rank killed by a signal is the cause; the others' errors are its consequence
            bad = sorted((r for r in ranks if r.proc.returncode not in (None, 0)),
                         key=lambda r: (r.proc.returncode >= 0, r.rank))
            if bad:
                failed, failed_at = bad[0], time.monotonic()
                screen.clear()
                log.error("rank %d %s; ending the job (the other ranks get %.0f s to leave)",
                          failed.rank, _describe_exit(failed.proc.returncode), grace_s)
        if not running:
            break
        if failed is not None and time.monotonic() - failed_at > grace_s:
            for r in running:
                r.proc.kill()
                r.proc.wait()
                hung.append(r.rank)
            if hung:
                log.error("rank(s) %s did not leave within %.0f s and were killed",
                          ", ".join(map(str, hung)), grace_s)
            break
        if failed is None:
            screen.update_bar()
        time.sleep(0.1)
    screen.clear()
    for r in ranks:
        if r.reader is not None:
            r.reader.join(timeout=5)
    if silent:
        names = ", ".join(f"rank {r} (no sign of life for {t:.0f} s)" for r, t in sorted(silent.items()))
        raise BrewnetError(f"{names} of {len(ranks)}: stopped responding; the job was ended (all ranks "
                           "killed); the last snapshot written stays as it was")
    if failed is None:
        return 0
    why = f": {failed.last_error}" if failed.last_error else ""
    if hung:  # the others gave up waiting for them: they are the ones that hung
        raise BrewnetError(f"rank {', '.join(map(str, hung))} of {len(ranks)} stopped responding and was "
                           f"killed after rank {failed.rank} {_describe_exit(failed.proc.returncode)}{why}; "
                           "the last snapshot written stays as it was")
    others = [f"rank {r.rank} {_describe_exit(r.proc.returncode)}" for r in ranks if r is not failed]
    raise BrewnetError(f"rank {failed.rank} of {len(ranks)} {_describe_exit(failed.proc.returncode)}{why}; "
                       f"the job was ended ({', '.join(others)}); the last snapshot written stays as it was")
