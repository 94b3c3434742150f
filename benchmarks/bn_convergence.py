"""Proof for issue 3, part 6: the DIGITS #629 BatchNorm configurations converge in brewnet.

For each configuration -- the four seed prototxts (benchmarks/seed_configs/), LeNet-BN
(brewnet/models) and seed net (a) at 8x the learning rate, and LeNet-BN at 8x with Caffe's default
moving_average_fraction 0.999, without and with brewnet's opt-in precise BatchNorm -- and for the
same network with every BatchNorm (and the Scale right after it)
stripped out:

1. train ``--iterations`` (default 1500) iterations of batch 64 on Fashion-MNIST with SGD
   (momentum 0.9, weight_decay 5e-4, base_lr 0.01 -- 0.08 for the 8x configuration -- and one
   lr_policy for all, printed), fixed seeds, and save the caffemodel;
2. score the saved caffemodel over the whole test set (the 10,000 t10k images) in a TEST-phase
   net built from the prototxt, exactly as the prototxt defines it;
3. score the same weights with every BatchNorm forced to global (stored) statistics and with every
   BatchNorm forced to batch statistics (``use_global_stats`` false, statistics not updated,
   test batches of 100), and report the gap; also the solver's own TEST net (tensors shared with
   the TRAIN net), and whether reloading the caffemodel gives back the same BatchNorm blobs.

The done criterion of the issue: every configuration reaches >= 0.85 in its TEST-phase net, and
that accuracy is within 1 point of the batch-statistics accuracy of the same weights.

    python benchmarks/bn_convergence.py [--workdir runs/bn_convergence] [--iterations 1500]
                                        [--configs bn_after_data,lenet_bn_lr_x8] [--lr-policy poly]
                                        [--json out.json]

The LMDBs are built once into ``<workdir>/data`` (or ``<workdir>/data_max<N>`` with
``--max-per-class N``, a small subset for tests).
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import logging
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
SEED_DIR = os.path.join(HERE, "seed_configs")
FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
SEED = 1701

# SGD settings shared by every run (the issue's: momentum 0.9, weight_decay 5e-4, batch 64).
BASE_LR = 0.01
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
# One schedule for every run (--lr-policy), each a standard Caffe lr_policy.
LR_POLICIES = {
    "poly": ({"lr_policy": "poly", "power": 1.0},
             "poly (power 1): lr = base_lr * (1 - iter/max_iter), linear to 0"),
    "inv": ({"lr_policy": "inv", "gamma": 1e-4, "power": 0.75},
            "inv (gamma 1e-4, power 0.75): lr = base_lr * (1 + 1e-4 * iter)^-0.75 (Caffe's LeNet)"),
    "step": ({"lr_policy": "multistep", "gamma": 0.1, "stepvalue_fraction": (2 / 3,)},
             "multistep: lr = base_lr, x0.1 after 2/3 of max_iter"),
}
DEFAULT_LR_POLICY = "poly"


@dataclass
class Config:
    name: str
    prototxt: str
    lr_factor: float = 1.0
    description: str = ""
    bn_recalibrate: int = 0  # brewnet's opt-in precise BatchNorm (Solver.bn_recalibrate), not Caffe's
    moving_average_fraction: float | None = None  # set on every BatchNorm layer, when given


def _models_dir() -> str:
    import brewnet
    return os.path.join(os.path.dirname(os.path.abspath(brewnet.__file__)), "models")


def configurations() -> dict[str, Config]:
    return {c.name: c for c in (
        Config("bn_after_relu_train_test", os.path.join(SEED_DIR, "bn_after_relu_train_test.prototxt"),
               description="(a) sodeypunk: BN after ReLU, separate TRAIN/TEST layers, use_global_stats false/true"),
        Config("nvcaffe_inplace_4params_cudnn", os.path.join(SEED_DIR, "nvcaffe_inplace_4params_cudnn.prototxt"),
               description="(b) mathmanu: in-place BN, NVCaffe 4 param blocks, engine CUDNN"),
        Config("bn_after_data", os.path.join(SEED_DIR, "bn_after_data.prototxt"),
               description="(c) engharat: BN right after the data layer, use_global_stats: false in both phases"),
        Config("lenet_bn_lr_x8", os.path.join(_models_dir(), "lenet_bn_fashion_train_val.prototxt"), 8.0,
               description="(d) LeNet-BN (BVLC BatchNorm + Scale, moving_average_fraction 0.99) at "
                           "base_lr x8 = 0.08"),
        Config("lenet_bn_lr_x8_maf999", os.path.join(_models_dir(), "lenet_bn_fashion_train_val.prototxt"), 8.0,
               moving_average_fraction=0.999,
               description="(d-) (d) with Caffe's default moving_average_fraction 0.999 (lint BN008)"),
        Config("bn_after_relu_lr_x8", os.path.join(SEED_DIR, "bn_after_relu_train_test.prototxt"), 8.0,
               description="(d') sodeypunk's net (a) at base_lr x8 = 0.08 (engharat's 8x)"),
        Config("lenet_bn_lr_x8_precise_bn", os.path.join(_models_dir(), "lenet_bn_fashion_train_val.prototxt"),
               8.0, bn_recalibrate=100, moving_average_fraction=0.999,
               description="(d'') (d-) trained the same way, with brewnet's opt-in precise BatchNorm "
                           "(`brewnet train -bn_recalibrate 100`: statistics re-estimated over 100 training "
                           "batches before the snapshot)"),
        Config("nvcaffe_2params_phase_default",
               os.path.join(SEED_DIR, "nvcaffe_2params_phase_default.prototxt"),
               description="(e) mfernezir: 2 param blocks, the phase decides (the thread's working one)"),
    )}


DEFAULT_CONFIGS = ("bn_after_relu_train_test", "nvcaffe_inplace_4params_cudnn", "bn_after_data",
                   "lenet_bn_lr_x8", "bn_after_relu_lr_x8", "nvcaffe_2params_phase_default",
                   "lenet_bn_lr_x8_maf999", "lenet_bn_lr_x8_precise_bn")


# ------------------------------------------------------------------------------------------------
# nets
# ------------------------------------------------------------------------------------------------

def strip_batchnorm(net_param):
    """The same net without BatchNorm layers and the Scale layer right after each one.

    Consumers of a removed layer's top read its bottom instead.  Where the stripped Scale carried
    the bias (``bias_term``) of a Convolution/InnerProduct that has ``bias_term: false`` (LeNet-BN),
    that layer gets its bias back (constant 0 filler, lr_mult 2) so the baseline keeps a bias.
    Returns (new NetParameter, notes)."""
    from brewnet.proto import caffe_pb2

    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    rename: dict[str, str] = {}
    bn_tops: set[str] = set()
    producer: dict[str, caffe_pb2.LayerParameter] = {}
    notes = []
    for src in net_param.layer:
        lp = caffe_pb2.LayerParameter()
        lp.CopyFrom(src)
        for k, b in enumerate(lp.bottom):
            lp.bottom[k] = rename.get(b, b)
        for k, t in enumerate(lp.top):  # an in-place layer keeps working in place on the new name
            if t in src.bottom and t in rename:
                lp.top[k] = rename[t]
        if lp.type == "BatchNorm" or (lp.type == "Scale" and len(src.bottom) == 1 and src.bottom[0] in bn_tops):
            src_bottom, top = lp.bottom[0], src.top[0]
            if lp.type == "BatchNorm":
                bn_tops.add(top)
            elif lp.scale_param.bias_term:
                owner = producer.get(src_bottom)
                if owner is not None and owner.type in ("Convolution", "InnerProduct"):
                    sub = owner.convolution_param if owner.type == "Convolution" else owner.inner_product_param
                    if not sub.bias_term:
                        sub.bias_term = True
                        sub.bias_filler.type = "constant"
                        if len(owner.param) == 1:
                            owner.param.add(lr_mult=2)
                        notes.append(f"{owner.name}: bias_term restored (was carried by {lp.name})")
            if top != src_bottom:
                rename[top] = src_bottom
            continue
        for t in src.top:
            if t not in src.bottom:
                rename.pop(t, None)
        new = out.layer.add()
        new.CopyFrom(lp)
        for t in new.top:
            producer[t] = new
    out.name = net_param.name + "_noBN"
    return out, notes


def set_sources(net_param, train_db: str, test_db: str) -> None:
    from brewnet.proto import caffe_pb2
    for lp in net_param.layer:
        if lp.type == "Data":
            phase = lp.include[0].phase if lp.include else caffe_pb2.TRAIN
            lp.data_param.source = train_db if phase == caffe_pb2.TRAIN else test_db


def batch_size_of_test_phase(net_param) -> int:
    from brewnet.proto import caffe_pb2
    for lp in net_param.layer:
        if lp.type == "Data" and lp.include and lp.include[0].phase == caffe_pb2.TEST:
            return lp.data_param.batch_size
    raise SystemExit(f"{net_param.name}: no TEST Data layer")


def lint_rules(net_param, text: str, max_iter: int | None = None) -> dict[str, int]:
    """What `brewnet lint -max-iter N` finds: {rule:severity: count}."""
    from brewnet.batchnorm.lint import lint
    counts: dict[str, int] = {}
    for f in lint(net_param, text, max_iter=max_iter):
        key = f"{f.rule}:{f.severity}"
        counts[key] = counts.get(key, 0) + 1
    return counts


# ------------------------------------------------------------------------------------------------
# data, training, scoring
# ------------------------------------------------------------------------------------------------

def prepare_data(source: str, data_dir: str, max_per_class: int | None) -> dict[str, str]:
    from brewnet.data.builder import create_dataset
    dbs = {k: os.path.join(data_dir, f"{k}_db") for k in ("train", "val", "test")}
    if not all(os.path.isdir(p) for p in dbs.values()):
        if not os.path.isdir(source):
            raise SystemExit(f"no Fashion-MNIST at {source} (apt-get install dataset-fashion-mnist)")
        print(f"building Fashion-MNIST LMDBs in {data_dir} (once)", flush=True)
        create_dataset(source, data_dir, overwrite=True, seed=1, max_per_class=max_per_class,
                       stream=open(os.devnull, "w"))
    return dbs


def train(net_param, iterations: int, base_lr: float, prefix: str, seed: int,
          lr_policy: str = DEFAULT_LR_POLICY, test_batches: int = 0,
          bn_recalibrate: int = 0) -> tuple[str, float, float]:
    """Train with SGD; returns (caffemodel path, training seconds, accuracy of the solver's own
    TEST net -- which shares the TRAIN net's tensors -- over ``test_batches`` batches after
    training, NaN when 0)."""
    from brewnet.proto import caffe_pb2
    from brewnet.solver import get_solver

    sp = caffe_pb2.SolverParameter()
    sp.net_param.CopyFrom(net_param)
    sp.type = "SGD"
    sp.base_lr = base_lr
    sp.momentum = MOMENTUM
    sp.weight_decay = WEIGHT_DECAY
    policy = dict(LR_POLICIES[lr_policy][0])
    sp.lr_policy = policy.pop("lr_policy")
    for frac in policy.pop("stepvalue_fraction", ()):
        sp.stepvalue.append(max(1, int(round(frac * iterations))))
    for k, v in policy.items():
        setattr(sp, k, v)
    sp.max_iter = iterations
    sp.display = 0
    sp.snapshot = 0
    sp.snapshot_after_train = True
    sp.snapshot_prefix = prefix
    sp.random_seed = seed
    if test_batches:
        sp.test_iter.append(test_batches)
        sp.test_interval = iterations + 1  # no test while training; one after, below
        sp.test_initialization = False      # (Caffe's default tests at iteration 0 too)
    start = time.perf_counter()
    solver = get_solver(sp, device="cpu")
    solver.bn_recalibrate = bn_recalibrate
    solver.solve()
    seconds = time.perf_counter() - start
    shared = float(solver.test(0)["accuracy"]) if test_batches else float("nan")
    return f"{prefix}_iter_{solver.iter}.caffemodel", seconds, shared



def evaluate(net_param, weights: str, test_db: str, n_images: int, mode: str) -> tuple[float, str]:
    """Accuracy of ``weights`` over the first ``n_images`` of ``test_db`` in a TEST-phase net.

    mode "as_defined": BatchNorm as the prototxt says in TEST (explicit use_global_stats wins,
    else the phase decides); "global": every BatchNorm uses the stored statistics; "batch": every
    BatchNorm normalises with the test batch's own statistics and leaves the stored ones alone.
    Returns (accuracy, what the BatchNorm layers did: "global", "batch", "mixed" or "-")."""
    import torch

    from brewnet.net import TEST, Net
    from brewnet.proto import caffe_pb2

    param = caffe_pb2.NetParameter()
    param.CopyFrom(net_param)
    set_sources(param, test_db, test_db)
    net = Net(param, TEST, weights=weights, device="cpu")
    bns = [layer for layer in net.layers if layer.type == "BatchNorm"]
    for bn in bns:
        if mode == "global":
            bn.use_global_stats = True
        elif mode == "batch":
            bn.use_global_stats = False
        bn.update_statistics = False  # scoring never changes the stored statistics
    used = {bool(bn.use_global_stats) for bn in bns}
    did = "-" if not bns else ("mixed" if len(used) > 1 else ("global" if True in used else "batch"))
    batch = batch_size_of_test_phase(net.net_param)
    iters = -(-n_images // batch)
    correct = 0.0
    with torch.no_grad():
        for _ in range(iters):
            _, outs = net.forward_loss(outputs=["accuracy"])
            correct += float(outs["accuracy"]) * batch
    return correct / (iters * batch), did


def roundtrip_changes(net_param, weights: str) -> list[str]:
    """BatchNorm layers whose blobs, loaded from ``weights`` into a TEST net, are not what the file
    holds (written back in the layer's own layout): a loader that misreads a layout shows here."""
    import numpy as np

    from brewnet import formats
    from brewnet.net import TEST, Net

    net = Net(net_param, TEST, weights=weights, device="cpu")
    layers = net.layer_dict
    changed = []
    for lp in formats.read_caffemodel(weights).layer:
        if lp.type != "BatchNorm" or lp.name not in layers:
            continue
        mine = layers[lp.name].caffe_blob_arrays()
        theirs = [formats.blob_to_array(b) for b in lp.blobs]
        if len(mine) != len(theirs) or not all(
                np.allclose(np.ravel(a), np.ravel(b), rtol=1e-6, atol=0) for a, b in zip(mine, theirs)):
            changed.append(lp.name)
    return changed


@dataclass
class Result:
    config: str
    description: str
    base_lr: float
    test_net: float              # the TEST-phase net, as the prototxt defines it
    test_net_mode: str           # what its BatchNorm layers do: global / batch statistics
    global_stats: float          # every BatchNorm on stored statistics
    batch_stats: float           # every BatchNorm on the test batch's statistics
    gap_points: float            # (test_net - batch_stats) * 100
    baseline: float              # the same net without BatchNorm (TEST-phase net)
    train_s: float
    baseline_train_s: float
    solver_test_net: float       # the solver's own TEST net after training (tensors shared with TRAIN)
    lint: dict = field(default_factory=dict)
    baseline_notes: list = field(default_factory=list)
    reload_changed: list = field(default_factory=list)  # BN layers the caffemodel loader misread

    @property
    def passes(self) -> bool:
        return self.test_net >= 0.85 and abs(self.gap_points) <= 1.0


_BASELINES: dict[tuple, tuple[float, float]] = {}


def run_config(cfg: Config, dbs: dict[str, str], workdir: str, iterations: int, n_test: int,
               seed: int, baseline: bool = True, lr_policy: str = DEFAULT_LR_POLICY) -> Result:
    from brewnet import formats, runtime

    text = open(cfg.prototxt, encoding="utf-8").read()
    net_param = formats.read_net(cfg.prototxt)
    if cfg.moving_average_fraction is not None:
        for lp in net_param.layer:
            if lp.type == "BatchNorm":
                lp.batch_norm_param.moving_average_fraction = cfg.moving_average_fraction
    lint = lint_rules(net_param, text, iterations)
    set_sources(net_param, dbs["train"], dbs["test"])
    base_lr = BASE_LR * cfg.lr_factor
    out_dir = os.path.join(workdir, cfg.name)
    os.makedirs(out_dir, exist_ok=True)

    runtime.set_random_seed(seed)
    batch = batch_size_of_test_phase(net_param)
    weights, train_s, shared = train(net_param, iterations, base_lr, os.path.join(out_dir, "bn"), seed,
                                     lr_policy, test_batches=-(-n_test // batch),
                                     bn_recalibrate=cfg.bn_recalibrate)
    test_net, mode = evaluate(net_param, weights, dbs["test"], n_test, "as_defined")
    glob, _ = evaluate(net_param, weights, dbs["test"], n_test, "global")
    batch_acc, _ = evaluate(net_param, weights, dbs["test"], n_test, "batch")
    reload_changed = roundtrip_changes(_with_sources(net_param, dbs["test"]), weights)

    base_acc, base_s, notes = float("nan"), float("nan"), []
    if baseline:
        plain, notes = strip_batchnorm(net_param)
        # The seed nets share one architecture: equal stripped nets (and lr) are trained once.
        anonymous = type(plain)()
        anonymous.CopyFrom(plain)
        anonymous.ClearField("name")
        key = (hashlib.sha1(anonymous.SerializeToString(deterministic=True)).hexdigest(), base_lr, iterations,
               n_test, seed, lr_policy)
        if key not in _BASELINES:
            runtime.set_random_seed(seed)
            bw, base_s, _ = train(plain, iterations, base_lr, os.path.join(out_dir, "nobn"), seed, lr_policy)
            base_acc, _ = evaluate(plain, bw, dbs["test"], n_test, "as_defined")
            _BASELINES[key] = (base_acc, base_s)
        base_acc, base_s = _BASELINES[key]
    return Result(cfg.name, cfg.description, base_lr, test_net, mode, glob, batch_acc,
                  (test_net - batch_acc) * 100.0, base_acc, train_s, base_s, shared, lint, notes, reload_changed)


def _with_sources(net_param, db: str):
    from brewnet.proto import caffe_pb2
    param = caffe_pb2.NetParameter()
    param.CopyFrom(net_param)
    set_sources(param, db, db)
    return param


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------

def format_table(results: list[Result]) -> str:
    head = ("| config | base_lr | TEST net from caffemodel | its BN uses | global stats | batch stats "
            "| gap TEST−batch (points) | solver's shared TEST net | baseline without BN | train s (BN / no BN) "
            "| caffemodel reload | ≥0.85 & ≤1 pt |")
    rows = [head, "|" + "---|" * 12]
    for r in results:
        rows.append(f"| {r.config} | {r.base_lr:g} | {r.test_net:.4f} | {r.test_net_mode} | {r.global_stats:.4f} "
                    f"| {r.batch_stats:.4f} | {r.gap_points:+.2f} | {r.solver_test_net:.4f} | {r.baseline:.4f} "
                    f"| {r.train_s:.0f} / {r.baseline_train_s:.0f} "
                    f"| {'exact' if not r.reload_changed else 'MISREAD ' + ', '.join(r.reload_changed)} "
                    f"| {'yes' if r.passes else 'NO'} |")
    return "\n".join(rows)


def _git_state() -> str:
    import subprocess
    root = os.path.dirname(HERE)
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "brewnet"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "git: unknown"
    return f"brewnet at {head or '?'}" + (" + uncommitted changes in brewnet/" if dirty else "")


def environment() -> str:
    import torch
    return (f"{datetime.date.today().isoformat()}, {platform.machine()} {platform.system()} "
            f"({os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}), Python "
            f"{platform.python_version()}, torch {torch.__version__}, {_git_state()}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", default=os.path.join("runs", "bn_convergence"))
    ap.add_argument("--data", default=FASHION_MNIST, help="folder with the Fashion-MNIST IDX files")
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                    help="comma-separated subset of: " + ", ".join(configurations()))
    ap.add_argument("--max-per-class", type=int, default=None,
                    help="build a subset dataset (this many images per class from train-* and t10k-*)")
    ap.add_argument("--test-images", type=int, default=None, help="score only the first N test images")
    ap.add_argument("--no-baseline", action="store_true", help="skip the without-BatchNorm runs")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--lr-policy", choices=sorted(LR_POLICIES), default=DEFAULT_LR_POLICY,
                    help=f"one schedule for every run (default {DEFAULT_LR_POLICY})")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a shared 2-core machine it is the fastest)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    import torch
    torch.set_num_threads(max(1, args.threads))

    known = configurations()
    names = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        ap.error(f"unknown config(s) {', '.join(unknown)}; known: {', '.join(known)}")
    workdir = os.path.abspath(args.workdir)
    data_dir = os.path.join(workdir, "data" if not args.max_per_class else f"data_max{args.max_per_class}")
    dbs = prepare_data(args.data, data_dir, args.max_per_class)
    from brewnet.data.lmdb_io import count_records
    n_test = count_records(dbs["test"]) if args.test_images is None else args.test_images

    print(f"brewnet BatchNorm convergence: {args.iterations} iterations of batch 64, SGD momentum {MOMENTUM}, "
          f"weight_decay {WEIGHT_DECAY:g}, base_lr {BASE_LR:g} (x8 where stated), "
          f"lr_policy {LR_POLICIES[args.lr_policy][1]}; "
          f"seed {args.seed}; scored on {n_test} test images ({dbs['test']}) in batches of 100", flush=True)
    print(environment(), flush=True)
    results = []
    for name in names:
        t0 = time.perf_counter()
        r = run_config(known[name], dbs, workdir, args.iterations, n_test, args.seed, not args.no_baseline,
                       args.lr_policy)
        results.append(r)
        print(f"  {name}: TEST net {r.test_net:.4f} ({r.test_net_mode} statistics), global {r.global_stats:.4f}, "
              f"batch {r.batch_stats:.4f}, baseline {r.baseline:.4f}, lint {r.lint} "
              f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    print()
    print(format_table(results))
    print()
    for r in results:
        print(f"- {r.config}: {r.description}; lint {', '.join(f'{k}×{v}' for k, v in sorted(r.lint.items()))}"
              + (f"; baseline: {'; '.join(r.baseline_notes)}" if r.baseline_notes else "")
              + (f"; WARNING: loading the saved caffemodel changed BatchNorm layer(s) "
                 f"{', '.join(r.reload_changed)} (the loader misread their layout)" if r.reload_changed else ""))
    failing = [r.config for r in results if not r.passes]
    print("\ndone criterion (TEST net ≥ 0.85 and within 1 point of batch statistics): "
          + ("met by all" if not failing else f"NOT met by {', '.join(failing)}"))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"environment": environment(), "iterations": args.iterations,
                       "lr_policy": LR_POLICIES[args.lr_policy][1],
                       "seed": args.seed, "test_images": n_test,
                       "results": [dict(asdict(r), passes=r.passes) for r in results]}, f, indent=1)
    return 0 if not failing else 1


if __name__ == "__main__":
    sys.exit(main())
