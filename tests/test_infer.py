"""Generic deploy bundles and `brewnet infer`: a segmentation and a regression train_val (a
features Data layer and a labels Data layer, DIGITS' generic rule) over tiny datasets in the
generic dataset layout (`<stage>_db/features`, `<stage>_db/labels`, summary.json), seeded random
weights; the bundle must give every output exactly as the training net's TEST phase does.
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import brewnet
from brewnet.commands import main as cli
from brewnet.data.lmdb_io import DatumWriter
from brewnet.inference.bundle import Bundle, BundleError
from brewnet.inference.deploy import write_bundle
from brewnet.inference.infer import GenericBundle, infer_images
from brewnet.inference.loaded import LoadedBundle
from brewnet.inference.sources import sources_from_image_folder, sources_from_list, sources_from_lmdb
from brewnet.proto import caffe_pb2
from numeric import assert_close_f32

N_VAL = 6
SIZE = 8
CLASSES = 3
PALETTE = [0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (768 - 9)

SEG_NET = """
name: "seg"
layer {{ name: "data" type: "Data" top: "data" include {{ phase: TRAIN }}
  transform_param {{ mean_file: "{ds}/train_db/mean.binaryproto" }}
  data_param {{ source: "{ds}/train_db/features" batch_size: 2 backend: LMDB }} }}
