"""brewnet.server.inference: bundles of a model job's snapshots, DIGITS' download archives and
classify-one in the spawned worker, on a tiny model trained here with brewnet's Python API."""
from __future__ import annotations

import asyncio
import io
import json
import shutil
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image

import brewnet
import digits_examples  # tests/: DIGITS' examples/classification scripts, in our own code
from brewnet import formats
from brewnet.data.builder import create_dataset
from brewnet.data.transformer import load_mean
from brewnet.proto import caffe_pb2
from brewnet.server import inference
from brewnet.server.errors import ApiError
from brewnet.server.inference import (ARCHIVE_FORMATS, InferencePool, bundle_archive, bundle_path,
                                      ensure_bundle)

COLOURS = {"red_ish": (200, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 200)}
ITERS = 30


def _make_images(root: Path) -> dict[str, Path]:
    """Three classes of noisy flat colours, 10x10 PNGs; returns one sample image per class."""
    rng = np.random.default_rng(0)
    samples = {}
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True)
        for i in range(8):
            a = np.clip(np.array(rgb) + rng.normal(0, 20, (10, 10, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
        samples[name] = root / name / "0.png"
    return samples


TRAIN_VAL = """name: "tiny"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
        transform_param {{ mean_file: "{ds}/mean.binaryproto" scale: 0.0078125 }}
        data_param {{ source: "{ds}/train_db" batch_size: 8 backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
        transform_param {{ mean_file: "{ds}/mean.binaryproto" scale: 0.0078125 }}
        data_param {{ source: "{ds}/val_db" batch_size: 6 backend: LMDB }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param {{ num_output: 4 kernel_size: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }}
layer {{ name: "relu" type: "ReLU" bottom: "conv" top: "conv" }}
layer {{ name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param {{ num_output: 3 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "accuracy" include {{ phase: TEST }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """(model_dir, dataset_dir, sample images): a job-like model directory with a snapshot."""
    root = tmp_path_factory.mktemp("inference")
    samples = _make_images(root / "images")
    ds = root / "dataset"
    create_dataset(str(root / "images"), str(ds), val_percent=25, seed=0, digits_labels=True,
                   stream=io.StringIO())
    md = root / "20240101-000000-abcd"
    md.mkdir()
    (md / "train_val.prototxt").write_text(TRAIN_VAL.format(ds=ds))
    (md / "original.prototxt").write_text(TRAIN_VAL.format(ds=ds))
    (md / "solver.prototxt").write_text(
        f'net: "{md}/train_val.prototxt"\ntest_iter: 1\ntest_interval: {ITERS}\nbase_lr: 0.05\n'
        f'momentum: 0.9\nlr_policy: "fixed"\nmax_iter: {ITERS}\nsnapshot: {ITERS}\ndisplay: 0\n'
        f'snapshot_prefix: "{md}/snapshot"\nrandom_seed: 1\n')
    (md / "plan.json").write_text(json.dumps({"max_iter": ITERS, "train_epochs": 3}))
    solver = brewnet.get_solver(str(md / "solver.prototxt"))
    solver.solve()
    assert (md / f"snapshot_iter_{ITERS}.caffemodel").is_file()
    return md, ds, samples


def test_ensure_bundle_builds_once_and_atomically(model):
    md, ds, _ = model
    results, errors = [], []

    def build():
        try:
            results.append(ensure_bundle(md, ITERS, ds))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(results)) == 1
    bundle = results[0]
    assert bundle == bundle_path(md, ITERS) == md / "bundles" / f"iter_{ITERS}"
    assert {"deploy.prototxt", "weights.caffemodel", "labels.txt", "preprocess.json", "info.json"} <= \
        {p.name for p in bundle.iterdir()}
    assert (bundle / "labels.txt").read_text().splitlines() == ["blue", "green", "red ish"]
    # nothing half-built is left beside it, only the lock file
    assert sorted(p.name for p in (md / "bundles").iterdir()) == [f".iter_{ITERS}.lock", f"iter_{ITERS}"]
    stamp = (bundle / "info.json").stat().st_mtime_ns
    assert ensure_bundle(md, ITERS, ds) == bundle and (bundle / "info.json").stat().st_mtime_ns == stamp


def test_ensure_bundle_unknown_snapshot_is_404(model):
    md, ds, _ = model
    with pytest.raises(ApiError) as e:
        ensure_bundle(md, 999, ds)
    assert e.value.status == 404 and "999" in e.value.message


def _names(path: Path, ext: str) -> dict[str, bytes]:
    if ext == "zip":
        with zipfile.ZipFile(path) as z:
            return {n: z.read(n) for n in z.namelist()}
    with tarfile.open(path) as t:
        return {m.name: t.extractfile(m).read() for m in t.getmembers()}


@pytest.mark.parametrize("ext", list(ARCHIVE_FORMATS))
def test_archive_is_digits_flat_download(model, ext):
    md, ds, _ = model
    info = {"id": md.name, "name": "tiny", "snapshot epoch": 3}
    path = bundle_archive(md, ITERS, ds, ext, info)
    assert path.name == f"{md.name}_epoch_3.{ext}"  # 30 of 30 iterations, 3 epochs
    members = _names(path, ext)
    assert set(members) == {"solver.prototxt", "train_val.prototxt", "deploy.prototxt", "original.prototxt",
                            "labels.txt", "mean.binaryproto", f"snapshot_iter_{ITERS}.caffemodel",
                            "info.json", "preprocess.json"}
    assert json.loads(members["info.json"]) == info
    assert members[f"snapshot_iter_{ITERS}.caffemodel"] == (md / f"snapshot_iter_{ITERS}.caffemodel").read_bytes()
    assert members["labels.txt"] == (ds / "labels.txt").read_bytes()
    # cached: the same request gives the same file; another info makes a new one
    stamp = path.stat().st_mtime_ns
    assert bundle_archive(md, ITERS, ds, ext, info) == path and path.stat().st_mtime_ns == stamp
    other = bundle_archive(md, ITERS, ds, ext, {**info, "name": "renamed"}, epoch=2.5)
    assert other.name == f"{md.name}_epoch_2.5.{ext}"
    assert json.loads(_names(other, ext)["info.json"])["name"] == "renamed"


# the deploy.prototxt a model job writes (brewnet.server.digits.model_files): an Input layer "data"
JOB_DEPLOY = """name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 10 dim: 10 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
layer { name: "relu" type: "ReLU" bottom: "conv" top: "conv" }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""


@pytest.mark.parametrize("ext", ["tar.gz", "zip"])
@pytest.mark.parametrize("own_deploy", [False, True], ids=["bundle-deploy", "job-deploy"])
def test_archive_runs_digits_use_archive_script(model, tmp_path, ext, own_deploy):
    """The download read the way DIGITS' use_archive.py and example.py read it: files at the
    root, net-level input dims in deploy.prototxt (from the job's own file, which has an Input
    layer, or the bundle's), the mean's legacy dims; a dataset's mean written with ``shape`` (as
    brewnet wrote them before it wrote DIGITS' form) value for value."""
    src, new_ds, samples = model
    ds = tmp_path / "older_dataset"  # the dataset as an earlier brewnet wrote it
    ds.mkdir()
    shutil.copyfile(new_ds / "labels.txt", ds / "labels.txt")
    formats.write_binaryproto(load_mean(str(new_ds / "mean.binaryproto"))[None], ds / "mean.binaryproto")
    md = tmp_path / src.name
    md.mkdir()
    for name in ("train_val.prototxt", "solver.prototxt", "plan.json", f"snapshot_iter_{ITERS}.caffemodel"):
        shutil.copyfile(src / name, md / name)
    if own_deploy:
        (md / "deploy.prototxt").write_text(JOB_DEPLOY)
    path = bundle_archive(md, ITERS, ds, ext, {"id": md.name})
    members = _names(path, ext)
    assert all("/" not in n for n in members)
    deploy = caffe_pb2.NetParameter()
    text_format.Merge(members["deploy.prototxt"].decode(), deploy)
    assert list(deploy.input) == ["data"] and [list(s.dim) for s in deploy.input_shape] == [[1, 3, 10, 10]]
    assert "Input" not in {lp.type for lp in deploy.layer}
    if own_deploy:  # the job's layers as they were
        job = formats.parse_text(JOB_DEPLOY, caffe_pb2.NetParameter())
        assert list(deploy.layer) == list(job.layer)[1:]
    assert caffe_pb2.BlobProto.FromString((ds / "mean.binaryproto").read_bytes()).HasField("shape")
    mean = caffe_pb2.BlobProto.FromString(members["mean.binaryproto"])
    assert not mean.HasField("shape") and (mean.num, mean.channels, mean.height, mean.width) == (1, 3, 10, 10)
    np.testing.assert_array_equal(np.asarray(mean.data, np.float32).reshape(3, 10, 10),
                                  load_mean(str(ds / "mean.binaryproto")))
    images = [str(p) for p in samples.values()]
    scores, labels = digits_examples.classify_with_archive(str(path), images, str(tmp_path / "extracted"))
    assert labels == ["blue", "green", "red ish"] and scores.shape == (3, 3)
    np.testing.assert_allclose(scores.sum(1), 1, rtol=1e-5)  # net.outputs[-1] is the Softmax


def test_archive_keeps_a_job_file_it_cannot_read_as_it_is(model, tmp_path, caplog):
    src, ds, _ = model
    md = tmp_path / src.name
    md.mkdir()
    for name in ("train_val.prototxt", f"snapshot_iter_{ITERS}.caffemodel"):
        shutil.copyfile(src / name, md / name)
    (md / "deploy.prototxt").write_text("layer { name: broken")
    with caplog.at_level("WARNING", logger="brewnet.server"):
        members = _names(bundle_archive(md, ITERS, ds, "tar", {"id": md.name}), "tar")
    assert members["deploy.prototxt"] == b"layer { name: broken"
    assert "not in DIGITS' form" in caplog.text and "deploy.prototxt" in caplog.text
    assert not caffe_pb2.BlobProto.FromString(members["mean.binaryproto"]).HasField("shape")


def test_archives_cached_in_an_older_form_are_rebuilt(model, monkeypatch):
    md, ds, _ = model
    info = {"id": md.name, "name": "form"}
    monkeypatch.setattr(inference, "ARCHIVE_FORM", 1)
    old = bundle_archive(md, ITERS, ds, "tar", info)
    monkeypatch.setattr(inference, "ARCHIVE_FORM", 2)
    new = bundle_archive(md, ITERS, ds, "tar", info)
    assert new != old and new.name == old.name and new.is_file() and not old.exists()


def test_archive_bad_extension_is_400(model):
    md, ds, _ = model
    with pytest.raises(ApiError) as e:
        bundle_archive(md, ITERS, ds, "rar", {})
    assert e.value.status == 400 and "rar" in e.value.message


def test_pool_classifies_like_the_python_api(model, tmp_path):
    md, ds, samples = model
    bundle = ensure_bundle(md, ITERS, ds)
    clf = brewnet.Classifier.from_bundle(str(bundle))
    labels = (bundle / "labels.txt").read_text().splitlines()
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    pool = InferencePool()

    async def run():
        results = {}
        for name, img in samples.items():
            results[name] = await pool.classify_one(bundle, img)
        vis = await pool.classify_one(bundle, samples["green"], top=2, visualize=True, vis_dir=tmp_path / "vis")
        with pytest.raises(ApiError) as e:
            await pool.classify_one(bundle, bad)
        return results, vis, e.value

    try:
        results, vis, err = asyncio.run(run())
    finally:
        pool.close()
    for name, img in samples.items():
        preds = results[name]["predictions"]
        assert len(preds) == 3  # top 5 of 3 classes
        assert [p[1] for p in preds] == sorted((p[1] for p in preds), reverse=True)
        probs = clf.predict([str(img)], oversample=False)[0].reshape(-1)
        assert preds[0][0] == labels[int(np.argmax(probs))]
        assert preds[0][1] == round(100 * float(np.max(probs)), 2)
    assert len(vis["predictions"]) == 2
    names = {v["name"] for v in vis["visualizations"]}
    assert {"data", "conv", "prob", "conv/weights", "bn/running_mean"} <= names
    for v in vis["visualizations"]:
        assert (tmp_path / "vis" / v["image"]).is_file() and v["image"].endswith(".png")
        assert v["mean"] is not None and len(v["histogram"]["counts"]) == 20
    assert err.status == 400 and err.message.startswith("Could not read image: ")


# a model's own Python layer file (the server keeps it as python_layers/digits_python_layers.py):
# "identity" passes the scores on, "always_first" makes class 0 win whatever the image
_TWEAK = '''
import numpy as np
import brewnet


class Tweak(brewnet.Layer):
    def setup(self, bottom, top):
        pass

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        {body}

    def backward(self, top, propagate_down, bottom):
        pass
'''
_TWEAKS = {"identity": "top[0].data[...] = bottom[0].data",
           "always_first": "top[0].data[...] = 0.0\n        top[0].data[:, 0] = 100.0"}


def _model_with_python_layer(model, root: Path, kind: str) -> tuple[Path, str]:
    """A copy of the fixture's model whose net passes its scores through the model's own Python
    layer (module digits_python_layers, as the server names an uploaded file); (dir, folder)."""
    md, ds, _ = model
    copy = root / f"20240101-000000-{kind[:4]}"
    copy.mkdir()
    shutil.copy(md / f"snapshot_iter_{ITERS}.caffemodel", copy)
    net = TRAIN_VAL.format(ds=ds).replace('bottom: "ip" bottom: "label"', 'bottom: "tweaked" bottom: "label"')
    net += ('layer { name: "tweak" type: "Python" bottom: "ip" top: "tweaked" '
            'python_param { module: "digits_python_layers" layer: "Tweak" } }\n')
    (copy / "train_val.prototxt").write_text(net)
    folder = copy / "python_layers"
    folder.mkdir()
    (folder / "digits_python_layers.py").write_text(_TWEAK.format(body=_TWEAKS[kind]))
    return copy, str(folder)


def test_pool_imports_each_models_own_python_layer_file(model, tmp_path):
    """The worker serves every model; two models' layer files share one module name, and each
    model's net runs its own (also when the other was loaded first); the archive carries it."""
    md, ds, samples = model
    plain = ensure_bundle(md, ITERS, ds)
    identity_dir, identity_path = _model_with_python_layer(model, tmp_path, "identity")
    first_dir, first_path = _model_with_python_layer(model, tmp_path, "always_first")
    labels = (plain / "labels.txt").read_text().splitlines()
    image = samples["green"]
    pool = InferencePool()

    async def run():
        expected = await pool.classify_one(plain, image)
        b_identity = await pool.ensure_bundle(identity_dir, ITERS, ds, [identity_path])
        b_first = await pool.ensure_bundle(first_dir, ITERS, ds, [first_path])
        got = [await pool.classify_one(b_identity, image, python_path=[identity_path]),
               await pool.classify_one(b_first, image, python_path=[first_path]),
               await pool.classify_one(b_identity, image, python_path=[identity_path])]
        return expected, got

    try:
        expected, (identity, first, identity_again) = asyncio.run(run())
    finally:
        pool.close()
    assert labels[0] != expected["predictions"][0][0]  # the tweak is visible on this image
    assert identity == identity_again == expected
    assert first["predictions"][0] == [labels[0], 100.0]
    for d in (identity_dir, first_dir):
        assert any(layer.type == "Python" for layer in
                   formats.net_from_text((bundle_path(d, ITERS) / "deploy.prototxt").read_text()).layer)
    members = _names(bundle_archive(first_dir, ITERS, ds, "tar.gz", {"id": first_dir.name}), "tar.gz")
    assert members["digits_python_layers.py"] == (Path(first_path) / "digits_python_layers.py").read_bytes()
