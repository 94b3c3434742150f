"""caffe.coord_map on NetSpec tops: maps through Convolution, Pooling, Deconvolution, ReLU and
Crop, per axis and in N-D, and the crop() helper, with its refusals.

A map ``(axis, a, b)`` from top Z to top X says that position z of Z is centred on position
``a * z + b`` of X.  For the nets below (conv kernel k, stride 1, pad p; max pool P/P;
deconv kernel 2P, stride P, pad q) the maps compose to

    x = (k - 1)/2 - p + P * ((z - (2P - 1)/2 + q) / P) + (P - 1)/2 = z + (k - 1)/2 - P/2 + q - p

so a = 1 and b = (k - 1)/2 - P/2 + q - p."""
from __future__ import annotations

import numpy as np
import pytest

import brewnet as caffe
from brewnet import layers as L
from brewnet import params as P
from brewnet.pycaffe.coord_map import coord_map_from_to, crop


def conv_pool_deconv(ks=3, stride=1, pad=0, pool=2, dpad=0, data=(2, 1, 64, 64)) -> caffe.NetSpec:
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=list(data)))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=ks, stride=stride, pad=pad)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=pool, stride=pool)
    n.deconv = L.Deconvolution(n.pool, num_output=4, kernel_size=2 * pool, stride=pool, pad=dpad)
    return n


def _map(top, bottom):
    axis, a, b = coord_map_from_to(top, bottom)
    return axis, np.atleast_1d(a).astype(float), np.atleast_1d(b).astype(float)


@pytest.mark.parametrize("ks,pad,pool,dpad,b", [
    (3, 0, 2, 0, 0),    # 1 - 1: the identity
    (3, 0, 4, 0, -1),   # 1 - 2
    (5, 0, 2, 0, 1),    # 2 - 1
    (1, 0, 2, 0, -1),   # 0 - 1
    (3, 2, 2, 0, -2),   # conv padding moves the map down
    (3, 0, 2, 3, 3),    # deconv padding moves it up
    (3, 4, 2, 4, 0),    # and the two cancel
    (7, 1, 8, 2, 0),    # 3 - 4 + 2 - 1
])
def test_conv_pool_deconv(ks, pad, pool, dpad, b):
    n = conv_pool_deconv(ks=ks, pad=pad, pool=pool, dpad=dpad)
    axis, a_got, b_got = _map(n.deconv, n.data)
    assert axis == 1
    np.testing.assert_array_equal(a_got, [1])
    np.testing.assert_array_equal(b_got, [b])


def test_relu_and_1x1_conv_pass_the_map_through():
    n = conv_pool_deconv(ks=5)
    n.relu = L.ReLU(n.deconv)
    n.conv1x1 = L.Convolution(n.relu, num_output=4, kernel_size=1, stride=1, pad=0)
    for top in (n.deconv, n.relu, n.conv1x1):
        axis, a, b = _map(top, n.data)
        assert (axis, a.tolist(), b.tolist()) == (1, [1], [1])


def test_every_bottom_of_a_layer_maps_alike():
    n = conv_pool_deconv()
    n.aux = L.Input(shape=dict(dim=[2, 1, 16, 16]))
    n.conv_data, n.conv_aux = L.Convolution(n.data, n.aux, ntop=2, num_output=4, kernel_size=5, stride=2)
    # kernel 5, stride 2: output c is centred on input 2c + 2
    for top, bottom in ((n.conv_data, n.data), (n.conv_aux, n.aux)):
        axis, a, b = _map(top, bottom)
        assert (axis, a.tolist(), b.tolist()) == (1, [2], [2])


def test_each_axis_maps_on_its_own():
    n = conv_pool_deconv(ks=[3, 5], stride=[1, 2], pad=[0, 10])
    axis, a, b = _map(n.deconv, n.data)
    # height as conv_pool_deconv(3, 1, 0): (1, 0); width, conv stride 2:
    # x = 2 * (2 * (z - 1.5) / 2 + 0.5) + 2 - 10 = 2z - 10
    assert axis == 1
    np.testing.assert_array_equal(a, [1, 2])
    np.testing.assert_array_equal(b, [0, -10])


def test_three_spatial_axes():
    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 2, 20, 20, 20]))
    n.conv = L.Convolution(n.data, num_output=4, kernel_size=[3, 3, 3], stride=[1, 1, 1], pad=[0, 1, 2])
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.deconv = L.Deconvolution(n.pool, num_output=4, kernel_size=4, stride=2)
    axis, a, b = _map(n.deconv, n.data)
    assert axis == 1
    np.testing.assert_array_equal(a, [1, 1, 1])
    np.testing.assert_array_equal(b, [0, -1, -2])  # b = 0 - pad on each axis


@pytest.mark.parametrize("offset", [0, 3, 9])
def test_crop_adds_its_offset(offset):
    n = conv_pool_deconv(ks=5)  # deconv -> data: b = 1
    n.crop = L.Crop(n.deconv, n.data, axis=2, offset=offset)
    axis, a, b = _map(n.crop, n.data)
    assert (axis, a.tolist(), b.tolist()) == (1, [1], [1 + offset])


def test_crop_helper_writes_a_crop_that_aligns_the_tops():
    n = conv_pool_deconv(pool=4)  # deconv -> data: b = -1, so data starts at deconv's pixel 1
    n.crop = crop(n.deconv, n.data)
    layer = n.to_proto().layer[-1]
    assert (layer.type, list(layer.bottom)) == ("Crop", ["deconv", "data"])
    assert (layer.crop_param.axis, list(layer.crop_param.offset)) == (2, [1])
    net = caffe.Net(n.to_proto(), caffe.TEST)
    # 64 -> conv 62 -> pool ceil(58 / 4) + 1 = 16 -> deconv 15 * 4 + 8 = 68 -> crop 64
    assert net.blobs["deconv"].shape == (2, 4, 68, 68)
    assert net.blobs["crop"].shape == (2, 4, 64, 64)
    net.blobs["deconv"].data[...] = np.arange(68 * 68, dtype=np.float32).reshape(68, 68)
    net.forward(start="crop")
    np.testing.assert_array_equal(net.blobs["crop"].data, net.blobs["deconv"].data[:, :, 1:65, 1:65])


def test_tops_without_a_spatial_path_have_no_map():
    n = conv_pool_deconv()
    n.ip = L.InnerProduct(n.deconv, num_output=4)
    with pytest.raises(RuntimeError):
        coord_map_from_to(n.ip, n.data)


def test_crop_refuses_different_scales():
    n = conv_pool_deconv()
    n.deconv = L.Deconvolution(n.pool, num_output=4, kernel_size=6, stride=3)  # pool 2, deconv 3
    with pytest.raises(AssertionError):
        crop(n.deconv, n.data)


def test_crop_refuses_a_top_smaller_than_the_reference():
    n = conv_pool_deconv(dpad=6)  # b = 6: the deconv is 12 pixels short of the data
    with pytest.raises(AssertionError):
        crop(n.deconv, n.data)
