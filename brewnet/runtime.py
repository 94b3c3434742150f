"""Process-wide settings of the pycaffe API: mode, device and random seed."""
from __future__ import annotations

import torch

_state = {"device": "cpu", "seed": None}


def set_mode_cpu() -> None:
    _state["device"] = "cpu"


def set_mode_gpu() -> None:
    if not torch.cuda.is_available():
        from .errors import BrewnetError
        raise BrewnetError("set_mode_gpu: CUDA is not available on this machine (torch.cuda.is_available() is False)")
    _state["device"] = f"cuda:{torch.cuda.current_device()}"


def set_device(device_id: int) -> None:
    """Select the CUDA device used by set_mode_gpu (pycaffe's caffe.set_device)."""
    if torch.cuda.is_available():
        torch.cuda.set_device(device_id)
        if _state["device"].startswith("cuda"):
            _state["device"] = f"cuda:{device_id}"


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
