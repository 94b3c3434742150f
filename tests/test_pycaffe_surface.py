"""pycaffe's surface beyond the core Net: forward/backward ranges, HDF5 weights, index-based
internals, layer and solver callbacks, forward_all, module-level names (layer_type_list, Timer,
init_log, log, the multi-process names), and pycaffe's layer.blobs."""
from __future__ import annotations

import logging
import subprocess
import sys

import h5py
import numpy as np
import pytest

import brewnet
from brewnet.errors import BrewnetError, NetError
from brewnet.formats import net_from_text
from brewnet.proto import caffe_pb2

NET = """name: "t" force_backward: true
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 4 dim: 3 } } }
layer { name: "ip1" type: "InnerProduct" bottom: "data" top: "ip1"
  inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.5 }
    bias_filler { type: "constant" value: 0.1 } } }
layer { name: "bn" type: "BatchNorm" bottom: "ip1" top: "ip1" }
layer { name: "relu" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
  inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.5 } }
  param { name: "shared_w" } }
layer { name: "ip3" type: "InnerProduct" bottom: "ip1" top: "ip3"
  inner_product_param { num_output: 2 } param { name: "shared_w" } }
"""


def make(phase=brewnet.TRAIN, text=NET) -> brewnet.Net:
    brewnet.set_random_seed(3)
    return brewnet.Net(net_from_text(text), phase)


def test_phase_constants_are_caffes():
    assert (brewnet.TRAIN, brewnet.TEST) == (caffe_pb2.TRAIN, caffe_pb2.TEST)


def test_forward_end_returns_that_layers_tops_and_backward_end_its_bottoms():
    net = make()
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    out = net.forward(data=x, end="ip1")
    assert list(out) == ["ip1"]
    net.forward(data=x)
    net.blobs["ip2"].diff[...] = 1
    net.blobs["ip3"].diff[...] = 0
    grads = net.backward(start="ip2", end="ip2")
    assert list(grads) == ["ip1_relu_0_split_0"]


def test_backward_range_without_forward_uses_stored_blobs_and_leaves_statistics():
    net = make()
    w = net.params["ip2"][0].data
    top_diff = np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32)
    bottom = net.bottom_names["ip2"][0]
    net.blobs[bottom].data[...] = np.random.default_rng(2).normal(size=(4, 5))
    net.blobs["ip2"].diff[...] = top_diff
    stats = [p.data.copy() for p in net.params["bn"]]
    out = net.backward(start="ip2", end="ip2")
    np.testing.assert_allclose(out[bottom], top_diff @ w, rtol=1e-5, atol=1e-6 * np.abs(top_diff @ w).max())
    # the replayed range included no BatchNorm, but a replay through one must not update it
    net.blobs["data"].data[...] = 1.0
    net.blobs["ip3"].diff[...] = 1.0
    net.backward(start="ip3", end="ip1")
    for before, p in zip(stats, net.params["bn"]):
        np.testing.assert_array_equal(before, p.data)  # statistics untouched: bit-exact


def test_backward_start_before_end_is_a_clear_error():
    net = make()
    with pytest.raises(NetError, match="comes before"):
        net.backward(start="ip1", end="ip2")


def test_hdf5_round_trip_matches_caffes_layout(tmp_path):
    net = make()
    net.forward(data=np.ones((4, 3), np.float32))
    path = tmp_path / "w.h5"
    net.save_hdf5(str(path))
    with h5py.File(path, "r") as f:
        assert set(f) == {"data"}
        assert sorted(f["data/ip1"]) == ["0", "1"]
        assert sorted(f["data/bn"]) == ["0", "1", "2"]
        assert sorted(f["data/ip2"]) == ["0", "1"]
        assert sorted(f["data/ip3"]) == ["1"]  # the shared weight is written by its owner only
    other = make()
    for p in other.params["ip1"]:
        p.data[...] = 0
    other.load_hdf5(str(path))
    for name in ("ip1", "bn", "ip2", "ip3"):
        for a, b in zip(net.params[name], other.params[name]):
            np.testing.assert_array_equal(a.data, b.data)  # a file round trip: bit-exact
    # copy_from recognises HDF5 by its signature, whatever the name, as Caffe does
    renamed = tmp_path / "w.caffemodel"
    path.rename(renamed)
    third = make()
    third.copy_from(str(renamed))
    np.testing.assert_array_equal(third.params["ip2"][0].data, net.params["ip2"][0].data)


