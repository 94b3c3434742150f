"""``brewnet demo``: the whole DIGITS flow on a real dataset, in one command.

1. builds Fashion-MNIST LMDBs (``brewnet dataset create``) from Debian's dataset-fashion-mnist,
   once, into ``<workdir>/data``;
2. trains LeNet with BVLC BatchNorm + Scale (brewnet/models/lenet_bn_fashion_*.prototxt) with
   Caffe's SGD solver, validating on the held-out 10% of the training images;
3. loads the saved caffemodel into a TEST-phase net and scores the 10,000 test images (t10k),
   which training never saw, and prints the accuracy.
"""
from __future__ import annotations

import logging
import os
import time

from ..errors import BrewnetError
from .shared_flags import flag

log = logging.getLogger("brewnet")

FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


def add_arguments(parser) -> None:
    flag(parser, "data", default=FASHION_MNIST, help="folder with the Fashion-MNIST IDX files")
    flag(parser, "workdir", default=os.path.join("runs", "demo"), help="where LMDBs and snapshots go")
    flag(parser, "iterations", type=int, default=1500, help="training iterations (batch 64)")
    flag(parser, "gpu", default="", help="GPU id to use (default: CPU)")


def _set_sources(net_param, sources: dict[str, str]) -> None:
    """Point the Data layers at absolute LMDB paths (TRAIN/TEST by their include phase)."""
    from ..proto import caffe_pb2

    for lp in net_param.layer:
        if lp.type == "Data":
            phase = lp.include[0].phase if lp.include else caffe_pb2.TRAIN
            lp.data_param.source = sources["train" if phase == caffe_pb2.TRAIN else "val"]


def prepare_data(source: str, data_dir: str) -> dict[str, str]:
    from ..data.builder import create_dataset

    dbs = {k: os.path.join(data_dir, f"{k}_db") for k in ("train", "val", "test")}
    if not all(os.path.isdir(p) for p in dbs.values()):
        if not os.path.isdir(source):
            raise BrewnetError(f"no Fashion-MNIST at {source}: install it with "
                               "'apt-get install dataset-fashion-mnist' or give -data DIR")
        log.info("Building Fashion-MNIST LMDBs in %s (once)", data_dir)
        create_dataset(source, data_dir, overwrite=True, seed=1)
    return dbs


def score(model_param, weights: str, test_db: str, device) -> tuple[float, int]:
    """Accuracy of ``weights`` over every image of ``test_db`` in a TEST-phase net."""
    import torch

    from ..data.lmdb_io import count_records
    from ..net import TEST, Net
    from ..proto import caffe_pb2

    param = caffe_pb2.NetParameter()
    param.CopyFrom(model_param)
    _set_sources(param, {"train": test_db, "val": test_db})
    net = Net(param, TEST, weights=weights, device=device)
    batch = next(lp.data_param.batch_size for lp in net.net_param.layer if lp.type == "Data")
    n = count_records(test_db)
    correct = 0.0
    iters = -(-n // batch)
    with torch.no_grad():
        for _ in range(iters):
            _, outs = net.forward_loss(outputs=["accuracy"])
            correct += float(outs["accuracy"]) * batch
    return correct / (iters * batch), iters * batch


def run(args) -> int:
    from .. import formats
    from ..solver import get_solver
    from .shared_flags import device_from_flag

    device = device_from_flag(args.gpu)
    workdir = os.path.abspath(args.workdir)
    os.makedirs(workdir, exist_ok=True)
    dbs = prepare_data(args.data, os.path.join(workdir, "data"))

    net_param = formats.read_net(os.path.join(MODELS, "lenet_bn_fashion_train_val.prototxt"))
    _set_sources(net_param, dbs)
    solver = formats.read_solver(os.path.join(MODELS, "lenet_bn_fashion_solver.prototxt"))
    solver.ClearField("net")
    solver.net_param.CopyFrom(net_param)
    solver.max_iter = args.iterations
    solver.snapshot = 0  # one snapshot, after training
    solver.test_interval = 500
    solver.snapshot_prefix = os.path.join(workdir, "lenet_bn")
    formats.write_prototxt(solver, os.path.join(workdir, "solver.prototxt"))

    log.info("Training LeNet-BN on Fashion-MNIST for %d iterations of batch 64 on %s",
             args.iterations, device)
    start = time.time()
    s = get_solver(solver, device=device)
    s.solve()
    weights = f"{solver.snapshot_prefix}_iter_{s.iter}.caffemodel"
    train_time = time.time() - start
    accuracy, n = score(net_param, weights, dbs["test"], device)
    print(f"Trained {s.iter} iterations in {train_time:.0f} s; weights: {weights}")
    print(f"Fashion-MNIST test accuracy (TEST-phase net, global BatchNorm statistics, "
          f"{n} images): {accuracy:.4f}")
    return 0
