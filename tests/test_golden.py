"""Every layer case recorded from real BVLC Caffe matches: data, diffs, parameter diffs, updates.

Tolerance (tests/numeric.py): |ours - Caffe's| <= RTOL * (|Caffe's| + max |Caffe's blob|),
elementwise. Caffe computed these in float32 on another CPU with its own BLAS, we on kernels
PyTorch picks by CPU: the two agree to float32 round-off of the sums behind each value, which
scales with the blob's magnitude. The largest seen is 1.6e-6 (a Scale's parameter gradient, a sum
over the whole batch), so RTOL 2e-5; a BatchNorm eps off by 10x moves outputs by ~4e-5.
A parameter gradient's floor is the largest parameter gradient of its layer: a convolution bias
in front of a BatchNorm has a true gradient of zero and round-off noise of ~1e-6 for one.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import brewnet
from numeric import assert_close_f32

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
INDEX = json.load(open(os.path.join(GOLDEN, "index.json")))
LAYER_CASES = sorted(k for k, v in INDEX.items() if "phase" in v)


RTOL = 2e-5


def assert_close(actual, expected, what, scale=None):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != Caffe's {expected.shape}"
    assert_close_f32(actual, expected, rtol=RTOL, what=what, scale=scale)


def layer_scale(ref, prefix: str, layer: str) -> float:
    """The largest magnitude among the reference's ``prefix/layer/i`` blobs (one layer's)."""
    return max(float(np.abs(ref[k]).max(initial=0.0)) for k in ref.files if k.startswith(f"{prefix}/{layer}/"))


def run_case(name, device=None):
    meta = INDEX[name]
    ref = np.load(os.path.join(GOLDEN, f"{name}.npz"))
    phase = brewnet.TRAIN if meta["phase"] == "TRAIN" else brewnet.TEST
    net = brewnet.Net(os.path.join(GOLDEN, f"{name}.prototxt"), os.path.join(GOLDEN, f"{name}.caffemodel"), phase,
                      device=device)
    inputs = {k[3:]: ref[k] for k in ref.files if k.startswith("in/")}
    net.forward(**inputs)
    backward = meta["backward"] != "none"
    if backward:
        diffs = {k[8:]: ref[k] for k in ref.files if k.startswith("topdiff/")}
        for blob, d in diffs.items():
            net.blobs[blob].diff[...] = d
        net.backward()
    return net, ref, backward


@pytest.mark.parametrize("name", LAYER_CASES)
def test_forward_matches_caffe(name, device=None):
    net, ref, _ = run_case(name, device)
    for key in ref.files:
        if key.startswith("data/"):
            assert_close(net.blobs[key[5:]].data, ref[key], key)


@pytest.mark.parametrize("name", [n for n in LAYER_CASES if INDEX[n]["backward"] != "none"])
def test_backward_matches_caffe(name, device=None):
    net, ref, _ = run_case(name, device)
    for key in ref.files:
        if key.startswith("diff/"):
            assert_close(net.blobs[key[5:]].diff, ref[key], key)
        elif key.startswith("pdiff/"):
            _, layer, i = key.split("/")
            assert_close(net.params[layer][int(i)].diff, ref[key], key, scale=layer_scale(ref, "pdiff", layer))


@pytest.mark.parametrize("name", LAYER_CASES)
def test_parameters_after_pass_match_caffe(name, device=None):
    net, ref, _ = run_case(name, device)
    keys = [k for k in ref.files if k.startswith("param_after/")]
    for key in keys:
        _, layer, i = key.split("/")
        assert_close(net.params[layer][int(i)].data, ref[key], key)


@pytest.mark.parametrize("name", LAYER_CASES)
def test_saved_caffemodel_is_byte_identical_to_caffes(name):
    """Loading Caffe's caffemodel and saving it again writes exactly the bytes Caffe wrote."""
    meta = INDEX[name]
    phase = brewnet.TRAIN if meta["phase"] == "TRAIN" else brewnet.TEST
    path = os.path.join(GOLDEN, f"{name}.caffemodel")
    net = brewnet.Net(os.path.join(GOLDEN, f"{name}.prototxt"), path, phase)
    assert net.to_proto().SerializeToString() == open(path, "rb").read()
