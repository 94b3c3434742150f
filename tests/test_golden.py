"""Every layer case recorded from real BVLC Caffe matches: data, diffs, parameter diffs, updates.

Tolerance: max abs error <= 1e-4 * max(1, |reference|), elementwise.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

import brewnet

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
INDEX = json.load(open(os.path.join(GOLDEN, "index.json")))
LAYER_CASES = sorted(k for k, v in INDEX.items() if "phase" in v)


def assert_close(actual, expected, what):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != Caffe's {expected.shape}"
    err = np.abs(actual - expected)
    bound = 1e-4 * np.maximum(1.0, np.abs(expected))
    worst = np.argmax(err - bound) if err.size else 0
    assert np.all(err <= bound), (f"{what}: max abs error {err.max():.3e} "
                                  f"(at {np.unravel_index(worst, err.shape)}: {actual.flat[worst]} vs {expected.flat[worst]})")


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
            assert_close(net.params[layer][int(i)].diff, ref[key], key)


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
