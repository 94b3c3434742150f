"""Learning-rate policies: Caffe's ``SGDSolver::GetLearningRate`` with the same float/double mix,
and ``f32``, Caffe's ``Dtype`` rounding used by the update rules."""
from __future__ import annotations

import math

import numpy as np

from ..errors import SolverError
from ..proto import caffe_pb2

_f32 = np.float32


def f32(x) -> float:
    """Round to float32, as Caffe's ``Dtype`` arithmetic does, returned as a Python float."""
    return float(_f32(x))


# ------------------------------------------------------------------------------------------------
# Learning-rate policies (Caffe's SGDSolver::GetLearningRate, same float/double mix)
# ------------------------------------------------------------------------------------------------

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def learning_rate(param: caffe_pb2.SolverParameter, it: int, current_step: int = 0) -> tuple[float, int]:
    """(rate, current_step) at iteration ``it``.  ``current_step`` is the multistep state
    carried between calls (Caffe advances it by at most one step per call)."""
    policy = param.lr_policy
    base = float(param.base_lr)
    gamma = float(param.gamma)
    power = float(param.power)
    if policy == "fixed":
        rate = base
    elif policy == "step":
        if param.stepsize <= 0:
            raise SolverError("lr_policy 'step' needs a stepsize > 0")
        current_step = it // param.stepsize
        rate = f32(base * math.pow(gamma, current_step))
    elif policy == "exp":
        rate = f32(base * math.pow(gamma, it))
    elif policy == "inv":
        x = _f32(1) + _f32(gamma) * _f32(it)
        rate = float(_f32(base) * np.power(x, _f32(-power)))
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
            current_step += 1
        rate = f32(base * math.pow(gamma, current_step))
    elif policy == "poly":
        if param.max_iter <= 0:
            raise SolverError("lr_policy 'poly' needs max_iter > 0")
        x = _f32(1) - _f32(it) / _f32(param.max_iter)
        rate = float(_f32(base) * np.power(x, _f32(power)))
    elif policy == "sigmoid":
        x = -_f32(gamma) * (_f32(it) - _f32(param.stepsize))
        with np.errstate(over="ignore"):
            rate = float(_f32(base) * (_f32(1) / (_f32(1) + np.exp(x))))
    else:
        raise SolverError(f"unknown lr_policy '{policy}' (one of: {', '.join(LR_POLICIES)})"
                          if policy else "the solver gives no lr_policy "
                          f"(one of: {', '.join(LR_POLICIES)})")
    return rate, current_step

