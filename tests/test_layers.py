"""The registry-driven harness over every layer type (see tests/layer_harness.py)."""
from __future__ import annotations

import glob
import importlib.util
import os

import numpy as np
import pytest
import torch
from google.protobuf import text_format

import brewnet
from brewnet.layers import LAYER_REGISTRY
from brewnet.proto import caffe_pb2

from layer_harness import Case
from numeric import assert_close_f32

HERE = os.path.dirname(__file__)


def _load_cases() -> dict[str, list[Case]]:
    cases: dict[str, list[Case]] = {}
    for path in sorted(glob.glob(os.path.join(HERE, "cases_*.py"))):
        spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        for type_name, type_cases in mod.CASES.items():
            cases.setdefault(type_name, []).extend(type_cases)
    return cases


CASES = _load_cases()
PARAMS = [pytest.param(t, c, id=f"{t}-{c.id or i}") for t, cs in sorted(CASES.items()) for i, c in enumerate(cs)]


def test_every_registered_type_has_a_case():
    missing = sorted(set(LAYER_REGISTRY) - set(CASES))
    assert not missing, f"layer types without a harness case: {missing}"


def test_no_case_for_an_unregistered_type():
    assert not sorted(set(CASES) - set(LAYER_REGISTRY))


def _build(case: Case, seed: int = 0) -> brewnet.Net:
    brewnet.set_random_seed(seed)
    param = caffe_pb2.NetParameter()
    text_format.Merge(case.prototxt(), param)
    phase = brewnet.TRAIN if case.phase == "TRAIN" else brewnet.TEST
    net = brewnet.Net(param, phase)
    # non-constant fillers so that gradients w.r.t. every input are informative
    with torch.no_grad():
        g = torch.Generator().manual_seed(seed + 1)
        for layer in net.layers:
            for i, b in enumerate(layer.blob_tensors):
                if layer.blob_is_learnable(i):
                    b.copy_(torch.randn(b.shape, generator=g) * 0.5 + (1.0 if b.dim() == 1 else 0.0))
    return net.to(dtype=torch.float64)


def _inputs(case: Case, rng) -> dict[str, np.ndarray]:
    out = {}
    for name, shape in case.bottoms.items():
        gen = case.inputs.get(name)
        out[name] = gen(rng, shape) if gen else rng.standard_normal(size=shape)
    return out


def _objective_weights(net, case, rng):
    return {t: torch.as_tensor(rng.standard_normal(size=net.blobs[t].shape)) for t in case.tops
            if t in net.blobs}


def _objective(net, case, inputs, weights) -> torch.Tensor:
    for name, value in inputs.items():
        net.blobs[name].data[...] = value
    loss, outs = net.forward_loss(outputs=list(weights))
    total = sum((outs[t] * weights[t]).sum() for t in weights)
    return total


@pytest.mark.parametrize("type_name,case", PARAMS)
def test_forward_is_finite(type_name, case):
    net = _build(case)
    inputs = _inputs(case, np.random.default_rng(0))
    net.forward(**inputs)
    for t in case.tops:
        if t in net.blobs:
            assert np.all(np.isfinite(net.blobs[t].data)), f"{type_name}: top {t} not finite"


@pytest.mark.parametrize("type_name,case", [p for p in PARAMS if p.values[1].grad and p.values[1].deterministic])
def test_gradients_match_finite_differences(type_name, case):
    rng = np.random.default_rng(1)
    net = _build(case)
    inputs = _inputs(case, rng)
    weights = _objective_weights(net, case, rng)
    leaves = {n: torch.tensor(v, dtype=torch.float64, requires_grad=n not in case.no_grad)
              for n, v in inputs.items()}
    last = len(net.layers) - 1

    def objective() -> torch.Tensor:
        env, _, _ = net._run(0, last, keep_versions=False, feed=leaves)
        return sum((env[t] * w).sum() for t, w in weights.items())

    params = [(layer.name, i, b) for layer in net.layers for i, b in enumerate(layer.blob_tensors)
              if layer.blob_is_learnable(i) and b.requires_grad]
    targets = [(f"bottom '{n}'", leaves[n]) for n in case.bottoms if n not in case.no_grad] + \
              [(f"param {ln}[{i}]", b) for ln, i, b in params]
    analytic = torch.autograd.grad(objective(), [t for _, t in targets], allow_unused=True)
    for (what, tensor), g in zip(targets, analytic):
        if what.startswith("param"):
            assert g is not None, f"{type_name}: {what} receives no gradient"
        numeric = np.zeros(tuple(tensor.shape))
        flat = tensor.detach().view(-1)  # perturbed in place: shares memory with the tensor
        with torch.no_grad():
            for k in range(flat.numel()):
                orig = float(flat[k])
                if case.kink is not None and abs(orig - case.kink) < case.kink_range:
                    numeric.reshape(-1)[k] = np.nan
                    continue
                flat[k] = orig + case.eps
                plus = float(objective())
                flat[k] = orig - case.eps
                minus = float(objective())
                flat[k] = orig
                numeric.reshape(-1)[k] = (plus - minus) / (2 * case.eps)
        _compare(type_name, what, g, numeric, case.tol)


def _compare(type_name, what, analytic, numeric, tol):
    a = np.zeros_like(numeric) if analytic is None else analytic.detach().numpy()
    mask = ~np.isnan(numeric)
    assert mask.any() or numeric.size == 0, f"{type_name}: every element of {what} was at a kink"
    err = np.abs(a[mask] - numeric[mask])
    scale = np.maximum(1.0, np.abs(numeric[mask]))
    worst = float((err / scale).max()) if err.size else 0.0
    assert worst <= tol, f"{type_name}: gradient of {what} differs from finite differences by {worst:.2e}"


@pytest.mark.parametrize("type_name,case", PARAMS)
def test_prototxt_and_caffemodel_round_trip(type_name, case, tmp_path):
    net = _build(case, seed=3)
    # text round trip of the layer definition
    text = text_format.MessageToString(net.net_param)
    again = caffe_pb2.NetParameter()
    text_format.Merge(text, again)
    assert again == net.net_param
    # caffemodel round trip: same blobs, same outputs
    inputs = _inputs(case, np.random.default_rng(2))
    path = tmp_path / "m.caffemodel"
    net32 = _build(case, seed=3).to(dtype=torch.float32)
    net32.save(str(path))
    other = _build(case, seed=99).to(dtype=torch.float32)
    other.copy_from(str(path))
    for a, b in zip(net32.layers, other.layers):
        for x, y in zip(a.blob_tensors, b.blob_tensors):
            np.testing.assert_array_equal(x.detach().numpy(), y.detach().numpy())
    if case.deterministic:
        torch.manual_seed(0)
        out1 = {k: v.copy() for k, v in net32.forward(**inputs).items()}
        torch.manual_seed(0)
        out2 = other.forward(**inputs)
        for k in out1:  # the same layers on the same weights: any difference is a loading bug
            assert_close_f32(out2[k], out1[k], rtol=1e-6, what=f"{type_name} top {k}")
