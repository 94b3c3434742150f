"""Hand-computed checks of Caffe's rules for the common layers (brewnet/layers/common.py)."""
from __future__ import annotations

import numpy as np
import pytest

from brewnet.errors import NetError
from layer_harness import single_layer_net


def make_net(layer: str, bottoms: dict, tops=("y",), force_backward=True):
    """Input layers for ``bottoms`` (name -> shape) and the layer 'l' under test."""
    return single_layer_net(layer, bottoms, tops, phase="TEST", force_backward=force_backward)


def run(layer: str, inputs: dict, tops=("y",)):
    net = make_net(layer, {k: np.shape(v) for k, v in inputs.items()}, tops)
    net.forward(**inputs)
    return [net.blobs[t].data.copy() for t in tops]


def shapes(layer: str, bottoms: dict, tops=("y",)):
    net = make_net(layer, bottoms, tops)
    return [net.blobs[t].shape for t in tops]


# ----- Reshape ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec,expected", [
    ("shape { dim: 0 dim: -1 }", (2, 12)),
    ("shape { dim: -1 }", (24,)),
    ("shape { dim: 0 dim: 0 dim: 2 dim: -1 }", (2, 3, 2, 2)),
    ("shape { dim: 3 dim: 1 } axis: 1 num_axes: 1", (2, 3, 1, 4)),
    ("shape { dim: 1 } axis: -1 num_axes: 0", (2, 3, 4, 1)),
    ("shape { dim: 1 } axis: 0 num_axes: 0", (1, 2, 3, 4)),
    ("shape { dim: -1 dim: 0 } axis: 1", (2, 3, 4)),
])
def test_reshape_copy_and_infer(spec, expected):
    x = np.arange(24.0).reshape(2, 3, 4)
    (y,) = run(f'type: "Reshape" reshape_param {{ {spec} }}', {"x": x})
    assert y.shape == expected
    np.testing.assert_array_equal(y.reshape(-1), x.reshape(-1))


@pytest.mark.parametrize("spec,message", [
    ("shape { dim: -1 dim: -1 }", "multiple -1"),
    ("shape { dim: 5 dim: -1 }", "divisible"),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 }", "no axis 3 to copy"),
    ("shape { dim: 5 dim: 5 }", "count"),
    ("shape { dim: 2 } axis: 1 num_axes: 3", "extend past"),
])
def test_reshape_errors(spec, message):
    with pytest.raises(NetError, match=rf"layer 'l' \(Reshape\).*{message}"):
        make_net(f'type: "Reshape" reshape_param {{ {spec} }}', {"x": (2, 3, 4)})


# ----- Concat / Slice ---------------------------------------------------------------------------
def test_concat_shapes_and_values():
    a, b = np.ones((2, 3, 4)), np.zeros((2, 1, 4))
    (y,) = run('type: "Concat"', {"a": a, "b": b})
    assert y.shape == (2, 4, 4)
    np.testing.assert_array_equal(y, np.concatenate([a, b], 1))
    assert shapes('type: "Concat" concat_param { concat_dim: 0 }', {"a": (2, 3), "b": (5, 3)}) == [(7, 3)]
    with pytest.raises(NetError, match=r"layer 'l' \(Concat\).*\(2, 3, 4\).*\(3, 3, 4\)"):
        make_net('type: "Concat"', {"a": (2, 3, 4), "b": (3, 3, 4)})
    with pytest.raises(NetError, match="not both"):
        make_net('type: "Concat" concat_param { axis: 1 concat_dim: 1 }', {"a": (2, 3), "b": (2, 3)})


def test_slice_points_and_equal_split():
    x = np.arange(36.0).reshape(2, 6, 3)
    ys = run('type: "Slice" slice_param { axis: 1 slice_point: 1 slice_point: 4 }', {"x": x}, ("a", "b", "c"))
    for y, ref in zip(ys, (x[:, :1], x[:, 1:4], x[:, 4:])):
        np.testing.assert_array_equal(y, ref)
    assert shapes('type: "Slice" slice_param { axis: -1 }', {"x": (2, 6, 3)}, ("a", "b", "c")) == [(2, 6, 1)] * 3
    assert shapes('type: "Slice" slice_param { slice_dim: 0 }', {"x": (4, 3)}, ("a", "b")) == [(2, 3)] * 2
    with pytest.raises(NetError, match=r"layer 'l' \(Slice\).*evenly divide"):
        make_net('type: "Slice"', {"x": (2, 5)}, ("a", "b"))
    with pytest.raises(NetError, match="slice_points for 3 tops"):
        make_net('type: "Slice" slice_param { slice_point: 1 }', {"x": (2, 5)}, ("a", "b", "c"))
    with pytest.raises(NetError, match="strictly increasing"):
        make_net('type: "Slice" slice_param { slice_point: 3 slice_point: 2 }', {"x": (2, 5)}, ("a", "b", "c"))


