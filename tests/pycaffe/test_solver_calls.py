"""caffe.SGDSolver / caffe.get_solver opened from a solver file: solve() to max_iter,
apply_update() on the diffs a script wrote, nets that outlive their solver, and snapshot() /
restore() with a relative snapshot_prefix (relative to the working directory, as in Caffe)."""
from __future__ import annotations

import gc
import os

import numpy as np
import pytest

import brewnet as caffe
from pycaffe.nets import NET, write

BASE_LR, MOMENTUM, DECAY = 0.01, 0.9, 0.0005
SOLVER = f"""net: "net.prototxt"
test_iter: 2 test_interval: 5
base_lr: {BASE_LR} momentum: {MOMENTUM} weight_decay: {DECAY}
lr_policy: "inv" gamma: 0.0001 power: 0.75
display: 100 max_iter: 12 snapshot_after_train: false
snapshot_prefix: "calls"
random_seed: 5
"""


@pytest.fixture
def solver_file(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)  # net: and snapshot_prefix: are relative to it
    write(tmp_path, NET)
    return write(tmp_path, SOLVER, "solver.prototxt")


@pytest.fixture
def solver(solver_file) -> caffe.SGDSolver:
    caffe.set_mode_cpu()
    return caffe.SGDSolver(solver_file)


def test_get_solver_picks_the_class_of_the_solver_type(solver_file, tmp_path):
    assert type(caffe.get_solver(solver_file)) is caffe.SGDSolver
    adam = write(tmp_path, SOLVER.replace("momentum: 0.9", 'momentum: 0.9 type: "Adam"'), "adam.prototxt")
    assert type(caffe.get_solver(adam)) is caffe.AdamSolver


def test_solve_runs_to_max_iter_and_trains(solver):
    assert solver.iter == 0
    assert len(solver.test_nets) == 1 and solver.test_nets[0].phase == caffe.TEST
    before = solver.net.params["ip"][0].data.copy()
    solver.solve()
    assert solver.iter == 12
    assert not np.array_equal(solver.net.params["ip"][0].data, before)


def test_apply_update_uses_the_diffs_the_script_wrote(solver):
    net = solver.net
    weight, bias = net.layers[1].blobs  # conv: param { decay_mult: 1 } param { decay_mult: 0 }
    assert weight.data.shape == net.params["conv"][0].data.shape
    weight.data[...] = 0.5
    weight.diff[...] = 1
    bias.data[...] = 0.5
    bias.diff[...] = 1
    solver.apply_update()
    # iteration 0: lr = base_lr; empty history, so the step is lr * (diff + decay_mult * decay * data)
    np.testing.assert_allclose(weight.data, 0.5 - BASE_LR * (1 + DECAY * 0.5), rtol=1e-6)
    np.testing.assert_allclose(bias.data, 0.5 - BASE_LR * 1, rtol=1e-6)
    # the weights the script reads are the net's own
    np.testing.assert_array_equal(net.params["conv"][0].data, weight.data)


def test_nets_outlive_their_solver(solver):
    solver.step(2)
    nets = [solver.net, *solver.test_nets]
    assert len(nets) == 2
    saved = [(b.data.copy(), b.diff.copy()) for net in nets
             for b in [*(p for ps in net.params.values() for p in ps), *net.blobs.values()]]
    del solver
    gc.collect()
    now = [(b.data, b.diff) for net in nets
           for b in [*(p for ps in net.params.values() for p in ps), *net.blobs.values()]]
    assert len(now) == len(saved)
    for (data, diff), (data0, diff0) in zip(now, saved):
        np.testing.assert_array_equal(data, data0)
        np.testing.assert_array_equal(diff, diff0)


def test_snapshot_writes_to_the_working_directory_and_restore_resumes(solver, solver_file, tmp_path):
    solver.snapshot()
    assert sorted(os.listdir(tmp_path / ".")) == sorted(
        ["net.prototxt", "solver.prototxt", "calls_iter_0.caffemodel", "calls_iter_0.solverstate"])
    solver.step(3)
    solver.snapshot()
    assert (tmp_path / "calls_iter_3.caffemodel").is_file()
    resumed = caffe.SGDSolver(solver_file)
    resumed.restore("calls_iter_3.solverstate")
    assert resumed.iter == 3
    for name, ps in solver.net.params.items():
        for p, q in zip(ps, resumed.net.params[name]):
            np.testing.assert_array_equal(q.data, p.data)  # read back from the file: exact
