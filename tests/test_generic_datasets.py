"""brewnet.data.generic: DIGITS' generic dataset kinds (generic LMDBs, gradients, processing,
segmentation), their records as Caffe's Data layer reads them, their summaries and errors."""
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
from brewnet.data.generic import create_generic_dataset, read_summary
from brewnet.data.generic.synthetic import gradient_image, make_shapes_dataset, shapes_palette
from brewnet.data.lmdb_io import DatumWriter, read_datums
from brewnet.proto import caffe_pb2

PALETTE = shapes_palette()


def quiet():
    return io.StringIO()


def data_net(*layers, batch):
    """A TEST-phase net of Data layers: (top, LMDB path) each."""
    text = "".join(f'layer {{ name: "{top}" type: "Data" top: "{top}" data_param {{ source: "{path}" '
                   f'backend: LMDB batch_size: {batch} }} }}\n' for top, path in layers)
    net = brewnet.Net(formats.net_from_text(text), brewnet.TEST)
    net.forward()
    return net


def make_pairs(root, n=6, size=(8, 6), palette=PALETTE, mode="P", classes=4, sizes=None):
    """n RGB images and n label images (class index per pixel) with matching basenames."""
    rng = np.random.default_rng(1)
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    truth = {}
    for i in range(n):
        w, h = sizes[i] if sizes else size
        rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        idx = rng.integers(0, classes, size=(h, w), dtype=np.uint8)
        Image.fromarray(rgb).save(images / f"{i:03d}.png")
        if mode == "RGB":
            colours = np.array(palette[:3 * classes]).reshape(-1, 3).astype(np.uint8)
            Image.fromarray(colours[idx]).save(labels / f"{i:03d}.png")
        else:
            im = Image.fromarray(idx)
            if mode == "P":
                im.putpalette(palette)
            im.save(labels / f"{i:03d}.png")
        truth[rgb.tobytes()] = idx
    return str(images), str(labels), truth


# ----- gradients --------------------------------------------------------------------------------

def test_gradient_image_is_digits_formula():
    img = gradient_image(0.5, -0.25, 8, 4)
    assert img.shape == (4, 8) and img.dtype == np.uint8
    x, y = np.meshgrid(np.arange(8), np.arange(4))
    expected = (0.5 * 255 / 8) * (x - 4) + (-0.25 * 255 / 4) * (y - 2) + 127.5
    np.testing.assert_array_equal(img, expected.astype(np.uint8))
    steep = gradient_image(0.5, 0.5, 32, 32)
    assert (steep.min(), steep.max()) == (0, 247)   # 127.5 ± 127.5, the far corner one step short


def test_gradients_dataset_through_the_data_layer(tmp_path):
    out = tmp_path / "g"
    s = create_generic_dataset("gradients", str(out), train_count=12, val_count=4, test_count=3, width=8,
                               height=6, seed=5, stream=quiet())
    assert s["kind"] == "gradients" and s["seed"] == 5
    assert {k: v["entries"] for k, v in s["stages"].items()} == {"train": 12, "val": 4, "test": 3}
    train = s["stages"]["train"]
    assert train["feature_shape"] == [1, 6, 8] and train["label_shape"] == [1, 1, 2]
    assert s["feature_dims"] == [6, 8, 1] and s["mean_file"] == str(out / "train_db" / "mean.binaryproto")
    labels = [d for _, d in read_datums(train["labels"])]
    values = np.array([list(d.float_data) for d in labels], dtype=np.float32)
    assert s["label_range"] == [float(values.min()), float(values.max())]
    assert np.all((values >= -0.5) & (values < 0.5))
    # Datum level: the feature PNG-encoded (grey), the label float_data 1x1x2 with label 0
    feature = next(read_datums(train["features"]))[1]
    assert feature.encoded and (feature.channels, feature.height, feature.width) == (1, 6, 8)
    assert (labels[0].channels, labels[0].height, labels[0].width, labels[0].label) == (1, 1, 2, 0)
    assert not labels[0].data and not labels[0].encoded
    net = data_net(("data", train["features"]), ("label", train["labels"]), batch=12)
    np.testing.assert_array_equal(net.blobs["label"].data.reshape(12, 2), values)   # exact floats
    for i in range(12):   # each image is its own label's gradient: features and labels line up by key
        np.testing.assert_array_equal(net.blobs["data"].data[i, 0], gradient_image(*values[i], 8, 6))
    mean = formats.read_binaryproto(s["mean_file"])
    assert mean.shape == (1, 1, 6, 8)
    np.testing.assert_allclose(mean[0], net.blobs["data"].data.mean(axis=0), rtol=1e-6)
    assert [k for k, _ in read_datums(train["features"])] == [b"%09d" % i for i in range(12)]


