"""Data-parallel training: throughput of 1 vs 2 processes, and what synchronised BatchNorm costs.

    python benchmarks/bench_distributed.py [--iters 150] [--batch 64] [--device cpu|cuda]

Net: LeNet-BN (brewnet/models/lenet_bn_fashion_train_val.prototxt: three BatchNorm + Scale
pairs) on a synthetic 1x28x28 LMDB of 10 classes (made here, 8192 records), SGD as its solver
file, no test phases.  Every run is ``brewnet train`` in a child process, measured side by side
in this one run, from the metrics file's timestamps between iteration 20 and the last (start-up,
net construction and the first iterations left out):

1. 1 process, batch B                       (images/s)
2. 2 processes, batch B each (effective 2B), synchronised BatchNorm (the default)
3. 2 processes, batch B each, local BatchNorm (``-bn_sync none``)
4. 1 process, batch 2B                      (the same effective batch as 2 and 3 in one process)
5. a hand-written PyTorch DDP reference: the same layers (nn.BatchNorm2d/1d, local statistics:
   PyTorch's SyncBatchNorm refuses CPU tensors), 2 gloo processes, batch B each, tensors already
   in memory (no data loading), the same number of iterations; then the latency of one small
   all-reduce between its processes (what each synchronised BatchNorm waits for twice a step).

Printed: images/s of each, the 2-process speed-up (2 / 1), brewnet's 2 processes against 1
process with the same global batch (2 / 4), the per-step cost of synchronised BN (2 vs 3, in ms
and %), and brewnet's 2 processes against PyTorch DDP (2 / 5 and 3 / 5).  CPU processes share
the machine's cores (each gets cores / processes threads); on CUDA each takes one GPU (needs 2).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WARMUP = 20


def make_lmdb(path: Path, n: int = 8192) -> None:
    from brewnet.data.lmdb_io import DatumWriter
    from brewnet.pycaffe.io import array_to_datum

    rng = np.random.default_rng(0)
    protos = rng.integers(0, 256, size=(10, 1, 28, 28))
    with DatumWriter(str(path)) as w:
        for _ in range(n):
            label = int(rng.integers(0, 10))
            img = np.clip(protos[label] + rng.normal(0, 60, size=(1, 28, 28)), 0, 255).astype(np.uint8)
            w.put(array_to_datum(img, label))


def write_solver(work: Path, name: str, batch: int, iters: int) -> Path:
    net = (ROOT / "brewnet" / "models" / "lenet_bn_fashion_train_val.prototxt").read_text()
    net = net.replace('source: "train_db" batch_size: 64', f'source: "{work / "db"}" batch_size: {batch}')
    net = net.replace('source: "val_db"', f'source: "{work / "db"}"')
    (work / f"{name}.prototxt").write_text(net)
    solver = work / f"{name}.solver.prototxt"
    solver.write_text(f"""net: "{work / f'{name}.prototxt'}"
