"""Images/s of ``brewnet classify`` beside the same net hand-written in PyTorch, and peak memory.

    python benchmarks/bench_classify.py [--val-per-class 500] [--batch 100] [--workers 2]
                                        [--repeat 3] [--big [--big-n 100000]] [--device cpu|cuda]

1. Data: ``brewnet dataset create`` of Fashion-MNIST (``--val-per-class`` validation images per
   class, raw 1x28x28 Datums: the val LMDB the Data layer reads) and the same validation images
   exported as JPEG files in class folders.
2. Model: LeNet-BN (brewnet/models/lenet_bn_fashion_train_val.prototxt) with seeded weights and
   BatchNorm statistics, bundled by ``brewnet deploy`` (``write_bundle``).
3. Throughput, one run, measurements interleaved: ``classify`` (summary only: top-N, top-1/5,
   confusion) over the LMDB and over the JPEG folder, against a hand-written ``nn.Sequential`` of
   the same layers with the bundle's weights, in ``torch.inference_mode``, the same batch, fed by
   its own ``DataLoader`` (``--workers`` worker processes) that reads the same LMDB / decodes the
   same JPEGs, scaled by 1/256, softmax and top-5 per batch.  Best of ``--repeat``.  Prints
   images/s and brewnet / PyTorch.
4. Peak memory: ``brewnet classify`` in a child process (its ru_maxrss, and its largest decode
   worker's) over 1k
   images, and with ``--big`` over ``--big-n`` images (the LMDB's records repeated; a folder of
   copies of the JPEG files), summary only and with every prediction written by ``-json``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import brewnet  # noqa: E402
from brewnet.data.builder import create_dataset  # noqa: E402
from brewnet.data.lmdb_io import DatumWriter, read_datums  # noqa: E402
from brewnet.inference.classify import classify  # noqa: E402
from brewnet.inference.loaded import LoadedBundle  # noqa: E402
from brewnet.inference.sources import sources_from_folder, sources_from_lmdb  # noqa: E402
from brewnet.inference.deploy import write_bundle  # noqa: E402
from brewnet.proto import caffe_pb2  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
MODELS = os.path.join(os.path.dirname(brewnet.__file__), "models")
SCALE = 0.00390625


# ----- data and bundle ---------------------------------------------------------------------------
def make_data(root: str, val_per_class: int) -> tuple[str, str, list[str]]:
    """(val LMDB, JPEG folder, label names): the val split of a Fashion-MNIST dataset and its
    images as JPEG files in class folders (quality 95)."""
    from PIL import Image

    data = os.path.join(root, "fm")
    # val-percent 50 of 2 x val_per_class per class: val_per_class validation images per class
    create_dataset(FASHION, data, max_per_class=2 * val_per_class, val_percent=50, seed=0,
                   stream=open(os.devnull, "w"))
    labels = [ln.rstrip("\n") for ln in open(os.path.join(data, "labels.txt"), encoding="utf-8")]
    jpeg = os.path.join(root, "jpeg")
    folders = [name.replace("/", "_") for name in labels]
    for name in folders:
        os.makedirs(os.path.join(jpeg, name))
    for i, (_, d) in enumerate(read_datums(os.path.join(data, "val_db"))):
        a = np.frombuffer(d.data, np.uint8).reshape(d.height, d.width)
        Image.fromarray(a).save(os.path.join(jpeg, folders[d.label], f"{i:06d}.jpg"), quality=95)
    return os.path.join(data, "val_db"), jpeg, folders


def make_bundle(root: str, val_db: str, labels: list[str]) -> str:
    """LeNet-BN with seeded weights and BatchNorm statistics, through brewnet deploy."""
    text = open(os.path.join(MODELS, "lenet_bn_fashion_train_val.prototxt")).read()
    text = text.replace('source: "train_db"', f'source: "{val_db}"').replace('source: "val_db"', f'source: "{val_db}"')
    model = os.path.join(root, "train_val.prototxt")
    with open(model, "w") as f:
        f.write(text)
    brewnet.set_random_seed(0)
    net = brewnet.Net(model, brewnet.TEST)
    g = np.random.default_rng(0)
    for name, blobs in net.params.items():
        if name.endswith("_bn"):  # Caffe's statistics: sums and their weight s
            c = blobs[0].data.shape[0]
            blobs[0].data[...] = g.normal(0, 0.2, c)
            blobs[1].data[...] = g.uniform(0.5, 2.0, c)
            blobs[2].data[...] = 1.0
    weights = os.path.join(root, "init.caffemodel")
    net.save(weights)
    with open(os.path.join(root, "labels.txt"), "w") as f:
        f.write("".join(f"{n}\n" for n in labels))
    return write_bundle(model, weights, os.path.join(root, "bundle"), labels=os.path.join(root, "labels.txt"))


# ----- the same net by hand ------------------------------------------------------------------------
def handwritten(bundle_net) -> nn.Module:
    """LeNet-BN as PyTorch modules, weights and statistics copied from the bundle's net."""
    def arr(layer, i):
        return torch.from_numpy(np.array(bundle_net.params[layer][i].data, dtype=np.float32))

    def bn(layer, scale, cls, c):
        m = cls(c, eps=float(bundle_net.layer_dict[layer].eps))
        s = float(arr(layer, 2)[0])
        inv = 0.0 if s == 0 else 1.0 / s
        m.running_mean.copy_(arr(layer, 0) * inv)
        m.running_var.copy_(arr(layer, 1) * inv)
        m.weight.data.copy_(arr(scale, 0))
        m.bias.data.copy_(arr(scale, 1))
        return m

    conv1, conv2 = nn.Conv2d(1, 20, 5, bias=False), nn.Conv2d(20, 50, 5, bias=False)
    conv1.weight.data.copy_(arr("conv1", 0))
    conv2.weight.data.copy_(arr("conv2", 0))
    ip1, ip2 = nn.Linear(800, 500, bias=False), nn.Linear(500, 10)
    ip1.weight.data.copy_(arr("ip1", 0))
    ip2.weight.data.copy_(arr("ip2", 0))
    ip2.bias.data.copy_(arr("ip2", 1))
    model = nn.Sequential(
        conv1, bn("conv1_bn", "conv1_scale", nn.BatchNorm2d, 20), nn.ReLU(), nn.MaxPool2d(2, 2),
        conv2, bn("conv2_bn", "conv2_scale", nn.BatchNorm2d, 50), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), ip1, bn("ip1_bn", "ip1_scale", nn.BatchNorm1d, 500), nn.ReLU(), ip2, nn.Softmax(dim=1))
    return model.eval()


