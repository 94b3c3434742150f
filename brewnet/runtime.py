"""Process-wide settings of the pycaffe API: mode, device and random seed."""
from __future__ import annotations

import torch

_state = {"device": "cpu", "seed": None, "tf32": False}


def set_mode_cpu() -> None:
    _state["device"] = "cpu"


def set_mode_gpu() -> None:
    if not torch.cuda.is_available():
        from .errors import BrewnetError
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
