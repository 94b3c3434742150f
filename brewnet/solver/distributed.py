"""The solver's side of data-parallel training (Caffe's multi-GPU semantics, on torch.distributed).

Every rank runs the same solver on its slice of each global batch (the data layers shard
themselves, brewnet.data.sharding).  Per iteration, after forward/backward (``iter_size``
times), one all-reduce carries, in one flat float32 bucket, every learnable gradient, the
iteration's loss and the ranks' requested actions (signals): the gradients and loss are averaged
(Caffe's NCCL sums and scales by 1/count; with each rank's loss a mean over its batch that is the
gradient of the global batch's mean loss), then every rank applies the identical update
(clipping sees the averaged gradient, weight decay and the lr policy are per rank and equal), so
the weights stay equal without further traffic.  A stop or snapshot asked of any rank applies to
all at the same iteration.

Rank 0 alone runs the test phases (their data unsharded: the same numbers as one process),
writes snapshots and metrics and logs; BatchNorm re-estimation (precise BN) runs on every rank
together, since its statistics are reduced over the processes.  Every rank restores the same
.solverstate, from one process or several (history and iteration do not depend on the count).
"""
from __future__ import annotations

import logging

import torch

from .. import distributed
from ..errors import BrewnetError

log = logging.getLogger("brewnet")

def _flat(tensors: list[torch.Tensor], extra: torch.Tensor | None = None) -> torch.Tensor:
    """One tensor holding ``tensors`` (and ``extra`` at the end), in their widest float dtype (at
    least float32): one collective for all."""
    dtype = torch.float32
    for t in tensors:
        dtype = torch.promote_types(dtype, t.dtype)
    parts = [t.detach().reshape(-1).to(dtype) for t in tensors]
    return torch.cat(parts + ([extra.to(dtype)] if extra is not None else []))