# ----- Flatten / Tile / Reduction -----------------------------------------------------------------
def test_flatten_tile_reduction_shapes():
    assert shapes('type: "Flatten"', {"x": (2, 3, 4, 5)}) == [(2, 60)]
    assert shapes('type: "Flatten" flatten_param { axis: 1 end_axis: 2 }', {"x": (2, 3, 4, 5)}) == [(2, 12, 5)]
    assert shapes('type: "Tile" tile_param { axis: 1 tiles: 3 }', {"x": (2, 3, 4)}) == [(2, 9, 4)]
    assert shapes('type: "Reduction"', {"x": (2, 3, 4)}) == [()]
    assert shapes('type: "Reduction" reduction_param { axis: -1 }', {"x": (2, 3, 4)}) == [(2, 3)]
    x = np.arange(6.0).reshape(2, 3) - 2  # [[-2,-1,0],[1,2,3]]
    (y,) = run('type: "Tile" tile_param { axis: 0 tiles: 2 }', {"x": x})
    np.testing.assert_array_equal(y, np.concatenate([x, x], 0))
    (m,) = run('type: "Reduction" reduction_param { operation: MEAN axis: 1 coeff: 2 }', {"x": x})
    np.testing.assert_allclose(m, [-2.0, 4.0])
    (a,) = run('type: "Reduction" reduction_param { operation: ASUM }', {"x": x})
    assert a == 9.0


# ----- Crop --------------------------------------------------------------------------------------
@pytest.mark.parametrize("param,window", [
    ("axis: 2 offset: 1 offset: 2", (slice(1, 3), slice(2, 5))),
    ("offset: 1", (slice(1, 3), slice(1, 4))),
    ("", (slice(0, 2), slice(0, 3))),
])
def test_crop_offsets(param, window):
    x = np.arange(60.0).reshape(1, 2, 5, 6)
    net = make_net(f'type: "Crop" crop_param {{ {param} }}', {"x": x.shape, "ref": (7, 7, 2, 3)})
    net.forward(x=x, ref=np.zeros((7, 7, 2, 3)))
    np.testing.assert_array_equal(net.blobs["y"].data, x[:, :, window[0], window[1]])
    net.blobs["y"].diff[...] = 1
    net.backward()
    expected = np.zeros_like(x)
    expected[:, :, window[0], window[1]] = 1
    np.testing.assert_array_equal(net.blobs["x"].diff, expected)
    assert not net.blobs["ref"].diff.any()


def test_crop_errors():
    with pytest.raises(NetError, match=r"layer 'l' \(Crop\).*invalid crop in axis 3"):
        make_net('type: "Crop" crop_param { offset: 0 offset: 4 }', {"x": (1, 1, 5, 6), "ref": (1, 1, 2, 3)})
    with pytest.raises(NetError, match="3 offsets"):
        make_net('type: "Crop" crop_param { offset: 0 offset: 0 offset: 0 }', {"x": (1, 1, 5, 6), "ref": (1, 1, 2, 3)})


# ----- Scale / Bias -----------------------------------------------------------------------------
def test_scale_blob_shapes():
    def blob_shapes(param, bottoms):
        return [tuple(b.shape) for b in make_net(f'type: "Scale" {param}', bottoms).layer_dict["l"].blobs]
    x = {"x": (2, 3, 4, 5)}
    assert blob_shapes("", x) == [(3,)]
    assert blob_shapes("scale_param { axis: 1 num_axes: 2 bias_term: true }", x) == [(3, 4), (3, 4)]
    assert blob_shapes("scale_param { axis: 2 num_axes: -1 }", x) == [(4, 5)]
    assert blob_shapes("scale_param { num_axes: 0 bias_term: true }", x) == [(), ()]
    assert blob_shapes("scale_param { bias_term: true }", {"x": (2, 3, 4), "s": (3, 4)}) == [(3, 4)]
    with pytest.raises(NetError, match=r"layer 'l' \(Scale\).*extends past"):
        blob_shapes("scale_param { axis: 2 num_axes: 3 }", x)


def test_scale_defaults_and_two_bottoms():
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    (y,) = run('type: "Scale"', {"x": x})  # default filler: constant 1
    np.testing.assert_allclose(y, x)
    (y,) = run('type: "Scale" scale_param { filler { type: "constant" } }', {"x": x})  # given: value 0
    np.testing.assert_allclose(y, 0 * x)
    s = np.array([1.0, -2.0, 3.0])
    (y,) = run('type: "Scale"', {"x": x, "s": s})
    np.testing.assert_allclose(y, x * s[None, :, None])
    s2 = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    (y,) = run('type: "Scale" scale_param { axis: 0 }', {"x": x, "s": s2})
    np.testing.assert_allclose(y, x * s2[:, :, None])
    with pytest.raises(NetError, match=r"layer 'l' \(Scale\).*\(4,\).*\(2, 3, 4\)"):
        make_net('type: "Scale"', {"x": (2, 3, 4), "s": (4,)})
    (b,) = run('type: "Bias" bias_param { filler { type: "constant" value: 0.5 } }', {"x": x})
    np.testing.assert_allclose(b, x + 0.5)


