"""`brewnet deploy`: the deploy net, preprocess.json, the bundle, and above all that the bundle
scores every validation image exactly as the TEST phase of the train_val did.

One tiny real dataset (`brewnet dataset create`: 3 colour classes of 12x10 PNGs, resized to 8x8
with DIGITS' crop mode) and one short real training run (`brewnet train`, BatchNorm + Scale,
crop 6, mean image, scale 0.0125) are shared by the module; variants of the net get seeded random
weights.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from PIL import Image

import brewnet
from brewnet import formats
from brewnet.commands import main as cli
from brewnet.data.builder import create_dataset
from brewnet.data.image import decode_datum_image
from brewnet.data.lmdb_io import read_datums
from brewnet.data.transformer import DataTransformer, load_mean
from brewnet.inference.bundle import Bundle, BundleError, DeployError
from brewnet.inference.loaded import LoadedBundle
from brewnet.inference.deploy import write_bundle
from brewnet.inference.deploy_net import deploy_net_param
from brewnet.inference.preprocess_spec import preprocess_spec
from brewnet.reporting.metrics import read_metrics
from brewnet.proto import caffe_pb2
import digits_examples
from numeric import assert_close_f32

TESTS = os.path.dirname(os.path.abspath(__file__))
BVLC_TYPES = {"Input", "Convolution", "BatchNorm", "Scale", "ReLU", "InnerProduct", "Softmax",
              "Bias", "Power"}
N_VAL = 15  # 3 classes x 5 validation images

DATA = """
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ crop_size: 6 mirror: true {mean} scale: 0.0125 }}
  data_param {{ source: "ds/train_db" batch_size: 5 backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ crop_size: 6 {mean} scale: 0.0125 }}
  data_param {{ source: "{val}" batch_size: 15 backend: LMDB }} }}
"""
MEAN_FILE = 'mean_file: "ds/mean.binaryproto"'
BODY = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  batch_norm_param { moving_average_fraction: 0.9 } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
"""
LOSSES = """
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
  include { phase: TEST } }
"""
# DIGITS' rules: a Softmax only the deploy net has, a loss it excludes, a label Silence and an
# auxiliary head that only fed a loss
DIGITS_STYLE = BODY + """
layer { name: "ip_aux" type: "InnerProduct" bottom: "conv1" top: "ip_aux"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss_aux" type: "SoftmaxWithLoss" bottom: "ip_aux" bottom: "label" top: "loss_aux"
  loss_weight: 0.3 }
layer { name: "silence" type: "Silence" bottom: "label" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss"
  exclude { stage: "deploy" } }
layer { name: "accuracy" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy"
  include { phase: TEST } }
layer { name: "softmax" type: "Softmax" bottom: "ip" top: "softmax"
  include { phase: TEST stage: "deploy" } }
"""
# NVCaffe 0.17: BatchNorm with its own scale/bias (no Scale layer), NVCaffe-only fields elsewhere
NVCAFFE = """
default_forward_type: FLOAT
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" forward_type: FLOAT16
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1"
  batch_norm_param { scale_bias: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
""" + LOSSES


def train_val_text(body: str = BODY + LOSSES, mean: str = MEAN_FILE, val: str = "ds/val_db") -> str:
    return 'name: "tiny"\n' + DATA.format(mean=mean, val=val) + body


# ----- the shared dataset and training run ----------------------------------------------------------
def _make_images(root) -> None:
    """3 classes x 10 colour 12x10 PNGs: noise, plus a little more of the class's channel."""
    rng = np.random.default_rng(0)
    for k in range(3):
        os.makedirs(root / f"c{k}")
        for i in range(10):
            a = rng.integers(0, 200, size=(10, 12, 3), dtype=np.uint8)
            a[:, :, k] += 12
            Image.fromarray(a).save(root / f"c{k}" / f"{i}.png")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    _make_images(root / "src")
    create_dataset(str(root / "src"), str(root / "ds"), resize=(8, 8), resize_mode="crop",
                   val_percent=50, seed=0, stream=io.StringIO())
    (root / "train_val.prototxt").write_text(train_val_text())
    (root / "solver.prototxt").write_text(
        'net: "train_val.prototxt"\ntype: "SGD" base_lr: 0.01 momentum: 0.9 lr_policy: "fixed"\n'
        "max_iter: 20 display: 0 test_iter: 1 test_interval: 10 random_seed: 1\n"
        'snapshot_prefix: "snap/tiny"\n')
    cwd = os.getcwd()
    os.chdir(root)  # the solver's relative paths; deploy later finds them beside the prototxt
    try:
        assert cli.main(["train", "-solver", "solver.prototxt"]) == 0
    finally:
        os.chdir(cwd)
    weights = root / "snap" / "tiny_iter_20.caffemodel"
    assert weights.exists()
    bundle = write_bundle(str(root / "train_val.prototxt"), str(weights), str(root / "bundle"), tar=True)
    return {"root": root, "weights": str(weights), "bundle": bundle,
            "train_val": str(root / "train_val.prototxt")}


