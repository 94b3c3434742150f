"""Issue 3, part 6, in small: the DIGITS #629 BatchNorm configurations learn, and their TEST-phase
net (loaded from the saved caffemodel) agrees with the same weights on batch statistics.

benchmarks/bn_convergence.py is the full proof (1500 iterations, the whole t10k set, baselines);
this runs its code on a 300-images-per-class subset for a few hundred iterations."""
import importlib.util
import os
import sys
from pathlib import Path

import pytest

FASHION = "/usr/share/datasets/fashion-mnist"
ROOT = Path(__file__).resolve().parents[1]
ITERATIONS = 150
TEST_IMAGES = 500  # the first 500 of the subset's 3000 t10k images, in batches of 100
# Training runs on kernels PyTorch picks by CPU (and ATEN_CPU_CAPABILITY), so the weights after
# 150 iterations, and their accuracies, differ from machine to machine. Over six seeds and two
# kernel sets one net's score on stored statistics and on batch statistics differed by up to 10
# of the 500 images (9 several times): 15 images (3 points) is the bound. Statistics misread or
# averaged from a zero start cost far more (bn_after_data once scored 0.22 on global statistics).
GAP_IMAGES = 15


def images(accuracy: float) -> int:
    """An accuracy over the TEST_IMAGES as a number of images: the accuracies are float32 sums of
    per-batch means, so 0.852 - 0.832 came out as 0.0200000167, "more" than 0.02."""
    return round(accuracy * TEST_IMAGES)

