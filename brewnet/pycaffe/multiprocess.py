"""pycaffe's multi-process training names on torch.distributed: ``NCCL``, ``solver_count``,
``solver_rank``, ``set_solver_count``, ``set_solver_rank``, ``set_multiprocess``, ``has_nccl``.
The solver count and rank live in :mod:`brewnet.distributed` (data layers read them there);
this module gives them pycaffe's names.

A script in the style of BVLC's ``python/train.py`` (``examples/pycaffe_nccl_train.py``)
runs: the parent makes a uid with ``caffe.NCCL.new_uid()``
and starts one process per device; each sets its count and rank, builds its solver (data layers
then read their rank's slice of every global batch), joins the others with
``caffe.NCCL(solver, uid)``, makes every rank start from rank 0's weights with ``bcast()``, and
registers the NCCL object as a solver callback: its ``on_gradients_ready`` averages the
gradients over the processes (Caffe's NCCL sums and scales by 1/count), and from then on the
train net's BatchNorm layers reduce their batch statistics over the processes.

The transport is torch.distributed: NCCL for CUDA solvers when PyTorch has it, gloo otherwise,
so the same script trains data-parallel on CPU processes after ``caffe.set_mode_cpu()``.  The
uid names a rendezvous file (a ``torch.distributed.FileStore``) in the temporary directory,
which is why every process must share one machine (across machines, use ``torchrun`` with
``brewnet train``).
"""
from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import tempfile

from .. import distributed
from ..distributed import set_solver_count, set_solver_rank, solver_count, solver_rank
from ..errors import BrewnetError

__all__ = ["NCCL", "has_nccl", "set_multiprocess", "set_solver_count", "set_solver_rank",
           "solver_count", "solver_rank"]

_state = {"multiprocess": False}

_UID_PREFIX = b"brewnet-uid-"


def has_nccl() -> bool:
    """Whether ``caffe.NCCL`` can train across processes: whenever PyTorch has torch.distributed
    (NCCL on CUDA, gloo on the CPU)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - every supported torch has it
        return False
    return bool(dist.is_available())


def set_multiprocess(multiprocess: bool) -> None:
    """pycaffe's flag for solvers in separate processes (always the case in brewnet)."""
    _state["multiprocess"] = bool(multiprocess)


def _rendezvous_file(uid: bytes) -> str:
    if not isinstance(uid, (bytes, bytearray)) or not bytes(uid).startswith(_UID_PREFIX):
        raise BrewnetError(f"caffe.NCCL: {uid!r} is not a uid from caffe.NCCL.new_uid()")
    token = bytes(uid)[len(_UID_PREFIX):].decode("ascii")
    if not token.isalnum():
        raise BrewnetError(f"caffe.NCCL: malformed uid {uid!r}")
    return os.path.join(tempfile.gettempdir(), f"brewnet-rendezvous-{token}")


def _remove_rendezvous(path: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(path)


class NCCL:
    """pycaffe's ``caffe.NCCL(solver, uid)``: joins the processes that share ``uid`` (one per
    solver rank, ``solver_count()`` of them) and keeps their solvers in step.

    - ``bcast()``: every rank takes rank 0's weights and BatchNorm statistics.
    - as a solver callback (``solver.add_callback(nccl)``): ``on_gradients_ready`` averages the
      parameter gradients over the ranks before the update.
    - as a net callback (``net.after_backward(nccl)``, train.py's ``layer_wise_reduce``): accepted;
      the gradients are averaged once, in ``on_gradients_ready``, in one bucket.
    """

    def __init__(self, solver, uid: bytes):
        path = _rendezvous_file(uid)
        count, rank = distributed.requested_solvers()
        if rank >= count:
            raise BrewnetError(f"caffe.NCCL: solver rank {rank} is not below the solver count {count} "
                               "(call caffe.set_solver_count and caffe.set_solver_rank first)")
        self.solver = solver
        self.parallel = None  # one solver: nothing to share (as Caffe's NCCL with one GPU)
        if count > 1:
            if not distributed.active():
                distributed.init_with_file(path, rank, count, solver.device)
            from ..solver.distributed import DataParallel  # torch: caffe.set_solver_count needs none
            self.parallel = DataParallel.attach(solver, reduce_in_step=False)

    @staticmethod
    def new_uid() -> bytes:
        """A fresh session id (bytes, as Caffe's under Python 3).  The process that makes it (the
        parent of the solvers' processes) removes its rendezvous file when it exits."""
        uid = _UID_PREFIX + secrets.token_hex(16).encode("ascii")
        atexit.register(_remove_rendezvous, _rendezvous_file(uid))
        return uid

    def bcast(self) -> None:
        """Every rank takes rank 0's parameters and statistics (Caffe's NCCL::Broadcast)."""
        if self.parallel is not None:
            self.parallel.broadcast_parameters()

    # the solver callback (Caffe's Solver::Callback)
    def on_start(self) -> None:
        pass

    def on_gradients_ready(self) -> None:
        if self.parallel is not None:
            self.parallel.average_gradients()

    # the net callback (Caffe's Net::Callback, layer-wise reduction): one bucket instead
    def __call__(self, layer_index: int) -> None:
        pass