def stored_val_images(root) -> tuple[np.ndarray, np.ndarray]:
    """The val LMDB's records in key order (the Data layer's order): (N, C, H, W) uint8, labels."""
    arrays, labels = [], []
    for _, d in read_datums(str(root / "ds" / "val_db")):
        arrays.append(decode_datum_image(d) if d.encoded else
                      np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width))
        labels.append(d.label)
    return np.stack(arrays), np.array(labels)


def bundle_transform(bundle: str, batch: np.ndarray) -> np.ndarray:
    """preprocess.json's step 3 on stored images, with the bundle's own mean file."""
    spec = Bundle.load(bundle).preprocess
    tp = text_format.Parse(spec["transform_param"], caffe_pb2.TransformationParameter())
    if tp.mean_file:
        tp.mean_file = os.path.join(bundle, tp.mean_file)
    return DataTransformer(tp, brewnet.TEST)(batch)


def run_bundle(bundle: str, batch: np.ndarray, blobs=("prob", "ip")) -> dict[str, np.ndarray]:
    net = Bundle.load(bundle).net()
    net.blobs[net.inputs[0]].reshape(*batch.shape)
    net.blobs[net.inputs[0]].data[...] = batch
    net.forward()
    return {b: net.blobs[b].data.copy() for b in blobs if b in net.blobs}


def test_net_logits(train_val: str, weights: str) -> tuple[np.ndarray, np.ndarray]:
    """The TEST phase of the train_val on the whole validation set (one batch of 15)."""
    net = brewnet.Net(train_val, brewnet.TEST, weights=weights)
    try:
        net.forward()
        return net.blobs["ip"].data.copy(), net.blobs["label"].data.copy()
    finally:
        for layer in net.layers:
            if hasattr(layer, "close"):
                layer.close()


test_net_logits.__test__ = False  # a helper, not a test


def random_weights(path_model: str, out: str, seed: int) -> str:
    """Seeded random weights for a variant net, BatchNorm statistics included (a variance > 0)."""
    net = brewnet.Net(path_model, brewnet.TEST)
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        for b in blobs:
            b.data[...] = rng.normal(0, 0.5, b.data.shape)
        if net.layer_dict[name].type == "BatchNorm":
            blobs[1].data[...] = rng.uniform(0.5, 2, blobs[1].data.shape)
            blobs[2].data[...] = 1
    for layer in net.layers:
        if hasattr(layer, "close"):
            layer.close()
    net.save(out)
    return out


def _bvlc_schema() -> dict[str, set[str]]:
    facts: dict[str, set[str]] = {}
    current = None
    with open(os.path.join(TESTS, "schema_facts", "caffe-schema-bvlc.md"), encoding="utf-8") as f:
        for line in f:
            m = re.match(r"### (\S+)", line)
            if m:
                current = facts.setdefault(m.group(1), set())
            m = re.match(r"- (\w+) = \d+", line)
            if m and current is not None:
                current.add(m.group(1))
    return facts


def non_bvlc_fields(msg, facts, where="") -> list[str]:
    """Every set field (recursively) that BVLC Caffe's schema does not have."""
    bad = []
    name = msg.DESCRIPTOR.full_name.removeprefix("caffe.")
    for fd, value in msg.ListFields():
        here = f"{where}{name}.{fd.name}"
        if fd.name not in facts.get(name, set()):
            bad.append(here)
        elif fd.message_type is not None:
            for m in (value if fd.is_repeated else [value]):
                bad.extend(non_bvlc_fields(m, facts, where))
    return bad


def softmax(logits: np.ndarray) -> np.ndarray:
    return torch.softmax(torch.from_numpy(logits), 1).numpy()


