"""A net whose blobs cannot fit in memory is refused with a clear error before anything is
allocated (a typo like dim: 999999997 used to end in SIGKILL with no message)."""
from __future__ import annotations

import pytest

import brewnet
from brewnet.errors import NetError
from brewnet.formats import net_from_text
from brewnet.memory import MemoryBudget, available_host_bytes, human_bytes


def make(text: str) -> brewnet.Net:
    return brewnet.Net(net_from_text(text), brewnet.TEST)


def test_input_with_a_typo_is_refused_naming_blob_shape_and_bytes():
    with pytest.raises(NetError) as e:
        make('layer { name: "data" type: "Input" top: "data" '
             'input_param { shape { dim: 999999997 dim: 3 dim: 224 dim: 224 } } }')
    msg = str(e.value)
    assert "layer 'data' (Input): top blob 'data'" in msg
    assert "(999999997, 3, 224, 224)" in msg and str(999999997 * 3 * 224 * 224 * 4) in msg
    assert "available" in msg


def test_parameters_are_checked_before_they_are_filled():
    with pytest.raises(NetError, match=r"layer 'ip' \(InnerProduct\): parameter blob of shape \(999999997, 1000000\)"):
        make('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1000000 } } }\n'
             'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
             'inner_product_param { num_output: 999999997 } }')


def test_reshape_to_an_impossible_shape_is_refused_and_the_blob_kept():
    net = make('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }\n'
               'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    with pytest.raises(NetError, match=r"blob 'data' of shape \(999999997, 3, 100, 100\)"):
        net.blobs["data"].reshape(999999997, 3, 100, 100)
    assert net.blobs["data"].shape == (2, 3)
    net.blobs["data"].reshape(4, 3)
    net.reshape()
    assert net.blobs["r"].shape == (4, 3)


def test_budget_adds_up_what_the_net_holds():
    budget = MemoryBudget(available=1000)
    budget.claim("a", (100,))          # 400 bytes
    budget.claim("b", (50, 2))         # 800 in all
    with pytest.raises(NetError, match="with the 800 bytes the net holds already"):
        budget.claim("c", (51,))
    assert budget.used == 800


def test_available_memory_is_known_here_and_formatted():
    assert available_host_bytes() > 0
    assert human_bytes(512) == "512 bytes" and human_bytes(3 * 1024 ** 3) == "3.0 GiB"
