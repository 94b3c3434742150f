"""DIGITS' epochs -> iterations arithmetic and solver values (shared/docs/digits-rest.md §4),
pinned with literal numbers."""
from __future__ import annotations

import math

import pytest

from brewnet.server.digits.forms import ModelSpec
from brewnet.server.digits.solver_form import (Plan, compute_plan, epoch_of_iteration, lr_curve, lr_curves,
                                               plan_training, solver_parameter)
from brewnet.server.errors import FormErrors


def plan(**kw) -> Plan:
    args = dict(train_entries=30, val_entries=0, train_epochs=4, batch=10)
    args.update(kw)
    return compute_plan(**args)


# ----- iterations ---------------------------------------------------------------------------------

def test_digits_example_snapshots_at_epochs_2_and_4():
    p = plan(snapshot_interval=2)
    assert (p.iters_per_epoch, p.max_iter, p.snapshot) == (3, 12, 6)
    assert p.snapshot_iterations() == [6, 12]
    assert p.snapshot_epochs() == [2, 4]
    assert all(type(e) is int for e in p.snapshot_epochs())


def test_iterations_per_epoch_round_up_and_count_iter_size():
    assert plan(train_entries=31).iters_per_epoch == 4
    assert plan(train_entries=31).max_iter == 16
    p = plan(iter_size=2)                       # ceil(30 / (10 * 2))
    assert (p.iters_per_epoch, p.max_iter) == (2, 8)
    assert plan(train_entries=1, batch=64).iters_per_epoch == 1


def test_snapshot_interval_rules():
    assert plan(snapshot_interval=1).snapshot == 3
    assert plan(snapshot_interval=0.5).snapshot == 1            # 1.5 iterations, truncated
    assert plan(snapshot_interval=0.5).snapshot_epochs() == [0.333, 0.667, 1, 1.333, 1.667, 2, 2.333,
                                                             2.667, 3, 3.333, 3.667, 4]
    assert plan(snapshot_interval=0.1).snapshot == 1            # 0.3 iterations: in (0, 1] -> 1
    assert plan(snapshot_interval=0).snapshot == 0              # the end only
    assert plan(snapshot_interval=0).snapshot_iterations() == [12]
    assert plan(snapshot_interval=4).snapshot == 0              # = max_iter: the end only
    assert plan(snapshot_interval=7).snapshot == 0
    assert plan(snapshot_interval=1.5).snapshot == 4            # 4.5 truncated
    assert plan(snapshot_interval=1.5).snapshot_iterations() == [4, 8, 12]


def test_test_interval_and_test_iter():
    p = plan(val_entries=7, val_batch=5)
    assert (p.test_iter, p.test_interval) == (2, 3)             # ceil(7 / 5); every epoch
    assert plan(val_entries=7, val_batch=5, val_interval=0.2).test_interval == 1   # 0.6 -> 1
    assert plan(val_entries=7, val_batch=5, val_interval=2.5).test_interval == 7   # 7.5 truncated
    assert plan(val_entries=7, val_batch=5, val_interval=4).test_interval == 12    # >= max_iter: at the end
    assert plan(val_entries=7, val_batch=5, val_interval=9).test_interval == 12
    none = plan(val_entries=7, val_batch=5, val_interval=0)
    assert (none.test_iter, none.test_interval) == (0, 0)
    no_val = plan(val_entries=0)
    assert (no_val.test_iter, no_val.test_interval) == (0, 0)
    assert plan(val_entries=25).test_iter == 3                  # val batch defaults to the batch


def test_display_eight_times_an_epoch_or_every_5000_images():
    assert plan().display == 1                                  # floor(12 / 32) = 0 -> at least 1
    p = compute_plan(train_entries=10000, val_entries=0, train_epochs=1, batch=10)
    assert p.display == 125                                     # min(floor(1000 / 8), ceil(5000 / 10))
    p = compute_plan(train_entries=1000000, val_entries=0, train_epochs=1, batch=10)
    assert p.display == 500