# ----- the deploy net -------------------------------------------------------------------------------
def test_deploy_net_is_the_validation_net_without_data_losses_and_labels(work):
    deploy = formats.read_net(os.path.join(work["bundle"], "deploy.prototxt"))
    # the file declares its input at net level (DIGITS' form); loading it makes Caffe's one
    # Input layer "input" of it
    assert [(lp.name, lp.type) for lp in deploy.layer] == [
        ("input", "Input"), ("conv1", "Convolution"), ("bn1", "BatchNorm"), ("scale1", "Scale"),
        ("relu1", "ReLU"), ("ip", "InnerProduct"), ("prob", "Softmax")]
    assert list(deploy.layer[0].input_param.shape[0].dim) == [1, 3, 6, 6]
    assert deploy.layer[-1].bottom == ["ip"] and deploy.layer[-1].top == ["prob"]
    blobs = {b for lp in deploy.layer for b in list(lp.bottom) + list(lp.top)}
    assert "label" not in blobs and "loss" not in blobs and "accuracy" not in blobs
    assert not any(lp.include or lp.exclude or lp.HasField("phase") for lp in deploy.layer)
    net = Bundle.load(work["bundle"]).net()
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    # the caffemodel: exactly the deploy layers, with the trained blobs
    model = formats.read_caffemodel(os.path.join(work["bundle"], "weights.caffemodel"))
    assert [lp.name for lp in model.layer] == [lp.name for lp in deploy.layer]
    trained = {lp.name: lp for lp in formats.read_caffemodel(work["weights"]).layer}
    assert [lp.name for lp in model.layer if lp.blobs] == ["conv1", "bn1", "scale1", "ip"]
    for lp in model.layer:
        if not lp.blobs:
            continue
        assert len(lp.blobs) == len(trained[lp.name].blobs)
        for a, b in zip(lp.blobs, trained[lp.name].blobs):
            np.testing.assert_array_equal(formats.blob_to_array(a), formats.blob_to_array(b))
    # real BVLC Caffe parses both: no field its schema lacks, only its layer types
    facts = _bvlc_schema()
    assert non_bvlc_fields(deploy, facts) == [] and non_bvlc_fields(model, facts) == []
    assert {lp.type for lp in deploy.layer} <= BVLC_TYPES


def test_deploy_stage_rules_keep_the_deploy_softmax_and_drop_label_branches(work):
    path = work["root"] / "digits_style.prototxt"
    path.write_text(train_val_text(DIGITS_STYLE))
    deploy = deploy_net_param(str(path))
    assert [lp.name for lp in deploy.layer] == ["data", "conv1", "bn1", "scale1", "relu1", "ip", "softmax"]
    assert not any(lp.include or lp.exclude for lp in deploy.layer)
    # the same trained layers: the same scores as the main bundle (no "prob" added)
    out = write_bundle(str(path), work["weights"], str(work["root"] / "digits_bundle"),
                       labels=["red", "green", "blue"])
    images, _ = stored_val_images(work["root"])
    batch = bundle_transform(out, images)
    got = run_bundle(out, batch, ("softmax",))["softmax"]
    assert_close_f32(got, run_bundle(work["bundle"], batch)["prob"], what="deploy Softmax")
    assert Bundle.load(out).labels == ["red", "green", "blue"]
    assert json.load(open(os.path.join(out, "info.json")))["output"] == "softmax"


def test_net_without_data_layer_needs_an_input_shape():
    text = ('name: "bare" layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
            'inner_product_param { num_output: 2 } }')
    with pytest.raises(DeployError, match="no data layer.*input_shape"):
        deploy_net_param(formats.net_from_text(text))
    deploy = deploy_net_param(formats.net_from_text(text), input_shape=(3, 6, 6))
    assert deploy.layer[0].type == "Input" and deploy.layer[0].top == ["data"]
    assert list(deploy.layer[0].input_param.shape[0].dim) == [1, 3, 6, 6]


def test_unreadable_source_uses_crop_and_the_datasets_stored_size(work):
    gone = work["root"] / "ds_gone"  # the dataset's metadata without its LMDBs
    gone.mkdir(exist_ok=True)
    for f in ("summary.json", "labels.txt"):
        shutil.copy(work["root"] / "ds" / f, gone / f)
    path = work["root"] / "gone.prototxt"
    path.write_text(train_val_text(val="ds_gone/val_db"))
    deploy = deploy_net_param(str(path))
    assert list(deploy.layer[0].input_param.shape[0].dim) == [1, 3, 6, 6]
    spec, mean = preprocess_spec(str(path))
    assert spec["stored_size"] == [8, 8] and spec["crop"] == {"height": 6, "width": 6}
    np.testing.assert_array_equal(mean, load_mean(str(work["root"] / "ds" / "mean.binaryproto")))