def test_gradients_raw_encoding_and_float_labels_need_none(tmp_path):
    s = create_generic_dataset("gradients", str(tmp_path / "g"), train_count=2, val_count=0, width=4, height=3,
                               feature_encoding="none", seed=1, stream=quiet())
    d = next(read_datums(s["stages"]["train"]["features"]))[1]
    assert not d.encoded and len(d.data) == 12 and not d.float_data   # uint8 -> data bytes
    assert set(s["stages"]) == {"train"}
    with pytest.raises(DataError, match="require -label-encoding none"):
        create_generic_dataset("gradients", str(tmp_path / "g2"), train_count=2, label_encoding="png")


def test_builds_are_reproducible_whatever_the_threads(tmp_path):
    def records(out):
        return [(k, v) for stage in ("train", "val") for db in ("features", "labels")
                for k, v in read_datums(str(out / f"{stage}_db" / db))]
    for n, workers in (("a", 1), ("b", 4)):
        create_generic_dataset("gradients", str(tmp_path / n), train_count=40, val_count=5, width=6, height=6,
                               seed=9, workers=workers, stream=quiet())
    assert records(tmp_path / "a") == records(tmp_path / "b")


# ----- segmentation -----------------------------------------------------------------------------

def test_segmentation_from_palette_through_the_data_layer(tmp_path):
    images, labels, truth = make_pairs(tmp_path / "src", n=10)
    (tmp_path / "classes.txt").write_text("background\na\nb\nc\n")
    out = tmp_path / "seg"
    s = create_generic_dataset("segmentation", str(out), image_dir=images, label_dir=labels, val_percent=20,
                               class_labels=str(tmp_path / "classes.txt"), seed=3, stream=quiet())
    assert s["class_labels"] == ["background", "a", "b", "c"] and s["num_classes"] == 4
    assert (out / "labels.txt").read_text().split() == ["background", "a", "b", "c"]
    assert s["color_palette"] == PALETTE and len(s["color_palette"]) == 768
    assert {k: v["entries"] for k, v in s["stages"].items()} == {"train": 8, "val": 2}
    train = s["stages"]["train"]
    assert train["feature_shape"] == [3, 6, 8] and train["label_shape"] == [1, 6, 8]
    label = next(read_datums(train["labels"]))[1]
    assert label.encoded and (label.channels, label.height, label.width, label.label) == (1, 6, 8, 0)
    assert Image.open(io.BytesIO(label.data)).mode == "L"   # a grayscale PNG of the indices
    net = data_net(("data", train["features"]), ("label", train["labels"]), batch=8)
    counts = np.zeros(4, dtype=np.int64)
    for i in range(8):
        rgb = net.blobs["data"].data[i][::-1].transpose(1, 2, 0).astype(np.uint8)   # BGR -> RGB
        expected = truth[rgb.tobytes()]   # the label image paired with this very image
        np.testing.assert_array_equal(net.blobs["label"].data[i, 0], expected)   # palette indices
        counts += np.bincount(expected.ravel(), minlength=4)
    assert s["class_pixel_counts"]["train"] == counts.tolist()
    assert sum(s["class_pixel_counts"]["val"]) == 2 * 48
    mean = formats.read_binaryproto(s["mean_file"])[0]   # BGR, as the Data layer gives it
    np.testing.assert_allclose(mean, net.blobs["data"].data.mean(axis=0), rtol=1e-5)
    assert read_summary(str(out)) == json.loads((out / "summary.json").read_text())
    assert "background" in (out / "summary.txt").read_text()


