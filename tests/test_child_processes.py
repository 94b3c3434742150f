"""brewnet.child_processes: a child that calls end_with_parent ends when its parent is killed,
by PR_SET_PDEATHSIG or, without it, by its watchdog thread; a parent already gone: at once; the
server's inference worker (a multiprocessing child) ends with the process that owns the pool."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

CHILD = textwrap.dedent("""
    import sys, time
    import brewnet.child_processes as cp
    if sys.argv[2] == "watchdog":
        cp._prctl = None          # as where PR_SET_PDEATHSIG is not available
    cp.end_with_parent(int(sys.argv[1]), interval_s=0.1)
    print("ready", flush=True)
    time.sleep(60)
""")

PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2]])
    print(child.pid, flush=True)
    time.sleep(60)
""")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
@pytest.mark.parametrize("mode", ["pdeathsig", "watchdog"])
def test_child_ends_when_its_parent_is_killed(mode):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, mode], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "ready"     # the child's line, through the same pipe
        assert not _gone(child)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 30
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        assert _gone(child)
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
        parent.stdout.close()


def test_a_parent_already_gone_is_the_signal_at_once():
    # pid 1 is not this child's parent: as if the parent had died before end_with_parent ran
    r = subprocess.run([sys.executable, "-c", CHILD, "1", "pdeathsig"], capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL and "ready" not in r.stdout


# a "server": a pool that has answered one call, then waits to be killed
POOL_SERVER = """
import asyncio, sys, time
from brewnet.server.errors import ApiError
from brewnet.server.inference import InferencePool

async def main():
    pool = InferencePool()
    try:
        await pool.ensure_bundle(sys.argv[1], 1, None)
    except ApiError as e:
        print("answered", e.status, flush=True)
    time.sleep(120)

asyncio.run(main())
"""


def _live_children(pid: int) -> list[int]:
    out = []
    for name in Path("/proc").iterdir():
        if not name.name.isdigit():
            continue
        try:
            fields = (name / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(name.name))
    return out


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_pool_worker_ends_when_its_server_is_killed(tmp_path):
    """SIGKILL of the process that owns the pool: its worker (and multiprocessing's resource
    tracker) end instead of living on, re-parented, with the loaded bundles."""
    server = subprocess.Popen([sys.executable, "-c", POOL_SERVER, str(tmp_path / "no-model")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().split() == ["answered", "404"]   # the worker answered
        children = _live_children(server.pid)
        assert children, "the pool has no worker process"
    finally:
        server.kill()
        server.wait()
        server.stdout.close()
    deadline = time.monotonic() + 30
    while not all(map(_gone, children)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [p for p in children if not _gone(p)]
    for p in left:   # a failed run leaves nothing behind
        os.kill(p, signal.SIGKILL)
    assert left == []
