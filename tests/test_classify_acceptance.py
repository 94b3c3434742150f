"""Issue 11's acceptance test: the number training showed is the number deployment gives.

Fashion-MNIST images are exported to PNG files (class sub-folders), `brewnet dataset create`
builds the train LMDB from one folder and the validation LMDB from another (unshuffled, so its
records follow the folder's order), `brewnet train` runs LeNet-BN for 300 iterations with a test
net that covers the validation set exactly once, `brewnet deploy` bundles the snapshot, and then:

- `brewnet classify -lmdb` over the validation LMDB gets the accuracy the solver logged at the
  snapshot's iteration, to the last image (correct counts equal as integers);
- `-folder` and `-list` over the original PNG files give the LMDB's predictions;
- the bundle's net, its ONNX export and its PyTorch export give the same scores.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from numeric import assert_close_f32

FASHION = "/usr/share/datasets/fashion-mnist"
MODELS = os.path.join(os.path.dirname(__file__), "..", "brewnet", "models")
TRAIN_PER_CLASS, VAL_PER_CLASS = 300, 100   # 3000 training and 1000 validation images
VAL_BATCH, ITERS = 100, 300                 # test_iter 10 x batch 100 = the 1000 validation images

needs_fashion = pytest.mark.skipif(not os.path.isdir(FASHION),
                                   reason="needs Debian's dataset-fashion-mnist (.ci/run installs it)")


def brewnet_cli(*args, cwd):
    out = subprocess.run([sys.executable, "-m", "brewnet", *args], cwd=cwd, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"brewnet {' '.join(args)}:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}"
    return out


def export_pngs(job) -> list[str]:
    """The first TRAIN_PER_CLASS + VAL_PER_CLASS images of each class of train-* as grey PNGs in
    train_png/<class>/ and val_png/<class>/ (class folders named after Fashion-MNIST's labels)."""
    from brewnet.data.builder import FASHION_MNIST_CLASSES
    from brewnet.data.idx import find_idx_sets, load_idx_set

    images, labels = load_idx_set(*find_idx_sets(FASHION)["train"])  # (60000, 28, 28) uint8
    names = [n.replace("/", "_") for n in FASHION_MNIST_CLASSES]
    val_lines = []
    for k, name in enumerate(names):
        idx = np.flatnonzero(labels == k)[:TRAIN_PER_CLASS + VAL_PER_CLASS]
        for split, part in (("train", idx[:TRAIN_PER_CLASS]), ("val", idx[TRAIN_PER_CLASS:])):
            os.makedirs(job / f"{split}_png" / name)
            for i in part:
                Image.fromarray(images[i]).save(job / f"{split}_png" / name / f"{i:05d}.png")
    for k, name in enumerate(sorted(names)):  # the list file: the folder's order, labels by sorted name
        for f in sorted(os.listdir(job / "val_png" / name)):
            val_lines.append(f"val_png/{name}/{f} {k}")
    (job / "val.txt").write_text("\n".join(val_lines) + "\n")
    return sorted(names)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    job = tmp_path_factory.mktemp("classify_acceptance")
    labels = export_pngs(job)
    brewnet_cli("dataset", "create", "train_png", "ds_train", "-val-percent", "0", "-grayscale", "-seed", "1",
                cwd=job)
    brewnet_cli("dataset", "create", "val_png", "ds_val", "-val-percent", "0", "-grayscale", "-no-shuffle",
                cwd=job)
    n_val = json.loads((job / "ds_val" / "summary.json").read_text())["splits"]["train"]["total"]
    assert n_val == 10 * VAL_PER_CLASS
    text = open(os.path.join(MODELS, "lenet_bn_fashion_train_val.prototxt")).read()
    text = text.replace('source: "train_db"', 'source: "ds_train/train_db"')
    text = text.replace('source: "val_db" batch_size: 100', f'source: "ds_val/train_db" batch_size: {VAL_BATCH}')
    assert "ds_train/train_db" in text and "ds_val/train_db" in text
    (job / "train_val.prototxt").write_text(text)
    solver = open(os.path.join(MODELS, "lenet_bn_fashion_solver.prototxt")).read()
    for key, value in (("net", '"train_val.prototxt"'), ("test_iter", n_val // VAL_BATCH),
                       ("test_interval", ITERS), ("max_iter", ITERS), ("snapshot", ITERS),
                       ("snapshot_prefix", '"snap"'), ("display", 100)):
        solver, n = re.subn(rf"^{key}: .*$", f"{key}: {value}", solver, flags=re.M)
        assert n == 1, key
    (job / "solver.prototxt").write_text(solver)
    brewnet_cli("train", "-solver", "solver.prototxt", cwd=job)
    weights = f"snap_iter_{ITERS}.caffemodel"
    assert (job / weights).exists()
    records = [json.loads(line) for line in (job / "snap_metrics.jsonl").read_text().splitlines()]
    logged = [r["value"] for r in records if r["phase"] == "test" and r["name"] == "accuracy" and r["iter"] == ITERS]
    assert len(logged) == 1
    brewnet_cli("deploy", "-model", "train_val.prototxt", "-weights", weights, "-output", "bundle", cwd=job)
    return {"job": job, "n_val": n_val, "logged": logged[0], "labels": labels}


def classify_json(job, *source, name):
    brewnet_cli("classify", "-bundle", "bundle", *source, "-batch", str(VAL_BATCH), "-json", name, cwd=job)
    return json.loads((job / name).read_text())


@pytest.mark.slow
@needs_fashion
def test_classify_lmdb_matches_the_logged_accuracy_and_the_files_match_the_lmdb(trained):
    job, n = trained["job"], trained["n_val"]
    assert (job / "bundle" / "labels.txt").read_text().split("\n")[:-1] == trained["labels"]
    lmdb = classify_json(job, "-lmdb", "ds_val/train_db", name="lmdb.json")
    assert lmdb["count"] == n and lmdb["errors"] == []
    logged_correct = round(trained["logged"] * n)
    assert abs(trained["logged"] * n - logged_correct) < 1e-3  # the log holds a count over n
    assert round(lmdb["top1"] * n) == logged_correct, (lmdb["top1"], trained["logged"])
    assert 0.6 < lmdb["top1"] < 1.0 and lmdb["top5"] >= lmdb["top1"]
    assert np.trace(np.array(lmdb["confusion"])) == logged_correct
    assert sum(pc["count"] for pc in lmdb["per_class"]) == n

    folder = classify_json(job, "-folder", "val_png", name="folder.json")
    listed = classify_json(job, "-list", "val.txt", name="list.json")
    for other in (folder, listed):
        assert other["count"] == n and other["confusion"] == lmdb["confusion"]
        assert [p["label"] for p in other["predictions"]] == [p["label"] for p in lmdb["predictions"]]
        assert [[lab for lab, _ in p["top"]] for p in other["predictions"]] == \
            [[lab for lab, _ in p["top"]] for p in lmdb["predictions"]]
        assert_close_f32([[v for _, v in p["top"]] for p in other["predictions"]],
                         [[v for _, v in p["top"]] for p in lmdb["predictions"]], rtol=1e-6,
                         what="folder/list vs LMDB probabilities")
    assert folder["predictions"][0]["source"].endswith(".png")


@pytest.mark.slow
@needs_fashion
def test_bundle_net_onnx_and_pytorch_exports_give_the_same_scores(trained):
    import torch

    from brewnet.convert.pytorch_onnx import export_onnx, load_pytorch, run_onnx, save_pytorch
    from brewnet.inference.loaded import LoadedBundle
    from brewnet.inference.sources import sources_from_folder

    job = trained["job"]
    loaded = LoadedBundle(str(job / "bundle"), batch=20)
    pre = loaded.preprocessor
    paths = [p for p, _ in zip((it.source for it in sources_from_folder(str(job / "val_png")).items(loaded.labels)),
                               range(20))]
    x = np.stack([pre(p) for p in paths])  # (20, 1, 28, 28) float32, the bundle's transform
    ours = loaded.scores(x)                 # (20, 10) probabilities
    net = loaded.net
    assert tuple(net.blobs[loaded.input].shape) == (20, 1, 28, 28)

    onnx_path = str(job / "bundle.onnx")
    export_onnx(net, onnx_path)
    (onnx_out,), runtime = run_onnx(onnx_path, {loaded.input: x})
    assert_close_f32(onnx_out.reshape(20, -1), ours, rtol=1e-5, what=f"ONNX ({runtime}) vs Net")

    pt_path = str(job / "bundle.pt")
    save_pytorch(net, pt_path)
    module = load_pytorch(pt_path).eval()
    with torch.inference_mode():
        (pt_out,) = module(torch.from_numpy(x))
    assert_close_f32(pt_out.reshape(20, -1), ours, rtol=1e-5, what="PyTorch export vs Net")
    assert (ours.argmax(1) == onnx_out.reshape(20, -1).argmax(1)).all()
