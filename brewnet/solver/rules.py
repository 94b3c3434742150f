"""Update rules, one class per Caffe solver type (``SGDSolver`` ... ``AdamSolver``): each gives
``compute_update_value``, the tensors subtracted from the parameters."""
from __future__ import annotations

import math
import os

import torch

from .. import formats
from ..errors import SolverError
from ..proto import caffe_pb2
from .core import Solver
from .lr_policies import f32


class SGDSolver(Solver):
    """``v = momentum·v + lr·lr_mult·g``; ``w -= v`` (the learning rate lives in the history)."""

    type_name = "SGD"

    def compute_update_value(self, g, grads, local_rate):
        m = float(self.param.momentum)
        torch._foreach_mul_(g.hist, m)
        torch._foreach_add_(g.hist, grads, alpha=local_rate)
        return g.hist


class NesterovSolver(Solver):
    """``v_new = m·v + lr·g``; ``update = (1+m)·v_new − m·v_old``."""

    type_name = "Nesterov"

    def compute_update_value(self, g, grads, local_rate):
        m = float(self.param.momentum)
        update = torch._foreach_mul(g.hist, -m)      # −m·v_old
        torch._foreach_mul_(g.hist, m)
        torch._foreach_add_(g.hist, grads, alpha=local_rate)
        torch._foreach_add_(update, g.hist, alpha=f32(1.0 + m))
        return update


def _rms_scaled(grads, hist, delta: float, local_rate: float):
    """AdaGrad's and RMSProp's update: lr · g / (sqrt(h) + delta), in Caffe's order."""
    upd = torch._foreach_sqrt(hist)
    torch._foreach_add_(upd, delta)
    upd = torch._foreach_div(grads, upd)
    torch._foreach_mul_(upd, local_rate)
    return upd


class _NoMomentum(Solver):
    """Solvers whose update has no momentum term (Caffe refuses one)."""

    def _check_param(self):
        super()._check_param()
        if self.param.momentum != 0:
            raise SolverError(f"momentum cannot be used with {self.type_name} (set momentum: 0)")


class AdaGradSolver(_NoMomentum):
    """``h += g²``; ``update = lr·g/(sqrt(h)+delta)``."""

    type_name = "AdaGrad"
    adaptive = True

    def compute_update_value(self, g, grads, local_rate):
        torch._foreach_add_(g.hist, torch._foreach_mul(grads, grads))
        return _rms_scaled(grads, g.hist, float(self.param.delta), local_rate)


class RMSPropSolver(_NoMomentum):
    """``h = d·h + (1−d)·g²``; ``update = lr·g/(sqrt(h)+delta)``."""

    type_name = "RMSProp"
    adaptive = True

    def _check_param(self):
        super()._check_param()
        if not 0 <= self.param.rms_decay < 1:
            raise SolverError(f"rms_decay must be in [0, 1), got {self.param.rms_decay}")

    def compute_update_value(self, g, grads, local_rate):
        d = float(self.param.rms_decay)
        sq = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(g.hist, d)
        torch._foreach_add_(g.hist, sq, alpha=f32(1.0 - d))
        return _rms_scaled(grads, g.hist, float(self.param.delta), local_rate)


class AdaDeltaSolver(Solver):
    """``h1 = m·h1 + (1−m)·g²``; ``u = g·sqrt((h2+δ)/(h1+δ))``; ``h2 = m·h2 + (1−m)·u²``;
    ``update = lr·lr_mult·u``."""

    type_name = "AdaDelta"
    num_history = 2
    adaptive = True

    def compute_update_value(self, g, grads, local_rate):
        m = float(self.param.momentum)
        delta = float(self.param.delta)
        one_m = f32(1.0 - m)
        sq = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(g.hist, m)
        torch._foreach_add_(g.hist, sq, alpha=one_m)
        num = torch._foreach_add(g.hist2, delta)
        den = torch._foreach_add(g.hist, delta)
        torch._foreach_div_(num, den)
        torch._foreach_sqrt_(num)
        torch._foreach_mul_(grads, num)           # the diff becomes the update, as in Caffe
        sq = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(g.hist2, m)
        torch._foreach_add_(g.hist2, sq, alpha=one_m)
        torch._foreach_mul_(grads, local_rate)
        return grads


class AdamSolver(Solver):
    """``m = β1·m + (1−β1)·g``; ``v = β2·v + (1−β2)·g²``;
    ``update = lr·lr_mult·sqrt(1−β2^t)/(1−β1^t)·m/(sqrt(v)+ε)`` with t = iter + 1."""

    type_name = "Adam"
    num_history = 2
    adaptive = True

    def compute_update_value(self, g, grads, local_rate):
        b1 = float(self.param.momentum)
        b2 = float(self.param.momentum2)
        t = self.iter + 1
        correction = f32(math.sqrt(1.0 - math.pow(b2, t)) / (1.0 - math.pow(b1, t)))
        torch._foreach_mul_(g.hist, b1)
        torch._foreach_add_(g.hist, grads, alpha=f32(1.0 - b1))
        sq = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(g.hist2, b2)
        torch._foreach_add_(g.hist2, sq, alpha=f32(1.0 - b2))
        upd = torch._foreach_sqrt(g.hist2)
        torch._foreach_add_(upd, float(self.param.delta))
        upd = torch._foreach_div(g.hist, upd)
        torch._foreach_mul_(upd, f32(local_rate * correction))
        return upd


SOLVERS = {c.type_name: c for c in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
                                    AdaDeltaSolver, AdamSolver)}


def solver_class(type_name: str) -> type[Solver]:
    try:
        return SOLVERS[type_name]
    except KeyError:
        raise SolverError(f"unknown solver type '{type_name}' (one of: {', '.join(SOLVERS)})") from None


def get_solver(path, device=None, **kwargs) -> Solver:
    """A solver of the type the file names (pycaffe's ``caffe.get_solver``)."""
    if isinstance(path, caffe_pb2.SolverParameter):
        param = formats.upgrade_solver(path)
    else:
        if not os.path.exists(os.fspath(path)):
            raise SolverError(f"solver file not found: {path}")
        param = formats.read_solver(path)
    return solver_class(param.type or "SGD")(path, device=device, **kwargs)
