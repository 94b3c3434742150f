"""Module-level pycaffe names: layer_type_list, the NCCL uid, and caffe.draw over every network
definition of BVLC Caffe's models/ and examples/ (tests/bvlc_caffe, kept as data)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format

import brewnet as caffe
import brewnet.draw
from brewnet.proto import caffe_pb2

BVLC = Path(__file__).resolve().parents[1] / "bvlc_caffe"
PROTOTXTS = sorted(p for folder in ("models", "examples") for p in (BVLC / folder).rglob("*.prototxt")
                   if "solver" not in p.name)


def test_layer_type_list_names_the_common_types():
    types = caffe.layer_type_list()
    assert {"Data", "Convolution", "InnerProduct", "Python"} <= set(types)
    assert len(types) == len(set(types))


def test_nccl_uid_is_bytes():
    assert caffe.has_nccl()
    uid = caffe.NCCL.new_uid()
    assert isinstance(uid, bytes) and len(uid) > 16
    assert caffe.NCCL.new_uid() != uid  # a fresh session each time


def test_every_bvlc_prototxt_is_there():
    # 20 in examples/ (solvers left out), 9 in models/: a walk that finds none would test nothing
    assert len(PROTOTXTS) == 29


@pytest.mark.skipif(shutil.which("dot") is None,
                    reason="Graphviz's dot is not installed (apt-get install graphviz)")
@pytest.mark.parametrize("path", PROTOTXTS, ids=lambda p: str(p.relative_to(BVLC)))
def test_draw_net_draws_every_layer_and_blob(path):
    net = text_format.Parse(path.read_text(), caffe_pb2.NetParameter())
    graph = caffe.draw.get_pydot_graph(net, "LR")
    names = [node.get_name() for node in graph.get_nodes()]
    blobs = {b for layer in net.layer for b in [*layer.bottom, *layer.top]}
    assert sum(n.startswith("layer") for n in names) == len(net.layer) > 0
    assert sum(n.startswith("blob") for n in names) == len(blobs)
    assert caffe.draw.draw_net(net, "LR").startswith(b"\x89PNG\r\n\x1a\n")
