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
# Learning-rate policies.  Each rule takes (solver parameters, iteration, multistep state) and
# gives (rate, state).  The precision is Caffe's: its ``Dtype`` (float32) where GetLearningRate's
# operands are Dtype, double through ``pow`` where they are proto fields (step, exp, multistep),
# the result stored as Dtype.
# ------------------------------------------------------------------------------------------------

def _power_of_gamma(param: caffe_pb2.SolverParameter, exponent: int) -> float:
    """``base_lr * gamma ** exponent`` in double, stored as float32."""
    return f32(float(param.base_lr) * math.pow(float(param.gamma), exponent))


def _fixed(param, it: int, step: int) -> tuple[float, int]:
    return float(param.base_lr), step


def _step(param, it: int, step: int) -> tuple[float, int]:
    if param.stepsize <= 0:
        raise SolverError("lr_policy 'step' needs a stepsize > 0")
    drops = it // param.stepsize
    return _power_of_gamma(param, drops), drops


def _exp(param, it: int, step: int) -> tuple[float, int]:
    return _power_of_gamma(param, it), step


def _inv(param, it: int, step: int) -> tuple[float, int]:
    denominator = _f32(1) + _f32(param.gamma) * _f32(it)
    return float(_f32(param.base_lr) * np.power(denominator, _f32(-param.power))), step


def _multistep(param, it: int, step: int) -> tuple[float, int]:
    # like Caffe, at most one boundary is passed per call: the state is advanced, not recomputed
    passed = step < len(param.stepvalue) and it >= param.stepvalue[step]
    step = step + 1 if passed else step
    return _power_of_gamma(param, step), step


def _poly(param, it: int, step: int) -> tuple[float, int]:
    if param.max_iter <= 0:
        raise SolverError("lr_policy 'poly' needs max_iter > 0")
    remaining = _f32(1) - _f32(it) / _f32(param.max_iter)
    return float(_f32(param.base_lr) * np.power(remaining, _f32(param.power))), step


def _sigmoid(param, it: int, step: int) -> tuple[float, int]:
    exponent = -_f32(param.gamma) * (_f32(it) - _f32(param.stepsize))
    with np.errstate(over="ignore"):   # far past the step: exp overflows to inf, the rate to 0
        return float(_f32(param.base_lr) * (_f32(1) / (_f32(1) + np.exp(exponent)))), step


_RULES = {"fixed": _fixed, "step": _step, "exp": _exp, "inv": _inv, "multistep": _multistep,
          "poly": _poly, "sigmoid": _sigmoid}

LR_POLICIES = tuple(_RULES)


def learning_rate(param: caffe_pb2.SolverParameter, it: int, current_step: int = 0) -> tuple[float, int]:
    """(rate, current_step) at iteration ``it``.  ``current_step`` is the multistep state
    carried between calls (Caffe advances it by at most one step per call)."""
    rule = _RULES.get(param.lr_policy)
    if rule is None:
        choices = f"(one of: {', '.join(LR_POLICIES)})"
        raise SolverError(f"unknown lr_policy '{param.lr_policy}' {choices}" if param.lr_policy
                          else f"the solver gives no lr_policy {choices}")
    return rule(param, it, current_step)