layer {{ name: "label" type: "Data" top: "label" include {{ phase: TRAIN }}
  data_param {{ source: "{ds}/train_db/labels" batch_size: 2 backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" include {{ phase: TEST }}
  transform_param {{ mean_file: "{ds}/train_db/mean.binaryproto" }}
  data_param {{ source: "{ds}/val_db/features" batch_size: {n} backend: LMDB }} }}
layer {{ name: "label" type: "Data" top: "label" include {{ phase: TEST }}
  data_param {{ source: "{ds}/val_db/labels" batch_size: {n} backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param {{ num_output: 4 kernel_size: 3 pad: 1 }} }}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "score" type: "Convolution" bottom: "conv1" top: "score"
  convolution_param {{ num_output: {c} kernel_size: 1 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "score" bottom: "label" top: "loss"
  loss_param {{ ignore_label: 255 }} exclude {{ stage: "deploy" }} }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "score" bottom: "label" top: "accuracy"
  accuracy_param {{ ignore_label: 255 }} include {{ phase: TEST }} }}
"""

REG_NET = """
name: "reg"
layer {{ name: "data" type: "Data" top: "data" include {{ phase: TEST }}
  transform_param {{ scale: 0.004 }}
  data_param {{ source: "{ds}/val_db/features" batch_size: {n} backend: LMDB }} }}
layer {{ name: "label" type: "Data" top: "label" include {{ phase: TEST }}
  data_param {{ source: "{ds}/val_db/labels" batch_size: {n} backend: LMDB }} }}
layer {{ name: "output" type: "InnerProduct" bottom: "data" top: "output"
  inner_product_param {{ num_output: 2 }} }}
layer {{ name: "loss" type: "EuclideanLoss" bottom: "output" bottom: "label" top: "loss"
  exclude {{ stage: "deploy" }} }}
"""


def _png(arr: np.ndarray, mode: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(arr, mode).save(out, format="PNG")
    return out.getvalue()


def _encoded(data: bytes, c: int) -> caffe_pb2.Datum:
    return caffe_pb2.Datum(channels=c, height=SIZE, width=SIZE, data=data, encoded=True, label=0)


def _write_mean(path: str, mean: np.ndarray) -> None:
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend((1,) + mean.shape)
    blob.data.extend(mean.ravel().tolist())
    with open(path, "wb") as f:
        f.write(blob.SerializeToString())


def _summary(root, kind: str, stages: dict, **facts) -> None:
    summary = {"kind": kind, "stages": stages, "feature_dims": [SIZE, SIZE, 3 if kind == "segmentation" else 1],
               "mean_file": None, "force_same_shape": True, "feature_encoding": "png",
               "label_encoding": "png" if kind == "segmentation" else "none", "class_labels": None,
               "color_palette": None, "num_classes": None, "label_range": None, "seed": 0, "options": {},
               "class_pixel_counts": None}
    summary.update(facts)
    with open(root / "summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f)


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    """A segmentation dataset (RGB PNG features, grey PNG class-index labels, 255 = ignore) with
    the images also as files, a train_val and seeded random weights."""
    root = tmp_path_factory.mktemp("seg")
    ds = root / "ds"
    rng = np.random.default_rng(5)
    files = root / "images"
    files.mkdir()
    stages = {}
    for stage, n in (("train", 4), ("val", N_VAL)):
        (ds / f"{stage}_db").mkdir(parents=True)
        with DatumWriter(str(ds / f"{stage}_db" / "features"), key_format="%09d") as fw, \
                DatumWriter(str(ds / f"{stage}_db" / "labels"), key_format="%09d") as lw:
            for i in range(n):
                rgb = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
                lab = rng.integers(0, CLASSES, (SIZE, SIZE), dtype=np.uint8)
                lab[0, :2] = 255
                fw.put(_encoded(_png(rgb, "RGB"), 3))
                lw.put(_encoded(_png(lab, "L"), 1))
                if stage == "val":
                    Image.fromarray(rgb).save(files / f"img{i}.png")
        stages[stage] = {"entries": n, "features": str(ds / f"{stage}_db" / "features"),
                         "labels": str(ds / f"{stage}_db" / "labels"), "mean": None,
                         "feature_shape": [3, SIZE, SIZE], "label_shape": [1, SIZE, SIZE]}
    mean = rng.uniform(0, 255, (3, SIZE, SIZE)).astype(np.float32)
    _write_mean(str(ds / "train_db" / "mean.binaryproto"), mean)
    _summary(ds, "segmentation", stages, class_labels=["background", "square", "disc"],
             color_palette=PALETTE, num_classes=CLASSES, mean_file=str(ds / "train_db" / "mean.binaryproto"))
    train_val = root / "train_val.prototxt"
    train_val.write_text(SEG_NET.format(ds=ds, n=N_VAL, c=CLASSES))
    weights = random_weights(str(train_val), str(root / "w_iter_10.caffemodel"), 3)
    bundle = write_bundle(str(train_val), weights, str(root / "bundle"))
    return {"root": root, "ds": ds, "train_val": str(train_val), "weights": weights, "bundle": bundle,
            "files": sorted(str(p) for p in files.iterdir())}


@pytest.fixture(scope="module")
def reg(tmp_path_factory):
    """A regression dataset: raw grey features, 1x1x2 float labels, no summary.json."""
    root = tmp_path_factory.mktemp("reg")
    ds = root / "ds"
    (ds / "val_db").mkdir(parents=True)
    rng = np.random.default_rng(7)
    with DatumWriter(str(ds / "val_db" / "features"), key_format="%09d") as fw, \
            DatumWriter(str(ds / "val_db" / "labels"), key_format="%09d") as lw:
        for _ in range(N_VAL):
            img = rng.integers(0, 256, (1, SIZE, SIZE), dtype=np.uint8)
            fw.put(caffe_pb2.Datum(channels=1, height=SIZE, width=SIZE, data=img.tobytes()))
            lw.put(caffe_pb2.Datum(channels=1, height=1, width=2, float_data=rng.uniform(-1, 1, 2).tolist()))
    train_val = root / "train_val.prototxt"
    train_val.write_text(REG_NET.format(ds=ds, n=N_VAL))
    weights = random_weights(str(train_val), str(root / "w.caffemodel"), 4)
    return {"root": root, "ds": ds, "train_val": str(train_val), "weights": weights}


def random_weights(model: str, out: str, seed: int) -> str:
    net = brewnet.Net(model, brewnet.TEST)
    rng = np.random.default_rng(seed)
    for blobs in net.params.values():
        for b in blobs:
            b.data[...] = rng.normal(0, 0.3, b.data.shape)
    _close(net)
    net.save(out)
    return out


def _close(net) -> None:
    for layer in net.layers:
        if hasattr(layer, "close"):
            layer.close()


def test_phase(train_val: str, weights: str, blobs=("score", "label")) -> dict[str, np.ndarray]:
    """The training net's TEST phase over the validation set (one batch of N_VAL)."""
    net = brewnet.Net(train_val, brewnet.TEST, weights=weights)
    try:
        net.forward()
        return {b: net.blobs[b].data.copy() for b in blobs}
    finally:
        _close(net)


test_phase.__test__ = False  # a helper, not a test


# ----- deploy ----------------------------------------------------------------------------------------
def test_segmentation_deploy_has_the_score_output_no_softmax_and_the_dataset_facts(seg):
    b = Bundle.load(seg["bundle"])
    net = caffe_pb2.NetParameter()
    from google.protobuf import text_format
    text_format.Parse(open(b.deploy_prototxt).read(), net)
    types = [lp.type for lp in net.layer]
    assert "Softmax" not in types and "SoftmaxWithLoss" not in types and "Accuracy" not in types
    assert "Data" not in types and list(net.input) == ["data"]
    assert list(net.input_shape[0].dim) == [1, 3, SIZE, SIZE]
    info = b.info
    assert info["task"] == "generic"
    assert info["outputs"] == ["score"] and info["output"] == "score"
    assert info["output_shapes"]["score"] == [1, CLASSES, SIZE, SIZE]
    assert info["evaluate"] == "segmentation" and info["ignore_label"] == 255
    # found by the generic layout (<dataset>/val_db/features), no -dataset needed
    assert info["dataset"]["kind"] == "segmentation"
    assert info["dataset"]["class_labels"] == ["background", "square", "disc"]
    assert info["dataset"]["color_palette"] == PALETTE and info["dataset"]["num_classes"] == CLASSES
    assert info["dataset"]["feature_dims"] == [SIZE, SIZE, 3]
    assert b.labels == ["background", "square", "disc"]
    assert b.preprocess["mean"] == {"image": "mean.binaryproto"} and b.preprocess["channels"] == 3


def test_regression_deploy_names_its_output_and_takes_dataset_facts_from_dataset(reg, tmp_path):
    other = tmp_path / "other_ds"
    other.mkdir()
    _summary(other, "gradients", {}, label_range=[-1.0, 1.0])
    out = write_bundle(reg["train_val"], reg["weights"], str(tmp_path / "b"), dataset=str(other))
    b = Bundle.load(out)
    assert b.info["task"] == "generic" and b.info["outputs"] == ["output"]
    assert b.info["evaluate"] == "regression" and b.info["classes"] is None
    assert b.info["dataset"]["kind"] == "gradients" and b.info["dataset"]["label_range"] == [-1.0, 1.0]
    assert b.labels == []
    types = [lp.type for lp in b.net().to_proto().layer]
    assert "Softmax" not in types and "EuclideanLoss" not in types
    with pytest.raises(BundleError, match="brewnet infer"):
        LoadedBundle(out)


def test_deploy_dataset_without_summary_is_refused(reg, tmp_path):
    from brewnet.inference.bundle import DeployError
    with pytest.raises(DeployError, match="no summary.json"):
        write_bundle(reg["train_val"], reg["weights"], str(tmp_path / "b"), dataset=str(tmp_path))


def test_cli_deploy_dataset_flag(reg, tmp_path, capsys):
    other = tmp_path / "ds"
    other.mkdir()
    _summary(other, "generic", {})
    rc = cli.main(["deploy", "-model", reg["train_val"], "-weights", reg["weights"], "-output",
                   str(tmp_path / "b"), "-dataset", str(other)])
    assert rc == 0
    assert "outputs 'output' 1x2 (a generic net)" in capsys.readouterr().out
    assert Bundle.load(str(tmp_path / "b")).info["dataset"]["kind"] == "generic"


# ----- infer: the same numbers as the TEST phase ------------------------------------------------------
def test_infer_lmdb_gives_the_test_phase_outputs(seg):
    expected = test_phase(seg["train_val"], seg["weights"])["score"]
    got = list(infer_images(seg["bundle"], sources_from_lmdb(str(seg["ds"] / "val_db" / "features")), batch=4))
    assert [k for k, _ in got] == [f"{i:09d}" for i in range(N_VAL)]
    for i, (_, out) in enumerate(got):
        assert set(out) == {"score"}
        assert out["score"].shape == (CLASSES, SIZE, SIZE)
        assert_close_f32(out["score"], expected[i], what=f"record {i}")


@pytest.mark.parametrize("how", ["images", "list", "folder"])
def test_infer_image_files_give_the_test_phase_outputs(seg, tmp_path, how):
    expected = test_phase(seg["train_val"], seg["weights"])["score"]
    if how == "images":
        sources = seg["files"]
    elif how == "list":
        lst = tmp_path / "list.txt"
        os.symlink(os.path.dirname(seg["files"][0]), tmp_path / "imgs")
        # relative to the list's folder; a trailing integer is a label, dropped as DIGITS drops it
        lst.write_text("".join(f"imgs/{os.path.basename(p)} 3\n" for p in seg["files"]))
        sources = sources_from_list(str(lst))
    else:
        sources = sources_from_image_folder(os.path.dirname(seg["files"][0]))
    got = dict(infer_images(seg["bundle"], sources, workers=0))
    assert len(got) == N_VAL
    for i, p in enumerate(seg["files"]):
        key = p if how != "list" else str(tmp_path / "imgs" / os.path.basename(p))
        assert_close_f32(got[key]["score"], expected[i], what=p)


def test_infer_streams_outputs_before_the_sources_end(seg):
    """A long input list: the first outputs come while most images are not decoded yet."""
    paths = seg["files"] * 200  # 1200 images
    stream = infer_images(seg["bundle"], paths, batch=4, workers=1, worker_kind="thread")
    first = next(stream)
    assert first[0] == paths[0]
    assert stream.done == 4  # one batch ran, of 1200 images
    stream.close()


def test_dont_resize_keeps_the_image_size_and_resizes_the_mean(seg, tmp_path):
    big = tmp_path / "big.png"
    rgb = np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(big)
    (key, out), = list(infer_images(seg["bundle"], [str(big)], dont_resize=True))
    assert out["score"].shape == (CLASSES, 12, 10)
    # without it the image is squashed to the stored 8x8
    (_, out8), = list(infer_images(seg["bundle"], [str(big)]))
    assert out8["score"].shape == (CLASSES, SIZE, SIZE)
    # the net by hand: BGR, minus the mean resized bilinearly to 12x10
    b = Bundle.load(seg["bundle"])
    mean = np.stack([np.asarray(Image.fromarray(ch, "F").resize((10, 12), Image.BILINEAR)) for ch in b.mean])
    x = rgb[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) - mean
    net = b.net()
    net.blobs["data"].reshape(1, 3, 12, 10)
    net.reshape()
    net.blobs["data"].data[...] = x[None]
    net.forward()
    assert_close_f32(out["score"], net.blobs["score"].data[0])


def test_generic_bundle_is_reused_and_errors_are_listed(seg, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    loaded = GenericBundle(seg["bundle"])
    stream = infer_images(loaded, [seg["files"][0], str(bad), seg["files"][1]])
    keys = [k for k, _ in stream]
    assert keys == [seg["files"][0], seg["files"][1]]
    assert stream.errors and stream.errors[0]["source"] == str(bad)


# ----- brewnet infer ----------------------------------------------------------------------------------
def test_cli_infer_lmdb_writes_npy_files_index_and_json(seg, tmp_path, capsys):
    expected = test_phase(seg["train_val"], seg["weights"])["score"]
    out, js = tmp_path / "out", tmp_path / "out.json"
    rc = cli.main(["infer", "-bundle", seg["bundle"], "-lmdb", str(seg["ds"] / "val_db" / "features"),
                   "-output", str(out), "-json", str(js), "-batch", "4"])
    assert rc == 0
    assert f"ran {N_VAL} image(s)" in capsys.readouterr().out
    index = json.loads((out / "index.json").read_text())
    assert index["count"] == N_VAL and index["errors"] == [] and index["outputs_named"] == ["score"]
    assert list(index["outputs"]) == [f"{i:09d}" for i in range(N_VAL)]
    doc = json.loads(js.read_text())
    for i, (key, entry) in enumerate(index["outputs"].items()):
        assert entry["score"]["shape"] == [CLASSES, SIZE, SIZE]
        arr = np.load(out / entry["score"]["file"])
        assert_close_f32(arr, expected[i], what=key)
        assert_close_f32(np.array(doc["outputs"][key]["score"], dtype=np.float32), expected[i], what=key)
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_cli_infer_describes_outputs_without_output_flags(reg, tmp_path, capsys):
    bundle = write_bundle(reg["train_val"], reg["weights"], str(tmp_path / "b"))
    expected = test_phase(reg["train_val"], reg["weights"], blobs=("output",))["output"]
    rc = cli.main(["infer", "-bundle", bundle, "-lmdb", str(reg["ds"] / "val_db" / "features")])
    text = capsys.readouterr().out
    assert rc == 0
    first = text.splitlines()[1]
    assert first.startswith("  output [2]: ")
    values = [float(v) for v in first.split(": ")[1].split(", ")]
    assert_close_f32(np.array(values), expected[0], rtol=1e-5)


def test_cli_infer_clear_errors(seg, tmp_path, capsys):
    lmdb = str(seg["ds"] / "val_db" / "features")
    cases = [
        (["-bundle", str(tmp_path / "nope"), "-lmdb", lmdb], "bundle not found"),
        (["-bundle", seg["bundle"], "-lmdb", str(tmp_path / "no_db")], "no_db"),
        (["-bundle", seg["bundle"]], "nothing to run on"),
        (["-bundle", seg["bundle"], "-lmdb", lmdb, "-evaluate", "segmentation"], "-label_lmdb"),
        (["-bundle", seg["bundle"], "-lmdb", lmdb, "-evaluate", "segmentation", "-label_lmdb",
          str(tmp_path / "no_labels")], "labels LMDB not found"),
    ]
    for argv, message in cases:
        assert cli.main(["infer", *argv]) == 1, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


# ----- -evaluate --------------------------------------------------------------------------------------
def _val_labels(seg) -> np.ndarray:
    from brewnet.data.image import datum_to_chw
    from brewnet.data.lmdb_io import read_datums
    return np.stack([datum_to_chw(d) for _, d in read_datums(str(seg["ds"] / "val_db" / "labels"))])


def test_evaluate_segmentation_is_the_numpy_iou_of_the_test_phase_scores(seg, tmp_path, capsys):
    pytest.importorskip("brewnet.solver.task_metrics")
    scores = test_phase(seg["train_val"], seg["weights"])["score"]
    labels = _val_labels(seg)[:, 0].astype(np.int64)
    pred = scores.argmax(1)
    keep = labels != 255
    cm = np.zeros((CLASSES, CLASSES), dtype=np.int64)
    np.add.at(cm, (labels[keep], pred[keep]), 1)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    iou = inter / np.maximum(union, 1)
    js = tmp_path / "e.json"
    rc = cli.main(["infer", "-bundle", seg["bundle"], "-lmdb", str(seg["ds"] / "val_db" / "features"),
                   "-evaluate", "segmentation", "-label_lmdb", str(seg["ds"] / "val_db" / "labels"),
                   "-json", str(js)])
    assert rc == 0
    assert "mean_iou = " in capsys.readouterr().out
    ev = json.loads(js.read_text())["evaluation"]
    assert ev["count"] == N_VAL and ev["output"] == "score"
    assert ev["mean_iou"] == pytest.approx(iou[union > 0].mean(), abs=1e-6)
    assert ev["pixel_accuracy"] == pytest.approx(inter.sum() / cm.sum(), abs=1e-6)
    for k in range(CLASSES):
        assert ev[f"iou[{k}]"] == pytest.approx(iou[k], abs=1e-6)


def test_evaluate_regression_rmse_and_mae(reg, tmp_path):
    pytest.importorskip("brewnet.solver.task_metrics")
    from brewnet.inference.infer import evaluate
    bundle = write_bundle(reg["train_val"], reg["weights"], str(tmp_path / "b"))
    got = test_phase(reg["train_val"], reg["weights"], blobs=("output", "label"))
    diff = got["output"].reshape(N_VAL, -1).astype(np.float64) - got["label"].reshape(N_VAL, -1)
    ev = evaluate(bundle, str(reg["ds"] / "val_db" / "features"), str(reg["ds"] / "val_db" / "labels"), "regression")
    assert ev["rmse"] == pytest.approx(np.sqrt((diff ** 2).mean()), rel=1e-5)
    assert ev["mae"] == pytest.approx(np.abs(diff).mean(), rel=1e-5)


def test_evaluate_refuses_labels_of_other_keys_or_counts(seg, tmp_path):
    pytest.importorskip("brewnet.solver.task_metrics")
    from brewnet.errors import DataError
    from brewnet.inference.infer import evaluate
    features = str(seg["ds"] / "val_db" / "features")
    shifted = str(tmp_path / "shifted")
    short = str(tmp_path / "short")
    from brewnet.data.lmdb_io import iter_records
    records = list(iter_records(str(seg["ds"] / "val_db" / "labels")))
    with DatumWriter(shifted) as w:  # the same count, other keys
        for i, (_, v) in enumerate(records):
            w.put_raw(f"x{i:08d}".encode(), v)
    with DatumWriter(short, key_format="%09d") as w:
        for i, (_, v) in enumerate(records[:-1]):
            w.put_raw(f"{i:09d}".encode(), v)
    with pytest.raises(DataError, match="has no record with key 000000000"):
        evaluate(seg["bundle"], features, shifted, "segmentation")
    with pytest.raises(DataError, match=f"has {N_VAL - 1} records but the features LMDB"):
        evaluate(seg["bundle"], features, short, "segmentation")