def test_hdf5_with_diffs_and_bad_files(tmp_path):
    net = make()
    net.forward(data=np.ones((4, 3), np.float32))
    net.blobs["ip2"].diff[...] = 1
    net.blobs["ip3"].diff[...] = 1
    net.backward()
    net.save_hdf5(str(tmp_path / "d.h5"), write_diff=True)
    with h5py.File(tmp_path / "d.h5", "r") as f:
        np.testing.assert_array_equal(f["diff/ip1/0"][...], net.params["ip1"][0].diff)
        assert sorted(f["diff/ip3"]) == ["0", "1"]
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f.create_dataset("data/ip1/0", data=np.zeros((7, 3), np.float32))
        f.create_dataset("data/ip1/1", data=np.zeros((5,), np.float32))
    with pytest.raises(NetError, match=r"ip1.*\(7, 3\).*\(5, 3\)"):
        make().load_hdf5(str(tmp_path / "bad.h5"))
    with pytest.raises(NetError, match="not found"):
        make().load_hdf5(str(tmp_path / "missing.h5"))


def test_index_based_internals():
    net = make()
    names = net._blob_names
    assert [net._blobs[i] is net.blobs[n] for i, n in enumerate(names)] == [True] * len(names)
    assert [names[i] for i in net._inputs] == net.inputs
    assert [names[i] for i in net._outputs] == net.outputs
    ip2 = net._layer_names.index("ip2")
    assert [names[i] for i in net._top_ids(ip2)] == ["ip2"]
    assert [names[i] for i in net._bottom_ids(ip2)] == net.bottom_names["ip2"]
    assert net._blob_loss_weights == [0.0] * len(names)


def test_layer_blobs_write_the_parameters():
    net = make()
    layer = net.layers[net._layer_names.index("ip1")]
    layer.blobs[0].data[...] = 2.0
    assert float(layer.blob_tensors[0].detach().sum()) == 2.0 * 15
    layer.blobs[1].diff[...] = 1.0
    np.testing.assert_array_equal(net.params["ip1"][1].diff, np.ones(5, np.float32))
    assert layer.blobs[0].shape == (5, 3) and layer.blobs[0].count == 15


def test_layer_reshape_sets_top_shapes():
    net = make()
    layer = net.layer_dict["ip1"]
    bottom = [brewnet.Blob("x", __import__("torch").zeros(7, 3))]
    top = [brewnet.Blob("y", __import__("torch").zeros(0))]
    layer.reshape(bottom, top)
    assert top[0].shape == (7, 5)


def test_layer_callbacks_fire_in_order_in_pycaffe_and_training_paths():
    net = make()
    seen = []
    net.before_forward(lambda i: seen.append(("bf", i)))
    net.after_forward(lambda i: seen.append(("af", i)))
    net.before_backward(lambda i: seen.append(("bb", i)))
    net.after_backward(lambda i: seen.append(("ab", i)))
    net.forward(data=np.ones((4, 3), np.float32))
    n = len(net.layers)
    assert seen == [(k, i) for i in range(n) for k in ("bf", "af")]
    seen.clear()
    net.blobs["ip2"].diff[...] = 1
    net.blobs["ip3"].diff[...] = 1
    net.backward()
    assert seen == [("bb", i) for i in reversed(range(n))] + [("ab", i) for i in reversed(range(n))]
    with pytest.raises(TypeError):
        net.before_forward(3)


def test_solver_callbacks_and_lr(tmp_path):
    net_file = tmp_path / "net.prototxt"
    net_file.write_text("""name: "s"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 } data_filler { type: "gaussian" }
    data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
""")
    solver_file = tmp_path / "solver.prototxt"
    solver_file.write_text(f'net: "{net_file}" base_lr: 0.1 lr_policy: "step" gamma: 0.5 stepsize: 2 '
                           f'max_iter: 4 snapshot_prefix: "{tmp_path}/s" snapshot_after_train: false')
    solver = brewnet.SGDSolver(str(solver_file))
    events = []
    callbacks_net = solver.net
    callbacks_net.after_backward(lambda i: events.append(("after_backward", i)) if i == 0 else None)
    solver.add_callback(lambda: events.append(("start", solver.iter)),
                        lambda: events.append(("gradients", solver.iter)))
    solver.step(2)
    assert events == [("start", 0), ("after_backward", 0), ("gradients", 0),
                      ("start", 1), ("after_backward", 0), ("gradients", 1)]
    assert solver.lr == pytest.approx(0.05)
    with pytest.raises(TypeError):
        solver.add_callback(None, None)