# ----- preprocess.json and info.json ------------------------------------------------------------------
def test_preprocess_json_is_the_validation_data_path(work):
    b = Bundle.load(work["bundle"])
    p = b.preprocess
    assert p["resize"] == {"width": 8, "height": 8, "mode": "crop", "interpolation": "pillow_bilinear"}
    assert p["stored_size"] == [8, 8] and p["channels"] == 3 and p["channel_order"] == "BGR"
    assert p["crop"] == {"height": 6, "width": 6} and p["scale"] == 0.0125
    assert p["input"] == "data" and p["input_shape"] == [3, 6, 6] and p["input_range"] == [0, 255]
    assert p["mean"] == {"image": "mean.binaryproto"} and p["baked"] is False
    assert p["source"] == {"layer": "data", "type": "Data", "backend": "LMDB",
                           "db": str(work["root"] / "ds" / "val_db")}
    tp = text_format.Parse(p["transform_param"], caffe_pb2.TransformationParameter())
    assert (tp.crop_size, tp.mean_file, tp.scale, tp.mirror) == (6, "mean.binaryproto", np.float32(0.0125), False)
    # the mean image is the dataset's, bit for bit; the labels are the dataset's
    np.testing.assert_array_equal(b.mean, load_mean(str(work["root"] / "ds" / "mean.binaryproto")))
    assert b.labels == ["c0", "c1", "c2"]
    spec, mean = preprocess_spec(work["train_val"])
    assert spec == p
    np.testing.assert_array_equal(mean, b.mean)


def test_info_json_names_the_snapshot_and_its_logged_accuracy(work):
    info = Bundle.load(work["bundle"]).info
    assert info["iteration"] == 20 and info["name"] == "bundle"
    assert info["brewnet_version"] == brewnet.__version__
    assert info["source_prototxt"] == work["train_val"]
    created = __import__("datetime").datetime.fromisoformat(info["created"])
    assert created.utcoffset().total_seconds() == 0
    logged = [r["value"] for r in read_metrics(str(work["root"] / "snap" / "tiny_metrics.jsonl"))
              if r["phase"] == "test" and r["iter"] == 20 and r["name"] == "accuracy"]
    assert info["accuracy"] == logged[-1] and info["accuracy_output"] == "accuracy"
    assert info["classes"] == 3 and info["output"] == "prob" and not info["baked"]


# ----- THE check: deploy scores = validation scores ---------------------------------------------------
def test_bundle_scores_every_val_image_as_the_test_phase_did(work):
    logits, labels = test_net_logits(work["train_val"], work["weights"])
    images, stored_labels = stored_val_images(work["root"])
    assert len(images) == N_VAL and images.shape[2:] == (8, 8)
    np.testing.assert_array_equal(stored_labels, labels)  # same records, same order
    got = run_bundle(work["bundle"], bundle_transform(work["bundle"], images))
    assert_close_f32(got["ip"], logits, what="deploy logits vs TEST logits")
    assert_close_f32(got["prob"], softmax(logits), what="deploy prob vs softmax(TEST logits)")
    np.testing.assert_array_equal(got["prob"].argmax(1), logits.argmax(1))
    # and the accuracy the solver logged for this snapshot, image for image
    correct = int((got["prob"].argmax(1) == labels).sum())
    assert correct == round(Bundle.load(work["bundle"]).info["accuracy"] * N_VAL)
    assert 0 < correct < N_VAL  # a net that is neither perfect nor useless: the check has teeth