def test_segmentation_textfile_quantises_rgb_labels(tmp_path):
    colours = [(0, 0, 0), (200, 10, 10), (10, 200, 10)]
    palette = [v for c in colours for v in c]
    images, labels, truth = make_pairs(tmp_path / "src", n=3, palette=palette, mode="RGB", classes=3)
    # a slightly off colour still finds its class
    path = os.path.join(labels, "000.png")
    arr = np.asarray(Image.open(path)).copy()
    arr[0, 0] = (190, 20, 15)
    Image.fromarray(arr).save(path)
    (tmp_path / "map.txt").write_text("0 0 0\n200 10 10\n\n10 200 10\n")
    s = create_generic_dataset("segmentation", str(tmp_path / "o"), image_dir=images, label_dir=labels,
                               val_percent=0, colormap_file=str(tmp_path / "map.txt"), feature_encoding="none",
                               label_encoding="none", seed=1, stream=quiet())
    assert s["num_classes"] == 3 and s["color_palette"][:9] == palette and len(s["color_palette"]) == 768
    assert s["options"]["colormap"] is None and s["colormap"] == "textfile"
    found = {}
    feats = list(read_datums(s["stages"]["train"]["features"]))
    labs = list(read_datums(s["stages"]["train"]["labels"]))
    for (_, f), (_, lab) in zip(feats, labs):
        assert not lab.encoded and len(lab.data) == 48   # uint8 raw
        bgr = np.frombuffer(f.data, np.uint8).reshape(3, 6, 8)
        found[bgr[::-1].transpose(1, 2, 0).tobytes()] = np.frombuffer(lab.data, np.uint8).reshape(6, 8)
    for n, (rgb, idx) in enumerate(truth.items()):
        expected = idx.copy()
        if n == 0:
            expected[0, 0] = 1   # (190, 20, 15) is nearest to class 1's (200, 10, 10)
        np.testing.assert_array_equal(found[rgb], expected)


def test_segmentation_colormap_none_uses_grey_values(tmp_path):
    images, labels, truth = make_pairs(tmp_path / "src", n=4, mode="L", classes=3)
    s = create_generic_dataset("segmentation", str(tmp_path / "o"), image_dir=images, label_dir=labels,
                               colormap="none", val_percent=0, seed=1, stream=quiet())
    assert s["color_palette"] is None and s["class_labels"] is None and s["num_classes"] == 3
    assert not (tmp_path / "o" / "labels.txt").exists()
    values = data_net(("label", s["stages"]["train"]["labels"]), batch=4).blobs["label"].data
    assert sorted(np.unique(values).tolist()) == [0, 1, 2]


def test_segmentation_of_varying_sizes_without_same_shape(tmp_path):
    sizes = [(8, 6), (5, 7), (8, 6), (9, 4)]
    images, labels, _ = make_pairs(tmp_path / "src", n=4, sizes=sizes)
    with pytest.raises(DataError, match=r"shape \[3, \d, \d\] differs from \[3, \d, \d\] of the first entry"):
        create_generic_dataset("segmentation", str(tmp_path / "forced"), image_dir=images, label_dir=labels,
                               val_percent=0, seed=1, stream=quiet())
    out = tmp_path / "o"
    s = create_generic_dataset("segmentation", str(out), image_dir=images, label_dir=labels, val_percent=0,
                               force_same_shape=False, seed=1, stream=quiet())
    train = s["stages"]["train"]
    assert train["feature_shape"] is None and train["label_shape"] is None and train["mean"] is None
    assert s["mean_file"] is None and s["feature_dims"] is None and s["force_same_shape"] is False
    assert not (out / "train_db" / "mean.binaryproto").exists()
    feats = [d for _, d in read_datums(train["features"])]
    labs = [d for _, d in read_datums(train["labels"])]
    assert sorted((d.width, d.height) for d in feats) == sorted(sizes)
    assert [(d.width, d.height) for d in feats] == [(d.width, d.height) for d in labs]