base_lr: 0.05
momentum: 0.9
weight_decay: 0.0005
lr_policy: "poly"
power: 1
display: 1
max_iter: {iters}
snapshot: 0
snapshot_after_train: false
snapshot_prefix: "{work / name}"
random_seed: 1
""")
    return solver


def run_brewnet(work: Path, name: str, batch: int, iters: int, device: str, procs: int, *extra: str) -> float:
    """Images/s (global) of `brewnet train` between iteration WARMUP and the last."""
    solver = write_solver(work, name, batch, iters)
    metrics = work / f"{name}.metrics.jsonl"
    args = [sys.executable, "-m", "brewnet", "train", "-solver", str(solver), "-metrics", str(metrics), *extra]
    if device == "cuda":
        args += ["-gpu", ",".join(str(i) for i in range(procs))]
    elif procs > 1:
        args += ["-cpu_procs", str(procs)]
    proc = subprocess.run(args, cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{(proc.stdout + proc.stderr)[-3000:]}")
    t = {}
    for line in metrics.read_text().splitlines():
        r = json.loads(line)
        if r["phase"] == "train" and r["name"] == "smoothed_loss":
            t[r["iter"]] = r["elapsed"]
    last = max(i for i in t if i < iters)
    seconds = t[last] - t[WARMUP]
    return (last - WARMUP) * batch * procs / seconds


# ----- the hand-written PyTorch DDP reference ------------------------------------------------------
def _ddp_rank(rank: int, world: int, port: int, batch: int, iters: int, device: str, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch import nn

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dev = torch.device(f"cuda:{rank}" if device == "cuda" else "cpu")
    dist.init_process_group("nccl" if device == "cuda" else "gloo", rank=rank, world_size=world)
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(1, 20, 5, bias=False), nn.BatchNorm2d(20, momentum=0.01), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Conv2d(20, 50, 5, bias=False), nn.BatchNorm2d(50, momentum=0.01), nn.ReLU(), nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(800, 500, bias=False), nn.BatchNorm1d(500, momentum=0.01), nn.ReLU(),
        nn.Linear(500, 10)).to(dev)
    ddp = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9, weight_decay=0.0005)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator().manual_seed(rank)
    xs = [torch.rand(batch, 1, 28, 28, generator=g).to(dev) for _ in range(8)]
    ys = [torch.randint(0, 10, (batch,), generator=g).to(dev) for _ in range(8)]
    for i in range(iters):
        if i == WARMUP:
            if device == "cuda":
                torch.cuda.synchronize()
            dist.barrier()
            t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss_fn(ddp(xs[i % 8]), ys[i % 8]).backward()
        opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    dist.barrier()
    rate = (iters - WARMUP) * batch * world / (time.perf_counter() - t0)
    small = torch.zeros(2 * 50 + 1, device=dev)  # what a synchronised BatchNorm of 50 channels sends
    for _ in range(20):
        dist.all_reduce(small)
    t1 = time.perf_counter()
    for _ in range(200):
        dist.all_reduce(small)
    if device == "cuda":
        torch.cuda.synchronize()
    latency_ms = 1000.0 * (time.perf_counter() - t1) / 200
    if rank == 0:
        Path(out).write_text(json.dumps({"rate": rate, "latency_ms": latency_ms}))
    dist.destroy_process_group()


def run_ddp(work: Path, batch: int, iters: int, device: str) -> float:
    import torch.multiprocessing as mp

    from brewnet.distributed.launch import free_port

    out = work / "ddp.txt"
    mp.spawn(_ddp_rank, args=(2, free_port(), batch, iters, device, str(out)), nprocs=2, join=True)
    return json.loads(out.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    a = ap.parse_args()
    import torch
    if a.device == "cuda" and torch.cuda.device_count() < 2:
        sys.exit("--device cuda needs 2 GPUs")
    if a.iters <= WARMUP + 10:
        sys.exit(f"--iters must be above {WARMUP + 10}")
    with tempfile.TemporaryDirectory(prefix="brewnet-bench-dist-") as tmp:
        work = Path(tmp)
        make_lmdb(work / "db")
        b = a.batch
        print(f"LeNet-BN, {a.iters} iterations (rates from iteration {WARMUP} on), device {a.device}, "
              f"{os.cpu_count()} CPU cores")
        one = run_brewnet(work, "one", b, a.iters, a.device, 1)
        two = run_brewnet(work, "two", b, a.iters, a.device, 2)
        local = run_brewnet(work, "local", b, a.iters, a.device, 2, "-bn_sync", "none")
        big = run_brewnet(work, "big", 2 * b, a.iters, a.device, 1)
        ddp_run = run_ddp(work, b, a.iters, a.device)
    ddp, latency = ddp_run["rate"], ddp_run["latency_ms"]
    step = lambda ips, procs: 1000.0 * b * procs / ips  # ms per iteration  # noqa: E731
    print(f"1. brewnet, 1 process,  batch {b}:           {one:9.1f} images/s")
    print(f"2. brewnet, 2 processes, batch {b} each, synced BN: {two:9.1f} images/s")
    print(f"3. brewnet, 2 processes, batch {b} each, local BN:  {local:9.1f} images/s")
    print(f"4. brewnet, 1 process,  batch {2 * b}:          {big:9.1f} images/s")
    print(f"5. PyTorch DDP, 2 processes, batch {b} each (local BN, data in memory): {ddp:9.1f} images/s")
    print(f"speed-up of 2 processes over 1 (2 / 1):                 {two / one:.2f}x")
    print(f"2 processes against 1 with the same global batch (2 / 4): {two / big:.2f}x")
    cost = step(two, 2) - step(local, 2)
    print(f"synchronised BN per step: {step(two, 2):.2f} ms against {step(local, 2):.2f} ms local "
          f"({cost:+.2f} ms, {100 * cost / step(local, 2):+.1f} %)")
    print(f"brewnet 2 processes / PyTorch DDP: synced BN {two / ddp:.2f}x, local BN {local / ddp:.2f}x")
    print(f"one all-reduce of 101 floats between the 2 processes: {latency:.3f} ms; synchronised BN adds "
          f"2 per BatchNorm layer and step (6 here: {6 * latency:.2f} ms of the {cost:+.2f} ms)")


if __name__ == "__main__":
    main()