def test_nvcaffe_batchnorm_becomes_bvlc_batchnorm_and_scale(work):
    path = work["root"] / "nvcaffe.prototxt"
    path.write_text(train_val_text(NVCAFFE))
    weights = random_weights(str(path), str(work["root"] / "nv_iter_7.caffemodel"), seed=3)
    out = write_bundle(str(path), weights, str(work["root"] / "nv_bundle"))
    deploy = formats.read_net(os.path.join(out, "deploy.prototxt"))
    assert [(lp.name, lp.type) for lp in deploy.layer] == [
        ("input", "Input"), ("conv1", "Convolution"), ("bn1", "BatchNorm"), ("bn1_scale", "Scale"),
        ("relu1", "ReLU"), ("ip", "InnerProduct"), ("prob", "Softmax")]
    facts = _bvlc_schema()
    model = formats.read_caffemodel(os.path.join(out, "weights.caffemodel"))
    assert non_bvlc_fields(deploy, facts) == [] and non_bvlc_fields(model, facts) == []
    assert [len(lp.blobs) for lp in model.layer if lp.name in ("bn1", "bn1_scale")] == [3, 2]
    info = Bundle.load(out).info
    assert info["batchnorm_converted"] is True and info["iteration"] == 7
    assert any("BVLC BatchNorm + Scale" in n for n in info["notes"])
    logits, _ = test_net_logits(str(path), weights)
    images, _ = stored_val_images(work["root"])
    got = run_bundle(out, bundle_transform(out, images))
    assert_close_f32(got["ip"], logits, what="converted BatchNorm logits")
    np.testing.assert_array_equal(got["prob"].argmax(1), logits.argmax(1))
    # a prototxt that leaves scale/bias implicit (NVCaffe's engine field) takes them from the file
    implicit = work["root"] / "nvcaffe_implicit.prototxt"
    implicit.write_text(train_val_text(NVCAFFE.replace("scale_bias: true", "engine: CAFFE")))
    out2 = write_bundle(str(implicit), weights, str(work["root"] / "nv_implicit_bundle"))
    assert "bn1_scale" in [lp.name for lp in formats.read_net(os.path.join(out2, "deploy.prototxt")).layer]
    assert_close_f32(run_bundle(out2, bundle_transform(out2, images))["ip"], logits,
                     what="implicit scale/bias logits")


# ----- -bake ------------------------------------------------------------------------------------------
def _raw_crops(bundle: str, images: np.ndarray) -> np.ndarray:
    """What a plain Caffe user feeds a baked net: the centre crop of the stored BGR pixels, 0-255."""
    p = Bundle.load(bundle).preprocess
    assert p["baked"] is True and p["mean"] is None and p["scale"] == 1.0
    raw = bundle_transform(bundle, images)
    ho, wo = (8 - 6) // 2, (8 - 6) // 2
    np.testing.assert_array_equal(raw, images[:, :, ho:ho + 6, wo:wo + 6].astype(np.float32))
    return raw


def test_bake_with_layers_takes_raw_pixels(work):
    out = write_bundle(work["train_val"], work["weights"], str(work["root"] / "baked"), bake=True)
    deploy = formats.read_net(os.path.join(out, "deploy.prototxt"))
    # a padded convolution and a mean image: explicit Bias (cropped mean image) and Power layers
    assert [lp.type for lp in deploy.layer[:3]] == ["Input", "Bias", "Power"]
    assert deploy.layer[1].bias_param.num_axes == 3 and deploy.layer[2].power_param.scale == np.float32(0.0125)
    assert not os.path.exists(os.path.join(out, "mean.binaryproto"))
    assert {lp.type for lp in deploy.layer} <= BVLC_TYPES
    assert non_bvlc_fields(deploy, _bvlc_schema()) == []
    images, _ = stored_val_images(work["root"])
    baked = run_bundle(out, _raw_crops(out, images))
    plain = run_bundle(work["bundle"], bundle_transform(work["bundle"], images))
    assert_close_f32(baked["ip"], plain["ip"], what="baked logits")
    assert_close_f32(baked["prob"], plain["prob"], what="baked prob")


FOLD_IP = """
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
""" + LOSSES
FOLD_CONV = """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 6 kernel_size: 3 group: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip" inner_product_param { num_output: 3 } }
""" + LOSSES


