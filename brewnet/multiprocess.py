"""pycaffe's multi-process training names: ``NCCL``, ``solver_count``, ``solver_rank``,
``set_multiprocess``, ``has_nccl``.

brewnet does not train on several processes yet (that is the distributed-training work, on
torch.distributed).  Until then these names exist so that pycaffe scripts import and run their
single-process path, exactly as on a Caffe built without NCCL: ``has_nccl()`` is False, the
solver count is 1 and the rank 0, and anything that asks for more says so clearly.
"""
from __future__ import annotations

from .errors import BrewnetError

_NOT_YET = ("multi-process training (caffe.NCCL, several solvers) is not supported by brewnet yet; "
            "train on one process (brewnet train -gpu with one device, or the CPU)")

_state = {"multiprocess": False}


def has_nccl() -> bool:
    """Whether ``caffe.NCCL`` can train across devices: not yet in brewnet (as a Caffe built
    without NCCL, pycaffe scripts then take their single-process path)."""
    return False


def solver_count() -> int:
    """The number of solvers training together: 1."""
    return 1


def set_solver_count(count: int) -> None:
    if int(count) != 1:
        raise BrewnetError(f"set_solver_count({count}): {_NOT_YET}")


def solver_rank() -> int:
    """This process's rank among the solvers: 0."""
    return 0


def set_solver_rank(rank: int) -> None:
    if int(rank) != 0:
        raise BrewnetError(f"set_solver_rank({rank}): {_NOT_YET}")


def set_multiprocess(multiprocess: bool) -> None:
    if multiprocess:
        raise BrewnetError(f"set_multiprocess(True): {_NOT_YET}")
    _state["multiprocess"] = False


class NCCL:
    """pycaffe's ``caffe.NCCL(solver, uid)``: not available (see the module's note)."""

    def __init__(self, solver=None, uid=None):
        raise BrewnetError(f"caffe.NCCL: {_NOT_YET}")

    @staticmethod
    def new_uid() -> bytes:
        raise BrewnetError(f"caffe.NCCL.new_uid: {_NOT_YET}")
