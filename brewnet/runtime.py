"""Process-wide settings of the pycaffe API: mode, device, random seed, logging and timing."""
from __future__ import annotations

import logging
import sys
import time

import torch

from .errors import BrewnetError

#: the settings, and the handler init_log installed on the "brewnet" logger (replaced by the next call)
_state = {"device": "cpu", "seed": None, "tf32": False, "log_handler": None}


def set_mode_cpu() -> None:
    _state["device"] = "cpu"


def set_mode_gpu() -> None:
    if not torch.cuda.is_available():
        raise BrewnetError("set_mode_gpu: CUDA is not available on this machine (torch.cuda.is_available() is False)")
    _state["device"] = f"cuda:{torch.cuda.current_device()}"
    apply_cuda_math()


def set_device(device_id: int) -> None:
    """Select the CUDA device used by set_mode_gpu (pycaffe's caffe.set_device)."""
    if torch.cuda.is_available():
        torch.cuda.set_device(device_id)
        if _state["device"].startswith("cuda"):
            _state["device"] = f"cuda:{device_id}"


def set_tf32(enabled: bool) -> None:
    """Let CUDA convolutions and matrix products use TF32 (10-bit mantissa) for speed on
    Ampere and later GPUs.  Off by default: PyTorch allows it for cuDNN convolutions out of the
    box, which puts results about 1e-3 (relative) away from float32 Caffe's."""
    _state["tf32"] = bool(enabled)
    apply_cuda_math()


def apply_cuda_math() -> None:
    """Apply the TF32 choice to PyTorch (nets call this when they move to a CUDA device)."""
    torch.backends.cudnn.allow_tf32 = _state["tf32"]
    torch.backends.cuda.matmul.allow_tf32 = _state["tf32"]


def default_device() -> str:
    return _state["device"]


def set_random_seed(seed: int) -> None:
    """Seed weight fillers of nets created afterwards, Dropout and data shuffling."""
    _state["seed"] = int(seed)
    torch.manual_seed(int(seed))


def new_generator() -> torch.Generator:
    """A CPU generator for fillers: seeded from set_random_seed when given, else random."""
    g = torch.Generator()
    if _state["seed"] is None:
        g.seed()
    else:
        g.manual_seed(_state["seed"])
    return g


# ----- logging and timing (pycaffe's init_log, log, Timer) ------------------------------------
_GLOG_LEVELS = {0: logging.INFO, 1: logging.WARNING, 2: logging.ERROR, 3: logging.CRITICAL}


def init_log(level: int = 0, stderr: bool = True) -> None:
    """pycaffe's ``caffe.init_log([level[, stderr]])``: show brewnet's log messages from glog
    severity ``level`` on (0 INFO, 1 WARNING, 2 ERROR, 3 FATAL), on stderr (else stdout)."""
    if level not in _GLOG_LEVELS:
        raise BrewnetError(f"init_log: level must be 0 (INFO) to 3 (FATAL), got {level!r}")
    logger = logging.getLogger("brewnet")
    logger.setLevel(_GLOG_LEVELS[level])
    if _state["log_handler"] is not None:
        logger.removeHandler(_state["log_handler"])
    handler = logging.StreamHandler(sys.stderr if stderr else sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    _state["log_handler"] = handler


def log(message: str) -> None:
    """pycaffe's ``caffe.log(message)``: an INFO line in brewnet's log."""
    logging.getLogger("brewnet").info("%s", message)


class Timer:
    """pycaffe's ``caffe.Timer``: ``start()``, ``stop()`` and ``ms``, the milliseconds between
    the last start and stop (a running timer is stopped when read, as Caffe's is)."""

    def __init__(self) -> None:
        self._start: float | None = None
        self._elapsed_ms = 0.0
        self._running = False

    def start(self) -> None:
        self._start = time.perf_counter()
        self._running = True

    def stop(self) -> None:
        if self._running:
            self._elapsed_ms = (time.perf_counter() - self._start) * 1000.0
            self._running = False

    @property
    def ms(self) -> float:
        if self._start is None:
            logging.getLogger("brewnet").warning("Timer has never been run before reading time.")
            return 0.0
        self.stop()
        return self._elapsed_ms