@pytest.mark.parametrize("body, mean, folded_into", [
    (FOLD_IP, MEAN_FILE, "ip"),                                         # any mean folds into an InnerProduct
    (FOLD_CONV, "mean_value: 100 mean_value: 110 mean_value: 120", "conv1"),  # unpadded, per channel
], ids=["innerproduct-mean-image", "grouped-conv-mean-values"])
def test_bake_folds_into_the_first_layer_when_exact(work, body, mean, folded_into):
    name = f"fold_{folded_into}"
    path = work["root"] / f"{name}.prototxt"
    path.write_text(train_val_text(body, mean=mean))
    weights = random_weights(str(path), str(work["root"] / f"{name}.caffemodel"), seed=5)
    plain_dir = write_bundle(str(path), weights, str(work["root"] / f"{name}_plain"))
    baked_dir = write_bundle(str(path), weights, str(work["root"] / f"{name}_baked"), bake=True)
    deploy = formats.read_net(os.path.join(baked_dir, "deploy.prototxt"))
    assert not {"Bias", "Power"} & {lp.type for lp in deploy.layer}
    assert any(f"folded into layer '{folded_into}'" in n for n in Bundle.load(baked_dir).info["notes"])
    images, _ = stored_val_images(work["root"])
    plain = run_bundle(plain_dir, bundle_transform(plain_dir, images))
    baked = run_bundle(baked_dir, _raw_crops(baked_dir, images))
    # s·W·x + (b − s·W·m) against W·((x − m)·s) + b: float32 sums in other orders
    assert_close_f32(baked["ip"], plain["ip"], rtol=1e-5, what="folded logits")
    np.testing.assert_array_equal(baked["prob"].argmax(1), plain["prob"].argmax(1))


# ----- the directory, the tarball, the CLI, errors ------------------------------------------------------
def test_tar_extracts_to_the_same_files(work, tmp_path):
    tar_path = work["bundle"] + ".tar.gz"
    files = sorted(os.listdir(work["bundle"]))
    with tarfile.open(tar_path) as tar:
        # flat, as DIGITS' download: the files at the root, no folder (use_archive.py looks there)
        assert sorted(m.name for m in tar.getmembers()) == files
        assert all(m.isfile() and "/" not in m.name for m in tar.getmembers())
        tar.extractall(tmp_path, filter="data")
    assert sorted(os.listdir(tmp_path)) == files
    for f in files:
        assert (tmp_path / f).read_bytes() == open(os.path.join(work["bundle"], f), "rb").read()
    assert Bundle.load(str(tmp_path)).labels == ["c0", "c1", "c2"]


def test_bundle_load_and_a_missing_preprocess_json(work, tmp_path):
    b = Bundle.load(work["bundle"])
    assert b.labels == ["c0", "c1", "c2"] and b.preprocess["version"] == 1
    broken = tmp_path / "broken"
    shutil.copytree(work["bundle"], broken)
    os.remove(broken / "preprocess.json")
    with pytest.raises(BundleError, match="missing preprocess.json"):
        Bundle.load(str(broken))


