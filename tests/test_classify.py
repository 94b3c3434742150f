"""brewnet classify (issue 11.2, 11.5): bundles written by hand here (deploy.prototxt, weights,
labels.txt, preprocess.json after brewnet/inference/bundle.py's schema), so the schema is read
independently of `brewnet deploy`.

Covers: colour stays BGR from a PNG to the net; images, a list, a folder and the LMDB that
`brewnet dataset create` built from that folder give identical predictions (resize mode, mean
image and crop included); metrics on a hand-checkable case; unreadable files reported and the run
going on; conversions of channel count and size with one warning per run; clear errors for
missing bundle files and mismatched labels; JSON keys; flat memory over 500 vs 2000 images.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from PIL import Image

import brewnet
from brewnet import formats
from brewnet.data.builder import create_dataset
from brewnet.data.image import encode_image
from brewnet.data.lmdb_io import DatumWriter
from brewnet.errors import BrewnetError, DataError
from brewnet.inference.bundle import Bundle, BundleError
from brewnet.inference.classify import classify
from brewnet.inference.loaded import LoadedBundle
from brewnet.inference.results import TopImages
from brewnet.inference.sources import sources_from_folder, sources_from_images, sources_from_list, sources_from_lmdb
from brewnet.inference.preprocess import Preprocessor
from brewnet.pycaffe.io import array_to_datum
from brewnet.proto import caffe_pb2

BGR_LABELS = ("blue", "green", "red")  # class k <- the mean of channel k (Caffe's BGR order)


def make_bundle(path, *, channels=3, stored=(4, 4), labels=BGR_LABELS, transform="scale: 0.00392156862745098",
                crop=None, mean=None, resize=None, batch=10, weights="channel", seed=0):
    """A bundle of Input -> InnerProduct -> Softmax.  ``weights="channel"``: class k scores the
    mean of input channel k (k mod C); ``"random"``: seeded Gaussian weights."""
    os.makedirs(path, exist_ok=True)
    h, w = crop or stored
    k = len(labels)
    (path / "deploy.prototxt").write_text(
        'name: "handmade"\n'
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: {batch} dim: {channels} '
        f'dim: {h} dim: {w} }} }} }}\n'
        f'layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        f'inner_product_param {{ num_output: {k} }} }}\n'
        'layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }\n')
    net = brewnet.Net(str(path / "deploy.prototxt"), brewnet.TEST)
    if weights == "channel":
        wts = np.zeros((k, channels * h * w), np.float32)
        for c in range(k):
            ch = c % channels
            wts[c, ch * h * w:(ch + 1) * h * w] = 10.0 / (h * w)
    else:
        wts = np.random.default_rng(seed).normal(0, 0.5, size=(k, channels * h * w)).astype(np.float32)
    net.params["ip"][0].data[...] = wts
    net.params["ip"][1].data[...] = 0
    net.save(str(path / "weights.caffemodel"))
    (path / "labels.txt").write_text("".join(f"{n}\n" for n in labels))
    if mean is not None:
        formats.write_binaryproto(np.asarray(mean, np.float32)[None], str(path / "mean.binaryproto"))
        transform += ' mean_file: "mean.binaryproto"'
    if crop:
        transform += f" crop_size: {crop[0]}"
    spec = {"version": 1, "input": "data", "input_shape": [channels, h, w], "channels": channels,
            "channel_order": "BGR" if channels == 3 else "gray", "stored_size": list(stored),
            "resize": resize, "transform_param": transform,
            "crop": {"height": crop[0], "width": crop[1]} if crop else None,
            "mean": {"image": "mean.binaryproto"} if mean is not None else None,
            "scale": 1 / 255, "input_range": [0, 255], "source": "written by hand in tests/test_classify.py",
            "baked": False}
    (path / "preprocess.json").write_text(json.dumps(spec, indent=1))
    (path / "info.json").write_text(json.dumps({"name": "handmade"}))
    return str(path)


def bright(channel_rgb: int, size=(4, 4), value=255) -> np.ndarray:
    """An H×W×3 RGB image whose channel ``channel_rgb`` (0 = R in the file) is bright."""
    a = np.zeros(size + (3,), np.uint8)
    a[:, :, channel_rgb] = value
    return a


def save(path, hwc) -> str:
    Image.fromarray(hwc).save(path)
    return str(path)


class WarningCounter(logging.Handler):
    """Counts brewnet's warnings (its logger may not propagate to the root, so caplog could miss)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())

    def __enter__(self):
        logging.getLogger("brewnet").addHandler(self)
        return self

    def __exit__(self, *exc):
        logging.getLogger("brewnet").removeHandler(self)