def test_plan_training_batch_from_form_else_network_else_16():
    dataset = {"dir": "/nowhere", "labels": ["a", "b"], "train_entries": 100, "val_entries": 0,
               "image_dims": [28, 28, 1]}
    spec = ModelSpec(name="m", train_epochs=2, batch_size=None)
    assert plan_training(spec, dataset).batch == 16
    assert plan_training(spec, dataset).iters_per_epoch == 7
    assert plan_training(spec, dataset, net_batch=64).iters_per_epoch == 2
    spec.batch_size, spec.batch_accumulation = 25, 2
    p = plan_training(spec, dataset, net_batch=64)
    assert (p.batch, p.iter_size, p.iters_per_epoch, p.max_iter) == (25, 2, 2, 4)


def test_epoch_of_iteration():
    p = plan(snapshot_interval=2)
    assert epoch_of_iteration(6, p, 4) == 2 and type(epoch_of_iteration(6, p, 4)) is int
    assert epoch_of_iteration(1, p, 4) == 0.333
    assert epoch_of_iteration(5, {"max_iter": 12}, 4) == 1.667
    assert epoch_of_iteration(12, p.to_json(), 4) == 4


def test_plan_round_trips_through_json():
    p = plan(val_entries=7, snapshot_interval=2)
    p.weights = ["/x/snapshot_iter_6.caffemodel"]
    assert Plan.from_json({**p.to_json(), "extra": 1}) == p


def test_bad_numbers_are_refused():
    with pytest.raises(ValueError):
        compute_plan(train_entries=0, val_entries=0, train_epochs=1, batch=10)
    with pytest.raises(ValueError):
        compute_plan(train_entries=10, val_entries=0, train_epochs=0, batch=10)


# ----- the solver -----------------------------------------------------------------------------

def solver(**kw):
    spec = ModelSpec(name="m", **kw)
    return solver_parameter(spec, compute_plan(train_entries=1000, val_entries=100, train_epochs=2,
                                               batch=10, snapshot_interval=1))


def test_solver_step_policy_and_defaults():
    s = solver(learning_rate=0.02, random_seed=7)
    assert s.max_iter == 200 and s.snapshot == 100 and s.snapshot_prefix == "snapshot"
    assert s.net == "train_val.prototxt" and s.type == "SGD" and s.snapshot_after_train
    assert list(s.test_iter) == [10] and s.test_interval == 100
    assert s.lr_policy == "step" and s.stepsize == 66 and s.gamma == pytest.approx(0.1)   # ceil(33 % of 200)
    assert s.momentum == pytest.approx(0.9)
    assert s.weight_decay == pytest.approx(0.0002)          # base_lr / 100
    assert s.random_seed == 7 and s.display == 12           # floor(200 / 16)


@pytest.mark.parametrize("policy,params,expect", [
    ("fixed", {}, {}),
    ("step", {"lr_step_size": 10, "lr_step_gamma": 0.5}, {"stepsize": 20, "gamma": 0.5}),
    ("multistep", {"lr_multistep_values": "50,85"}, {"stepvalue": [100, 170], "gamma": 0.5}),
    ("exp", {"lr_exp_gamma": 0.95}, {"gamma": 0.95 ** 0.5}),
    ("inv", {"lr_inv_gamma": 0.1, "lr_inv_power": 0.5}, {"gamma": 0.05, "power": 0.5}),
    ("poly", {"lr_poly_power": 3}, {"power": 3.0}),
    ("sigmoid", {"lr_sigmoid_step": 50, "lr_sigmoid_gamma": 0.1}, {"gamma": -0.05, "stepsize": 100}),
])
def test_policy_values_are_percentages_of_max_iter(policy, params, expect):
    s = solver(lr_policy=policy, lr_params=params)
    assert s.lr_policy == policy
    for k, v in expect.items():
        got = list(getattr(s, k)) if k == "stepvalue" else getattr(s, k)
        assert got == pytest.approx(v), k


