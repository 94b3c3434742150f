"""The CUDA path, where a GPU exists (skipped elsewhere; CI machines have none).

The same checks as on the CPU: every golden layer case and every golden solver trajectory of
real BVLC Caffe, on the GPU (TF32 is off by default, so float32 tolerances hold), the pycaffe
parameter arrays (host copies on CUDA), and `brewnet train -gpu 0`.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import brewnet
from brewnet.commands import main as cli
import test_golden
import test_solver_golden

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (a GPU machine)")


@pytest.mark.parametrize("name", test_golden.LAYER_CASES)
def test_golden_layer_cases_on_cuda(name):
    test_golden.test_forward_matches_caffe(name, device="cuda")
    test_golden.test_parameters_after_pass_match_caffe(name, device="cuda")
    if test_golden.INDEX[name]["backward"] != "none":
        test_golden.test_backward_matches_caffe(name, device="cuda")


@pytest.mark.parametrize("name", test_solver_golden.CASES)
def test_golden_solver_trajectories_on_cuda(name, tmp_path):
    test_solver_golden.test_trajectory_matches_caffe(name, tmp_path, device="cuda")


def test_parameter_arrays_sync_with_the_gpu():
    from test_net import HALF_NET
    from brewnet.formats import net_from_text

    net = brewnet.Net(net_from_text(HALF_NET), brewnet.TRAIN, device="cuda")
    assert net.params["ip"][0].tensor.is_cuda
    w = net.params["ip"][0].data
    w[...] = 0.5
    net.params["ip"][1].data[...] = 0.25
    net.forward(data=np.ones((4, 3)), label=np.zeros((4, 2)))
    np.testing.assert_allclose(net.blobs["ip"].data, 1.75)
    with torch.no_grad():
        net.params["ip"][0].tensor.add_(1.0)
    assert net.params["ip"][0].data is w
    np.testing.assert_allclose(w, 1.5)


def test_cli_train_on_gpu_0(tmp_path, monkeypatch):
    from test_cli_train import write_solver

    write_solver(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "-solver", "solver.prototxt", "-gpu", "0"]) == 0
    assert os.path.exists("out/run_iter_6.caffemodel")
    net = brewnet.Net("net.prototxt", brewnet.TEST, weights="out/run_iter_6.caffemodel")
    assert np.isfinite(net.params["ip2"][0].data).all()
