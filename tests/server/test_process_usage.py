"""The model page's process usage counts a data-parallel job's ranks, which run in sessions of
their own under the launcher (brewnet.distributed.launch)."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from brewnet.server.web.model_pages import process_usage

LAUNCHER = """
import subprocess, sys, time  # brewnet-like launcher for the usage test
ranks = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
         for _ in range(2)]
print("started", flush=True)
time.sleep(60)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_usage_counts_ranks_in_their_own_sessions(tmp_path):
    # a step of the job as start_step leaves it: in the job's directory, its progress file in the environment
    env = {**os.environ, "BREWNET_PROGRESS_FILE": str(tmp_path / "progress.jsonl")}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCHER], cwd=tmp_path, start_new_session=True,
                            stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 10
        while True:
            usage = process_usage(proc.pid, tmp_path)
            if usage.get("processes") == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert usage["running"] and usage["processes"] == 3, usage
    finally:
        import signal
        for pid in [int(p) for p in os.listdir("/proc") if p.isdigit()]:
            try:
                if int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1]) == proc.pid:
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass
        proc.kill()
        proc.wait()
