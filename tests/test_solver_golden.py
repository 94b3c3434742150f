"""Solver trajectories recorded from real BVLC Caffe (tests/golden/solver_*).

Losses per step, final weights and the solver history must match within RTOL relative to their
magnitude (tests/numeric.py): ours and Caffe's run ten or twelve steps of a conv + BatchNorm net
in float32 on different kernels, and each step carries the last one's round-off along; the most
seen is 3.6e-7, a wrong lr or momentum moves a weight by ~1e-2. A blob's floor is the largest
magnitude among its layer's blobs (the same history slot for the history): the convolution bias
feeds a BatchNorm, so its gradient and history are round-off noise next to the weight's.
One exception, documented: the convolution bias feeds a BatchNorm, so its true gradient is zero
and Caffe's (and ours) is round-off noise of order 1e-9.  SGD-type solvers turn that noise into
a negligible step; the adaptive solvers (AdaGrad, RMSProp, Adam) divide it by its own magnitude,
so the bias, and the BatchNorm mean accumulator that sees it, take steps of size ~lr whose sign is
decided by round-off.  For those two blobs of those solvers we only check a loose bound.
"""
from __future__ import annotations

import glob
import json
import os

import numpy as np
import pytest
import torch

import brewnet
from brewnet import formats
from brewnet.proto import caffe_pb2
from numeric import assert_close_f32

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
INDEX = json.load(open(os.path.join(GOLDEN, "index.json")))
CASES = sorted(k for k in INDEX if k.startswith("solver_"))
NOISY = {"solver_adagrad", "solver_rmsprop_poly", "solver_adam_exp"}
NOISE_KEYS = {"conv/1", "bn/0"}
RTOL = 1e-5


def _solver(name, tmp_path, device=None):
    s = brewnet.get_solver(os.path.join(GOLDEN, INDEX[name]["solver"]), device=device)
    s.param.snapshot_prefix = str(tmp_path / name)
    return s


def _feed(s, ref, k):
    s.net.blobs["data"].data[...] = ref["inputs_data"][k]
    s.net.blobs["label"].data[...] = ref["inputs_label"][k]


def _check_params(s, ref, name):
    for key in ref.files:
        if not key.startswith("param_after/"):
            continue
        _, layer, i = key.split("/")
        ours = s.net.params[layer][int(i)].data
        if name in NOISY and f"{layer}/{i}" in NOISE_KEYS:
            assert np.abs(ours - ref[key]).max() < 0.05, key
            continue
        scale = max(float(np.abs(ref[k]).max()) for k in ref.files if k.startswith(f"param_after/{layer}/"))
        assert_close_f32(ours, ref[key], rtol=RTOL, scale=scale, what=f"{name} {key}")


def _snapshot_iter(name):
    path = glob.glob(os.path.join(GOLDEN, f"{name}_iter_*.solverstate"))[0]
    return path, int(path.rsplit("_iter_", 1)[1].split(".")[0])


@pytest.mark.parametrize("name", CASES)
def test_trajectory_matches_caffe(name, tmp_path, device=None):
    ref = np.load(os.path.join(GOLDEN, f"{name}.npz"))
    s = _solver(name, tmp_path, device)
    s.net.copy_from(os.path.join(GOLDEN, f"{name}_init.caffemodel"))
    state_path, k_snap = _snapshot_iter(name)
    losses = []
    for k in range(INDEX[name]["steps"]):
        _feed(s, ref, k)
        s.step(1)
        losses.append(float(s.net.blobs["loss"].data))
        if s.iter == k_snap:
            _check_history(s, state_path, name)
    assert_close_f32(losses, ref["losses"], rtol=RTOL, what=f"{name} losses")
    _check_params(s, ref, name)


def _check_history(s, state_path, name):
    """Our history at Caffe's snapshot iteration equals the history in Caffe's .solverstate."""
    state = formats.read_binary(state_path, caffe_pb2.SolverState)
    assert state.iter == s.iter and state.current_step == s.current_step
    assert len(state.history) == len(s.history)
    n = len(s.net.caffe_params)
    theirs = [formats.blob_to_array(blob) for blob in state.history]
    for i, h in enumerate(s.history):
        e = s.net.caffe_params[i % n]
        if name in NOISY and f"{e.layer.name}/{e.index}" in NOISE_KEYS:
            continue
        slot = range(i - i % n, i - i % n + n)  # history blobs come in slots of one per parameter
        scale = max(float(np.abs(theirs[j]).max()) for j in slot if s.net.caffe_params[j % n].layer is e.layer)
        assert_close_f32(h.cpu().numpy(), theirs[i], rtol=RTOL, scale=scale, what=f"{name} history {i} ({e.name})")


@pytest.mark.parametrize("name", CASES)
def test_restore_caffe_solverstate(name, tmp_path):
    """Caffe's own half-way snapshot + the remaining batches reproduce Caffe's final weights."""
    ref = np.load(os.path.join(GOLDEN, f"{name}.npz"))
    s = _solver(name, tmp_path)
    state_path, k_snap = _snapshot_iter(name)
    s.restore(state_path)  # learned_net is found beside the state file
    assert s.iter == k_snap
    for k in range(k_snap, INDEX[name]["steps"]):
        _feed(s, ref, k)
        s.step(1)
    _check_params(s, ref, name)


@pytest.mark.parametrize("name", ["solver_sgd_step_momentum", "solver_adam_exp", "solver_nesterov_multistep"])
def test_our_resume_equals_uninterrupted(name, tmp_path):
    ref = np.load(os.path.join(GOLDEN, f"{name}.npz"))
    steps = INDEX[name]["steps"]
    init = os.path.join(GOLDEN, f"{name}_init.caffemodel")
    a = _solver(name, tmp_path)
    a.net.copy_from(init)
    for k in range(steps):
        _feed(a, ref, k)
        a.step(1)
    b = _solver(name, tmp_path)
    b.net.copy_from(init)
    for k in range(4):
        _feed(b, ref, k)
        b.step(1)
    _, state = b.snapshot()
    assert os.path.basename(state) == f"{name}_iter_4.solverstate"
    c = _solver(name, tmp_path)
    c.restore(state)
    assert c.iter == 4 and c.current_step == b.current_step
    for k in range(4, steps):
        _feed(c, ref, k)
        c.step(1)
    # exact: the same steps on the same kernels in one process, resumed from a snapshot that keeps
    # every float32 weight and history value bit for bit
    for ea, ec in zip(a.net.caffe_params, c.net.caffe_params):
        assert torch.equal(ea.tensor, ec.tensor), ea.name
    for ha, hc in zip(a.history, c.history):
        assert torch.equal(ha, hc)


def test_restore_wrong_solver_type_is_clear(tmp_path):
    s = _solver("solver_sgd_step_momentum", tmp_path)
    with pytest.raises(brewnet.BrewnetError, match="history blobs"):
        s.restore(os.path.join(GOLDEN, "solver_adam_exp_iter_5.solverstate"))
