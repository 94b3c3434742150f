"""pycaffe's batch helpers on Net: ``_batch``, ``forward_all``, ``forward_backward_all``.

What pycaffe defines them to do: cut the items into batches of the net's batch size (the input
blob's first axis), the last one padded with zeros; run each batch; stack the rows of the
outputs (and of the ``blobs`` / ``diffs`` asked for) and drop the padding rows.  Checked here
against batches run one by one.
"""
import numpy as np
import pytest

import brewnet
from brewnet.errors import NetError
from brewnet.formats import net_from_text

NET = """name: "b" force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
    bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "ip3" type: "InnerProduct" bottom: "ip1" top: "ip3"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } } }
"""


@pytest.fixture
def net():
    brewnet.set_random_seed(11)
    return brewnet.Net(net_from_text(NET), brewnet.TEST)


def items(n, width=3, seed=0):
    return np.random.default_rng(seed).normal(size=(n, width)).astype(np.float32)


def padded_chunks(x, batch=4):
    """x in batches of ``batch`` rows, the last one padded with zero rows."""
    out = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        pad = np.zeros((batch - len(chunk),) + x.shape[1:], x.dtype)
        out.append(np.concatenate([chunk, pad]))
    return out


def close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_batch_pads_the_last_batch_with_zeros(net):
    x, y = items(10), items(10, width=2, seed=1)
    batches = list(net._batch({"data": x, "ip2": y}))
    assert len(batches) == 3 and all(set(b) == {"data", "ip2"} for b in batches)
    for got, want in zip(batches, padded_chunks(x)):
        np.testing.assert_array_equal(got["data"], want)
    np.testing.assert_array_equal(batches[2]["ip2"], padded_chunks(y)[2])
    assert list(net._batch({})) == []
    with pytest.raises(NetError, match="inputs have different numbers of items"):
        list(net._batch({"data": x, "ip2": y[:9]}))


@pytest.mark.parametrize("n", [10, 8, 3])
def test_forward_all_stacks_the_batches_and_drops_the_padding(net, n):
    x = items(n)
    got = net.forward_all(blobs=["ip1"], data=x)
    assert set(got) == {"ip1", "ip2", "ip3"}
    want = {k: [] for k in got}
    for chunk in padded_chunks(x):
        outs = net.forward(blobs=["ip1"], data=chunk)
        for k in want:
            want[k].append(outs[k].copy())
    for k, parts in want.items():
        assert got[k].shape[0] == n
        close(got[k], np.concatenate(parts)[:n])


def test_forward_backward_all_stacks_data_and_diffs(net):
    x, g2, g3 = items(10), items(10, 2, 1), items(10, 2, 2)
    outs, diffs = net.forward_backward_all(blobs=["ip1"], diffs=["ip1"], data=x, ip2=g2, ip3=g3)
    assert set(outs) == {"ip1", "ip2", "ip3"} and set(diffs) == {"data", "ip1"}
    want_data = {k: [] for k in outs}
    want_diff = {k: [] for k in diffs}
    for cx, c2, c3 in zip(padded_chunks(x), padded_chunks(g2), padded_chunks(g3)):
        o = net.forward(blobs=["ip1"], data=cx)
        for k in want_data:
            want_data[k].append(o[k].copy())
        d = net.backward(diffs=["ip1"], ip2=c2, ip3=c3)
        for k in want_diff:
            want_diff[k].append(d[k].copy())
    for got, want in ((outs, want_data), (diffs, want_diff)):
        for k, parts in want.items():
            assert got[k].shape[0] == 10
            close(got[k], np.concatenate(parts)[:10])


def test_forward_backward_all_with_inputs_only(net):
    outs, diffs = net.forward_backward_all(data=items(6))
    assert outs["ip2"].shape == (6, 2) and diffs["data"].shape == (6, 3)
