"""Data-parallel training across processes on torch.distributed.

- this module: the process group (joined from ``torchrun``'s environment, from brewnet's own
  launcher, which sets the same variables, or from a pycaffe ``caffe.NCCL`` uid), rank and world
  size, the solver count and rank that data layers read (pycaffe's ``caffe.set_solver_count`` /
  ``set_solver_rank`` set them, :mod:`brewnet.pycaffe.multiprocess`), and the collectives brewnet
  uses, whose failures become one clear error naming the rank.
- :mod:`brewnet.distributed.launch`: ``brewnet train -gpu 0,1`` / ``-cpu_procs K``: one process
  per device, watched; a rank that dies ends the whole job.
- :mod:`brewnet.distributed.batchnorm`: BatchNorm statistics over the global batch (mean and
  variance reduced over the processes, differentiable), on every device type.
- :mod:`brewnet.solver.distributed`: the solver's side (gradient averaging, shared requested
  actions, rank 0's tests, snapshots and metrics).

NCCL is used for CUDA devices when PyTorch has it, gloo otherwise (CPU processes, or CUDA
without NCCL).  Collectives time out after ``timeout_s`` (``brewnet train -dist_timeout``,
default 1800 s, PyTorch's own default): a rank that hangs ends the job within that time.
"""
from __future__ import annotations

import datetime
import logging
import os

from ..errors import BrewnetError

log = logging.getLogger("brewnet")

DEFAULT_TIMEOUT_S = 1800.0

_state = {"owned": False}

# the solver count and rank as pycaffe's set_solver_count / set_solver_rank set them
_solvers = {"count": 1, "rank": 0}


class DistributedError(BrewnetError):
    """A collective with the other processes failed (a rank died, hung or disagreed)."""


def active() -> bool:
    """Whether this process trains with others (a process group of more than one)."""
    import torch.distributed as dist
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    import torch.distributed as dist
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def solver_count() -> int:
    """The number of solvers training together (1 unless set or under a process group)."""
    if active():
        return world_size()
    return _solvers["count"]


def set_solver_count(count: int) -> None:
    count = int(count)
    if count < 1:
        raise BrewnetError(f"set_solver_count({count}): the count must be at least 1")
    _solvers["count"] = count


def solver_rank() -> int:
    """This process's rank among the solvers (0 unless set or under a process group)."""
    if active():
        return rank()
    return _solvers["rank"]


def set_solver_rank(rank: int) -> None:  # pycaffe's argument name (shadows rank() here)
    rank = int(rank)
    if rank < 0:
        raise BrewnetError(f"set_solver_rank({rank}): the rank must be at least 0")
    _solvers["rank"] = rank


def requested_solvers() -> tuple[int, int]:
    """(count, rank) as set by :func:`set_solver_count` / :func:`set_solver_rank`, whatever the
    process group (``caffe.NCCL`` joins one of that many processes)."""
    return _solvers["count"], _solvers["rank"]


def backend_for(device) -> str:
    import torch
    import torch.distributed as dist
    if torch.device(device).type == "cuda" and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def env_world() -> tuple[int, int, int] | None:
    """(rank, world size, local rank) from torchrun's environment, or None outside one."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    try:
        world = int(os.environ["WORLD_SIZE"])
        r = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", r))
    except ValueError:
        raise BrewnetError(f"RANK={os.environ.get('RANK')!r}, WORLD_SIZE={os.environ.get('WORLD_SIZE')!r}: "
                           "not integers (torchrun sets them)") from None
    if not 0 <= r < world:
        raise BrewnetError(f"RANK {r} is not in [0, WORLD_SIZE {world})")
    return r, world, local


def _timeout(timeout_s: float | None) -> datetime.timedelta:
    if timeout_s is None:
        timeout_s = float(os.environ.get("BREWNET_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    if timeout_s <= 0:
        raise BrewnetError(f"the distributed timeout must be positive, got {timeout_s} s")
    return datetime.timedelta(seconds=float(timeout_s))


def init_from_env(device, timeout_s: float | None = None) -> bool:
    """Join the process group torchrun (or brewnet's launcher) describes in the environment;
    False when there is none or it has one process."""
    import torch.distributed as dist
    world = env_world()
    if world is None or world[1] <= 1:
        return False
    if dist.is_initialized():
        return True
    backend = backend_for(device)
    try:
        dist.init_process_group(backend, init_method="env://", timeout=_timeout(timeout_s))
    except Exception as e:  # noqa: BLE001 - a rendezvous failure, said plainly
        raise DistributedError(f"rank {world[0]} of {world[1]}: cannot join the process group at "
                               f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} "
                               f"({backend}): {e}") from None
    _state["owned"] = True
    log.info("Process group: rank %d of %d (%s)", dist.get_rank(), dist.get_world_size(), backend)
    return True


def init_with_file(path: str, rank_: int, world: int, device,
                   timeout_s: float | None = None) -> None:
    """Join a process group whose rendezvous is a file (pycaffe's ``caffe.NCCL`` uid)."""
    import torch.distributed as dist
    backend = backend_for(device)
    try:
        store = dist.FileStore(path, world)
        dist.init_process_group(backend, store=store, rank=rank_, world_size=world,
                                timeout=_timeout(timeout_s))
    except Exception as e:  # noqa: BLE001
        raise DistributedError(f"rank {rank_} of {world}: cannot join the process group "
                               f"(rendezvous {path}, {backend}): {e}") from None
    _state["owned"] = True
    log.info("Process group: rank %d of %d (%s)", rank_, world, backend)


def shutdown() -> None:
    """Leave the process group brewnet joined (nothing when it joined none)."""
    import torch.distributed as dist
    if _state["owned"] and dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - the peers may be gone already
            pass
        _state["owned"] = False


def collective_failed(what: str, err: Exception) -> DistributedError:
    """The error a failed collective becomes: which rank saw it, doing what, and why."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return DistributedError(f"rank {rank()} of {world_size()}: {what} with the other processes failed "
                            f"(a rank died, hung past the timeout, or left): {text}")
