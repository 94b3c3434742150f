"""A small data-parallel training workspace: an LMDB of 8×8 grey patterns in 10 classes, a
BatchNorm net (BVLC BatchNorm + Scale, fused by the net, and an NVCaffe-dialect BatchNorm with
scale/bias) and solvers; every number here is made up for the tests."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

RECORDS = 640


def write_lmdb(path: Path, records: int = RECORDS, seed: int = 7) -> None:
    from brewnet.data.lmdb_io import DatumWriter
    from brewnet.pycaffe.io import array_to_datum

    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(10, 1, 8, 8))
    with DatumWriter(str(path)) as w:
        for i in range(records):
            label = int(rng.integers(0, 10))
            noise = rng.normal(0, 40, size=(1, 8, 8))
            img = np.clip(prototypes[label] + noise, 0, 255).astype(np.uint8)
            w.put(array_to_datum(img, label))


def net_prototxt(source: str, batch: int, batchnorm: bool = True) -> str:
    bn = """
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
""" if batchnorm else ""
    bn2 = """
layer { name: "bn2" type: "BatchNorm" bottom: "ip1" top: "ip1"
        batch_norm_param { scale_bias: true moving_average_fraction: 0.9 } }
""" if batchnorm else ""
    return f"""name: "dp_net"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
        transform_param {{ scale: 0.00390625 }}
        data_param {{ source: "{source}" batch_size: {batch} backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
        transform_param {{ scale: 0.00390625 }}
        data_param {{ source: "{source}" batch_size: 40 backend: LMDB }} }}
layer {{ name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param {{ num_output: 6 kernel_size: 3 weight_filler {{ type: "xavier" }}
                            bias_term: {str(not batchnorm).lower()} }} }}
{bn}
layer {{ name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }}
layer {{ name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param {{ num_output: 16 weight_filler {{ type: "xavier" }}
                               bias_term: {str(not batchnorm).lower()} }} }}
{bn2}
layer {{ name: "relu2" type: "ReLU" bottom: "ip1" top: "ip1" }}
layer {{ name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
        inner_product_param {{ num_output: 10 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }}
layer {{ name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
        include {{ phase: TEST }} }}
"""


def solver_prototxt(net: str, prefix: str, max_iter: int = 20, iter_size: int = 1, snapshot: int = 0,
                    clip_gradients: float = 1, extra: str = "") -> str:
    """SGD with momentum, weight decay, a step policy and clipping (active in the first
    iterations at 1, so that it must see the averaged gradient)."""
    return f"""net: "{net}"
test_iter: 4
test_interval: 10
base_lr: 0.05
momentum: 0.9
weight_decay: 0.0005
lr_policy: "step"
gamma: 0.5
stepsize: 8
display: 1
max_iter: {max_iter}
iter_size: {iter_size}
clip_gradients: {clip_gradients}
average_loss: 3
snapshot: {snapshot}
snapshot_prefix: "{prefix}"
random_seed: 1701
{extra}"""


def make(root: Path, name: str, batch: int, batchnorm: bool = True, **solver_kwargs) -> Path:
    """``root/<name>.solver.prototxt`` training from ``root/lmdb`` (made once) with ``batch``."""
    root = Path(root)
    db = root / "lmdb"
    if not db.exists():
        write_lmdb(db)
    net = root / f"{name}.prototxt"
    net.write_text(net_prototxt(str(db), batch, batchnorm))
    os.makedirs(root / name, exist_ok=True)
    solver = root / f"{name}.solver.prototxt"
    solver.write_text(solver_prototxt(str(net), str(root / name / "snap"), **solver_kwargs))
    return solver
