"""The data path of the generic job kinds (issue 22, item 2): records of different sizes from
batch to batch, float labels from a labels LMDB, random crop and mirror applied alike to an
image and its label image read by two Data layers."""
from __future__ import annotations

import numpy as np
from google.protobuf import text_format

import brewnet
from brewnet.net import Net
from brewnet.proto import caffe_pb2
from brewnet.solver import SGDSolver
from test_generic_networks import network, write_lmdb


def two_layer_net(features: str, labels: str, batch: int, transform: str, phase=brewnet.TRAIN) -> Net:
    param = caffe_pb2.NetParameter()
    text_format.Merge(f'''name: "pair"
layer {{ name: "data" type: "Data" top: "data" transform_param {{ {transform} }}
        data_param {{ source: "{features}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "label" type: "Data" top: "label" transform_param {{ {transform} }}
        data_param {{ source: "{labels}" batch_size: {batch} backend: LMDB }} }}''', param)
    return Net(param, phase=phase)


def test_float_labels_arrive_exactly(tmp_path):
    rng = np.random.default_rng(3)
    values = rng.uniform(-1, 1, size=(5, 1, 1, 2)).astype(np.float32)
    values[0, 0, 0] = [0.1234567, -98765.4375]
    images = rng.integers(0, 256, size=(5, 1, 4, 4), dtype=np.uint8)
    net = two_layer_net(write_lmdb(tmp_path / "f", images), write_lmdb(tmp_path / "l", values), 5, "")
    net.forward()
    assert net.blobs["label"].data.shape == (5, 1, 1, 2)
    np.testing.assert_array_equal(net.blobs["label"].data, values)
    np.testing.assert_array_equal(net.blobs["data"].data, images)


def test_crop_and_mirror_line_up_for_an_image_and_its_label(tmp_path):
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, size=(6, 3, 12, 12), dtype=np.uint8)
    labels = (images[:, :1] // 64).astype(np.uint8)  # the label image: a function of the image
    brewnet.set_random_seed(11)
    net = two_layer_net(write_lmdb(tmp_path / "f", images), write_lmdb(tmp_path / "l", labels), 3,
                        "crop_size: 8 mirror: true")
    where = set()
    for step in range(8):
        net.forward()
        data, label = net.blobs["data"].data, net.blobs["label"].data
        assert data.shape == (3, 3, 8, 8) and label.shape == (3, 1, 8, 8)
        np.testing.assert_array_equal(label[:, 0], np.floor(data[:, 0] / 64))  # pixel by pixel
        for i in range(3):  # find the crop and flip each record got
            src = images[(step * 3 + i) % 6, 0]
            hits = [(h, w, m) for h in range(5) for w in range(5) for m in (1, -1)
                    if np.array_equal(data[i, 0], src[h:h + 8, w:w + 8][:, ::m])]
            assert len(hits) == 1
            where.add(hits[0])
    # the draws do vary: several offsets, both flips
    assert len({(h, w) for h, w, _ in where}) > 3 and {m for _, _, m in where} == {1, -1}


def test_unpaired_settings_draw_apart(tmp_path):
    """A test that the pairing comes from the shared draws: with a different random_seed on the
    label layer, its crops no longer follow the image's."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, size=(6, 1, 12, 12), dtype=np.uint8)
    brewnet.set_random_seed(11)
    param = caffe_pb2.NetParameter()
    f, lab = write_lmdb(tmp_path / "f", images), write_lmdb(tmp_path / "l", images)
    text_format.Merge(f'''name: "apart"
layer {{ name: "data" type: "Data" top: "data" transform_param {{ crop_size: 8 mirror: true }}
        data_param {{ source: "{f}" batch_size: 6 backend: LMDB }} }}
layer {{ name: "label" type: "Data" top: "label" transform_param {{ crop_size: 8 mirror: true random_seed: 99 }}
        data_param {{ source: "{lab}" batch_size: 6 backend: LMDB }} }}''', param)
    net = Net(param, phase=brewnet.TRAIN)
    net.forward()
    assert not np.array_equal(net.blobs["data"].data, net.blobs["label"].data)


def test_fcn_trains_at_batch_1_on_images_of_three_sizes(tmp_path):
    rng = np.random.default_rng(6)
    sizes = [(20, 24), (32, 16), (28, 28)]
    images, labels = [], []
    for i in range(6):
        h, w = sizes[i % 3]
        im = rng.integers(0, 256, size=(3, h, w), dtype=np.uint8)
        images.append(im)
        labels.append((im[:1] // 64).astype(np.uint8))  # 4 classes
    param = network("fcn_small", write_lmdb(tmp_path / "f", images), write_lmdb(tmp_path / "l", labels), 1)
    sp = caffe_pb2.SolverParameter(base_lr=0.01, lr_policy="fixed", momentum=0.9, max_iter=100, display=0,
                                   test_iter=[3], test_interval=1000, random_seed=3, snapshot_after_train=False)
    sp.net_param.CopyFrom(param)
    sp.train_state.stage.append("train")
    sp.test_state.add().stage.append("val")
    solver = SGDSolver(sp, device="cpu")
    seen = []
    for i in range(7):
        solver.step(1)
        loss = float(solver.net.blobs["loss"].data)
        assert np.isfinite(loss)
        seen.append(solver.net.blobs["score"].data.shape)
        assert seen[-1] == (1, 4) + sizes[i % 3]
    scores = solver.test(0)
    assert np.isfinite(scores["loss"]) and 0 <= scores["accuracy"] <= 1
