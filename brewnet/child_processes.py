"""Children that do not outlive their parent: a ``preexec_fn`` asking Linux for a signal when the
parent dies (``PR_SET_PDEATHSIG``), for the server's job steps (SIGTERM: a trainer then snapshots
and exits) and for the ranks of a data-parallel job (SIGKILL: their launcher is gone); and
:func:`end_with_parent` for Python children that multiprocessing starts (no preexec_fn there:
the server's inference workers), called first thing in the child.

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so such children must be
started from a thread that lives as long as the parent's interest in them.  Elsewhere than Linux
the preexec_fn only checks that the parent is still there.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_prctl = None
if sys.platform.startswith("linux"):
    try:
        import ctypes

        # resolved once in the parent: the child, between fork and exec, only calls it
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        _prctl = None


def die_with_parent(parent_pid: int, sig: int = signal.SIGTERM):
    """A preexec_fn: ``sig`` on the parent's death; if the parent already died before prctl took
    effect (the child was re-parented), act as if the signal came."""
    def setup() -> None:
        if _prctl is not None:
            _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), int(sig))
    return setup


def _watch(parent_pid: int, interval_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(interval_s)
    os._exit(1)  # re-parented: the parent died (nothing to flush for anyone)


def end_with_parent(parent_pid: int, sig: int = signal.SIGKILL, interval_s: float = 0.5) -> None:
    """Called in a child (e.g. a multiprocessing worker's initializer): this process ends when
    ``parent_pid``, its parent, dies, however it dies.  ``sig`` from the kernel at once
    (PR_SET_PDEATHSIG, Linux; the parent thread that forked the child must live as long as the
    parent), and a daemon thread that exits the process within ``interval_s`` of it being
    re-parented, for what the signal cannot cover (no prctl, a parent already gone).  A parent
    gone before this call: ``sig`` now."""
    die_with_parent(parent_pid, sig)()
    threading.Thread(target=_watch, args=(parent_pid, interval_s), name="end-with-parent", daemon=True).start()