# ----- Eltwise / InnerProduct errors and MAX ties ------------------------------------------------
def test_eltwise_errors_and_max_ties():
    with pytest.raises(NetError, match=r"layer 'l' \(Eltwise\).*\(2, 3\).*\(2, 4\)"):
        make_net('type: "Eltwise"', {"a": (2, 3), "b": (2, 4)})
    with pytest.raises(NetError, match="one coeff per bottom"):
        make_net('type: "Eltwise" eltwise_param { coeff: 1 }', {"a": (2, 3), "b": (2, 3)})
    net = make_net('type: "Eltwise" eltwise_param { operation: MAX }', {"a": (3,), "b": (3,), "c": (3,)})
    # Caffe: bottom 1 wins a tie with bottom 0; later bottoms must be strictly greater
    net.forward(a=np.array([1.0, 2.0, 5.0]), b=np.array([1.0, 1.0, 0.0]), c=np.array([1.0, 2.0, 5.0]))
    net.blobs["y"].diff[...] = 1
    net.backward()
    np.testing.assert_array_equal(net.blobs["a"].diff, [0, 1, 1])
    np.testing.assert_array_equal(net.blobs["b"].diff, [1, 0, 0])
    np.testing.assert_array_equal(net.blobs["c"].diff, [0, 0, 0])


def test_inner_product_shapes_and_reshape_error():
    net = make_net('type: "InnerProduct" inner_product_param { num_output: 5 axis: 2 transpose: true }',
                   {"x": (2, 3, 4, 2)})
    assert tuple(net.params["l"][0].data.shape) == (8, 5) and net.blobs["y"].shape == (2, 3, 5)
    net = make_net('type: "InnerProduct" inner_product_param { num_output: 2 }', {"x": (2, 3)})
    net.blobs["x"].reshape(4, 3)
    net.forward(x=np.zeros((4, 3)))
    assert net.blobs["y"].shape == (4, 2)
    net.blobs["x"].reshape(4, 5)
    with pytest.raises(NetError, match=r"layer 'l' \(InnerProduct\).*K = 5.*K = 3"):
        net.forward(x=np.zeros((4, 5)))


# ----- ArgMax / MVN / Embed ----------------------------------------------------------------------
def test_argmax_shapes_and_ties():
    assert shapes('type: "ArgMax"', {"x": (2, 3, 4)}) == [(2, 1, 1)]
    assert shapes('type: "ArgMax"', {"x": (2, 5)}) == [(2, 1, 1)]
    assert shapes('type: "ArgMax"', {"x": (2, 3, 2, 2)}) == [(2, 1, 1, 1)]
    assert shapes('type: "ArgMax" argmax_param { out_max_val: true top_k: 2 }', {"x": (2, 5)}) == [(2, 2, 2)]
    assert shapes('type: "ArgMax" argmax_param { axis: 1 top_k: 2 }', {"x": (2, 5, 3)}) == [(2, 2, 3)]
    x = np.array([[1.0, 3.0, 3.0, 0.0], [4.0, 0.0, 2.0, 1.0]])
    (y,) = run('type: "ArgMax" argmax_param { out_max_val: true top_k: 2 }', {"x": x})
    np.testing.assert_array_equal(y, [[[2, 1], [3, 3]], [[0, 2], [4, 2]]])  # ties: larger index first
    (y,) = run('type: "ArgMax" argmax_param { axis: 0 }', {"x": x})
    np.testing.assert_array_equal(y, [[1, 0, 0, 1]])
    with pytest.raises(NetError, match="top_k 5"):
        make_net('type: "ArgMax" argmax_param { top_k: 5 }', {"x": (2, 4)})


def test_mvn_divides_by_std_plus_eps():
    x = np.array([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [2.0, 2.0]]])[None]  # (1, 2, 2, 2)
    (y,) = run('type: "MVN" mvn_param { eps: 0.5 }', {"x": x})
    np.testing.assert_allclose(y[0, 0], (x[0, 0] - 2.5) / (np.sqrt(1.25) + 0.5))
    np.testing.assert_allclose(y[0, 1], (x[0, 1] - 1.0) / (1.0 + 0.5))
    (y,) = run('type: "MVN" mvn_param { normalize_variance: false across_channels: true }', {"x": x})
    np.testing.assert_allclose(y, x - x.mean())
    net = make_net('type: "MVN"', {"x": (1, 1, 3)})  # constant input: finite zero gradient
    net.forward(x=np.full((1, 1, 3), 2.0))
    net.blobs["y"].diff[...] = np.array([1.0, 2.0, 3.0])
    net.backward()
    assert np.all(np.isfinite(net.blobs["x"].diff))


def test_embed_lookup_and_range_error():
    net = make_net('type: "Embed" embed_param { num_output: 2 input_dim: 3 bias_term: false }', {"x": (2,)})
    w = net.params["l"][0].data
    w[...] = np.arange(6.0).reshape(3, 2)
    net.forward(x=np.array([2.0, 0.0]))
    np.testing.assert_array_equal(net.blobs["y"].data, [[4, 5], [0, 1]])
    with pytest.raises(NetError, match=r"layer 'l' \(Embed\).*out of range"):
        net.forward(x=np.array([3.0, 0.0]))
