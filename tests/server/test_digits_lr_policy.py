"""DIGITS' learning-rate arithmetic: the form gives the policy's steps as percentages of the run,
and the solver gets them in iterations of a run whose length comes from the epochs.

Origin of the numbers: DIGITS' Caffe training task (digits/model/tasks/caffe_train.py) takes
``scale = max_iter / 100.0`` and writes ``stepsize = ceil(percent * scale)`` (step, sigmoid, each
multistep value), ``gamma ** (1 / scale)`` (exp), ``gamma / scale`` (inv), ``-gamma / scale``
(sigmoid).  The order of those floating-point operations is part of the fact: 50 % of 112
iterations is ``50 * 1.12 = 56.00000000000001`` there, so DIGITS writes stepvalue 57, not 56.
The expected values below are written out by hand from those formulas.
"""
import math

import numpy as np
import pytest

from brewnet.proto import caffe_pb2
from brewnet.server.digits.solver_form import LR_DEFAULTS, apply_lr_policy, compute_plan


def f32(x: float) -> float:
    """``x`` as a float field of a SolverParameter stores it."""
    return float(np.float32(x))


def policy(name: str, max_iter: int, **params) -> caffe_pb2.SolverParameter:
    s = caffe_pb2.SolverParameter(max_iter=max_iter)
    apply_lr_policy(s, name, params)
    return s


def set_fields(s: caffe_pb2.SolverParameter) -> set:
    return {f.name for f, _ in s.ListFields()} - {"max_iter", "lr_policy"}


def test_fixed_sets_only_the_policy():
    s = policy("fixed", 300, lr_step_size=10, lr_poly_power=2)
    assert s.lr_policy == "fixed" and set_fields(s) == set()


@pytest.mark.parametrize("max_iter,percent,stepsize", [
    (300, 33, 99),        # 33 * 3.0
    (1000, 33, 330),
    (70, 33, 24),         # 33 * 0.7 = 23.099999999999998 -> 24
    (70, 10, 7),          # 10 * 0.7 = 7.0
    (14, 50, 8),          # 50 * 0.14 = 7.000000000000001 -> 8 (not 7)
    (112, 25, 29),        # 25 * 1.12 = 28.000000000000004 -> 29
    (200, 12.5, 25),
    (10, 1, 1),           # 0.1 -> 1
])
def test_step_size_is_the_ceiling_of_percent_times_scale(max_iter, percent, stepsize):
    s = policy("step", max_iter, lr_step_size=percent, lr_step_gamma=0.25)
    assert s.lr_policy == "step" and s.stepsize == stepsize and s.gamma == 0.25
    assert set_fields(s) == {"stepsize", "gamma"}


def test_multistep_several_steps_in_their_order():
    s = policy("multistep", 112, lr_multistep_values="10,25,50,85", lr_multistep_gamma=0.3)
    # 11.200000000000001, 28.000000000000004, 56.00000000000001, 95.2
    assert list(s.stepvalue) == [12, 29, 57, 96]
    assert s.gamma == f32(0.3) and set_fields(s) == {"stepvalue", "gamma"}


def test_multistep_values_with_spaces_and_fractions():
    s = policy("multistep", 70, lr_multistep_values="20, 45.5 ,85")
    # 14.0, 31.849999999999998, 59.49999999999999; gamma from DIGITS' form default
    assert list(s.stepvalue) == [14, 32, 60] and s.gamma == f32(0.5)


def test_exp_gamma_is_per_iteration():
    s = policy("exp", 200, lr_exp_gamma=0.95)
    assert s.gamma == f32(math.pow(0.95, 1.0 / 2.0)) and set_fields(s) == {"gamma"}
    s = policy("exp", 112, lr_exp_gamma=0.9)
    assert s.gamma == f32(math.pow(0.9, 1.0 / 1.12))


def test_inv_gamma_divided_by_scale_and_its_power():
    s = policy("inv", 400, lr_inv_gamma=0.1, lr_inv_power=0.75)
    assert (s.gamma, s.power) == (f32(0.1 / 4.0), 0.75) and set_fields(s) == {"gamma", "power"}


def test_poly_sets_only_the_power():
    s = policy("poly", 400, lr_poly_power=2.5, lr_step_gamma=0.5)
    assert s.power == 2.5 and set_fields(s) == {"power"}


def test_sigmoid_negative_gamma_and_ceiling_step():
    s = policy("sigmoid", 70, lr_sigmoid_step=33, lr_sigmoid_gamma=0.2)
    assert s.gamma == f32(-1.0 * 0.2 / 0.7) and s.stepsize == 24
    assert set_fields(s) == {"gamma", "stepsize"}


@pytest.mark.parametrize("name,expect", [
    ("step", {"stepsize": 66, "gamma": f32(0.1)}),                      # 33 % of 200, gamma .1
    ("multistep", {"stepvalue": [100, 170], "gamma": f32(0.5)}),        # "50,85", gamma .5
    ("exp", {"gamma": f32(math.pow(0.95, 0.5))}),
    ("inv", {"gamma": f32(0.05), "power": f32(0.5)}),
    ("poly", {"power": f32(3.0)}),
    ("sigmoid", {"gamma": f32(-0.05), "stepsize": 100}),
])
def test_missing_or_none_fields_take_the_form_defaults(name, expect):
    for params in ({}, {k: None for k in LR_DEFAULTS}):
        s = caffe_pb2.SolverParameter(max_iter=200)
        apply_lr_policy(s, name, params)
        got = {k: (list(getattr(s, k)) if k == "stepvalue" else getattr(s, k)) for k in expect}
        assert got == expect


def test_unknown_policy_is_refused_by_name():
    with pytest.raises(ValueError, match=r"unknown lr_policy 'cosine' \(one of fixed, step, multistep, exp, "
                                         r"inv, poly, sigmoid\)"):
        policy("cosine", 100)


def test_epochs_to_iterations_to_lr_steps():
    """The whole chain: 1000 images, batch 64, 7 epochs -> ceil(1000 / 64) = 16 iterations an
    epoch, max_iter 112 -> a 50 % step at 57 (see the module docstring) and 33 % at 37."""
    plan = compute_plan(train_entries=1000, val_entries=0, train_epochs=7, batch=64)
    assert (plan.iters_per_epoch, plan.max_iter) == (16, 112)
    assert policy("multistep", plan.max_iter, lr_multistep_values="33,50").stepvalue[:] == [37, 57]
    # with batch accumulation the epoch is counted in batch * iter_size images
    plan = compute_plan(train_entries=1000, val_entries=0, train_epochs=3, batch=64, iter_size=2)
    assert (plan.iters_per_epoch, plan.max_iter) == (8, 24)
    assert policy("step", plan.max_iter, lr_step_size=33).stepsize == 8      # 33 * 0.24 = 7.92
