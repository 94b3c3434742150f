"""`brewnet dataset create`: folders, list files, IDX (generated and Fashion-MNIST); Caffe-readable output."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import brewnet
from brewnet import formats
from brewnet.commands.main import main
from brewnet.data import DataError
from brewnet.data.builder import create_dataset, three_way_split
from brewnet.data.idx import write_idx
from brewnet.data.lmdb_io import read_datums
from brewnet.pycaffe.io import datum_to_array

FASHION = "/usr/share/datasets/fashion-mnist"


def make_folder(root, counts=(8, 4, 2), size=(10, 6), bad=False):
    rng = np.random.default_rng(0)
    images = {}
    for c, n in zip(("cat", "dog", "eel"), counts):
        os.makedirs(root / c)
        for i in range(n):
            a = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(a).save(root / c / f"{i}.png")
            images[str(root / c / f"{i}.png")] = a
    if bad:
        (root / "cat" / "broken.png").write_bytes(b"garbage")
    return images


def quiet():
    return io.StringIO()


def test_three_way_split_like_digits():
    assert three_way_split(8, 25, 0) == (6, 8)
    assert three_way_split(10, 20, 10) == (7, 9)


def test_folder_dataset_is_what_caffe_reads(tmp_path):
    images = make_folder(tmp_path / "src", bad=True)
    log = quiet()
    s = create_dataset(str(tmp_path / "src"), str(tmp_path / "out"), encoding="none", seed=1, stream=log)
    out = tmp_path / "out"
    assert (out / "labels.txt").read_text().split() == ["cat", "dog", "eel"]
    assert s["splits"]["train"]["per_class"] == {"cat": 6, "dog": 3, "eel": 2}  # round(2*0.75) = 2
    assert s["splits"]["val"]["per_class"] == {"cat": 2, "dog": 1, "eel": 0}
    assert "test" not in s["splits"]
    assert len(s["skipped"]) == 1 and "broken.png" in s["skipped"][0]["file"]
    assert "broken.png" in log.getvalue()
    assert json.loads((out / "summary.json").read_text())["seed"] == 1
    assert "cat" in (out / "summary.txt").read_text()
    # records: %08d keys, BGR uint8 CxHxW, each one of the source images with its class label
    by_bytes = {a[:, :, ::-1].transpose(2, 0, 1).tobytes(): p for p, a in images.items()}
    train = list(read_datums(str(out / "train_db")))
    assert [k for k, _ in train] == [b"%08d" % i for i in range(11)]
    total = np.zeros((3, 6, 10))
    for _, d in train:
        assert (d.channels, d.height, d.width, d.encoded) == (3, 6, 10, False)
        path = by_bytes[d.data]
        assert ["cat", "dog", "eel"][d.label] == os.path.basename(os.path.dirname(path))
        total += datum_to_array(d)
    np.testing.assert_allclose(formats.read_binaryproto(str(out / "mean.binaryproto"))[0], total / 11, rtol=1e-6)
    # and brewnet's Data layer reads it with the mean file
    net = brewnet.Net(formats.net_from_text(
        f'layer {{ name: "d" type: "Data" top: "data" top: "label" transform_param {{ mean_file: '
        f'"{out}/mean.binaryproto" }} data_param {{ source: "{out}/train_db" backend: LMDB batch_size: 11 }} }}'),
        brewnet.TEST)
    net.forward()
    np.testing.assert_allclose(net.blobs["data"].data.mean(axis=0), 0, atol=1e-4)


def test_png_encoding_resize_and_grayscale_options(tmp_path):
    make_folder(tmp_path / "src")
    s = create_dataset(str(tmp_path / "src"), str(tmp_path / "out"), resize=(5, 4), resize_mode="crop",
                       color=False, val_percent=0, test_percent=25, min_per_class=3, seed=0, stream=quiet())
    assert s["labels"] == ["cat", "dog"]  # eel has 2 < 3 images: dropped
    assert s["image"] == {"channels": 1, "height": 4, "width": 5, "channel_order": "gray"}
    assert set(s["splits"]) == {"train", "test"}
    d = next(read_datums(str(tmp_path / "out" / "test_db")))[1]
    assert d.encoded and datum_to_array(d).shape == (1, 4, 5)
    with pytest.raises(DataError, match="already exists"):
        create_dataset(str(tmp_path / "src"), str(tmp_path / "out"), stream=quiet())


def test_different_sizes_need_resize(tmp_path):
    make_folder(tmp_path / "src")
    Image.new("RGB", (7, 7)).save(tmp_path / "src" / "dog" / "odd.png")
    with pytest.raises(DataError, match="--resize"):
        create_dataset(str(tmp_path / "src"), str(tmp_path / "out"), seed=0, stream=quiet())


def test_list_file_and_max_per_class(tmp_path):
    images = make_folder(tmp_path / "src", counts=(5, 5, 5))
    lst = tmp_path / "list.txt"
    lst.write_text("".join(f"{os.path.relpath(p, tmp_path)} {i % 2}\n" for i, p in enumerate(sorted(images))))
    s = create_dataset(str(lst), str(tmp_path / "out"), max_per_class=4, val_percent=50, shuffle=False,
                       stream=quiet())
    assert s["kind"] == "list" and s["labels"] == ["0", "1"]
    assert s["splits"]["train"]["per_class"] == {"0": 2, "1": 2}
    with pytest.raises(DataError, match="not found"):
        create_dataset(str(tmp_path / "nolist.txt"), str(tmp_path / "o2"), stream=quiet())


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder(tmp_path, gz):
    rng = np.random.default_rng(0)
    ext = ".gz" if gz else ""
    write_idx(str(tmp_path / f"train-images-idx3-ubyte{ext}"), rng.integers(0, 256, (40, 5, 4)))
    write_idx(str(tmp_path / f"train-labels-idx1-ubyte{ext}"), np.arange(40) % 4)
    write_idx(str(tmp_path / f"t10k-images-idx3-ubyte{ext}"), rng.integers(0, 256, (8, 5, 4)))
    write_idx(str(tmp_path / f"t10k-labels-idx1-ubyte{ext}"), np.arange(8) % 4)
    s = create_dataset(str(tmp_path), str(tmp_path / "out"), seed=0, stream=quiet())
    assert s["kind"] == "idx" and s["encoding"] == "none"
    assert {k: v["total"] for k, v in s["splits"].items()} == {"train": 36, "val": 4, "test": 8}  # 10% val
    d = next(read_datums(str(tmp_path / "out" / "val_db")))[1]
    assert (d.channels, d.height, d.width) == (1, 5, 4)


@pytest.mark.skipif(not os.path.isdir(FASHION), reason="dataset-fashion-mnist not installed")
def test_cli_on_fashion_mnist(tmp_path, capsys):
    rc = main(["dataset", "create", FASHION, str(tmp_path / "fm"), "--max-per-class", "20", "-seed", "3"])
    assert rc == 0
    out = capsys.readouterr()
    assert "train_db (180)" in out.out and "test_db (200)" in out.out
    assert "train_db: 180/180 (100%)" in out.err  # plain progress lines when not on a terminal
    s = json.loads((tmp_path / "fm" / "summary.json").read_text())
    assert s["splits"]["val"]["per_class"]["T-shirt/top"] == 2
    assert (tmp_path / "fm" / "labels.txt").read_text().splitlines()[9] == "Ankle boot"
    labels = [d.label for _, d in read_datums(str(tmp_path / "fm" / "test_db"))]
    assert np.bincount(labels).tolist() == [20] * 10


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["dataset", "create", str(tmp_path / "nothing"), str(tmp_path / "o")]) == 1
    assert "error: dataset source not found" in capsys.readouterr().err
