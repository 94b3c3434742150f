"""Data layers: the golden Caffe recording, wrap-around, decoding, list files, HDF5, MemoryData, errors."""
from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest
from PIL import Image

import brewnet
from brewnet import formats
from brewnet.data import DataError, set_input_arrays
from brewnet.data.lmdb_io import DatumWriter
from brewnet.pycaffe.io import array_to_datum

from data_fixtures import fixtures

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")


def net_from(text: str, phase=brewnet.TEST, seed=None):
    if seed is not None:
        brewnet.set_random_seed(seed)
    return brewnet.Net(formats.net_from_text(text), phase)


def data_net(source, batch, transform="", phase=brewnet.TEST, seed=None, tops=("data", "label"), extra=""):
    t = " ".join(f'top: "{x}"' for x in tops)
    return net_from(f'layer {{ name: "d" type: "Data" {t} transform_param {{ {transform} }} '
                    f'data_param {{ source: "{source}" backend: LMDB batch_size: {batch} {extra} }} }}', phase, seed)


# ----- golden: real BVLC Caffe -----------------------------------------------------------------
def test_golden_data_layer_passes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # source and mean_file resolve beside the prototxt
    ref = np.load(os.path.join(GOLDEN, "data_layer.npz"))
    net = brewnet.Net(os.path.join(GOLDEN, "data_layer.prototxt"), brewnet.TEST)
    for p in range(3):
        net.forward()
        for blob in ("data", "label", "data2", "label2"):
            np.testing.assert_array_equal(net.blobs[blob].data, ref[f"pass{p}/{blob}"], err_msg=f"pass{p}/{blob}")


def test_relative_source_prefers_the_working_directory(tmp_path, monkeypatch):
    F = fixtures()
    import shutil
    shutil.copytree(F["lmdb_raw"], tmp_path / "lmdb_raw")
    monkeypatch.chdir(tmp_path)
    net = data_net("lmdb_raw", 2)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, F["raw_images"][:2])


# ----- Data ------------------------------------------------------------------------------------
def test_data_reads_in_order_and_wraps_around():
    F = fixtures()
    net = data_net(F["lmdb_raw"], 4)
    seen, labels = [], []
    for _ in range(3):
        net.forward()
        seen.append(net.blobs["data"].data.copy())
        labels.append(net.blobs["label"].data.copy())
    seen, labels = np.concatenate(seen), np.concatenate(labels)
    order = [i % 6 for i in range(12)]
    np.testing.assert_array_equal(seen, F["raw_images"][order])
    np.testing.assert_array_equal(labels, [i % 3 for i in order])


def test_train_crop_mirror_is_seeded_and_valid():
    F = fixtures()
    tf = "crop_size: 5 mirror: true"
    a = data_net(F["lmdb_raw"], 6, tf, brewnet.TRAIN, seed=7)
    b = data_net(F["lmdb_raw"], 6, tf, brewnet.TRAIN, seed=7)
    a.forward()
    b.forward()
    x = a.blobs["data"].data
    np.testing.assert_array_equal(x, b.blobs["data"].data)
    src = F["raw_images"]
    for i in range(6):
        assert any(np.array_equal(x[i], src[i, :, h:h + 5, w:w + 5][..., ::m])
                   for h in range(2) for w in range(3) for m in (1, -1))


def test_rand_skip_is_seeded():
    F = fixtures()
    firsts = set()
    for seed in range(6):
        n1 = data_net(F["lmdb_raw"], 1, phase=brewnet.TRAIN, seed=seed, extra="rand_skip: 6")
        n2 = data_net(F["lmdb_raw"], 1, phase=brewnet.TRAIN, seed=seed, extra="rand_skip: 6")
        n1.forward()
        n2.forward()
        assert n1.blobs["label"].data[0] == n2.blobs["label"].data[0]
        firsts.add(int(np.flatnonzero((F["raw_images"] == n1.blobs["data"].data[0]).all(axis=(1, 2, 3)))[0]))
    assert len(firsts) > 1