pytestmark = pytest.mark.slow
needs_fashion = pytest.mark.skipif(not os.path.isdir(FASHION), reason=(
    "needs Debian's dataset-fashion-mnist at " + FASHION + " (.ci/run installs it)"))


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("bn_convergence", ROOT / "benchmarks" / "bn_convergence.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


bench = _load_benchmark()


@pytest.fixture(scope="module")
def small_dbs(tmp_path_factory):
    return bench.prepare_data(FASHION, str(tmp_path_factory.mktemp("fashion300")), max_per_class=300)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread is the fastest and deterministic
    yield
    torch.set_num_threads(threads)


def test_every_seed_configuration_is_benchmarked():
    seeds = {p.stem for p in (ROOT / "benchmarks" / "seed_configs").glob("*.prototxt")}
    configs = bench.configurations()
    assert seeds <= {Path(c.prototxt).stem for c in configs.values()}
    assert set(bench.DEFAULT_CONFIGS) == set(configs)


# The four seed prototxts and one 8x learning rate (LeNet-BN, the cheapest); the benchmark also
# runs the seed net (a) at 8x.
CONFIGS = ("bn_after_relu_train_test", "nvcaffe_inplace_4params_cudnn", "bn_after_data",
           "nvcaffe_2params_phase_default", "lenet_bn_lr_x8")


@needs_fashion
@pytest.mark.parametrize("name", CONFIGS)
def test_seed_configuration_learns_and_test_net_matches_batch_statistics(name, small_dbs, tmp_path):
    r = bench.run_config(bench.configurations()[name], small_dbs, str(tmp_path), ITERATIONS, TEST_IMAGES,
                         seed=bench.SEED, baseline=False)
    msg = (f"{name}: TEST net {r.test_net:.4f} ({r.test_net_mode} statistics), global {r.global_stats:.4f}, "
           f"batch {r.batch_stats:.4f}, solver's TEST net {r.solver_test_net:.4f} after {ITERATIONS} iterations")
    print(msg)
    assert r.test_net >= 0.70, msg  # chance is 0.10
    assert r.batch_stats >= 0.70, msg
    assert abs(images(r.test_net) - images(r.batch_stats)) <= GAP_IMAGES, msg  # gap_points, in images
    # bn_after_data's TEST net uses batch statistics: its stored ones are checked here
    assert abs(images(r.global_stats) - images(r.batch_stats)) <= GAP_IMAGES, msg
    assert r.reload_changed == [], f"{name}: loading the caffemodel changed {r.reload_changed}"
    # the same weights (its tensors are shared with TRAIN) scored again: at most a near tie flips
    assert abs(images(r.solver_test_net) - images(r.test_net)) <= 2, msg
    if name == "bn_after_data":  # use_global_stats: false in both phases: an explicit value wins
        assert r.test_net_mode == "batch", msg
        assert r.lint.get("BN004:warning") == 4, r.lint
    else:
        assert r.test_net_mode == "global", msg


def test_strip_batchnorm_rewires_and_keeps_biases():
    from brewnet import formats
    from brewnet.net import TEST, TRAIN, Net

    for cfg in bench.configurations().values():
        plain, notes = bench.strip_batchnorm(formats.read_net(cfg.prototxt))
        assert not [lp for lp in plain.layer if lp.type in ("BatchNorm", "Scale")], cfg.name
        for lp in plain.layer:  # check the wiring without reading any data
            if lp.type == "Data":
                lp.type = "DummyData"
                lp.ClearField("data_param")
                lp.ClearField("transform_param")
                lp.dummy_data_param.shape.add(dim=[2, 1, 28, 28])
                lp.dummy_data_param.shape.add(dim=[2])
        for phase in (TRAIN, TEST):
            Net(plain, phase)
        if cfg.name == "bn_after_data":
            assert next(lp for lp in plain.layer if lp.name == "conv1").bottom == ["data"]
        if cfg.name == "lenet_bn_lr_x8":  # conv1, conv2, ip1 get back the bias their Scale carried
            assert [n.split(":")[0] for n in notes] == ["conv1", "conv2", "ip1"]


def _stationary_bn_net(nvcaffe: bool, channels: int, batch: int = 64):
    """DummyData (Gaussian, mean 3, std 2, the same distribution every batch) -> BatchNorm."""
    from brewnet.proto import caffe_pb2
    from google.protobuf import text_format

    bn_param = ('batch_norm_param { scale_filler { type: "constant" value: 1 } '
                'bias_filler { type: "constant" value: 0 } } '
                + "param { lr_mult: 1 } param { lr_mult: 1 } param { lr_mult: 0 } param { lr_mult: 0 }"
                if nvcaffe else "")
    text = f"""
    name: "stationary"
    layer {{ name: "data" type: "DummyData" top: "data"
      dummy_data_param {{ data_filler {{ type: "gaussian" mean: 3 std: 2 }}
                          shape {{ dim: {batch} dim: {channels} dim: 6 dim: 6 }} }} }}
    layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" {bn_param} }}
    """
    return text_format.Parse(text, caffe_pb2.NetParameter())


@pytest.mark.parametrize("nvcaffe", [False, True])
def test_nvcaffe_statistics_are_unbiased_early(nvcaffe):
    """On a stationary input the stored statistics match the input's after a few hundred TRAIN
    passes, whatever moving_average_fraction (default 0.999): BVLC's factor s divides the zero
    start away, and brewnet's NVCaffe dialect keeps the same unbiased average (before that fix its
    averages started at 0: 18% of the true values after 200 passes, which cost the seed's NVCaffe
    nets a point of TEST accuracy after 1500 iterations)."""
    import torch

    from brewnet.net import TRAIN, Net

    net = Net(_stationary_bn_net(nvcaffe, channels=3), TRAIN)
    bn = net.layer_dict["bn"]
    assert bn.nvcaffe == nvcaffe
    with torch.no_grad():
        for _ in range(200):
            net.forward()
    mean, var = bn._global_stats()
    assert torch.allclose(mean, torch.full_like(mean, 3.0), rtol=0.05), mean
    assert torch.allclose(var, torch.full_like(var, 4.0), rtol=0.05), var


@pytest.mark.parametrize("channels", [1, 3])  # one channel: every blob has one value
def test_nvcaffe_batchnorm_caffemodel_round_trip(channels, tmp_path):
    """A snapshot of an NVCaffe-dialect BatchNorm (fillers and 4 param blocks, like bn_after_data's
    bn0 on grayscale data) loads back into a TEST net exactly.  With one channel the 0.16 layout
    [mean, var, correction=1, scale, bias] was once read as 0.15 [scale, bias, mean, var, counter]:
    bn0 came back with mean 1 and γ = the mean, and bn_after_data scored 0.22 on global statistics."""
    import numpy as np
    import torch

    from brewnet.net import TEST, TRAIN, Net

    param = _stationary_bn_net(True, channels, batch=8)
    net = Net(param, TRAIN)
    with torch.no_grad():
        for _ in range(3):
            net.forward()
        net.layer_dict["bn"].weight.mul_(0.5)
        net.layer_dict["bn"].bias.add_(0.25)
    path = str(tmp_path / "bn.caffemodel")
    net.save(path)
    test = Net(param, TEST, weights=path)
    for a, b in zip(net.layer_dict["bn"].caffe_blob_arrays(), test.layer_dict["bn"].caffe_blob_arrays()):
        np.testing.assert_allclose(np.ravel(b), np.ravel(a), rtol=1e-6)
