"""The standard networks: DIGITS' stage structure, BatchNorm conventions, no lint findings, and
each one built by brewnet for TRAIN, TEST and deploy at its natural input size with one forward
pass on random input (ResNet-18 also at 32x32)."""
from __future__ import annotations

import numpy as np
import pytest

from brewnet import formats
from brewnet.net import Net
from brewnet.proto import caffe_pb2
from brewnet.server.digits.model_files import analyze_network, clean_network, split_network
from brewnet.server.digits.networks import STANDARD_NETWORKS, network_prototxt

NUM_CLASSES = 5
BN_NETS = ("lenet_bn", "alexnet_bn", "googlenet_bn", "resnet18", "resnet50")
# name -> (channels, input side, batch); AlexNet reads 227 crops, GoogLeNet and ResNets 224
SIZES = {"lenet": (1, 28, 2), "lenet_bn": (1, 28, 2), "alexnet": (3, 227, 1), "alexnet_bn": (3, 227, 2),
         "googlenet": (3, 224, 1), "googlenet_bn": (3, 224, 2), "resnet18": (3, 224, 2), "resnet50": (3, 224, 2)}
HEAVY = ("alexnet", "alexnet_bn", "googlenet", "googlenet_bn", "resnet50")


def stages(lp) -> tuple[list[str], list[str]]:
    return [s for r in lp.include for s in r.stage], [s for r in lp.exclude for s in r.stage]


@pytest.mark.parametrize("name", list(STANDARD_NETWORKS))
def test_digits_stage_structure(name):
    net = formats.net_from_text(network_prototxt(name))
    data = [lp for lp in net.layer if lp.type == "Data"]
    assert [stages(lp)[0] for lp in data] == [["train"], ["val"]]
    for lp in data:   # the job fills these in
        assert not lp.data_param.HasField("source") and not lp.data_param.HasField("backend")
        assert not lp.transform_param.HasField("mean_file")
    by_type = {}
    for lp in net.layer:
        by_type.setdefault(lp.type, []).append(lp)
    assert [stages(lp) for lp in by_type["Accuracy"]] == [(["val"], [])]
    assert all(stages(lp)[1] == ["deploy"] for lp in by_type["SoftmaxWithLoss"])
    assert [(lp.name, stages(lp)) for lp in by_type["Softmax"]] == [("prob", (["deploy"], []))]
    assert list(by_type["Softmax"][0].top) == ["prob"]
    # DIGITS' rule: the classifier has no num_output, the class count fills it
    last_ip = by_type["InnerProduct"][-1]
    assert not last_ip.inner_product_param.HasField("num_output")
    if name.startswith("lenet"):
        assert all(lp.transform_param.scale == pytest.approx(0.00390625) for lp in data)
    if name.startswith(("alexnet", "googlenet", "resnet")):
        crop = 227 if name.startswith("alexnet") else 224
        assert [lp.transform_param.crop_size for lp in data] == [crop, crop]
        assert [lp.transform_param.mirror for lp in data] == [True, False]


@pytest.mark.parametrize("name", BN_NETS)
def test_batchnorm_is_bvlc_with_scale(name):
    net = formats.net_from_text(network_prototxt(name))
    layers = list(net.layer)
    bns = [i for i, lp in enumerate(layers) if lp.type == "BatchNorm"]
    assert bns
    for i in bns:
        bn, nxt = layers[i], layers[i + 1]
        assert not bn.batch_norm_param.HasField("use_global_stats")   # left to the phase
        assert nxt.type == "Scale" and nxt.scale_param.bias_term and list(nxt.bottom) == list(bn.top)
        producer = next(lp for lp in reversed(layers[:i]) if bn.bottom[0] in lp.top)
        if producer.type == "Convolution":
            assert not producer.convolution_param.bias_term   # the Scale's bias replaces it