def test_segmentation_errors(tmp_path):
    images, labels, _ = make_pairs(tmp_path / "src", n=3)
    other = list(PALETTE)
    other[3:6] = (1, 2, 3)
    im = Image.open(os.path.join(labels, "002.png"))
    im.putpalette(other)
    im.save(os.path.join(labels, "002.png"))
    with pytest.raises(DataError, match="All label images must use the same palette"):
        create_generic_dataset("segmentation", str(tmp_path / "o"), image_dir=images, label_dir=labels,
                               val_percent=0, stream=quiet())
    (tmp_path / "bad.txt").write_text("0 0 0\n255 x 0\n")
    with pytest.raises(DataError, match="Your color map file seems to be badly formatted: 'x' is not an integer"):
        create_generic_dataset("segmentation", str(tmp_path / "o"), image_dir=images, label_dir=labels,
                               colormap="textfile", colormap_file=str(tmp_path / "bad.txt"))
    with pytest.raises(DataError, match="needs -colormap-file"):
        create_generic_dataset("segmentation", str(tmp_path / "o"), image_dir=images, label_dir=labels,
                               colormap="textfile")
    with pytest.raises(DataError, match="-class-labels .*: File does not exist"):
        create_generic_dataset("segmentation", str(tmp_path / "o"), image_dir=images, label_dir=labels,
                               class_labels=str(tmp_path / "none.txt"))
    with pytest.raises(DataError, match="JPEG is lossy"):
        create_generic_dataset("segmentation", str(tmp_path / "o"), image_dir=images, label_dir=labels,
                               label_encoding="jpg")
    rgb_images, rgb_labels, _ = make_pairs(tmp_path / "rgb", n=2, mode="RGB")
    with pytest.raises(DataError, match="is mode RGB: -colormap label needs one-channel label images"):
        create_generic_dataset("segmentation", str(tmp_path / "o"), image_dir=rgb_images, label_dir=rgb_labels)
    im.putpalette(PALETTE)
    im.save(os.path.join(labels, "002.png"))
    small = Image.new("P", (3, 3))
    small.putpalette(PALETTE)
    small.save(os.path.join(labels, "001.png"))
    with pytest.raises(DataError, match=r"is 8x6 but its label image .*001.png is 3x3"):
        create_generic_dataset("segmentation", str(tmp_path / "o"), image_dir=images, label_dir=labels,
                               val_percent=0, stream=quiet())
    assert not (tmp_path / "o" / "summary.json").exists()   # a failed build leaves no dataset behind
    assert not (tmp_path / "o" / "train_db").exists()


# ----- processing and the folder rules ----------------------------------------------------------

def test_processing_pairs_and_split_of_100_at_10_percent(tmp_path):
    inputs, targets = tmp_path / "in", tmp_path / "out"
    (inputs / "sub").mkdir(parents=True)
    (targets / "sub").mkdir(parents=True)
    for i in range(100):
        sub = "sub" if i % 2 else ""   # found recursively; sorted by path in both folders
        Image.fromarray(np.full((4, 5), i, np.uint8)).save(inputs / sub / f"{i:03d}.png")
        Image.fromarray(np.full((4, 5, 3), 255 - i, np.uint8)).save(targets / sub / f"{i:03d}.PNG")
    s = create_generic_dataset("processing", str(tmp_path / "ds"), input_dir=str(inputs), target_dir=str(targets),
                               channel_conversion="L", seed=4, stream=quiet())
    assert {k: v["entries"] for k, v in s["stages"].items()} == {"train": 90, "val": 10}
    assert s["stages"]["train"]["feature_shape"] == [1, 4, 5] and s["stages"]["train"]["label_shape"] == [1, 4, 5]
    for stage in ("train", "val"):
        st = s["stages"][stage]
        net = data_net(("data", st["features"]), ("label", st["labels"]), batch=st["entries"])
        np.testing.assert_array_equal(net.blobs["label"].data, 255 - net.blobs["data"].data)   # paired
    val = data_net(("data", s["stages"]["val"]["features"]), batch=10).blobs["data"].data[:, 0, 0, 0]
    again = create_generic_dataset("processing", str(tmp_path / "ds2"), input_dir=str(inputs),
                                   target_dir=str(targets), channel_conversion="L", seed=4, stream=quiet())
    val2 = data_net(("data", again["stages"]["val"]["features"]), batch=10).blobs["data"].data[:, 0, 0, 0]
    np.testing.assert_array_equal(val, val2)   # one seeded shuffle


def test_processing_separate_val_folders_and_pairing_errors(tmp_path):
    a, b = make_pairs(tmp_path / "t", n=3)[:2]
    va, vb = make_pairs(tmp_path / "v", n=2)[:2]
    s = create_generic_dataset("processing", str(tmp_path / "ds"), input_dir=a, target_dir=b, val_input_folder=va,
                               val_target_folder=vb, seed=1, stream=quiet())
    assert {k: v["entries"] for k, v in s["stages"].items()} == {"train": 3, "val": 2}
    with pytest.raises(DataError, match="-val-input-folder needs -val-target-folder"):
        create_generic_dataset("processing", str(tmp_path / "x"), input_dir=a, target_dir=b, val_input_folder=va)
    os.rename(os.path.join(b, "001.png"), os.path.join(b, "001b.png"))
    with pytest.raises(DataError, match=r"No corresponding feature/label pair found for \(.*001.png,.*001b.png\)"):
        create_generic_dataset("processing", str(tmp_path / "x"), input_dir=a, target_dir=b)
    with pytest.raises(DataError, match="Folder does not exist or is not reachable"):
        create_generic_dataset("processing", str(tmp_path / "x"), input_dir=str(tmp_path / "no"), target_dir=b)
    os.unlink(os.path.join(b, "001b.png"))
    with pytest.raises(DataError, match="3 images in .* but 2 in"):
        create_generic_dataset("processing", str(tmp_path / "x"), input_dir=a, target_dir=b)