@pytest.mark.parametrize("kind,name,momentum", [
    ("SGD", "SGD", True), ("NESTEROV", "Nesterov", True), ("ADAGRAD", "AdaGrad", False),
    ("RMSPROP", "RMSProp", False), ("ADADELTA", "AdaDelta", True), ("ADAM", "Adam", True)])
def test_solver_types_and_momentum(kind, name, momentum):
    s = solver(solver_type=kind)
    assert s.type == name
    assert s.HasField("momentum") == momentum
    if kind == "RMSPROP":
        assert s.rms_decay == pytest.approx(0.99)
    else:
        assert not s.HasField("rms_decay")


def test_no_val_set_no_testing_and_iter_size():
    spec = ModelSpec(name="m", batch_accumulation=2)
    s = solver_parameter(spec, compute_plan(train_entries=30, val_entries=0, train_epochs=4, batch=10, iter_size=2))
    assert not s.test_iter and not s.HasField("test_interval") and s.iter_size == 2
    assert not s.HasField("random_seed")


# ----- the learning-rate graph ------------------------------------------------------------------

def test_lr_curve_step():
    v = lr_curve({"lr_policy": "step", "learning_rate": "0.1", "lr_step_size": "33", "lr_step_gamma": "0.5"})
    assert len(v) == 101
    assert v[0] == pytest.approx(0.1) and v[32] == pytest.approx(0.1)
    assert v[33] == pytest.approx(0.05) and v[66] == pytest.approx(0.025) and v[100] == pytest.approx(0.0125)


def test_lr_curve_other_policies():
    assert lr_curve({"lr_policy": "fixed", "learning_rate": "0.3"}) == pytest.approx([0.3] * 101)
    v = lr_curve({"lr_policy": "exp", "learning_rate": "1", "lr_exp_gamma": "0.9"})
    assert v[10] == pytest.approx(0.9 ** 10, rel=1e-5)
    v = lr_curve({"lr_policy": "poly", "learning_rate": "1", "lr_poly_power": "2"})
    assert v[50] == pytest.approx(0.25) and v[100] == 0
    v = lr_curve({"lr_policy": "multistep", "learning_rate": "1"})     # 50,85 and gamma .5 by default
    assert (v[49], v[50], v[84], v[85], v[100]) == pytest.approx((1, 0.5, 0.5, 0.25, 0.25))
    v = lr_curve({"lr_policy": "sigmoid", "learning_rate": "1"})       # step 50 %, gamma .1
    assert v[50] == pytest.approx(0.5) and v[0] == pytest.approx(1 / (1 + math.exp(-5)), rel=1e-5) and v[100] < 0.01   # falls
    v = lr_curve({"lr_policy": "inv", "learning_rate": "1", "lr_inv_gamma": "0.1", "lr_inv_power": "0.5"})
    assert v[30] == pytest.approx((1 + 0.1 * 30) ** -0.5, rel=1e-5)
    assert lr_curve({}) == pytest.approx([0.01] * 33 + [0.001] * 33 + [0.0001] * 33 + [0.00001] * 2, rel=1e-5)


def test_lr_curves_of_a_sweep_and_bad_fields():
    curves = lr_curves({"lr_policy": "fixed", "learning_rate": "[0.01, 0.001]"})
    assert [c[0] for c in curves] == pytest.approx([0.01, 0.001])
    with pytest.raises(FormErrors) as e:
        lr_curve({"lr_policy": "step", "learning_rate": "fast"})
    assert e.value.errors == {"learning_rate": ["Not a valid float value"]}
    with pytest.raises(FormErrors) as e:
        lr_curve({"lr_policy": "cosine"})
    assert e.value.errors == {"lr_policy": ["Not a valid choice"]}
    with pytest.raises(FormErrors) as e:
        lr_curve({"lr_policy": "multistep", "lr_multistep_values": "80,20"})
    assert "lr_multistep_values" in e.value.errors