def top_labels(result):
    return [p["top"][0][0] for p in result.iter_predictions()]


# ----- BGR semantics ------------------------------------------------------------------------------
def test_colour_png_keeps_bgr_order_to_the_net(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    red = save(tmp_path / "red.png", bright(0))     # R bright: Caffe's channel index 2
    blue = save(tmp_path / "blue.png", bright(2))   # B bright: index 0
    green = tmp_path / "green.jpg"
    Image.fromarray(bright(1)).save(green, quality=95)
    result = classify(bundle, [red, blue, str(green)], workers=0)
    assert top_labels(result) == ["red", "blue", "green"]  # an RGB mix-up would say blue for red.png
    x = Preprocessor.from_bundle(bundle)(red)  # (3, 4, 4) float32: the red plane is BGR index 2
    assert x.shape == (3, 4, 4) and x[2].min() == pytest.approx(1.0) and x[0].max() == 0 and x[1].max() == 0


# ----- the same pictures through every kind of source ---------------------------------------------
@pytest.fixture(scope="module")
def picture_set(tmp_path_factory):
    """12 colour pictures of 9x7 (WxH) in 3 class folders, a list file over them, the LMDB that
    `brewnet dataset create` made from the folder (resized to 6x5 by DIGITS' crop mode, PNG),
    and a bundle with that resize, the train mean image, a 4x4 centre crop and random weights."""
    root = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(7)
    folder = root / "photos"
    lines = []
    for k, name in enumerate(BGR_LABELS):
        (folder / name).mkdir(parents=True)
        for i in range(4):
            save(folder / name / f"p{i}.png", rng.integers(0, 256, size=(7, 9, 3), dtype=np.uint8))
            lines.append(f"photos/{name}/p{i}.png {k}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    data = root / "data"
    create_dataset(str(folder), str(data), val_percent=0, shuffle=False, resize=(6, 5), resize_mode="crop",
                   encoding="png", seed=1, stream=open(os.devnull, "w"))
    mean = formats.read_binaryproto(str(data / "mean.binaryproto"))[0]  # (3, 5, 6)
    bundle = make_bundle(root / "bundle", stored=(5, 6), crop=(4, 4), mean=mean, weights="random", seed=3,
                         resize={"width": 6, "height": 5, "mode": "crop"}, batch=5)
    return {"root": root, "folder": str(folder), "list": str(root / "list.txt"), "lmdb": str(data / "train_db"),
            "bundle": bundle, "mean": mean,
            "paths": [str(folder / n / f"p{i}.png") for n in BGR_LABELS for i in range(4)]}


def test_file_and_its_datum_give_identical_arrays(picture_set):
    pre = Preprocessor.from_bundle(picture_set["bundle"])
    records = [d for _, d in __import__("brewnet.data.lmdb_io", fromlist=["x"]).read_datums(picture_set["lmdb"])]
    assert len(records) == 12 and all(d.encoded for d in records)
    for path, datum in zip(picture_set["paths"], records):
        from_file = pre.load_file(path)          # (3, 5, 6) uint8, BGR
        from_datum = pre.datum_to_input(datum)   # decoded as the Data layer decodes it
        np.testing.assert_array_equal(from_file, from_datum)
    # the transform: centre crop of 5x6 -> 4x4 at (0, 1), the mean at the cropped place, scale 1/255
    x = pre(picture_set["paths"][0])
    stored = pre.load_file(picture_set["paths"][0]).astype(np.float32)
    expected = (stored[:, 0:4, 1:5] - picture_set["mean"][:, 0:4, 1:5]) * np.float32(1 / 255)
    np.testing.assert_allclose(x, expected, rtol=1e-6, atol=1e-6)


def test_images_list_folder_and_lmdb_predict_identically(picture_set):
    bundle = LoadedBundle(picture_set["bundle"])
    runs = {
        "images": classify(bundle, sources_from_images(picture_set["paths"]), top=3),
        "list": classify(bundle, sources_from_list(picture_set["list"]), top=3),
        "folder": classify(bundle, sources_from_folder(picture_set["folder"]), top=3),
        "lmdb": classify(bundle, sources_from_lmdb(picture_set["lmdb"]), top=3, workers=0),
    }
    tops = {k: [p["top"] for p in r.iter_predictions()] for k, r in runs.items()}
    assert len(tops["images"]) == 12
    assert len({json.dumps(t) for t in tops["images"][0:4]}) > 1  # random weights: not all the same
    for k in ("list", "folder", "lmdb"):
        assert tops[k] == tops["images"], k  # same arrays, same batches: the same numbers
    truths = [p.get("label") for p in runs["list"].iter_predictions()]
    assert truths == [n for n in BGR_LABELS for _ in range(4)]
    for k in ("list", "folder", "lmdb"):
        assert [p["label"] for p in runs[k].iter_predictions()] == truths, k
        assert runs[k].confusion.tolist() == runs["list"].confusion.tolist()
    assert runs["images"].top1 is None and runs["lmdb"].labelled == 12


def test_process_workers_and_inline_decoding_agree_with_threads(picture_set):
    bundle = LoadedBundle(picture_set["bundle"])
    src = sources_from_folder(picture_set["folder"])
    threads = [p["top"] for p in classify(bundle, src, workers=2).iter_predictions()]
    inline = [p["top"] for p in classify(bundle, src, workers=0).iter_predictions()]
    procs = [p["top"] for p in classify(bundle, src, workers=2, worker_kind="process").iter_predictions()]
    assert threads == inline == procs


def test_batch_size_does_not_change_predicted_labels(picture_set):
    src = sources_from_folder(picture_set["folder"])
    a = classify(picture_set["bundle"], src, batch=5)
    b = classify(picture_set["bundle"], src, batch=1)
    assert top_labels(a) == top_labels(b)
    for p, q in zip(a.iter_predictions(), b.iter_predictions()):
        np.testing.assert_allclose([v for _, v in p["top"]], [v for _, v in q["top"]], rtol=1e-5, atol=1e-6)


# ----- metrics --------------------------------------------------------------------------------------
def test_accuracy_confusion_and_per_class_on_a_known_case(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    folder = tmp_path / "f"
    for name, rgb_channel in (("blue", 2), ("green", 1), ("red", 0)):
        (folder / name).mkdir(parents=True)
        save(folder / name / "a.png", bright(rgb_channel))
    save(folder / "green" / "b.png", bright(0))  # a red picture filed under green
    done = []
    r = classify(bundle, sources_from_folder(str(folder)), progress=lambda d, t: done.append((d, t)))
    assert r.count == 4 and r.labelled == 4
    assert r.confusion.tolist() == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert r.top1 == 0.75 and r.top5 == 1.0  # three classes: top-5 is top-3
    assert r.per_class == [{"label": "blue", "count": 1, "precision": 1.0, "recall": 1.0},
                           {"label": "green", "count": 2, "precision": 1.0, "recall": 0.5},
                           {"label": "red", "count": 1, "precision": 0.5, "recall": 1.0}]
    assert done[-1] == (4, 4)


# ----- errors and conversions -------------------------------------------------------------------------
def test_unreadable_files_are_reported_and_the_run_goes_on(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    good = [save(tmp_path / f"g{i}.png", bright(i % 3)) for i in range(3)]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    paths = [good[0], str(bad), good[1], str(tmp_path / "missing.jpg"), good[2]]
    r = classify(bundle, paths, batch=2)
    assert r.count == 3
    assert [e["source"] for e in r.errors] == [str(bad), str(tmp_path / "missing.jpg")]
    assert "cannot decode" in r.errors[0]["error"] and "not found" in r.errors[1]["error"]
    assert [p["source"] for p in r.iter_predictions()] == good
    assert top_labels(r) == ["red", "green", "blue"]


def test_wrong_channel_count_and_size_are_converted_with_one_warning(tmp_path):
    colour = make_bundle(tmp_path / "colour")
    grey_bundle = make_bundle(tmp_path / "grey", channels=1, labels=("only",))
    rng = np.random.default_rng(0)
    g = rng.integers(0, 256, size=(4, 4), dtype=np.uint8)
    grey_files = [save(tmp_path / f"grey{i}.png", g) for i in range(2)]
    as_colour = save(tmp_path / "as_colour.png", np.repeat(g[:, :, None], 3, axis=2))
    with WarningCounter() as warned:
        r = classify(colour, grey_files + [as_colour], top=3)
    assert r.conversions["channels"] == 2
    assert sum("converted to colour" in m for m in warned.records) == 1  # once per run, counted
    preds = [p["top"] for p in r.iter_predictions()]
    assert preds[0] == preds[2]  # grey -> colour as Pillow converts (the dataset builder's way)

    # colour -> grey, and a size the dataset did not store (no resize: squashed, warned)
    c = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    cfile = save(tmp_path / "c.png", c)
    big = rng.integers(0, 256, size=(9, 7), dtype=np.uint8)
    bigfile = save(tmp_path / "big.png", big)
    pre = Preprocessor.from_bundle(grey_bundle)
    with WarningCounter() as warned:
        got = pre.load_file(cfile)
        squashed = pre.load_file(bigfile)
    np.testing.assert_array_equal(got[0], np.asarray(Image.fromarray(c).convert("L")))
    np.testing.assert_array_equal(squashed[0], np.asarray(Image.fromarray(big).resize((4, 4), Image.BILINEAR)))
    assert pre.conversions == {"channels": 1, "size": 1}
    assert len(warned.records) == 2 and "squashed" in warned.records[1]


def test_wrong_sized_and_grey_datums_are_converted(tmp_path):
    pre = Preprocessor.from_bundle(make_bundle(tmp_path / "b", stored=(4, 4)))
    a = np.random.default_rng(1).integers(0, 256, size=(3, 4, 4), dtype=np.uint8)
    np.testing.assert_array_equal(pre.datum_to_input(array_to_datum(a)), a)  # raw Datum: as stored
    big = np.random.default_rng(2).integers(0, 256, size=(1, 6, 5), dtype=np.uint8)
    out = pre.datum_to_input(array_to_datum(big))
    expected = Image.fromarray(big[0]).convert("RGB").resize((4, 4), Image.BILINEAR)
    np.testing.assert_array_equal(out, np.asarray(expected)[:, :, ::-1].transpose(2, 0, 1))
    assert pre.conversions == {"channels": 1, "size": 1}
    floats = array_to_datum(np.zeros((3, 5, 5), np.float32))
    with pytest.raises(DataError, match="float Datum"):
        pre.datum_to_input(floats)


def test_missing_bundle_file_is_a_clear_error(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    os.remove(os.path.join(bundle, "weights.caffemodel"))
    with pytest.raises(BundleError, match="missing weights.caffemodel"):
        classify(bundle, [save(tmp_path / "x.png", bright(0))])
    proc = subprocess.run([sys.executable, "-m", "brewnet", "classify", "-bundle", bundle, str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "missing weights.caffemodel" in proc.stderr


def test_mismatched_labels_are_clear_errors(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    img = save(tmp_path / "x.png", bright(0))
    (tmp_path / "list.txt").write_text("x.png 2\nx.png 0\nx.png 3\nx.png\n")
    with pytest.raises(DataError, match=r"list\.txt:3: label 3, but the bundle has 3 labels"):
        classify(bundle, sources_from_list(str(tmp_path / "list.txt")))
    (tmp_path / "f" / "purple").mkdir(parents=True)
    save(tmp_path / "f" / "purple" / "x.png", bright(0))
    with pytest.raises(DataError, match="'purple' are not labels"):
        classify(bundle, sources_from_folder(str(tmp_path / "f")))
    with open(os.path.join(bundle, "labels.txt"), "a") as f:
        f.write("violet\n")
    with pytest.raises(BundleError, match="4 labels but the net's output 'prob' has 3 scores"):
        classify(bundle, [img])


def test_an_inconsistent_preprocess_json_is_refused(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    spec = json.loads((tmp_path / "b" / "preprocess.json").read_text())
    with pytest.raises(BundleError, match="must agree"):
        Preprocessor(dict(spec, mean={"image": "mean.binaryproto"}), np.zeros((3, 4, 4), np.float32))
    with pytest.raises(BundleError, match="input_shape"):
        Preprocessor(dict(spec, input_shape=[3, 5, 5]))
    with pytest.raises(BundleError, match="BGR"):
        Preprocessor(dict(spec, channel_order="RGB"))
    assert Bundle.load(bundle).preprocess == spec


# ----- the command and its JSON -----------------------------------------------------------------------
def test_cli_json_has_the_promised_keys(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    lines = []
    for i, ch in enumerate((2, 1, 0, 0)):
        save(tmp_path / f"i{i}.png", bright(ch))
        lines.append(f"i{i}.png {min(i, 2)}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, "-m", "brewnet", "classify", "-bundle", bundle, "-list",
                           str(tmp_path / "list.txt"), "-json", str(out), "-top", "2"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert {"count", "top1", "top5", "confusion", "per_class", "predictions", "errors"} <= set(doc)
    assert doc["count"] == 4 and doc["top1"] == 1.0 and len(doc["confusion"]) == 3
    assert doc["predictions"][2] == {"source": str(tmp_path / "i2.png"), "label": "red",
                                     "top": doc["predictions"][2]["top"]}
    assert [len(p["top"]) for p in doc["predictions"]] == [2] * 4
    assert "top-1 accuracy: 1.0000 (4/4)" in proc.stdout and "1. 0.9999  red" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "brewnet", "classify", "-bundle", bundle, "-list",
                           str(tmp_path / "list.txt"), "-json", str(out), "-summary_only"],
                          capture_output=True, text=True, timeout=120)
    doc = json.loads(out.read_text())
    assert proc.returncode == 0 and "predictions" not in doc and doc["count"] == 4
    assert "i0.png" not in proc.stdout


def test_cli_visualize_needs_one_image_and_writes_the_layers(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    img = save(tmp_path / "x.png", bright(0))
    cmd = [sys.executable, "-m", "brewnet", "classify", "-bundle", bundle, img, "-visualize", str(tmp_path / "viz")]
    proc = subprocess.run(cmd[:6] + [img] + cmd[6:], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "exactly one IMAGE" in proc.stderr
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "viz" / "visualization.json").read_text())
    assert doc["blobs"] and all((tmp_path / "viz" / b["image"]["path"]).is_file() for b in doc["blobs"])


def test_top_images_keeps_exactly_the_k_best_per_class_over_batches():
    rng = np.random.default_rng(11)
    probs = np.round(rng.dirichlet(np.ones(4), size=300), 2).astype(np.float32)  # rounded: many ties
    sources = [f"img{i}" for i in range(300)]
    tops = TopImages(4, 5)
    for s in range(0, 300, 37):  # uneven batches
        tops(sources[s:s + 37], probs[s:s + 37])
    kept = dict(tops.candidates())
    assert len(kept) <= 4 * 5
    for c in range(4):
        best = np.argsort(-probs[:, c], kind="stable")[:5]  # ties: the earlier image
        assert all(sources[i] in kept for i in best)


def test_cli_top_images_writes_grids_and_json(picture_set, tmp_path):
    out = tmp_path / "out.json"
    grids = tmp_path / "grids"
    proc = subprocess.run([sys.executable, "-m", "brewnet", "classify", "-bundle", picture_set["bundle"],
                           "-lmdb", picture_set["lmdb"], "-top_images", "2", "-top_images_dir", str(grids),
                           "-json", str(out), "-summary_only"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert set(doc["top_images"]) == set(BGR_LABELS)
    assert all(len(v) == 2 for v in doc["top_images"].values())
    assert json.loads((grids / "top_images.json").read_text()) == doc["top_images"]
    pngs = sorted((grids / "top_images").glob("*.png"))
    assert len(pngs) == 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    for label, entries in doc["top_images"].items():  # most confident first, from the LMDB
        assert [e["prob"] for e in entries] == sorted((e["prob"] for e in entries), reverse=True)
        assert all(e["source"].startswith(picture_set["lmdb"] + ":") for e in entries)


def test_argument_mistakes_are_brewnet_errors(tmp_path):
    from brewnet.commands import main as cli
    bundle = make_bundle(tmp_path / "b")
    assert cli.main(["classify", "-bundle", bundle]) == 1  # nothing to classify
    assert cli.main(["classify", "-bundle", bundle, "x.png", "-lmdb", "db"]) == 1
    with pytest.raises(DataError, match="is a folder"):
        sources_from_images([str(tmp_path)])
    with pytest.raises(BrewnetError, match="top must be"):
        classify(bundle, [], top=0)


# ----- memory stays flat ---------------------------------------------------------------------------
def _lmdb_of(path, n, rng):
    with DatumWriter(str(path)) as w:
        for i in range(n):
            d = caffe_pb2.Datum(encoded=True, label=i % 3,
                                data=encode_image(rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8), "png"))
            w.put(d)
    return str(path)


def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path):
    """tracemalloc sees Python and numpy allocations (torch's are the same per batch anyway): the
    peak over 2000 images stays within 256 KB of the peak over 500.  Keeping every prediction in
    memory would add ~1500 * 600 bytes; keeping decoded images, 1500 * 48 bytes plus objects."""
    rng = np.random.default_rng(5)
    small, large = _lmdb_of(tmp_path / "db500", 500, rng), _lmdb_of(tmp_path / "db2000", 2000, rng)
    bundle = LoadedBundle(make_bundle(tmp_path / "b", batch=50))
    peaks = {}
    for name, db in (("warm-up", small), (500, small), (2000, large)):
        tracemalloc.start()
        for summary_only in (False, True):
            r = classify(bundle, sources_from_lmdb(db), workers=2, summary_only=summary_only)
            assert r.count == (2000 if name == 2000 else 500)
            r.close()
        peaks[name] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[2000] <= peaks[500] + 256 * 1024, peaks


def test_resize_follows_the_bundles_interpolation(tmp_path):
    """Pillow's bilinear (brewnet dataset create) and cv::resize's (an ImageData layer's
    new_height/new_width) differ when shrinking; each bundle gets the one its images had."""
    from brewnet.data.image import digits_resize, load_image_file

    big = save(tmp_path / "big.png", np.random.default_rng(4).integers(0, 256, size=(17, 23, 3), dtype=np.uint8))
    pillow = Preprocessor.from_bundle(make_bundle(tmp_path / "p", stored=(5, 6), resize={
        "width": 6, "height": 5, "mode": "squash", "interpolation": "pillow_bilinear"}))
    opencv = Preprocessor.from_bundle(make_bundle(tmp_path / "o", stored=(5, 6), resize={
        "width": 6, "height": 5, "mode": "squash", "interpolation": "opencv_bilinear"}))
    a, b = pillow.load_file(big), opencv.load_file(big)
    np.testing.assert_array_equal(b, load_image_file(big, True, 5, 6))  # ImageData's own reader
    expected = np.asarray(digits_resize(Image.open(big).convert("RGB"), 6, 5, "squash"))
    np.testing.assert_array_equal(a, expected[:, :, ::-1].transpose(2, 0, 1))
    assert not np.array_equal(a, b)
    assert pillow.conversions == opencv.conversions == {"channels": 0, "size": 0}  # resizing was expected


def test_lmdb_source_reopens_its_map_and_reads_every_record_once(tmp_path, monkeypatch):
    """sources_from_lmdb reopens the environment every MAP_WINDOW bytes (so the memory map's
    resident pages do not pile up); with a window of ~3 records every record still comes once,
    in key order, with its label."""
    import brewnet.inference.sources as C

    db = _lmdb_of(tmp_path / "db", 20, np.random.default_rng(9))
    monkeypatch.setattr(C, "MAP_WINDOW", 3 * len(encode_image(np.zeros((4, 4, 3), np.uint8), "png")))
    sources = [it.source for it in sources_from_lmdb(db).items(list(BGR_LABELS))]
    assert sources == [f"{db}:{i:08d}" for i in range(20)]
    r = classify(make_bundle(tmp_path / "b"), sources_from_lmdb(db), workers=0)
    assert r.count == 20 and r.labelled == 20 and r.confusion.sum(axis=1).tolist() == [7, 7, 6]


def test_auto_workers_decode_in_processes_only_where_it_pays(tmp_path):
    from brewnet.inference.sources import Sources
    from brewnet.inference.workers import PROCESS_MIN_IMAGES, choose_worker_kind

    def src(count, decodes):
        return Sources("x", "x", count, lambda labels: iter(()), False, decodes=decodes)

    assert choose_worker_kind("auto", src(PROCESS_MIN_IMAGES, True), 2) == "process"
    assert choose_worker_kind("auto", src(PROCESS_MIN_IMAGES - 1, True), 2) == "thread"
    assert choose_worker_kind("auto", src(10 ** 6, False), 2) == "thread"  # raw Datums: a copy
    assert choose_worker_kind("thread", src(10 ** 6, True), 2) == "thread"
    raw = str(tmp_path / "raw")
    with DatumWriter(raw) as w:
        w.put(array_to_datum(np.zeros((3, 4, 4), np.uint8), 0))
    assert sources_from_lmdb(raw).decodes is False
    assert sources_from_lmdb(_lmdb_of(tmp_path / "png", 2, np.random.default_rng(0))).decodes is True


def test_a_bundle_without_image_input_is_refused_clearly(tmp_path):
    bundle = make_bundle(tmp_path / "b")
    spec = json.loads((tmp_path / "b" / "preprocess.json").read_text())
    spec.update(stored_size=None, input_range=None)  # what deploy writes for HDF5Data / Input nets
    (tmp_path / "b" / "preprocess.json").write_text(json.dumps(spec))
    with pytest.raises(BundleError, match="does not take images"):
        classify(bundle, [save(tmp_path / "x.png", bright(0))])
