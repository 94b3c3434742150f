"""brewnet's standard networks for the generic job kinds (brewnet/models/generic/): each file
parses, builds in the train, val and deploy states with its Data layers pointed at tiny LMDBs
made here, runs forward and backward, and trains one solver iteration (issue 22, item 6: the
DIGITS examples' networks build, run and train; FCN-AlexNet at a reduced input size)."""
from __future__ import annotations

import numpy as np
import pytest

import brewnet
from brewnet import formats
from brewnet.data.lmdb_io import DatumWriter
from brewnet.models.generic import CLASS_COUNT_LAYERS, GENERIC_NETWORKS, generic_network_path
from brewnet.net import Net
from brewnet.proto import caffe_pb2
from brewnet.solver import SGDSolver


def datum(arr: np.ndarray) -> caffe_pb2.Datum:
    """A C×H×W array as an unencoded Datum: uint8 as bytes, else float_data."""
    d = caffe_pb2.Datum(channels=arr.shape[0], height=arr.shape[1], width=arr.shape[2])
    if arr.dtype == np.uint8:
        d.data = arr.tobytes()
    else:
        d.float_data.extend(arr.astype(np.float32).ravel().tolist())
    return d


def write_lmdb(path, arrays) -> str:
    with DatumWriter(str(path), key_format="%09d") as w:
        for a in arrays:
            w.put(datum(a))
    return str(path)


def network(name: str, features: str, labels: str, batch: int | None = None) -> caffe_pb2.NetParameter:
    """The standard network with its Data layers reading ``features`` / ``labels``."""
    net = formats.read_net(str(generic_network_path(name)))
    for layer in net.layer:
        if layer.type == "Data":
            assert not layer.data_param.source, f"{name}: layer '{layer.name}' names a source"
            layer.data_param.source = features if layer.top[0] == "data" else labels
            if batch:
                layer.data_param.batch_size = batch
    return net


def with_input(net: caffe_pb2.NetParameter, shape) -> caffe_pb2.NetParameter:
    """The deploy form: an Input layer for ``data`` in front (as DIGITS writes deploy.prototxt)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    inp = out.layer.add(name="data", type="Input", top=["data"])
    inp.input_param.shape.add(dim=list(shape))
    out.layer.extend(net.layer)
    return out


def samples(kind: str, n: int, size: int, rng):
    images = rng.integers(0, 256, size=(n, 3 if kind == "seg" else 1, size, size), dtype=np.uint8)
    if kind == "seg":
        labels = rng.integers(0, 4, size=(n, 1, size, size)).astype(np.uint8)
        labels[:, :, :2, :2] = 255  # "don't care" pixels
    elif kind == "reg":
        labels = rng.uniform(-1, 1, size=(n, 1, 1, 2)).astype(np.float32)
    else:
        labels = rng.integers(0, 256, size=(n, 1, size, size), dtype=np.uint8)
    return images, labels


def check_network(tmp_path, name: str, kind: str, size: int, batch: int, output: str, num_classes: int = 0):
    brewnet.set_random_seed(7)
    rng = np.random.default_rng(0)
    images, labels = samples(kind, 4, size, rng)
    features = write_lmdb(tmp_path / "features", images)
    label_db = write_lmdb(tmp_path / "labels", labels)
    param = network(name, features, label_db, batch)
    if num_classes:  # the model job's edit for its dataset's class count
        for layer in param.layer:
            if layer.name in CLASS_COUNT_LAYERS:
                layer.convolution_param.num_output = num_classes
                if layer.type == "Deconvolution":
                    layer.convolution_param.group = num_classes

    train = Net(param, phase=brewnet.TRAIN, stages=["train"])
    assert "loss" in train.outputs and "accuracy" not in train.blobs
    train.forward()
    loss = float(train.blobs["loss"].data)
    assert np.isfinite(loss)
    out = train.blobs[output].data
    assert out.shape[0] == batch
    if kind != "reg":  # dense outputs: the input's height and width
        assert out.shape[2:] == (size, size)
    train.backward()
    diffs = [b.diff for bs in train.params.values() for b in bs]
    assert all(np.isfinite(d).all() for d in diffs)
    assert any(np.abs(d).sum() > 0 for d in diffs)  # image_to_image: only upsample's (its weights start at 0)

    val = Net(param, phase=brewnet.TEST, stages=["val"])
    val.forward()
    assert np.isfinite(float(val.blobs["loss"].data))
    if kind == "seg":
        acc = float(val.blobs["accuracy"].data)
        assert 0.0 <= acc <= 1.0

    deploy = Net(with_input(param, (1,) + images.shape[1:]), phase=brewnet.TEST, stages=["deploy"])
    assert "loss" not in deploy.blobs and "label" not in deploy.blobs
    assert deploy.outputs == [output]
    res = deploy.forward(data=images[:1].astype(np.float32))
    assert res[output].shape[0] == 1 and np.isfinite(res[output]).all()

    sp = caffe_pb2.SolverParameter(base_lr=1e-6, lr_policy="fixed", momentum=0.9, max_iter=1, display=0,
                                   test_iter=[1], test_interval=1000, random_seed=3, snapshot_after_train=False)
    sp.net_param.CopyFrom(param)
    sp.train_state.stage.append("train")
    sp.test_state.add().stage.append("val")
    solver = SGDSolver(sp, device="cpu")
    before = {n: [b.data.copy() for b in bs] for n, bs in solver.net.params.items()}
    solver.step(1)
    assert solver.iter == 1
    changed = [n for n, bs in solver.net.params.items()
               if any(not np.array_equal(b.data, old) for b, old in zip(bs, before[n]))]
    assert changed, f"{name}: one solver iteration changed no parameter"
    scores = solver.test(0)
    assert np.isfinite(scores["loss"])
    return train


def test_the_table_names_every_file():
    from pathlib import Path
    folder = Path(generic_network_path("fcn_small")).parent
    assert {p.stem for p in folder.glob("*.prototxt")} == set(GENERIC_NETWORKS)
    for title, kinds in GENERIC_NETWORKS.values():
        assert title and set(kinds) <= {"generic", "gradients", "processing", "segmentation", "detection"}
    with pytest.raises(KeyError, match="no standard generic network 'nope'"):
        generic_network_path("nope")


def test_regression_lenet(tmp_path):
    net = check_network(tmp_path, "regression_lenet", "reg", 16, 4, "output")
    assert net.blobs["output"].data.shape == (4, 2)


def test_regression_lenet_takes_small_images(tmp_path):
    check_network(tmp_path, "regression_lenet", "reg", 10, 2, "output")  # DIGITS' 10x10 test sets


def test_fcn_small(tmp_path):
    check_network(tmp_path, "fcn_small", "seg", 24, 2, "score")


def test_fcn_small_any_class_count(tmp_path):
    net = check_network(tmp_path, "fcn_small", "seg", 20, 1, "score", num_classes=6)
    assert net.blobs["score"].data.shape == (1, 6, 20, 20)


def test_image_to_image(tmp_path):
    check_network(tmp_path, "image_to_image", "img", 32, 2, "upsample")


@pytest.mark.slow
def test_fcn_alexnet_at_a_reduced_size(tmp_path):
    net = check_network(tmp_path, "fcn_alexnet", "seg", 64, 1, "score", num_classes=4)
    assert net.blobs["score"].data.shape == (1, 4, 64, 64)
    assert net.blobs["upscore"].data.shape[2:] == (127, 127)  # (3 - 1) * 32 + 63; Crop takes 18..82