@pytest.mark.parametrize("name", list(STANDARD_NETWORKS))
def test_standard_networks_have_no_lint_findings(name):
    _, findings = analyze_network(network_prototxt(name))
    assert findings == []


def as_inputs(net: caffe_pb2.NetParameter, channels: int, side: int, batch: int) -> caffe_pb2.NetParameter:
    """The train_val with its Data layers replaced by Inputs of the crop's shape (no LMDB)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for lp in out.layer:
        if lp.type == "Data":
            rules = list(lp.include)
            tops = list(lp.top)
            lp.Clear()
            lp.name, lp.type = f"input_{rules[0].phase}", "Input"
            lp.top.extend(tops)
            lp.include.extend(rules)
            lp.input_param.shape.add().dim.extend([batch, channels, side, side])
            lp.input_param.shape.add().dim.extend([batch])
    return out


def train_val_and_deploy(name: str, channels: int, side: int, batch: int):
    split = split_network(clean_network(formats.net_from_text(network_prototxt(name)), NUM_CLASSES))
    tv = caffe_pb2.NetParameter(name=name)
    for lp, phase in ((split.train_data, caffe_pb2.TRAIN), (split.val_data, caffe_pb2.TEST)):
        layer = tv.layer.add()
        layer.CopyFrom(lp)
        layer.include.add(phase=phase)
    tv.layer.extend(split.train_val)
    deploy = caffe_pb2.NetParameter(name=name)
    inp = deploy.layer.add(name="data", type="Input")
    inp.top.append("data")
    inp.input_param.shape.add().dim.extend([1, channels, side, side])
    deploy.layer.extend(split.deploy)
    return as_inputs(tv, channels, side, batch), deploy


def run_forward(name: str, channels: int, side: int, batch: int, tmp_path) -> None:
    rng = np.random.default_rng(0)
    tv, deploy = train_val_and_deploy(name, channels, side, batch)
    # TEST and deploy read the weights and BatchNorm statistics of the TRAIN net after its forward
    # (an untrained net's zero statistics blow a deep net's activations up to inf)
    weights = str(tmp_path / "after_train.caffemodel")
    for phase in (caffe_pb2.TRAIN, caffe_pb2.TEST):
        net = Net(tv, phase=phase, weights=None if phase == caffe_pb2.TRAIN else weights)
        top = next(lp.top[0] for lp in tv.layer if lp.type == "Input")   # LeNet's is "scaled"
        net.blobs[top].data[...] = rng.uniform(-1, 1, (batch, channels, side, side))
        net.blobs["label"].data[...] = rng.integers(0, NUM_CLASSES, batch)
        out = net.forward()
        assert np.isfinite(float(out["loss"]))
        if phase == caffe_pb2.TEST:
            assert 0 <= float(out["accuracy"]) <= 1
        else:
            assert "accuracy" not in out
            net.save(weights)
    net = Net(deploy, phase=caffe_pb2.TEST, weights=weights)
    net.blobs["data"].data[...] = rng.uniform(0, 255, (1, channels, side, side))
    prob = net.forward()["prob"]
    assert prob.shape == (1, NUM_CLASSES)
    assert float(prob.sum()) == pytest.approx(1.0, abs=1e-4)
    assert "loss" not in net.blobs and "label" not in net.blobs


@pytest.mark.parametrize("name", [n for n in STANDARD_NETWORKS if n not in HEAVY])
def test_builds_and_runs_forward(name, tmp_path):
    run_forward(name, *SIZES[name], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", HEAVY)
def test_builds_and_runs_forward_large(name, tmp_path):
    run_forward(name, *SIZES[name], tmp_path)


def test_resnet18_runs_on_small_images(tmp_path):
    # global average pooling: 32x32 images (CIFAR-sized datasets) work too
    run_forward("resnet18", 3, 32, 2, tmp_path)


def test_unknown_network_is_a_key_error():
    with pytest.raises(KeyError):
        network_prototxt("vgg16")