def test_encoded_png_decodes_to_bgr_and_force_gray():
    F = fixtures()
    net = data_net(F["lmdb_png"], 4)
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, F["png_rgb"][..., ::-1].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1, 2, 3])
    g = data_net(F["lmdb_png"], 2, "force_gray: true", tops=("data",))
    g.forward()
    assert g.blobs["data"].shape == (2, 1, 6, 7)
    expect = np.asarray(Image.fromarray(F["png_rgb"][0]).convert("L"))
    np.testing.assert_array_equal(g.blobs["data"].data[0, 0], expect)


def test_leveldb_is_refused(tmp_path):
    F = fixtures()
    with pytest.raises(DataError, match="LEVELDB"):
        net_from(f'layer {{ name: "d" type: "Data" top: "data" data_param {{ source: "{F["lmdb_raw"]}" '
                 'backend: LEVELDB batch_size: 1 } }')


def test_backend_left_at_its_default_reads_an_lmdb():
    F = fixtures()
    net = net_from(f'layer {{ name: "d" type: "Data" top: "data" data_param {{ source: "{F["lmdb_raw"]}" '
                   'batch_size: 2 } }')
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, F["raw_images"][:2])


def test_missing_lmdb_is_a_clear_error():
    with pytest.raises(DataError, match="layer 'd'.*not found: /nonexistent/db"):
        data_net("/nonexistent/db", 2)


def test_datum_of_another_size_names_its_key(tmp_path):
    path = str(tmp_path / "db")
    with DatumWriter(path) as w:
        w.put(array_to_datum(np.zeros((1, 2, 2), np.uint8), 0))
        w.put(array_to_datum(np.zeros((1, 3, 2), np.uint8), 1))
    net = data_net(path, 2)
    with pytest.raises(DataError, match="'00000001'.*first record"):
        net.forward()


def test_prefetch_thread_stops_when_the_net_is_dropped():
    F = fixtures()
    net = data_net(F["lmdb_raw"], 2)
    net.forward()
    name = "brewnet-prefetch-d"
    assert any(t.name == name for t in threading.enumerate())
    before = sum(t.name == name for t in threading.enumerate())
    del net
    gc.collect()
    assert sum(t.name == name for t in threading.enumerate()) < before


# ----- ImageData -------------------------------------------------------------------------------
def image_net(params, transform="", phase=brewnet.TEST, seed=None):
    return net_from(f'layer {{ name: "d" type: "ImageData" top: "data" top: "label" '
                    f'transform_param {{ {transform} }} image_data_param {{ {params} }} }}', phase, seed)


def test_image_data_reads_the_list_in_bgr():
    F = fixtures()
    net = image_net(f'source: "{F["list"]}" root_folder: "{F["imdir"]}" batch_size: 5')
    net.forward()
    np.testing.assert_array_equal(net.blobs["data"].data, F["list_images"][..., ::-1].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1, 0, 1, 0])


def test_image_data_resize_gray_and_shuffle():
    F = fixtures()
    net = image_net(f'source: "{F["list"]}" root_folder: "{F["imdir"]}/" batch_size: 2 '
                    'new_height: 4 new_width: 3 is_color: false')
    net.forward()
    assert net.blobs["data"].shape == (2, 1, 4, 3)
    src = f'source: "{F["list"]}" root_folder: "{F["imdir"]}" batch_size: 5 shuffle: true'
    a, b = image_net(src, phase=brewnet.TRAIN, seed=3), image_net(src, phase=brewnet.TRAIN, seed=3)
    a.forward()
    b.forward()
    np.testing.assert_array_equal(a.blobs["data"].data, b.blobs["data"].data)
    got = sorted(map(bytes, a.blobs["data"].data.astype(np.uint8)))
    want = sorted(map(bytes, F["list_images"][..., ::-1].transpose(0, 3, 1, 2).astype(np.uint8)))
    assert got == want  # a permutation of the list


def test_unreadable_image_is_skipped_and_counted(tmp_path, caplog):
    F = fixtures()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    lst = tmp_path / "list.txt"
    lst.write_text(f"{F['imdir']}/im0.png 0\n{bad} 1\n{tmp_path}/missing.png 1\n{F['imdir']}/im1.png 1\n")
    net = image_net(f'source: "{lst}" batch_size: 2')
    net.forward()
    np.testing.assert_array_equal(net.blobs["label"].data, [0, 1])
    layer = net.layers[0]
    layer.close()  # the prefetcher finishes its batch: the count is read between batches
    # it may already have gone round the list again: 2 per pass over it
    assert layer.skipped >= 2 and layer.skipped % 2 == 0
    assert str(bad) in caplog.text and "missing.png" in caplog.text