def test_an_existing_dataset_needs_overwrite(tmp_path):
    out = tmp_path / "g"
    out.mkdir()
    (out / "job.log").write_text("kept")
    create_generic_dataset("gradients", str(out), train_count=2, val_count=1, width=4, height=4, stream=quiet())
    with pytest.raises(DataError, match="already holds a dataset .*--overwrite"):
        create_generic_dataset("gradients", str(out), train_count=2, stream=quiet())
    s = create_generic_dataset("gradients", str(out), train_count=3, val_count=0, width=4, height=4,
                               overwrite=True, stream=quiet())
    assert set(s["stages"]) == {"train"} and not (out / "val_db").exists()
    assert (out / "job.log").read_text() == "kept"


# ----- generic: existing LMDBs ------------------------------------------------------------------

def write_db(path, arrays, label=0):
    with DatumWriter(str(path), key_format="%d") as w:
        for a in arrays:
            d = caffe_pb2.Datum(channels=a.shape[0], height=a.shape[1], width=a.shape[2], label=label)
            if a.dtype == np.uint8:
                d.data = a.tobytes()
            else:
                d.float_data.extend(a.ravel().tolist())
            w.put(d)


def test_generic_validates_existing_lmdbs(tmp_path):
    feats = [np.full((1, 5, 4), i, np.uint8) for i in range(6)]
    write_db(tmp_path / "ti", feats)
    write_db(tmp_path / "tl", [np.array([[[i * 0.5, -1.5]]], np.float32) for i in range(6)])
    write_db(tmp_path / "vi", feats[:2])
    formats.write_binaryproto(np.zeros((1, 1, 5, 4), np.float32), str(tmp_path / "mean.binaryproto"))
    log = quiet()
    out = tmp_path / "ds"
    s = create_generic_dataset("generic", str(out), train_images=str(tmp_path / "ti"),
                               train_labels=str(tmp_path / "tl"), val_images=str(tmp_path / "vi"),
                               mean=str(tmp_path / "mean.binaryproto"), stream=log)
    assert "6 entries found with shape 4x5x1" in log.getvalue()
    assert s["feature_dims"] == [5, 4, 1] and s["mean_file"] == str(tmp_path / "mean.binaryproto")
    assert s["stages"]["train"] == {"entries": 6, "features": str(tmp_path / "ti"), "labels": str(tmp_path / "tl"),
                                    "mean": str(tmp_path / "mean.binaryproto"), "feature_shape": [1, 5, 4],
                                    "label_shape": [1, 1, 2]}
    assert s["stages"]["val"]["labels"] is None and s["stages"]["val"]["label_shape"] == [1]
    assert s["label_range"] == [-1.5, 2.5]
    assert not (out / "train_db").exists()   # nothing copied
    # a reader accepts paths relative to the dataset folder
    moved = json.loads((out / "summary.json").read_text())
    moved["stages"]["train"]["features"] = "../ti"
    (out / "summary.json").write_text(json.dumps(moved))
    assert read_summary(str(out))["stages"]["train"]["features"] == str(tmp_path / "ti")


def test_generic_errors(tmp_path):
    write_db(tmp_path / "ti", [np.zeros((1, 5, 4), np.uint8)] * 3 + [np.zeros((1, 6, 4), np.uint8)])
    write_db(tmp_path / "tl", [np.zeros((1, 1, 2), np.float32)] * 3)
    with pytest.raises(DataError, match="-train-images .*nope: Folder does not exist"):
        create_generic_dataset("generic", str(tmp_path / "o"), train_images=str(tmp_path / "nope"))
    with pytest.raises(DataError, match="-val-labels .*: Folder does not exist"):
        create_generic_dataset("generic", str(tmp_path / "o"), train_images=str(tmp_path / "ti"),
                               val_images=str(tmp_path / "ti"), val_labels=str(tmp_path / "nope"))
    with pytest.raises(DataError, match="-mean .*: File does not exist"):
        create_generic_dataset("generic", str(tmp_path / "o"), train_images=str(tmp_path / "ti"),
                               mean=str(tmp_path / "m.binaryproto"))
    with pytest.raises(DataError, match="entry '3' has shape 4x6x1 .* first entry '0' has 4x5x1"):
        create_generic_dataset("generic", str(tmp_path / "o"), train_images=str(tmp_path / "ti"))
    with pytest.raises(DataError, match="has 4 entries but -train-labels .* has 3"):
        create_generic_dataset("generic", str(tmp_path / "o"), train_images=str(tmp_path / "ti"),
                               train_labels=str(tmp_path / "tl"), force_same_shape=False)
    # without force_same_shape only the first entry is read: the odd one passes
    s = create_generic_dataset("generic", str(tmp_path / "o"), train_images=str(tmp_path / "ti"),
                               force_same_shape=False, stream=quiet())
    assert s["stages"]["train"]["feature_shape"] == [1, 5, 4] and s["shapes_checked"] is False
    with pytest.raises(DataError, match="no summary.json"):
        read_summary(str(tmp_path))
    with pytest.raises(DataError, match="unknown dataset kind 'other'"):
        create_generic_dataset("other", str(tmp_path / "x"))
    with pytest.raises(DataError, match="--kind gradients: .*colormap"):
        create_generic_dataset("gradients", str(tmp_path / "x"), colormap="label")


