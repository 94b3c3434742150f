"""The parameter update: Caffe's ``SGDSolver::ApplyUpdate`` (learning rate, clipping,
normalisation by ``iter_size``, weight decay, then the solver type's update value) as vectorised
``torch._foreach_*`` operations over groups of parameters sharing (lr_mult, decay_mult)."""
from __future__ import annotations

import logging

import torch

from ..blob import push_host_writes
from ..reporting.caffe_log import caffe_float
from .lr_policies import f32, learning_rate

log = logging.getLogger("brewnet")


class ParamGroup:
    """Parameters sharing (lr_mult, decay_mult): updated by one run of foreach operations."""

    __slots__ = ("entries", "params", "hist", "hist2", "lr_mult", "decay_mult", "active", "zero_grads")

    def __init__(self, lr_mult, decay_mult, active):
        self.lr_mult, self.decay_mult, self.active = lr_mult, decay_mult, active
        self.entries, self.params, self.hist, self.hist2 = [], [], [], []
        self.zero_grads: list[torch.Tensor] | None = None



class ParameterUpdate:
    """The update half of :class:`brewnet.solver.Solver` (a mixin)."""

    def get_learning_rate(self) -> float:
        """The rate for this iteration; advances the multistep state as Caffe does."""
        rate, step = learning_rate(self.param, self.iter, self.current_step)
        if self.param.lr_policy == "multistep" and step != self.current_step:
            log.info("MultiStep Status: Iteration %d, step = %d", self.iter, step)
        self.current_step = step
        return rate

    def apply_update(self) -> None:
        """Caffe's SGDSolver::ApplyUpdate on the current parameter diffs (does not advance iter)."""
        push_host_writes()
        with torch.no_grad():
            self._apply_update()

    def _apply_update(self) -> None:
        rate = self.get_learning_rate()
        self._last_lr = rate
        if self._display_due():
            log.info("Iteration %d, lr = %s", self.iter, caffe_float(rate))
            if self.metrics is not None:
                self.metrics.write(self.iter, "train", "lr", rate, lr=rate)
        groups = list(self._active)
        if self._passive_needed():
            for g in self._passive:
                if g.zero_grads is None:
                    g.zero_grads = [torch.zeros_like(p) for p in g.params]
                else:
                    torch._foreach_zero_(g.zero_grads)
            groups += self._passive
        grads_per_group = []
        for g in groups:
            gs = []
            for j, p in enumerate(g.params):
                gr = p.grad
                if gr is None:
                    if g.active:
                        gr = p.grad = torch.zeros_like(p)
                    else:
                        gr = g.zero_grads[j]
                gs.append(gr)
            grads_per_group.append(gs)
        all_grads = [t for gs in grads_per_group for t in gs]
        # clip
        clip = self.param.clip_gradients
        if clip >= 0 and all_grads:
            norms = torch._foreach_norm(all_grads)
            sumsq = torch.stack([n.float() for n in norms]).square().sum()
            scale = torch.clamp(torch.tensor(clip, dtype=sumsq.dtype, device=sumsq.device) / sumsq.sqrt(), max=1.0)
            torch._foreach_mul_(all_grads, scale.to(all_grads[0].dtype))
        # normalise
        iter_size = self.param.iter_size
        if iter_size > 1 and all_grads:
            torch._foreach_mul_(all_grads, f32(1.0 / iter_size))
        wd = float(self.param.weight_decay)
        l1 = self.param.regularization_type == "L1"
        for g, gs in zip(groups, grads_per_group):
            if not gs:
                continue
            local_decay = f32(wd * g.decay_mult)
            if local_decay:
                if l1:
                    torch._foreach_add_(gs, torch._foreach_sign(g.params), alpha=local_decay)
                else:
                    torch._foreach_add_(gs, g.params, alpha=local_decay)
            local_rate = f32(rate * g.lr_mult)
            update = self.compute_update_value(g, gs, local_rate)
            torch._foreach_sub_(g.params, update)

    def compute_update_value(self, g: ParamGroup, grads, local_rate: float):
        """Return the update tensors (``w -= update``); may update ``grads`` in place."""
        raise NotImplementedError



class ScaledUpdate:
    """What torch.amp.GradScaler needs of an optimizer: ``param_groups`` (the learnable blobs,
    whose gradients it unscales and checks) and ``step`` (Caffe's ApplyUpdate, which it skips
    when a gradient is inf or NaN)."""

    def __init__(self, solver):
        self.solver = solver
        self.param_groups = [{"params": [e.tensor for e in solver.net.learnable]}]

    def step(self, *args, **kwargs) -> None:
        self.solver.apply_update()