def test_errors_and_nothing_overwritten(work, tmp_path):
    with pytest.raises(DeployError, match="weights file not found"):
        write_bundle(work["train_val"], str(tmp_path / "nope.caffemodel"), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(DeployError, match="not a deploy bundle"):
        write_bundle(work["train_val"], work["weights"], str(mine))
    assert os.listdir(mine) == ["notes.txt"] and (mine / "notes.txt").read_text() == "keep me"
    # an existing bundle is replaced whole, leaving no temporary directory behind
    out = write_bundle(work["train_val"], work["weights"], str(tmp_path / "again"), name="first")
    write_bundle(work["train_val"], work["weights"], out, name="second")
    assert Bundle.load(out).info["name"] == "second"
    assert sorted(os.listdir(tmp_path)) == ["again", "mine"]


def test_cli_deploy(work, tmp_path, capsys):
    out = tmp_path / "cli_bundle"
    assert cli.main(["deploy", "-model", work["train_val"], "-weights", work["weights"],
                     "--output", str(out), "-tar", "-name", "tiny"]) == 0
    text = capsys.readouterr().out
    assert text.count("\n") == 1 and "Wrote deploy bundle" in text and ".tar.gz" in text
    for part in ("'data' 1x3x6x6", "'prob' (3 classes)", "iteration 20", "resize to 8x8 (crop)",
                 "centre crop 6x6", "mean image", "times 0.0125"):
        assert part in text, part
    assert Bundle.load(str(out)).info["name"] == "tiny" and (tmp_path / "cli_bundle.tar.gz").exists()
    assert cli.main(["deploy", "-model", work["train_val"], "-weights", str(tmp_path / "x.caffemodel"),
                     "-output", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("brewnet deploy: error: weights file not found") and "Traceback" not in err


def test_cli_deploy_reads_the_accuracy_from_a_metrics_file_named_by_metrics(work, tmp_path, capsys):
    """A run trained with ``-metrics NAME`` (the server's ``metrics.jsonl``): deploy -metrics finds
    the accuracy there; without the flag it looks for <snapshot_prefix>_metrics.jsonl only."""
    default = work["root"] / "snap" / "tiny_metrics.jsonl"
    renamed = tmp_path / "elsewhere" / "metrics.jsonl"
    renamed.parent.mkdir()
    shutil.copyfile(default, renamed)
    expected = Bundle.load(work["bundle"]).info["accuracy"]
    assert expected is not None
    weights = tmp_path / "snapshot_iter_20.caffemodel"  # a prefix with no metrics file beside it
    shutil.copyfile(work["weights"], weights)
    assert cli.main(["deploy", "-model", work["train_val"], "-weights", str(weights),
                     "-output", str(tmp_path / "without")]) == 0
    assert Bundle.load(str(tmp_path / "without")).info["accuracy"] is None
    assert cli.main(["deploy", "-model", work["train_val"], "-weights", str(weights),
                     "-output", str(tmp_path / "with"), "-metrics", str(renamed)]) == 0
    info = Bundle.load(str(tmp_path / "with")).info
    assert info["accuracy"] == expected and info["metrics_file"] == str(renamed)
    assert f"validation accuracy {expected:.4g}" in capsys.readouterr().out


# ----- DIGITS' examples/classification scripts on the files --------------------------------------------
def _raw_net(path: str) -> caffe_pb2.NetParameter:
    """deploy.prototxt as caffe_pb2 + text_format read it, no upgrade (DIGITS' example.py)."""
    raw = caffe_pb2.NetParameter()
    with open(path, encoding="utf-8") as f:
        text_format.Merge(f.read(), raw)
    return raw


def _raw_blob(path) -> caffe_pb2.BlobProto:
    blob = caffe_pb2.BlobProto()
    with open(path, "rb") as f:
        blob.MergeFromString(f.read())
    return blob


def test_deploy_prototxt_declares_its_input_at_net_level_as_digits_does(work, tmp_path):
    path = os.path.join(work["bundle"], "deploy.prototxt")
    raw = _raw_net(path)
    assert list(raw.input) == ["data"] and [list(s.dim) for s in raw.input_shape] == [[1, 3, 6, 6]]
    assert not raw.input_dim and "Input" not in {lp.type for lp in raw.layer}
    assert digits_examples.input_dims(path) == [1, 3, 6, 6]
    assert non_bvlc_fields(raw, _bvlc_schema()) == []
    net = brewnet.Net(path, brewnet.TEST)  # what Caffe makes of it: the same input blob
    assert net.inputs == ["data"] and tuple(net.blobs["data"].data.shape) == (1, 3, 6, 6)
    # a baked net too: its Bias and Power layers follow the net-level input
    baked = write_bundle(work["train_val"], work["weights"], str(tmp_path / "baked"), bake=True)
    raw = _raw_net(os.path.join(baked, "deploy.prototxt"))
    assert list(raw.input) == ["data"] and [lp.type for lp in raw.layer[:2]] == ["Bias", "Power"]
    assert raw.layer[0].bottom == ["data"]


def test_mean_binaryproto_has_legacy_dims_as_digits_writes(work):
    source = work["root"] / "ds" / "mean.binaryproto"
    assert not _raw_blob(source).HasField("shape")  # brewnet dataset create writes DIGITS' form too
    blob = _raw_blob(os.path.join(work["bundle"], "mean.binaryproto"))
    assert not blob.HasField("shape")
    assert all(blob.HasField(d) for d in ("num", "channels", "height", "width"))
    assert (blob.num, blob.channels, blob.height, blob.width) == (1, 3, 8, 8)
    # the dataset's mean, value for value, and what DIGITS' example.py subtracts from it
    mean = load_mean(str(source))
    np.testing.assert_array_equal(np.asarray(blob.data, np.float32).reshape(3, 8, 8), mean)
    np.testing.assert_allclose(digits_examples.mean_pixel(os.path.join(work["bundle"], "mean.binaryproto")),
                               mean.mean(axis=(1, 2)), rtol=1e-6)
    np.testing.assert_array_equal(Bundle.load(work["bundle"]).mean, mean)


# A net DIGITS' example.py preprocesses exactly as validation did: no crop (the input is the
# stored size, so its squash does nothing), no scale, and a mean image that is one value per
# channel (its mean pixel is the mean image)
FLAT_MEAN_DATA = """name: "digits_like"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ mean_file: "{mean}" }}
  data_param {{ source: "{val}" batch_size: 15 backend: LMDB }} }}
"""


def _val_pngs(root, into) -> list[str]:
    """The validation images as RGB PNG files at their stored size (8x8)."""
    into.mkdir()
    images, _ = stored_val_images(root)
    paths = []
    for i, chw in enumerate(images):
        path = str(into / f"{i}.png")
        Image.fromarray(np.ascontiguousarray(chw.transpose(1, 2, 0)[:, :, ::-1])).save(path)
        paths.append(path)
    return paths


def test_digits_use_archive_on_the_tarball_agrees_with_brewnet_classify(work, tmp_path):
    mean_file = tmp_path / "flat_mean.binaryproto"
    formats.write_binaryproto(np.broadcast_to(np.array([101.5, 117.25, 96.0], np.float32)[:, None, None],
                                             (3, 8, 8)).copy(), mean_file)
    path = tmp_path / "digits_like.prototxt"
    path.write_text(FLAT_MEAN_DATA.format(mean=mean_file, val=work["root"] / "ds" / "val_db")
                    + BODY + LOSSES)
    weights = random_weights(str(path), str(tmp_path / "digits_like_iter_9.caffemodel"), seed=11)
    bundle = write_bundle(str(path), weights, str(tmp_path / "digits_like"), tar=True)
    images = _val_pngs(work["root"], tmp_path / "images")
    scores, labels = digits_examples.classify_with_archive(bundle + ".tar.gz", images,
                                                           str(tmp_path / "extracted"))
    loaded = LoadedBundle(bundle)
    probs = loaded.scores(np.stack([loaded.input_of(p) for p in images]))
    assert labels == loaded.labels == ["c0", "c1", "c2"]
    assert_close_f32(scores, probs, rtol=1e-6, what="use_archive.py against brewnet classify")
    np.testing.assert_array_equal(scores.argmax(1), probs.argmax(1))
    assert len(set(probs.argmax(1))) > 1  # not one class for every image: the check has teeth


def _old_form_copy(bundle: str, parent) -> str:
    """``bundle`` as brewnet wrote it before DIGITS' forms: an Input layer "data" in
    deploy.prototxt, a mean with ``shape``, inside a top folder of ``parent``."""
    old = parent / "old_bundle"
    shutil.copytree(bundle, old)
    net = formats.read_net(str(old / "deploy.prototxt"))
    net.layer[0].name = "data"
    formats.write_prototxt(net, str(old / "deploy.prototxt"))
    formats.write_binaryproto(load_mean(str(old / "mean.binaryproto"))[None], str(old / "mean.binaryproto"))
    return str(old)


def test_bundles_in_the_old_forms_still_load(work, tmp_path):
    parent = tmp_path / "extracted_old_tarball"
    parent.mkdir()
    old = _old_form_copy(work["bundle"], parent)
    assert _raw_net(os.path.join(old, "deploy.prototxt")).layer[0].type == "Input"
    assert _raw_blob(os.path.join(old, "mean.binaryproto")).HasField("shape")
    # where DIGITS' scripts stop on them
    with pytest.raises(digits_examples.ScriptFailure, match="Caffe model file not found"):
        digits_examples.files_at_root(str(parent))
    with pytest.raises(digits_examples.ScriptFailure, match="number of dimensions"):
        digits_examples.transformer(os.path.join(old, "deploy.prototxt"), None)
    with pytest.raises(digits_examples.ScriptFailure, match="shape"):
        digits_examples.mean_pixel(os.path.join(old, "mean.binaryproto"))
    # brewnet reads them, from the folder the old tarball extracted to, with the same scores
    b = Bundle.load(str(parent))
    assert b.path == old and b.labels == ["c0", "c1", "c2"]
    np.testing.assert_array_equal(b.mean, Bundle.load(work["bundle"]).mean)
    images = _val_pngs(work["root"], tmp_path / "images")
    new, before = LoadedBundle(work["bundle"]), LoadedBundle(str(parent))
    assert_close_f32(before.scores(np.stack([before.input_of(p) for p in images])),
                     new.scores(np.stack([new.input_of(p) for p in images])), what="old-form bundle")
    # an archive is not a bundle directory: a clear error
    with pytest.raises(BundleError, match="an archive.*extract it"):
        Bundle.load(work["bundle"] + ".tar.gz")
