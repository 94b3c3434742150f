"""A pycaffe script and its Python layer written against ``import caffe``, unchanged, run in a
process of their own after ``brewnet.alias_as_caffe()``.

The rest of tests/pycaffe uses ``import brewnet as caffe``; this test keeps what running BVLC's
own test files under the alias used to show: that code which knows only Caffe's module names
(``caffe``, ``caffe.proto.caffe_pb2``, ``caffe.layers``, ``caffe.coord_map``, ``caffe.draw``,
``caffe.io``, and a layer module that subclasses ``caffe.Layer``) gets brewnet's modules, once
each, in a fresh interpreter where nothing imported brewnet under its own name first."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

LAYER_MODULE = '''import caffe


class Twice(caffe.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = 2 * bottom[0].data

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = 2 * top[0].diff
'''

SCRIPT = '''import json
import sys

import numpy as np

import caffe
import caffe.draw
import caffe.io
from caffe import layers as L, params as P
from caffe.coord_map import coord_map_from_to
from caffe.proto import caffe_pb2

n = caffe.NetSpec()
n.data = L.Input(shape=dict(dim=[1, 1, 4, 4]))
n.twice = L.Python(n.data, module="twice_layer", layer="Twice")
n.pool = L.Pooling(n.twice, pool=P.Pooling.MAX, kernel_size=2, stride=2)
with open("alias.prototxt", "w") as f:
    f.write(str(n.to_proto()))

net = caffe.Net("alias.prototxt", caffe.TEST)
out = net.forward(data=np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4))
blob = caffe.io.array_to_blobproto(out["pool"])
import twice_layer
print(json.dumps({
    "pool": caffe.io.blobproto_to_array(blob).ravel().tolist(),
    "brewnet_is_caffe": sys.modules["brewnet"] is caffe,
    "one_pb2": caffe_pb2 is sys.modules["brewnet.proto.caffe_pb2"],
    "no_second_copy": not any(m.startswith("caffe.") and sys.modules[m] is not sys.modules["brewnet" + m[5:]]
                              for m in list(sys.modules)),
    "layer_base_is_caffe_layer": issubclass(twice_layer.Twice, sys.modules["brewnet.layers.python"].Layer),
    "map": [np.ravel(v).tolist() for v in coord_map_from_to(n.pool, n.twice)[1:]],
    "drawn": "twice" in caffe.draw.draw_net(n.to_proto(), "TB", ext="raw").decode(),
    "net_type": caffe_pb2.NetParameter is type(n.to_proto()),
}))
'''

RUN = ("import runpy, sys, brewnet; brewnet.alias_as_caffe(); "
       "runpy.run_path(sys.argv[1], run_name='__main__')")


def test_an_unchanged_caffe_script_and_layer_run_on_brewnet(tmp_path):
    (tmp_path / "twice_layer.py").write_text(LAYER_MODULE)
    (tmp_path / "script.py").write_text(SCRIPT)
    proc = subprocess.run([sys.executable, "-c", RUN, "script.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    x = np.arange(16).reshape(4, 4)
    expected = [2 * x[i:i + 2, j:j + 2].max() for i in (0, 2) for j in (0, 2)]
    assert got.pop("pool") == expected
    assert got.pop("map") == [[2.0], [0.5]]  # pooled cell y is centred on 2y + 0.5
    assert got == {"brewnet_is_caffe": True, "one_pb2": True, "no_second_copy": True,
                   "layer_base_is_caffe_layer": True, "drawn": True, "net_type": True}