# ----- synthetic shapes and the CLI -------------------------------------------------------------

def test_shapes_dataset_has_three_classes_on_textured_backgrounds(tmp_path):
    images, labels, classes = make_shapes_dataset(str(tmp_path / "shapes"), count=12, size=32, seed=2)
    assert open(classes).read() == "background\nsquare\ndisc\ntriangle\n"
    names = sorted(os.listdir(images))
    assert names == sorted(os.listdir(labels)) and len(names) == 12
    present = set()
    for n in names:
        lab = Image.open(os.path.join(labels, n))
        assert lab.mode == "P" and lab.getpalette()[:12] == PALETTE[:12]
        idx = np.asarray(lab)
        present |= set(np.unique(idx).tolist())
        rgb = np.asarray(Image.open(os.path.join(images, n)))
        assert rgb.shape == (32, 32, 3)
        assert rgb[idx == 0].std() > 5   # textured, noisy background
    assert {1, 2, 3} <= present
    again = make_shapes_dataset(str(tmp_path / "again"), count=12, size=32, seed=2)
    assert open(os.path.join(again[0], names[5]), "rb").read() == open(os.path.join(images, names[5]), "rb").read()


def test_cli_kinds(tmp_path, capsys):
    images, labels, classes = make_shapes_dataset(str(tmp_path / "shapes"), count=10, size=16, seed=1)
    out = tmp_path / "seg"
    assert main(["dataset", "create", "--kind", "segmentation", images, labels, str(out), "-class-labels", classes,
                 "-val-percent", "20", "-seed", "2", "--workers", "2", "-no-force-same-shape"]) == 0
    printed = capsys.readouterr().out
    assert "triangle" in printed and f"wrote {out}: train_db (8), val_db (2)" in printed
    s = read_summary(str(out))
    assert s["kind"] == "segmentation" and s["force_same_shape"] is False and s["num_classes"] == 4
    assert main(["dataset", "create", "--kind", "gradients", str(tmp_path / "g"), "-train-count", "4",
                 "-val-count", "2", "-width", "6", "-height", "5", "--feature-encoding", "none"]) == 0
    g = read_summary(str(tmp_path / "g"))
    assert g["feature_dims"] == [5, 6, 1] and g["feature_encoding"] == "none"
    assert main(["dataset", "create", "--kind", "generic", str(tmp_path / "o"), "-train-images",
                 str(tmp_path / "g" / "train_db" / "features"), "-train-labels",
                 str(tmp_path / "g" / "train_db" / "labels")]) == 0
    assert read_summary(str(tmp_path / "o"))["stages"]["train"]["label_shape"] == [1, 1, 2]
    capsys.readouterr()
    assert main(["dataset", "create", "--kind", "gradients", str(tmp_path / "g3"), "-val-percent", "5"]) == 1
    assert "-val-percent is not an option of --kind gradients" in capsys.readouterr().err
    assert main(["dataset", "create", "--kind", "processing", images, str(tmp_path / "p")]) == 1
    assert "takes INPUT_DIR TARGET_DIR OUTDIR" in capsys.readouterr().err
    assert main(["dataset", "create", "--kind", "gradients", str(tmp_path / "g4"), "-resize", "4x4"]) == 1
    assert "-resize is an option of --kind classification" in capsys.readouterr().err
    assert main(["dataset", "create", str(tmp_path / "g4"), "-width", "4"]) == 1
    assert "-width is not an option of --kind classification" in capsys.readouterr().err
