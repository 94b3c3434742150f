"""Images/s of the data pipeline alone beside images/s that training consumes, in one run.

    python benchmarks/bench_data_pipeline.py [--data DIR] [--max-per-class 1000] [--batch 64]
                                            [--iters 50] [--device cpu|cuda] [--encoding none|png]

Builds Fashion-MNIST LMDBs with ``brewnet dataset create`` (or uses --data DIR made by it), then:

1. pipeline: a net holding only the TRAIN ``Data`` layer of LeNet-BN (batch 64, scale 1/256,
   plus a random crop+mirror variant) is forwarded as fast as it goes — the prefetch thread's
   decode + transform throughput;
2. training: LeNet-BN (brewnet/models/lenet_bn_fashion_train_val.prototxt) and the small ResNet
   of bench_train_step.py (fed 3x32x32 colour images from a second LMDB built with --color
   --resize 32x32) run forward_loss + backward + an SGD step per batch, reading through the same
   Data layer; ``waits`` counts the steps that found no prefetched batch ready.

Prints images/s of each and the ratio pipeline / training (> 1: training never waits for data).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import brewnet  # noqa: E402
from brewnet import formats  # noqa: E402
from brewnet.data.builder import create_dataset  # noqa: E402

FASHION = "/usr/share/datasets/fashion-mnist"
MODELS = os.path.join(os.path.dirname(brewnet.__file__), "models")


def data_layer(source, batch, transform):
    return (f'layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }} '
            f'transform_param {{ {transform} }} data_param {{ source: "{source}" backend: LMDB '
            f'batch_size: {batch} }} }}\n')


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_pipeline(source, batch, transform, iters, device):
    net = brewnet.Net(formats.net_from_text(data_layer(source, batch, transform)), brewnet.TRAIN, device=device)
    for _ in range(5):  # start the thread, fill the queue
        net.forward_loss()
    time.sleep(0.5)
    # drain what was prefetched during the sleep so we time production, not the queue
    layer = net.layers[0]
    while not layer._prefetcher.queue.empty():
        layer._prefetcher.get()
    t = time.perf_counter()
    for _ in range(iters):
        net.forward_loss()
    _sync(device)
    return iters * batch / (time.perf_counter() - t)


def bench_training(net_param, iters, device):
    brewnet.set_random_seed(0)
    net = brewnet.Net(net_param, brewnet.TRAIN, device=device)
    params = [p.tensor for p in net.learnable if p.tensor.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)
    batch = net.blobs["data"].shape[0]

    def step():
        loss, _ = net.forward_loss()
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    for _ in range(5):
        step()
    _sync(device)
    layer = net.layers[0]
    waits0 = layer.prefetch_waits
    t = time.perf_counter()
    for _ in range(iters):
        step()
    _sync(device)
    return iters * batch / (time.perf_counter() - t), layer.prefetch_waits - waits0


def lenet_param(db, batch):
    p = formats.read_net(os.path.join(MODELS, "lenet_bn_fashion_train_val.prototxt"))
    for lp in p.layer:
        if lp.type == "Data":
            lp.data_param.source = db
            lp.data_param.batch_size = batch
    return p


def resnet_param(db, batch):
    from bench_train_step import resnet_prototxt
    p = formats.net_from_text(resnet_prototxt(batch))
    layers = [lp for lp in p.layer if lp.type != "Input"]
    del p.layer[:]
    p.layer.extend(formats.net_from_text(data_layer(db, batch, "scale: 0.00390625 mirror: true")).layer)
    p.layer.extend(layers)
    return p


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="folder made by `brewnet dataset create` (default: build one)")
    ap.add_argument("--max-per-class", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--encoding", default="none", choices=["none", "png"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-resnet", action="store_true")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    tmp = tempfile.TemporaryDirectory(prefix="brewnet-bench-data-")
    quiet = open(os.devnull, "w")
    data = args.data
    if data is None:
        data = os.path.join(tmp.name, "fm")
        create_dataset(FASHION, data, max_per_class=args.max_per_class, encoding=args.encoding, seed=0,
                       stream=quiet)
    gray_db = os.path.join(data, "train_db")
    print(f"device {device}, torch {torch.__version__}, {os.cpu_count()} CPUs, batch {args.batch}, "
          f"{args.iters} batches per measurement, encoding {args.encoding}")
    rows = []
    pipe = bench_pipeline(gray_db, args.batch, "scale: 0.00390625", args.iters * 4, device)
    pipe_aug = bench_pipeline(gray_db, args.batch, "scale: 0.00390625 crop_size: 24 mirror: true",
                              args.iters * 4, device)
    train, waits = bench_training(lenet_param(gray_db, args.batch), args.iters, device)
    rows.append(("LeNet-BN 1x28x28", pipe, train, waits))
    print(f"pipeline 1x28x28 with random crop 24 + mirror: {pipe_aug:10.0f} images/s")
    if not args.no_resnet:
        color = os.path.join(tmp.name, "fm_color")
        create_dataset(FASHION, color, max_per_class=max(1, args.max_per_class // 2), color=True,
                       resize=(32, 32), encoding=args.encoding, val_percent=0, seed=0, stream=quiet)
        cdb = os.path.join(color, "train_db")
        pipe_c = bench_pipeline(cdb, args.batch, "scale: 0.00390625 mirror: true", args.iters * 4, device)
        train_c, waits_c = bench_training(resnet_param(cdb, args.batch), max(10, args.iters // 2), device)
        rows.append(("small ResNet 3x32x32", pipe_c, train_c, waits_c))
    print(f"{'net':<22}{'pipeline img/s':>16}{'training img/s':>16}{'ratio':>8}{'waits':>7}")
    for name, p, t, w in rows:
        print(f"{name:<22}{p:16.0f}{t:16.0f}{p / t:8.1f}{w:7d}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