def _unflat(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    """Copy :func:`_flat`'s values back into ``tensors`` (in place)."""
    offset = 0
    for t in tensors:
        n = t.numel()
        t.copy_(flat[offset:offset + n].view_as(t))
        offset += n


def _bn_sync_choice(policy, layer_name: str) -> bool:
    if policy is True or policy == "all":
        return True
    if policy is False or policy in ("none", None):
        return False
    return layer_name in policy


class DataParallel:
    """Attached to a solver as ``solver.parallel`` (see the module's note)."""

    def __init__(self, solver, reduce_in_step: bool, bn_sync="all"):
        if not distributed.active():
            raise BrewnetError("data-parallel training needs a process group of more than one process")
        self.solver = solver
        self.rank = distributed.rank()
        self.count = distributed.world_size()
        self.is_root = self.rank == 0
        #: whether Solver.step averages the gradients itself (brewnet train); False when a
        #: pycaffe caffe.NCCL callback does it (BVLC's train.py)
        self.reduce_in_step = reduce_in_step
        self._staged = None
        self.reduced_loss = None
        self.agreed_action = "none"
        self._reduced = False
        self.set_batchnorm_sync(bn_sync)

    @classmethod
    def attach(cls, solver, reduce_in_step: bool = True, bn_sync="all") -> "DataParallel":
        existing = getattr(solver, "parallel", None)
        if existing is not None:
            return existing
        parallel = cls(solver, reduce_in_step, bn_sync)
        solver.parallel = parallel
        log.info("Data-parallel training: rank %d of %d, effective batch = batch × %d", parallel.rank,
                 parallel.count, parallel.count)
        if not parallel.is_root:  # as Caffe's LOG_IF(INFO, root_solver()): rank 0 reports
            solver.metrics = None
            solver.progress = None
            logging.getLogger("brewnet").setLevel(logging.WARNING)
        return parallel

    # ----- BatchNorm ---------------------------------------------------------------------------
    def set_batchnorm_sync(self, policy) -> list[str]:
        """``policy``: "all" (default), "none", or the names of the train net's BatchNorm layers
        whose statistics are reduced over the processes (the others use their rank's batch).
        Returns the synchronised layers' names."""
        names = {layer.name for layer in self.solver.net.layers if layer.type == "BatchNorm"}
        if not isinstance(policy, (str, bool)) and policy is not None:
            unknown = sorted(set(policy) - names)
            if unknown:
                raise BrewnetError(f"BatchNorm synchronisation: no BatchNorm layer named "
                                   f"{', '.join(unknown)} in the train net "
                                   f"(it has: {', '.join(sorted(names)) or 'none'})")
        synced = []
        for layer in self.solver.net.layers:
            if layer.type == "BatchNorm":
                layer.sync_statistics = _bn_sync_choice(policy, layer.name) and not layer.use_global_stats
                if layer.sync_statistics:
                    synced.append(layer.name)
        return synced

    # ----- weights -----------------------------------------------------------------------------
    def broadcast_parameters(self) -> None:
        """Every rank takes rank 0's parameters and statistics (one broadcast)."""
        import torch.distributed as dist
        tensors = [e.tensor for e in self.solver.net.caffe_params]
        flat = _flat(tensors)
        nvcaffe = [layer for layer in self.solver.net.layers
                   if layer.type == "BatchNorm" and getattr(layer, "nvcaffe", False)]
        weights = torch.tensor([layer.weight_sum for layer in nvcaffe], dtype=torch.float64, device=self._device())
        try:
            dist.broadcast(flat, src=0)
            if nvcaffe:  # the NVCaffe-dialect averages' weights (Python floats)
                dist.broadcast(weights, src=0)
        except RuntimeError as e:
            raise distributed.collective_failed("broadcasting the weights", e) from None
        with torch.no_grad():
            _unflat(flat, tensors)
        for layer, w in zip(nvcaffe, weights.tolist()):
            layer.weight_sum = w

    def _device(self) -> torch.device:
        return self.solver.net.device

    # ----- per iteration -----------------------------------------------------------------------
    def stage(self, loss: torch.Tensor, action: str) -> None:
        """This iteration's loss and this rank's requested action, to travel with the gradients."""
        self._staged = (loss, action)
        self._reduced = False

    def _gradients(self) -> list[torch.Tensor]:
        grads = []
        for g in self.solver._active:
            for p in g.params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                grads.append(p.grad)
        return grads

    def average_gradients(self) -> None:
        """All-reduce the gradients (with the staged loss and actions) and average them."""
        import torch.distributed as dist
        if self._reduced:
            return
        grads = self._gradients()
        loss, action = self._staged if self._staged is not None else (torch.zeros(()), "none")
        dev = grads[0].device if grads else self._device()
        extras = torch.tensor([0.0, float(action == "snapshot"), float(action == "stop")],
                              dtype=torch.float32, device=dev)
        extras[0] = loss.detach().reshape(()).to(dev, torch.float32)
        flat = _flat(grads, extras)
        try:
            dist.all_reduce(flat)
        except RuntimeError as e:
            raise distributed.collective_failed(f"iteration {self.solver.iter}: averaging the gradients", e) from None
        n = flat.numel() - 3
        if grads:
            flat[:n].mul_(1.0 / self.count)
            _unflat(flat, grads)
        self.reduced_loss = flat[n] / self.count
        snap, stop = float(flat[n + 1]), float(flat[n + 2])
        self.agreed_action = "stop" if stop > 0 else "snapshot" if snap > 0 else "none"
        self._reduced = True

    def finish_iteration(self) -> str:
        """After the callbacks: the gradients must have been averaged; the agreed action."""
        if not self._reduced:
            raise BrewnetError(
                f"rank {self.rank}: the solver trains with {self.count} processes but its gradients "
                "were not averaged this iteration (register the caffe.NCCL object: "
                "solver.add_callback(nccl))")
        self._staged = None
        return self.agreed_action

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The average of ``tensor`` over the ranks (train-net outputs for the display)."""
        import torch.distributed as dist
        t = tensor.detach().float().clone()
        try:
            dist.all_reduce(t)
        except RuntimeError as e:
            raise distributed.collective_failed("averaging the train net's outputs", e) from None
        return t / self.count

    def agree(self, flag: bool) -> bool:
        """True on every rank when any rank says True (e.g. a stop asked during rank 0's test)."""
        import torch.distributed as dist
        t = torch.tensor([1.0 if flag else 0.0], device=self._device())
        try:
            dist.all_reduce(t)
        except RuntimeError as e:
            raise distributed.collective_failed("agreeing on a stop", e) from None
        return bool(t[0] > 0)