def test_missing_list_file_is_a_clear_error():
    with pytest.raises(DataError, match="list file not found"):
        image_net('source: "/nonexistent/list.txt" batch_size: 1')


# ----- HDF5Data --------------------------------------------------------------------------------
def test_hdf5_rows_in_order_across_files_and_wrap():
    F = fixtures()
    net = net_from(f'layer {{ name: "h" type: "HDF5Data" top: "data" top: "label" '
                   f'hdf5_data_param {{ source: "{F["h5list"]}" batch_size: 4 }} }}')
    labels = []
    for _ in range(3):
        net.forward()
        labels.extend(net.blobs["label"].data.tolist())
    assert net.blobs["data"].shape == (4, 2, 3)
    assert labels == [0, 1, 2, 3, 10, 11, 0, 1, 2, 3, 10, 11]
    net2 = net_from(f'layer {{ name: "h" type: "HDF5Data" top: "data" top: "label" '
                    f'hdf5_data_param {{ source: "{F["h5list"]}" batch_size: 6 }} }}')
    net2.forward()
    np.testing.assert_array_equal(net2.blobs["data"].data[4, 0], [100, 101, 102])


def test_hdf5_shuffle_and_refusals():
    F = fixtures()
    text = (f'layer {{ name: "h" type: "HDF5Data" top: "data" top: "label" '
            f'hdf5_data_param {{ source: "{F["h5list"]}" batch_size: 6 shuffle: true }} }}')
    net = net_from(text, seed=1)
    net.forward()
    assert sorted(net.blobs["label"].data.tolist()) == [0, 1, 2, 3, 10, 11]
    with pytest.raises(DataError, match="does not transform"):
        net_from(text.replace("hdf5_data_param", "transform_param { scale: 2 } hdf5_data_param"))
    with pytest.raises(DataError, match="no dataset 'nothere'"):
        net_from(text.replace('top: "label"', 'top: "nothere"'))


# ----- MemoryData ------------------------------------------------------------------------------
def test_memory_data_batches_and_wraps():
    net = net_from('layer { name: "m" type: "MemoryData" top: "data" top: "label" '
                   'memory_data_param { batch_size: 2 channels: 1 height: 2 width: 2 } }')
    data = np.arange(16, dtype=np.float32).reshape(4, 1, 2, 2)
    set_input_arrays(net, data, np.arange(4).reshape(4, 1, 1, 1))
    out = [net.forward() for _ in range(3)]
    np.testing.assert_array_equal(out[0]["data"], data[:2])
    np.testing.assert_array_equal(out[1]["label"], [2, 3])
    np.testing.assert_array_equal(out[2]["data"], data[:2])
    layer = net.layers[0]
    with pytest.raises(DataError, match="multiple of batch_size"):
        layer.set_input_arrays(data[:3], np.arange(3))
    with pytest.raises(DataError, match="shape"):
        layer.set_input_arrays(np.zeros((2, 3, 2, 2)), np.arange(2))


# ----- a short training run through the Data layer --------------------------------------------
def test_lenet_bn_trains_from_a_built_lmdb(tmp_path, monkeypatch):
    import torch
    from brewnet.data.builder import create_dataset
    out = tmp_path / "fm"
    create_dataset("/usr/share/datasets/fashion-mnist", str(out), max_per_class=30, seed=0,
                   stream=open(os.devnull, "w")) if os.path.isdir("/usr/share/datasets/fashion-mnist") \
        else pytest.skip("Fashion-MNIST not installed")
    monkeypatch.chdir(out)
    model = os.path.join(os.path.dirname(brewnet.__file__), "models", "lenet_bn_fashion_train_val.prototxt")
    brewnet.set_random_seed(0)
    net = brewnet.Net(model, brewnet.TRAIN)
    params = [p.tensor for p in net.learnable if p.tensor.requires_grad]
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    losses = []
    for _ in range(15):
        loss, _ = net.forward_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.mean(losses[-3:]) < losses[0] - 0.3, losses
    test = brewnet.Net(model, brewnet.TEST)
    test.share_with(net)
    out_ = test.forward()
    assert 0.0 <= float(out_["accuracy"]) <= 1.0
