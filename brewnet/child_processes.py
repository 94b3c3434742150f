"""Children that do not outlive their parent: a ``preexec_fn`` asking Linux for a signal when the
parent dies (``PR_SET_PDEATHSIG``), for the server's job steps (SIGTERM: a trainer then snapshots
and exits) and for the ranks of a data-parallel job (SIGKILL: their launcher is gone).

PR_SET_PDEATHSIG fires when the *thread* that forked the child exits, so such children must be
started from a thread that lives as long as the parent's interest in them.  Elsewhere than Linux
the preexec_fn only checks that the parent is still there.
"""
from __future__ import annotations

import os
import signal
import sys

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
