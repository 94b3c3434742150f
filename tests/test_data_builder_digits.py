"""`brewnet dataset create` with DIGITS' options: separate val/test folders and lists, a labels
file, list roots, DIGITS' folder label names, per-split limits, the image lists and mean.jpg."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from brewnet import formats
from brewnet.commands.main import main
from brewnet.data import DataError
from brewnet.data.builder import create_dataset
from brewnet.data.lmdb_io import read_datums
from brewnet.pycaffe.io import datum_to_array
from brewnet.proto import caffe_pb2


def make_classes(root, counts: dict[str, int], size=(10, 6), seed=0) -> dict[str, np.ndarray]:
    """PNG images of random colours under root/<class>/; returns {path: RGB array}."""
    rng = np.random.default_rng(seed)
    images = {}
    for c, n in counts.items():
        os.makedirs(root / c, exist_ok=True)
        for i in range(n):
            a = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
            p = root / c / f"{i}.png"
            Image.fromarray(a).save(p)
            images[str(p)] = a
    return images


def quiet():
    return io.StringIO()


def read_list(path) -> list[tuple[str, int]]:
    out = []
    for line in open(path, encoding="utf-8"):
        p, lab = line.rstrip("\n").rsplit(" ", 1)
        out.append((p, int(lab)))
    return out


def check_lists_match_lmdbs(out, images, labels):
    """Each <split>.txt line is the LMDB record at the same position: same label, same pixels."""
    for split in ("train", "val", "test"):
        db = out / f"{split}_db"
        if not db.exists():
            assert not (out / f"{split}.txt").exists()
            continue
        listed = read_list(out / f"{split}.txt")
        records = list(read_datums(str(db)))
        assert len(listed) == len(records)
        for (path, label), (_, d) in zip(listed, records):
            assert os.path.isabs(path)
            assert d.label == label
            assert labels[label] == os.path.basename(os.path.dirname(path)).replace("_", " ")
            np.testing.assert_array_equal(datum_to_array(d), images[path][:, :, ::-1].transpose(2, 0, 1))


def test_separate_val_and_test_folders_ignore_the_percentages(tmp_path):
    train = make_classes(tmp_path / "train", {"big_cat": 6, "dog": 5}, seed=0)
    val = make_classes(tmp_path / "val", {"big_cat": 3, "dog": 2, "emu": 4}, seed=1)  # emu: not a class
    test = make_classes(tmp_path / "test", {"big_cat": 2, "dog": 2}, seed=2)
    log = quiet()
    s = create_dataset(str(tmp_path / "train"), str(tmp_path / "out"), val_folder=str(tmp_path / "val"),
                       test_folder=str(tmp_path / "test"), val_percent=40, test_percent=20,
                       encoding="none", seed=3, digits_labels=True, stream=log)
    out = tmp_path / "out"
    labels = ["big cat", "dog"]  # DIGITS' names: sorted folders, '_' -> ' '
    assert s["labels"] == labels and (out / "labels.txt").read_text().splitlines() == labels
    # every train-folder image is train: the percentages are ignored for separate sets
    assert s["splits"]["train"]["per_class"] == {"big cat": 6, "dog": 5}
    assert s["splits"]["val"]["per_class"] == {"big cat": 3, "dog": 2}
    assert s["splits"]["test"]["per_class"] == {"big cat": 2, "dog": 2}
    assert s["val_percent"] == 0 and s["test_percent"] == 0
    assert s["sets"]["val"] == str(tmp_path / "val")
    assert "emu" in log.getvalue()
    check_lists_match_lmdbs(out, {**train, **val, **test}, labels)
    assert {p for p, _ in read_list(out / "val.txt")} == {p for p in val if "/emu/" not in p}


def test_separate_folder_min_and_max_per_class(tmp_path):
    make_classes(tmp_path / "train", {"a": 4, "b": 4}, seed=0)
    make_classes(tmp_path / "val", {"a": 5, "b": 1}, seed=1)
    s = create_dataset(str(tmp_path / "train"), str(tmp_path / "out"), val_folder=str(tmp_path / "val"),
                       val_min_per_class=2, val_max_per_class=3, seed=0, stream=quiet())
    # a: 5 capped at 3; b: 1 < 2, no val images, but the class stays (it has train images)
    assert s["labels"] == ["a", "b"]
    assert s["splits"]["val"]["per_class"] == {"a": 3, "b": 0}
    assert s["splits"]["train"]["per_class"] == {"a": 4, "b": 4}


def test_percent_split_still_writes_lists_and_mean_jpg(tmp_path):
    images = make_classes(tmp_path / "src", {"x": 8, "y": 4}, size=(7, 5))
    s = create_dataset(str(tmp_path / "src"), str(tmp_path / "out"), val_percent=25, test_percent=25,
                       encoding="png", seed=1, stream=quiet())
    out = tmp_path / "out"
    assert {k: v["total"] for k, v in s["splits"].items()} == {"train": 6, "val": 3, "test": 3}
    check_lists_match_lmdbs(out, images, ["x", "y"])
    listed = [p for split in ("train", "val", "test") for p, _ in read_list(out / f"{split}.txt")]
    assert sorted(listed) == sorted(images)  # each image once
    # mean.jpg: W x H, RGB, the mean of the train records (JPEG: within a few levels)
    with Image.open(out / "mean.jpg") as im:
        assert im.format == "JPEG" and im.size == (7, 5) and im.mode == "RGB"
        jpg = np.asarray(im, dtype=np.float64)
    mean = formats.read_binaryproto(str(out / "mean.binaryproto"))[0]  # (C, H, W) BGR
    # in the legacy num/channels/height/width form, as DIGITS and compute_image_mean write it
    # (DIGITS' example scripts read those fields)
    blob = formats.read_binary(str(out / "mean.binaryproto"), caffe_pb2.BlobProto)
    assert not blob.HasField("shape") and (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 5, 7)
    train = [images[p] for p, _ in read_list(out / "train.txt")]
    np.testing.assert_allclose(mean, np.mean(train, axis=0)[:, :, ::-1].transpose(2, 0, 1), rtol=1e-5)
    # the JPEG of the rounded mean in RGB order (JPEG's loss on random pixels is large, so compare
    # with the same encoding of the expected picture: a channel swap or a transposition differs)
    want = np.rint(np.mean(train, axis=0)).astype(np.uint8)  # (H, W, 3) RGB
    buf = io.BytesIO()
    Image.fromarray(want).save(buf, "JPEG", quality=90)
    np.testing.assert_array_equal(jpg, np.asarray(Image.open(buf), dtype=np.float64))
    # summary.json: the image dims, resize mode, encoding, counts and labels
    j = json.loads((out / "summary.json").read_text())
    assert j["image"]["height"] == 5 and j["image"]["width"] == 7 and j["image"]["channels"] == 3
    assert j["encoding"] == "png" and j["labels"] == ["x", "y"] and "resize_mode" in j
    assert j["splits"]["val"]["per_class"] == {"x": 2, "y": 1} and j["splits"]["val"]["list"] == "val.txt"


def test_grey_mean_jpg(tmp_path):
    make_classes(tmp_path / "src", {"x": 3, "y": 3})
    create_dataset(str(tmp_path / "src"), str(tmp_path / "out"), color=False, resize=(4, 3), seed=0,
                   stream=quiet())
    with Image.open(tmp_path / "out" / "mean.jpg") as im:
        assert im.size == (4, 3) and im.mode == "L"


def test_list_files_with_labels_file_and_roots(tmp_path):
    images = make_classes(tmp_path / "imgs", {"c0": 4, "c1": 4, "c2": 3})
    order = sorted(images)
    label_of = {p: int(os.path.basename(os.path.dirname(p))[1]) for p in order}
    names = tmp_path / "names.txt"
    names.write_text("zero\none\ntwo\n")
    train_lst = tmp_path / "lists" / "train.txt"
    val_lst = tmp_path / "lists" / "val.txt"
    test_lst = tmp_path / "lists" / "test.txt"
    train_lst.parent.mkdir()
    # train: relative to -list-root; val: absolute paths; test: relative to -test-list-root
    train_lst.write_text("".join(f"{os.path.relpath(p, tmp_path / 'imgs')} {label_of[p]}\n"
                                 for p in order if p.endswith(("0.png", "1.png"))))
    val_lst.write_text("".join(f"{p} {label_of[p]}\n" for p in order if p.endswith("2.png")))
    test_lst.write_text("".join(f"{os.path.basename(p)} {label_of[p]}\n" for p in order
                                if p.endswith("3.png")))
    s = create_dataset(str(train_lst), str(tmp_path / "out"), labels_file=str(names),
                       list_root=str(tmp_path / "imgs"), val_list=str(val_lst), test_list=str(test_lst),
                       test_list_root=str(tmp_path / "imgs" / "c0"), val_percent=50, seed=0,
                       encoding="none", stream=quiet())
    assert s["labels"] == ["zero", "one", "two"]
    assert s["splits"]["train"]["per_class"] == {"zero": 2, "one": 2, "two": 2}
    assert s["splits"]["val"]["per_class"] == {"zero": 1, "one": 1, "two": 1}
    # c1/3.png and c0/3.png are both "3.png" in the test list: joined to c0 they are c0's
    assert s["splits"]["test"]["total"] == 2
    listed = read_list(tmp_path / "out" / "test.txt")
    assert {p for p, _ in listed} == {str(tmp_path / "imgs" / "c0" / "3.png")}
    out = tmp_path / "out"
    for split in ("train", "val"):
        for (path, label), (_, d) in zip(read_list(out / f"{split}.txt"), read_datums(str(out / f"{split}_db"))):
            assert d.label == label == label_of[path]
            np.testing.assert_array_equal(datum_to_array(d), images[path][:, :, ::-1].transpose(2, 0, 1))


def test_list_label_outside_the_labels_file_is_an_error(tmp_path):
    make_classes(tmp_path / "imgs", {"a": 2})
    lst = tmp_path / "l.txt"
    lst.write_text("imgs/a/0.png 0\nimgs/a/1.png 2\n")
    names = tmp_path / "names.txt"
    names.write_text("only\ntwo\n")
    with pytest.raises(DataError, match="label 2.*names only 2"):
        create_dataset(str(lst), str(tmp_path / "out"), labels_file=str(names), stream=quiet())


def test_options_for_the_wrong_kind_of_source(tmp_path):
    make_classes(tmp_path / "src", {"a": 2, "b": 2})
    with pytest.raises(DataError, match="--val-list"):
        create_dataset(str(tmp_path / "src"), str(tmp_path / "o1"), val_list=str(tmp_path / "x.txt"),
                       stream=quiet())
    with pytest.raises(DataError, match="folder not found"):
        create_dataset(str(tmp_path / "src"), str(tmp_path / "o2"), val_folder=str(tmp_path / "nope"),
                       stream=quiet())


def test_cli_digits_flags(tmp_path, capsys):
    make_classes(tmp_path / "train", {"x_y": 4, "z": 4})
    make_classes(tmp_path / "val", {"x_y": 2, "z": 2}, seed=5)
    rc = main(["dataset", "create", str(tmp_path / "train"), str(tmp_path / "out"), "-val-folder",
               str(tmp_path / "val"), "-digits-labels", "-val-max-per-class", "1", "-seed", "0"])
    assert rc == 0
    assert "val.txt" in capsys.readouterr().out
    assert (tmp_path / "out" / "labels.txt").read_text().splitlines() == ["x y", "z"]
    assert len(read_list(tmp_path / "out" / "val.txt")) == 2
    assert (tmp_path / "out" / "mean.jpg").is_file()
    assert main(["dataset", "create", str(tmp_path / "train"), str(tmp_path / "o2"),
                 "-val-max-per-class", "0"]) == 1
    assert "--val-max-per-class must be positive" in capsys.readouterr().err
