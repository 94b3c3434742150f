"""Refusing allocations the machine cannot hold, before making them.

A shape typo (``dim: 999999997`` for ``dim: 9``) would otherwise make PyTorch allocate, the
kernel overcommit, and the operating system kill the process with SIGKILL and no message.  The
net adds up what its blobs need while it is built and compares that with the memory available
(Linux's MemAvailable: free memory plus what the page cache can give back; free GPU memory on
CUDA), naming the blob, its shape and the bytes when it does not fit.
"""
from __future__ import annotations

import math
import os

from .errors import NetError


def available_host_bytes() -> int | None:
    """Bytes of memory the system can give this process now, or None when unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def available_device_bytes(device) -> int | None:
    """Free memory of a CUDA device, or of the host for the CPU."""
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    return available_host_bytes()


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


class MemoryBudget:
    """What a net has allocated so far against what is available.

    ``claim`` before each allocation; it raises NetError when the running total would exceed
    the memory that was available when the budget was made."""

    def __init__(self, available: int | None = None):
        self.available = available_host_bytes() if available is None else available
        self.used = 0

    def claim(self, what: str, shape, itemsize: int = 4) -> None:
        need = math.prod(int(d) for d in shape) * itemsize
        if self.available is not None and self.used + need > self.available:
            held = f"; with the {human_bytes(self.used)} the net holds already, that is" if self.used else ","
            raise NetError(
                f"{what} of shape {tuple(int(d) for d in shape)} needs {human_bytes(need)} "
                f"({need} bytes){held} more than the {human_bytes(self.available)} of memory "
                f"available (check the shape for a typo)")
        self.used += need
