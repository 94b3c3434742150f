"""Precise BatchNorm in the solver (`brewnet train -bn_recalibrate N`): before a test or snapshot
the statistics become the exact average over N training batches under the current weights."""
import numpy as np
import pytest
import torch

import brewnet
from brewnet.formats import net_from_text
from brewnet.proto import caffe_pb2
from brewnet.solver import SGDSolver
from numeric import assert_close_f32

NET = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 16 dim: 3 dim: 4 dim: 4 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 16 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 5 kernel_size: 3 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" %s }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


@pytest.mark.parametrize("bn_param", ["", "batch_norm_param { scale_bias: true }"], ids=["bvlc", "nvcaffe"])
def test_recalibration_gives_the_batch_statistics(tmp_path, bn_param):
    param = caffe_pb2.SolverParameter(base_lr=0.5, momentum=0.9, lr_policy="fixed", max_iter=100,
                                      snapshot_prefix=str(tmp_path / "s"), random_seed=3, display=0)
    param.net_param.CopyFrom(net_from_text(NET % bn_param))
    solver = SGDSolver(param)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3, 4, 4)).astype(np.float32)
    solver.net.blobs["data"].data[...] = x
    solver.net.blobs["label"].data[...] = rng.integers(0, 3, 16)
    solver.step(20)
    bn = solver.net.layer_dict["bn"]
    conv = solver.net.layer_dict["conv"]
    with torch.no_grad():
        y = conv(torch.from_numpy(x))
    want_mean = y.mean(dim=(0, 2, 3)).numpy()
    want_var = y.var(dim=(0, 2, 3), unbiased=True).numpy()
    mean, var = (t.numpy() for t in bn._global_stats())
    assert not np.allclose(mean, want_mean, atol=1e-3)  # the moving average lags lr 0.5
    solver.bn_recalibrate = 4
    solver.snapshot()
    mean, var = (t.numpy() for t in bn._global_stats())
    # float32: the average of 4 passes over the batch against torch's mean and var of it
    assert_close_f32(mean, want_mean, rtol=1e-5, what="mean")
    assert_close_f32(var, want_var, rtol=1e-5, what="variance")
    assert bn.maf == pytest.approx(0.999)  # restored after the pass
    saved = brewnet.Net(param.net_param, brewnet.TEST, weights=str(tmp_path / "s_iter_20.caffemodel"))
    assert_close_f32(saved.layer_dict["bn"]._global_stats()[0].numpy(), want_mean, rtol=1e-5, what="saved mean")


def test_recalibration_is_off_by_default_caffes_statistics(tmp_path):
    param = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed", max_iter=10, display=0,
                                      snapshot_prefix=str(tmp_path / "s"))
    param.net_param.CopyFrom(net_from_text(NET % ""))
    solver = SGDSolver(param)
    solver.step(3)
    before = [b.clone() for b in solver.net.layer_dict["bn"].blob_tensors]
    solver.snapshot()
    for a, b in zip(before, solver.net.layer_dict["bn"].blob_tensors):
        torch.testing.assert_close(a, b, rtol=0, atol=0)  # exact: nothing touched them