def test_forward_all_batches_and_drops_padding():
    net = make(brewnet.TEST)
    x = np.random.default_rng(4).normal(size=(10, 3)).astype(np.float32)
    out = net.forward_all(data=x)
    assert out["ip2"].shape == (10, 2)
    one = net.forward(data=np.concatenate([x[8:10], x[8:10]]))["ip2"][:2]
    np.testing.assert_allclose(out["ip2"][8:], one, rtol=1e-5, atol=1e-6 * np.abs(one).max())
    outs, diffs = net.forward_backward_all(data=x, ip2=np.ones((10, 2), np.float32),
                                           ip3=np.zeros((10, 2), np.float32))
    assert outs["ip3"].shape == (10, 2) and diffs["data"].shape == (10, 3)


def test_set_input_arrays_needs_memory_data_first():
    net = make()
    with pytest.raises(NetError, match="MemoryData"):
        net.set_input_arrays(np.zeros((4, 3), np.float32), np.zeros(4, np.float32))
    mem = make(text='layer { name: "m" type: "MemoryData" top: "data" top: "label" '
                    'memory_data_param { batch_size: 2 channels: 1 height: 1 width: 3 } }')
    data = np.arange(12, dtype=np.float32).reshape(4, 1, 1, 3)
    mem.set_input_arrays(data, np.arange(4, dtype=np.float32))
    mem.forward()
    np.testing.assert_array_equal(mem.blobs["data"].data, data[:2])
    np.testing.assert_array_equal(mem.blobs["label"].data, [0, 1])


def test_module_level_names():
    types = brewnet.layer_type_list()
    assert types == sorted(types) and {"Convolution", "BatchNorm", "Python", "Silence"} <= set(types)
    assert isinstance(brewnet.__version__, str)
    t = brewnet.Timer()
    assert t.ms == 0.0
    t.start()
    sum(range(10000))
    t.stop()
    first = t.ms
    assert first > 0 and t.ms == first
    assert brewnet.has_nccl() is True  # torch.distributed (gloo on the CPU, NCCL on CUDA)
    assert brewnet.solver_count() == 1 and brewnet.solver_rank() == 0
    uid = brewnet.NCCL.new_uid()
    assert isinstance(uid, bytes) and uid != brewnet.NCCL.new_uid()
    try:
        brewnet.set_solver_count(2)
        brewnet.set_solver_rank(1)
        brewnet.set_multiprocess(True)
        assert brewnet.solver_count() == 2 and brewnet.solver_rank() == 1
    finally:
        brewnet.set_solver_count(1)
        brewnet.set_solver_rank(0)
        brewnet.set_multiprocess(False)
    for call, message in ((lambda: brewnet.set_solver_count(0), "at least 1"),
                          (lambda: brewnet.set_solver_rank(-1), "at least 0"),
                          (lambda: brewnet.NCCL(None, b"not a uid"), "is not a uid from caffe.NCCL.new_uid")):
        with pytest.raises(BrewnetError, match=message):
            call()
    # pycaffe's inference helpers exist: a missing prototxt is a clear error
    for call in (lambda: brewnet.Classifier("a", "b"), lambda: brewnet.Detector("a", "b")):
        with pytest.raises(BrewnetError, match="network definition not found: a"):
            call()


def test_init_log_and_log(capsys):
    logger = logging.getLogger("brewnet")
    saved = (logger.level, list(logger.handlers), logger.propagate)
    try:
        brewnet.init_log(1, False)   # WARNING and up, on stdout
        brewnet.log("hidden line")
        logger.warning("shown line")
        out = capsys.readouterr().out
        assert "shown line" in out and "hidden line" not in out
        brewnet.init_log(0, False)
        brewnet.log("info line")
        assert "info line" in capsys.readouterr().out
        with pytest.raises(BrewnetError, match="level"):
            brewnet.init_log(7)
    finally:
        logger.setLevel(saved[0])
        logger.handlers[:] = saved[1]
        logger.propagate = saved[2]


def test_import_brewnet_does_not_import_torch():
    code = "import sys, brewnet; print('torch' in sys.modules); brewnet.TRAIN; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_alias_as_caffe_resolves_submodules_to_the_same_modules():
    code = ("import brewnet, brewnet.io; brewnet.alias_as_caffe(); import caffe, caffe.io; "
            "from caffe.proto import caffe_pb2; import brewnet.proto.caffe_pb2 as b; "
            "print(caffe is brewnet, caffe.io is brewnet.io, caffe_pb2 is b)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "True", "True"]
