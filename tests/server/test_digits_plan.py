"""DIGITS' epochs -> iterations arithmetic and solver values (docs/digits-rest.md §4),
pinned with literal numbers."""
from __future__ import annotations

import math

import pytest

from brewnet.server.jobs.specs import ModelSpec
from brewnet.server.jobs.epochs import epoch_of_iteration
from brewnet.server.digits.solver_form import (Plan, compute_plan, lr_curve, lr_curves,
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
    assert (v[50] == pytest.approx(0.5) and v[0] == pytest.approx(1 / (1 + math.exp(-5)), rel=1e-5)
            and v[100] < 0.01)   # falls
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


# ----- a model job's files ------------------------------------------------------------------------

import json                      # noqa: E402
import os                        # noqa: E402
from pathlib import Path         # noqa: E402

import numpy as np               # noqa: E402
from PIL import Image            # noqa: E402

from brewnet import formats       # noqa: E402
from brewnet.net import Net      # noqa: E402
from brewnet.proto import caffe_pb2  # noqa: E402
from google.protobuf import text_format  # noqa: E402
from brewnet.server.digits.model_files import FILES, customize, write_model_files  # noqa: E402
from brewnet.server.digits.networks import network_prototxt  # noqa: E402
from brewnet.solver import solver_class  # noqa: E402


def _images(root: Path, classes, n: int, side: int) -> None:
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            a = np.zeros((side, side, 3), np.uint8)
            a[..., ci % 3] = 40 + 15 * i
            a[: side // 2, :, (ci + 1) % 3] = 10 * ci
            Image.fromarray(a).save(root / name / f"{i}.png")


def _dataset(root: Path, classes, *, n=10, side=28, color=False, val_percent=20.0) -> dict:
    """A dataset job made by brewnet.data.builder.create_dataset, as the short dict."""
    from brewnet.data.builder import create_dataset

    src = root / "images"
    _images(src, classes, n, side)
    out = root / "dataset"
    out.mkdir()
    s = create_dataset(str(src), str(out), val_percent=val_percent, color=color, seed=1, digits_labels=True)
    return {"dir": out, "labels": list(s["labels"]), "train_entries": s["splits"]["train"]["total"],
            "val_entries": s["splits"].get("val", {}).get("total", 0),
            "image_dims": [side, side, 3 if color else 1], "resize_mode": "squash",
            "mean_file": str(out / "mean.binaryproto")}


@pytest.fixture(scope="module")
def grey3(tmp_path_factory) -> dict:
    return _dataset(tmp_path_factory.mktemp("grey3"), ["a", "b", "c"])


def _train_one_step(jobdir: Path, weights=None) -> None:
    """brewnet's solver of the written solver.prototxt runs one training step (and a test pass)."""
    cwd = os.getcwd()
    os.chdir(jobdir)
    try:
        param = formats.read_solver("solver.prototxt")
        solver = solver_class(param.type or "SGD")("solver.prototxt", weights=weights)
        solver.step(1)
        assert solver.iter == 1
        for net in solver.test_nets:
            out = net.forward()
            assert 0 <= float(out["accuracy"]) <= 1
    finally:
        os.chdir(cwd)


def test_standard_lenet_files(grey3, tmp_path):
    spec = ModelSpec(name="m", method="standard", standard_network="lenet", train_epochs=4, batch_size=4,
                     snapshot_interval=2, random_seed=5, learning_rate=0.02)
    p = write_model_files(tmp_path, spec, grey3, None)
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(FILES)
    assert (p.train_entries, p.val_entries, p.iters_per_epoch, p.max_iter, p.snapshot) == (24, 6, 6, 24, 12)
    assert (p.test_iter, p.test_interval, p.weights) == (2, 6, [])
    assert (tmp_path / "original.prototxt").read_text() == network_prototxt("lenet")
    tv = formats.read_net(str(tmp_path / "train_val.prototxt"))
    data = [lp for lp in tv.layer if lp.type == "Data"]
    d = grey3["dir"]
    assert [(lp.include[0].phase, lp.data_param.source, lp.data_param.batch_size) for lp in data] == \
        [(caffe_pb2.TRAIN, str(d / "train_db"), 4), (caffe_pb2.TEST, str(d / "val_db"), 4)]
    assert all(lp.data_param.backend == caffe_pb2.DataParameter.LMDB for lp in data)
    assert all(lp.transform_param.mean_file == grey3["mean_file"] for lp in data)
    assert all(lp.transform_param.scale == pytest.approx(0.00390625) and not lp.transform_param.mirror for lp in data)
    assert not any(r.stage for lp in tv.layer for r in list(lp.include) + list(lp.exclude))
    assert [lp.inner_product_param.num_output for lp in tv.layer if lp.type == "InnerProduct"] == [500, 3]
    assert [lp.include[0].phase for lp in tv.layer if lp.type == "Accuracy"] == [caffe_pb2.TEST]
    # written with a net-level input, as DIGITS writes it; loaded, it is an Input layer
    written = text_format.Parse((tmp_path / "deploy.prototxt").read_text(), caffe_pb2.NetParameter())
    assert list(written.input) == ["data"] and list(written.input_shape[0].dim) == [1, 1, 28, 28]
    assert not any(lp.type == "Input" for lp in written.layer)
    deploy = formats.read_net(str(tmp_path / "deploy.prototxt"))
    assert (deploy.layer[0].type, list(deploy.layer[0].top)) == ("Input", ["data"])
    assert list(deploy.layer[0].input_param.shape[0].dim) == [1, 1, 28, 28]
    types = [lp.type for lp in deploy.layer]
    assert "Softmax" in types and not {"Data", "SoftmaxWithLoss", "Accuracy"} & set(types)
    assert deploy.layer[-1].name == "prob"
    s = formats.read_solver(str(tmp_path / "solver.prototxt"))
    assert (s.net, s.snapshot_prefix, s.max_iter, s.snapshot, s.random_seed, s.type) == \
        ("train_val.prototxt", "snapshot", 24, 12, 5, "SGD")
    assert (list(s.test_iter), s.test_interval, s.lr_policy, s.stepsize) == ([2], 6, "step", 8)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert (plan["max_iter"], plan["iters_per_epoch"], plan["train_epochs"], plan["snapshot_epochs"]) == \
        (24, 6, 4, [2, 4])
    # brewnet builds the solver from these files and trains one step on the LMDB
    _train_one_step(tmp_path)
    net = Net(str(tmp_path / "deploy.prototxt"), phase=caffe_pb2.TEST)
    assert net.forward()["prob"].shape == (1, 3)


def test_pixel_mean_crop_and_no_val_set(tmp_path):
    ds = _dataset(tmp_path / "ds", ["x", "y"], n=6, side=16, color=True, val_percent=0)
    assert ds["val_entries"] == 0 and not (ds["dir"] / "val_db").exists()
    spec = ModelSpec(name="m", method="standard", standard_network="resnet18", train_epochs=1, batch_size=2,
                     use_mean="pixel", crop_size=12)
    job = tmp_path / "job"
    job.mkdir()
    p = write_model_files(job, spec, ds, None)
    assert (p.test_iter, p.test_interval, p.max_iter) == (0, 0, 6)
    tv = formats.read_net(str(job / "train_val.prototxt"))
    data = [lp for lp in tv.layer if lp.type == "Data"]
    assert len(data) == 1 and data[0].include[0].phase == caffe_pb2.TRAIN       # no val Data layer
    tp = data[0].transform_param
    mean = formats.read_binaryproto(ds["mean_file"]).reshape(3, 16, 16).mean(axis=(1, 2))
    assert list(tp.mean_value) == pytest.approx(list(mean), rel=1e-5)
    assert not tp.HasField("mean_file") and tp.crop_size == 12 and tp.mirror
    deploy = formats.read_net(str(job / "deploy.prototxt"))
    assert list(deploy.layer[0].input_param.shape[0].dim) == [1, 3, 12, 12]
    s = formats.read_solver(str(job / "solver.prototxt"))
    assert not s.test_iter
    _train_one_step(job)


def test_network_crop_capped_and_form_crop_refused(grey3, tmp_path):
    # AlexNet's 227 crop on 28x28 images: capped at 28 (DIGITS); the form's 29 is refused, nothing written
    spec = ModelSpec(name="m", method="standard", standard_network="lenet", train_epochs=1, crop_size=29)
    with pytest.raises(FormErrors) as e:
        write_model_files(tmp_path, spec, grey3, None)
    assert e.value.errors == {"crop_size": ["crop_size is larger than the image size"]}
    assert list(tmp_path.iterdir()) == []
    spec = ModelSpec(name="m", method="standard", standard_network="alexnet", train_epochs=1, use_mean="none")
    write_model_files(tmp_path, spec, grey3, None)
    tv = formats.read_net(str(tmp_path / "train_val.prototxt"))
    assert [lp.transform_param.crop_size for lp in tv.layer if lp.type == "Data"] == [28, 28]
    assert [lp.data_param.batch_size for lp in tv.layer if lp.type == "Data"] == [100, 100]   # the network's
    assert not any(lp.transform_param.HasField("mean_file") for lp in tv.layer if lp.type == "Data")


def test_custom_network_with_input_layer_and_weights(grey3, tmp_path):
    net = """name: "c"
layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 28 dim: 28 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" \
inner_product_param { weight_filler { type: "xavier" } } }
layer { name: "acc5" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc5" \
accuracy_param { top_k: 5 } include { stage: "val" } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include { stage: "val" } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" exclude { stage: "deploy" } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" include { stage: "deploy" } }
"""
    spec = ModelSpec(name="m", method="custom", custom_network=net, train_epochs=1, batch_size=5)
    p = write_model_files(tmp_path, spec, grey3, None)
    assert (tmp_path / "original.prototxt").read_text() == net
    tv = formats.read_net(str(tmp_path / "train_val.prototxt"))
    # DIGITS' default Data layers named "data"; the Input and the top-5 accuracy (3 classes) dropped
    assert [lp.name for lp in tv.layer] == ["data", "data", "ip", "accuracy", "loss"]
    assert p.batch == 5 and p.iters_per_epoch == 5
    _train_one_step(tmp_path)


def _previous_job(root: Path, dataset: dict) -> dict:
    """A finished LeNet job with one snapshot (epoch 1 of 1)."""
    root.mkdir()
    spec = ModelSpec(name="prev", method="standard", standard_network="lenet", train_epochs=1, batch_size=8)
    p = write_model_files(root, spec, dataset, None)
    net = Net(str(root / "train_val.prototxt"), phase=caffe_pb2.TRAIN)
    path = root / f"snapshot_iter_{p.max_iter}.caffemodel"
    net.save(str(path))
    return {"id": "prev", "kind": "model", "directory": str(root),
            "snapshots": [{"iteration": p.max_iter, "epoch": 1, "path": str(path)}]}


def test_retrain_renames_the_classifier_for_another_class_count(grey3, tmp_path):
    prev = _previous_job(tmp_path / "prev", grey3)
    five = _dataset(tmp_path / "five", ["a", "b", "c", "d", "e"], n=5)
    job = tmp_path / "job"
    job.mkdir()
    spec = ModelSpec(name="re", method="previous", previous_job_id="prev", previous_epoch=1, train_epochs=1,
                     batch_size=4)
    p = write_model_files(job, spec, five, prev)
    assert p.weights == [prev["snapshots"][0]["path"]]
    assert json.loads((job / "plan.json").read_text())["weights"] == p.weights
    tv = formats.read_net(str(job / "train_val.prototxt"))
    ips = [(lp.name, lp.inner_product_param.num_output) for lp in tv.layer if lp.type == "InnerProduct"]
    assert ips == [("ip1", 500), ("ip2_retrain", 5)]
    deploy = formats.read_net(str(job / "deploy.prototxt"))
    assert "ip2_retrain" in [lp.name for lp in deploy.layer]
    original = formats.read_net(str(job / "original.prototxt"))
    ip2 = next(lp for lp in original.layer if lp.name == "ip2_retrain")
    assert not ip2.inner_product_param.HasField("num_output")      # before brewnet's filling
    _train_one_step(job, weights=p.weights)

    # the same class count: nothing renamed; epoch 0: no weights
    same = tmp_path / "same"
    same.mkdir()
    p = write_model_files(same, spec, grey3, prev)
    tv = formats.read_net(str(same / "train_val.prototxt"))
    assert [lp.name for lp in tv.layer if lp.type == "InnerProduct"] == ["ip1", "ip2"]
    zero = tmp_path / "zero"
    zero.mkdir()
    spec.previous_epoch = 0
    assert write_model_files(zero, spec, five, prev).weights == []
    spec.previous_epoch = 7
    with pytest.raises(FormErrors) as e:
        write_model_files(tmp_path / "zero", spec, five, prev)
    assert list(e.value.errors) == ["prev-snapshot"]


def test_service_shaped_dataset_dict(grey3, tmp_path):
    # the service passes job.json's dict with the scheduler's dataset summary
    from brewnet.server.jobs.summaries import dataset_summary

    d = {"id": "ds", "directory": str(grey3["dir"]), **dataset_summary(grey3["dir"])}
    spec = ModelSpec(name="m", method="standard", standard_network="lenet_bn", train_epochs=2, batch_size=6)
    p = write_model_files(tmp_path, spec, d, None)
    assert (p.train_entries, p.val_entries, p.iters_per_epoch, p.test_iter) == (24, 6, 4, 1)
    _train_one_step(tmp_path)


def test_customize_gives_the_standard_network():
    assert customize("googlenet") == network_prototxt("googlenet")
    with pytest.raises(KeyError):
        customize("nope")


def test_dataset_without_image_dims_is_a_form_error(tmp_path):
    spec = ModelSpec(name="m", method="standard", standard_network="lenet", train_epochs=1)
    with pytest.raises(FormErrors) as e:
        write_model_files(tmp_path, spec, {"directory": str(tmp_path), "labels": ["a", "b"],
                                           "counts": {"train": 10}, "image": {}}, None)
    assert list(e.value.errors) == ["dataset"] and "image dimensions" in e.value.errors["dataset"][0]
    assert list(tmp_path.iterdir()) == []