class LmdbDataset(torch.utils.data.Dataset):
    """The val LMDB read record by record (an environment per DataLoader worker)."""

    def __init__(self, path: str):
        import lmdb
        self.path = path
        with lmdb.open(path, readonly=True, lock=False) as env, env.begin() as txn:
            self.keys = [k for k, _ in txn.cursor()]
        self.env = None

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        import lmdb
        if self.env is None:
            self.env = lmdb.open(self.path, readonly=True, lock=False, readahead=False)
        with self.env.begin() as txn:
            d = caffe_pb2.Datum.FromString(txn.get(self.keys[i]))
        x = torch.frombuffer(bytearray(d.data), dtype=torch.uint8).reshape(d.channels, d.height, d.width)
        return x.float().mul_(SCALE), d.label

    def close(self):
        """LMDB opens an environment once per process: close it before brewnet opens the same one
        (with num_workers 0 the environment lives in this process)."""
        if self.env is not None:
            self.env.close()
            self.env = None


class JpegDataset(torch.utils.data.Dataset):
    """A folder of class folders of JPEGs (sorted), decoded grey."""

    def __init__(self, root: str):
        self.items = [(os.path.join(root, c, f), k) for k, c in enumerate(sorted(os.listdir(root)))
                      for f in sorted(os.listdir(os.path.join(root, c)))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image
        path, label = self.items[i]
        with Image.open(path) as im:
            a = np.asarray(im.convert("L"), dtype=np.uint8)
        return torch.from_numpy(a.copy())[None].float().mul_(SCALE), label


def run_torch(model: nn.Module, dataset, batch: int, workers: int, device) -> tuple[float, float]:
    """(images/s, top-1) of the hand-written net over a DataLoader."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers, shuffle=False,
                                         persistent_workers=False)
    t = time.perf_counter()
    n = correct = 0
    with torch.inference_mode():
        for x, y in loader:
            p = model(x.to(device))
            top = p.topk(5, dim=1).indices.cpu()
            correct += int((top[:, 0] == y).sum())
            n += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    rate = n / (time.perf_counter() - t)
    if hasattr(dataset, "close"):
        dataset.close()
    return rate, correct / n


def run_ours(loaded: LoadedBundle, sources, workers: int) -> tuple[float, float]:
    t = time.perf_counter()
    r = classify(loaded, sources, workers=workers, summary_only=True)
    return r.count / (time.perf_counter() - t), r.top1


# ----- peak memory ----------------------------------------------------------------------------------
_CHILD = """import json, resource, sys
from brewnet.commands import main as cli
rc = cli.main(sys.argv[2:])
kb = lambda who: resource.getrusage(who).ru_maxrss  # Linux: KB
with open(sys.argv[1], "w") as f:
    json.dump({"rc": rc, "self": kb(resource.RUSAGE_SELF), "workers": kb(resource.RUSAGE_CHILDREN)}, f)
"""


def peak_rss_mb(args: list[str], root: str) -> tuple[float, float, float]:
    """(peak RSS of a child running ``brewnet ARGS``, of its largest decode worker process (0 with
    threads), seconds), RSS in MB."""
    out = os.path.join(root, "rss.json")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", _CHILD, out, *args], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True)
    with open(out) as f:
        r = json.load(f)
    if r["rc"] != 0:
        raise RuntimeError(f"brewnet {' '.join(args)} failed ({r['rc']})")
    return r["self"] / 1024.0, r["workers"] / 1024.0, time.perf_counter() - t


def repeated_lmdb(src: str, dst: str, n: int) -> str:
    records = [v.SerializeToString() for _, v in read_datums(src)]
    with DatumWriter(dst, batch=5000) as w:
        for i in range(n):
            w.put_raw(b"%08d" % i, records[i % len(records)])
    return dst


def repeated_folder(src: str, dst: str, n: int) -> str:
    files = [(c, os.path.join(src, c, f)) for c in sorted(os.listdir(src))
             for f in sorted(os.listdir(os.path.join(src, c)))]
    blobs = [(c, open(p, "rb").read()) for c, p in files]
    for c in {c for c, _ in files}:
        os.makedirs(os.path.join(dst, c))
    for i in range(n):
        c, data = blobs[i % len(blobs)]
        with open(os.path.join(dst, c, f"{i:07d}.jpg"), "wb") as f:
            f.write(data)
    return dst


def memory_table(root: str, bundle: str, val_db: str, jpeg: str, sizes: list[int], workers: int) -> None:
    print(f"\npeak memory of `brewnet classify` in a child process (ru_maxrss), workers {workers} "
          "(JPEGs decode in forked processes: 'worker MB' is the largest one's peak, most of it pages "
          "shared with the main process):")
    print(f"{'images':>8} {'source':<8} {'mode':<14} {'peak MB':>8} {'worker MB':>10} {'seconds':>8}")
    for n in sizes:
        db = repeated_lmdb(val_db, os.path.join(root, f"db_{n}"), n)
        folder = repeated_folder(jpeg, os.path.join(root, f"jpeg_{n}"), n)
        for source, flag_args in (("lmdb", ["-lmdb", db]), ("folder", ["-folder", folder])):
            for mode, extra in (("summary_only", ["-summary_only"]),
                                ("-json", ["-json", os.path.join(root, "out.json")])):
                mb, wmb, s = peak_rss_mb(["classify", "-bundle", bundle, *flag_args, "-workers", str(workers),
                                          *extra], root)
                print(f"{n:>8} {source:<8} {mode:<14} {mb:8.0f} {wmb:10.0f} {s:8.1f}", flush=True)
        shutil.rmtree(db)
        shutil.rmtree(folder)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--val-per-class", type=int, default=500)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2, help="decode threads (ours) / DataLoader processes (theirs)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big", action="store_true", help="also measure peak memory over --big-n images (minutes)")
    ap.add_argument("--big-n", type=int, default=100_000)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    tmp = tempfile.mkdtemp(prefix="brewnet-bench-classify-")
    try:
        val_db, jpeg, labels = make_data(tmp, args.val_per_class)
        bundle = make_bundle(tmp, val_db, labels)
        loaded = LoadedBundle(bundle, device=device, batch=args.batch)
        model = handwritten(loaded.net).to(device)
        # the two nets agree (sanity: the comparison is between equal computations)
        x = np.stack([loaded.preprocessor.datum_to_input(d).astype(np.float32) * SCALE
                      for _, d in read_datums(val_db, limit=args.batch)])
        with torch.inference_mode():
            ref = model(torch.from_numpy(x).to(device)).cpu().numpy()
        ours = loaded.scores(x)
        print(f"device {device}, torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads "
              f"{torch.get_num_threads()}, batch {args.batch}, workers {args.workers}, "
              f"{10 * args.val_per_class} images; max |brewnet - PyTorch| prob {np.abs(ours - ref).max():.2e}")
        cases = [("val LMDB (raw)", sources_from_lmdb(val_db), LmdbDataset(val_db)),
                 ("JPEG folder", sources_from_folder(jpeg), JpegDataset(jpeg))]
        print(f"{'source':<16}{'brewnet img/s':>15}{'PyTorch img/s':>15}{'ratio':>8}")
        for name, src, ds in cases:
            best_ours = best_theirs = 0.0
            for _ in range(args.repeat):  # interleaved, so a busy machine slows both alike
                rate, top1 = run_ours(loaded, src, args.workers)
                best_ours = max(best_ours, rate)
                rate_t, top1_t = run_torch(model, ds, args.batch, args.workers, device)
                best_theirs = max(best_theirs, rate_t)
            assert abs(top1 - top1_t) < 1e-9 or name.startswith("JPEG"), (top1, top1_t)
            print(f"{name:<16}{best_ours:15.0f}{best_theirs:15.0f}{best_ours / best_theirs:8.2f}", flush=True)
        if not args.no_memory:
            memory_table(tmp, bundle, val_db, jpeg, [1000] + ([args.big_n] if args.big else []), args.workers)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
