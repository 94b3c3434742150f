"""Python layers named in a prototxt (``python_param { module layer param_str }``): forward and
backward through a chain of them, reshape, an exception from setup, a bad param_str, learnable
blobs saved, restored and shared, and the layer's ``phase``.  The layers: pycaffe/user_layers.py."""
from __future__ import annotations

import numpy as np
import pytest

import brewnet as caffe
from pycaffe.nets import write


def _python(name: str, layer: str, bottom: str | None = "data", param_str: str | None = None) -> str:
    bottom = f'bottom: "{bottom}" ' if bottom else ""
    param = f'param_str: "{param_str}" ' if param_str is not None else ""
    return (f'layer {{ type: "Python" name: "{name}" {bottom}top: "{name}" '
            f'python_param {{ module: "pycaffe.user_layers" layer: "{layer}" {param}}} }}\n')


INPUT = 'force_backward: true input: "data" input_shape { dim: 2 dim: 3 dim: 4 }\n'
# data -> x2 -> x3 -> x0.5: three layers of one class with their own param_str
CHAIN = INPUT + _python("double", "Multiply", "data", "2") + \
    _python("triple", "Multiply", "double", "3") + _python("halve", "Multiply", "triple", "0.5")


@pytest.fixture
def chain(tmp_path) -> caffe.Net:
    return caffe.Net(write(tmp_path, CHAIN), caffe.TRAIN)


def test_python_is_a_registered_layer_type():
    assert "Python" in caffe.layer_type_list()


def test_forward_through_the_chain(chain):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    chain.blobs["data"].data[...] = x
    out = chain.forward()
    assert list(out) == ["halve"]
    np.testing.assert_array_equal(chain.blobs["double"].data, 2 * x)  # products of small ints: exact
    np.testing.assert_array_equal(out["halve"], 3 * x)


def test_backward_through_the_chain(chain):
    chain.forward()
    d = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    chain.blobs["halve"].diff[...] = d
    chain.backward()
    np.testing.assert_allclose(chain.blobs["triple"].diff, 0.5 * d, rtol=1e-6)
    np.testing.assert_allclose(chain.blobs["data"].diff, 3 * d, rtol=1e-6)


def test_reshaping_the_input_reshapes_every_top(chain):
    chain.blobs["data"].reshape(5, 1, 2, 7)
    chain.blobs["data"].data[...] = 1
    chain.forward()
    for name, blob in chain.blobs.items():
        assert blob.data.shape == (5, 1, 2, 7), name
    assert (chain.blobs["halve"].data == 3).all()


def test_an_exception_in_setup_reaches_the_caller(tmp_path):
    path = write(tmp_path, INPUT + _python("refuses", "RefusesSetup"))
    with pytest.raises(RuntimeError, match="this layer never sets up"):
        caffe.Net(path, caffe.TEST)


def test_a_bad_param_str_is_the_layers_own_error(tmp_path):
    path = write(tmp_path, INPUT + _python("bad", "Multiply", "data", "ten"))
    with pytest.raises(ValueError, match="param_str must be a number, not 'ten'"):
        caffe.Net(path, caffe.TEST)


def test_learnable_blob_is_stored_restored_and_shared(tmp_path):
    path = write(tmp_path, INPUT + _python("counter", "CountsBackwards"))
    net = caffe.Net(path, caffe.TRAIN)
    layer = net.layer_dict["counter"]
    assert len(layer.blobs) == 1 and layer.blobs[0].data.shape == (1,)
    net.forward()
    net.backward()
    assert (layer.blobs[0].data[0], layer.blobs[0].diff[0]) == (0, 1)
    layer.blobs[0].data[0] += layer.blobs[0].diff[0]  # a hand-made update step
    assert layer.blobs[0].data[0] == 1
    np.testing.assert_array_equal(net.params["counter"][0].data, [1])  # also a net param

    weights = str(tmp_path / "counter.caffemodel")
    net.save(weights)
    layer.blobs[0].data[0] = -1
    net.copy_from(weights)
    assert layer.blobs[0].data[0] == 1

    other = caffe.Net(path, caffe.TRAIN)
    assert other.layer_dict["counter"].blobs[0].data[0] == 0  # set up afresh
    other.share_with(net)
    assert other.layer_dict["counter"].blobs[0].data[0] == 1
    layer.blobs[0].data[0] = 7  # shared: one blob, seen through both nets
    assert other.layer_dict["counter"].blobs[0].data[0] == 7


@pytest.mark.parametrize("phase", [caffe.TRAIN, caffe.TEST])
def test_the_layer_sees_the_phase(tmp_path, phase):
    net = caffe.Net(write(tmp_path, _python("phase", "Phase", bottom=None)), phase)
    out = net.forward()
    assert out["phase"].shape == ()
    assert out["phase"] == phase


def test_net_layers_reach_the_users_own_layer_object(chain):
    """As pycaffe's net.layers[i] is the user's object for a Python layer, a script calls its
    layer's own methods and reads its attributes through the net (py-faster-rcnn's
    ``net.layers[0].set_roidb(roidb)``)."""
    double = chain.layers[list(chain._layer_names).index("double")]
    assert double.type == "Python" and double.k == 2.0
    double.set_factor(10)
    chain.blobs["data"].data[...] = 1
    assert (chain.forward()["halve"] == 15).all()  # 1 x 10 x 3 x 0.5
    with pytest.raises(AttributeError):
        double.no_such_attribute
