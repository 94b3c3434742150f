"""Time one SGD-momentum training step: brewnet's solver vs the same net hand-written in PyTorch.

    python benchmarks/bench_train_step.py [--device cpu|cuda] [--repeats 7] [--steps 10]

Two nets, batch 64:
- LeNet with BatchNorm: conv20-BN-Scale-ReLU-pool-conv50-BN-Scale-ReLU-pool-ip500-BN-Scale-ReLU-ip10
  on 1x28x28 inputs;
- a small ResNet: conv16-BN-Scale-ReLU, then 3 stages of one basic block (16/32/64 channels,
  stride 2 with a 1x1 projection shortcut from stage 2), global average pool, ip10; 3x32x32.

brewnet runs ``solver.step(1)`` (clear diffs, forward_loss, backward, Caffe's SGD update with
weight decay); PyTorch runs ``zero_grad(); loss = CE(model(x), y); loss.backward(); opt.step()``
with ``torch.optim.SGD(momentum=0.9, weight_decay=5e-4)`` (its default foreach implementation).
Variants: brewnet NCHW and with ``net.channels_last`` (its default); PyTorch NCHW and
channels-last (and, with ``--compile``, channels-last under ``torch.compile``).  They alternate,
block by block, for several repeats; each block times ``--steps`` steps; the median ms/step of
each, and of its fastest block, is printed with its speed relative to hand-written PyTorch NCHW and
to hand-written PyTorch in the same memory layout (above 1 is faster).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch
from torch import nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import brewnet  # noqa: E402


# ----- prototxts -------------------------------------------------------------------------------

def _conv(name, bottom, top, n, k, s=1, p=0, bias=False):
    bt = "" if bias else " bias_term: false"
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{top}" '
            f'convolution_param {{ num_output: {n} kernel_size: {k} stride: {s} pad: {p}{bt} '
            f'weight_filler {{ type: "msra" }} }} }}\n')


def _bn_scale(name, blob):
    return (f'layer {{ name: "{name}_bn" type: "BatchNorm" bottom: "{blob}" top: "{blob}" }}\n'
            f'layer {{ name: "{name}_sc" type: "Scale" bottom: "{blob}" top: "{blob}" '
            f'scale_param {{ bias_term: true }} }}\n')


def _relu(name, blob):
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{blob}" top: "{blob}" }}\n'


def _input(c, h, batch):
    return (f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: {batch} '
            f'dim: {c} dim: {h} dim: {h} }} }} }}\n'
            f'layer {{ name: "label" type: "Input" top: "label" input_param {{ shape {{ dim: {batch} }} }} }}\n')


def lenet_bn_prototxt(batch):
    t = 'name: "lenet_bn"\n' + _input(1, 28, batch)
    t += _conv("conv1", "data", "conv1", 20, 5, bias=True) + _bn_scale("conv1", "conv1") + _relu("relu1", "conv1")
    t += ('layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" '
          'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n')
    t += _conv("conv2", "pool1", "conv2", 50, 5, bias=True) + _bn_scale("conv2", "conv2") + _relu("relu2", "conv2")
    t += ('layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2" '
          'pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n')
    t += ('layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1" '
          'inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }\n')
    t += _bn_scale("ip1", "ip1") + _relu("relu3", "ip1")
    t += ('layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" '
          'inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }\n')
    t += 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }\n'
    return t


def resnet_prototxt(batch):
    t = 'name: "resnet_small"\n' + _input(3, 32, batch)
    t += _conv("conv1", "data", "conv1", 16, 3, p=1) + _bn_scale("conv1", "conv1") + _relu("relu1", "conv1")
    bottom, cin = "conv1", 16
    for i, (c, s) in enumerate(((16, 1), (32, 2), (64, 2)), 1):
        a, b = f"s{i}a", f"s{i}b"
        t += _conv(a, bottom, a, c, 3, s, 1) + _bn_scale(a, a) + _relu(f"{a}_relu", a)
        t += _conv(b, a, b, c, 3, 1, 1) + _bn_scale(b, b)
        short = bottom
        if s != 1 or cin != c:
            short = f"s{i}p"
            t += _conv(short, bottom, short, c, 1, s, 0) + _bn_scale(short, short)
        t += (f'layer {{ name: "s{i}_sum" type: "Eltwise" bottom: "{b}" bottom: "{short}" top: "s{i}" '
              f'eltwise_param {{ operation: SUM }} }}\n') + _relu(f"s{i}_relu", f"s{i}")
        bottom, cin = f"s{i}", c
    t += (f'layer {{ name: "pool" type: "Pooling" bottom: "{bottom}" top: "pool" '
          'pooling_param { pool: AVE global_pooling: true } }\n')
    t += ('layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc" '
          'inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }\n')
    t += 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }\n'
    return t


# ----- the same nets in PyTorch ------------------------------------------------------------------

class LeNetBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 20, 5), nn.BatchNorm2d(20)
        self.conv2, self.bn2 = nn.Conv2d(20, 50, 5), nn.BatchNorm2d(50)
        self.ip1, self.bn3 = nn.Linear(800, 500), nn.BatchNorm1d(500)
        self.ip2 = nn.Linear(500, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = F.relu(self.bn3(self.ip1(x.flatten(1))))
        return self.ip2(x)


class Block(nn.Module):
    def __init__(self, cin, c, s):
        super().__init__()
        self.a, self.bna = nn.Conv2d(cin, c, 3, s, 1, bias=False), nn.BatchNorm2d(c)
        self.b, self.bnb = nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c)
        self.proj = None
        if s != 1 or cin != c:
            self.proj = nn.Sequential(nn.Conv2d(cin, c, 1, s, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        y = F.relu(self.bna(self.a(x)))
        y = self.bnb(self.b(y))
        return F.relu(y + (x if self.proj is None else self.proj(x)))


class ResNetSmall(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16)
        self.stages = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.stages(F.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


# ----- timing --------------------------------------------------------------------------------------

def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _brewnet_solver(name, net_path, device, tmp, channels_last: bool):
    solver_path = os.path.join(tmp, f"{name}_solver.prototxt")
    with open(solver_path, "w") as f:
        f.write(f'net: "{net_path}"\ntype: "SGD" base_lr: 0.01 momentum: 0.9 weight_decay: 0.0005\n'
                f'lr_policy: "fixed" max_iter: 1000000 display: 0 random_seed: 1\n'
                f'snapshot_prefix: "{tmp}/{name}"\n')
    solver = brewnet.SGDSolver(solver_path, device=device)
    solver.net.channels_last = channels_last
    return solver


def bench(name, prototxt, module, shape, args, device, tmp):
    """Every variant's training step, interleaved; returns {label: median ms/step}.

    brewnet (NCHW), brewnet with ``net.channels_last``; PyTorch hand-written, NCHW and with the
    model and input channels-last (PyTorch's own recipe for CPU/CUDA convolutions)."""
    net_path = os.path.join(tmp, f"{name}.prototxt")
    with open(net_path, "w") as f:
        f.write(prototxt)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen)
    y = torch.randint(0, 10, (shape[0],), generator=gen)
    steps = {}
    solvers = {}
    for label, cl in (("brewnet", False), ("brewnet channels-last", True)):
        solver = solvers[label] = _brewnet_solver(name, net_path, device, tmp, cl)
        solver.net.blobs["data"].data[...] = x.numpy()
        solver.net.blobs["label"].data[...] = y.numpy()
        steps[label] = (lambda s: lambda: s.step(1))(solver)
    for label, cl in (("pytorch", False), ("pytorch channels-last", True)):
        model = module().to(device)
        xd, yd = x.to(device), y.to(device)
        if cl:
            model = model.to(memory_format=torch.channels_last)
            xd = xd.contiguous(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)

        def torch_step(model=model, opt=opt, xd=xd, yd=yd):
            opt.zero_grad()
            loss = F.cross_entropy(model(xd), yd)
            loss.backward()
            opt.step()
        steps[label] = torch_step

    if args.compile:  # torch.compile of the hand-written channels-last model (inductor)
        model = module().to(device).to(memory_format=torch.channels_last)
        compiled = torch.compile(model)
        xd = x.to(device).contiguous(memory_format=torch.channels_last)
        yd = y.to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)

        def compiled_step(opt=opt, xd=xd, yd=yd):
            opt.zero_grad()
            F.cross_entropy(compiled(xd), yd).backward()
            opt.step()
        t0 = time.perf_counter()
        compiled_step()
        print(f"{name}: torch.compile took {time.perf_counter() - t0:.0f} s (first step)")
        steps["pytorch channels-last compiled"] = compiled_step
    for fn in steps.values():  # warm up every variant
        for _ in range(3):
            fn()
    _sync(device)
    times = {label: [] for label in steps}
    order = list(steps.items())
    for r in range(args.repeats):
        for label, fn in (order if r % 2 == 0 else order[::-1]):
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                fn()
            _sync(device)
            times[label].append((time.perf_counter() - t0) * 1e3 / args.steps)
    # where brewnet's time goes: the solver's own work (clear diffs + Caffe's update) alone
    upd = []
    solver = solvers["brewnet"]
    for _ in range(args.repeats):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            solver.net.clear_param_diffs()
            solver.apply_update()
        _sync(device)
        upd.append((time.perf_counter() - t0) * 1e3 / args.steps)
    med = {label: statistics.median(v) for label, v in times.items()}
    best = {label: min(v) for label, v in times.items()}
    print(f"{name} ({args.repeats} blocks of {args.steps} steps; brewnet's solver clear+update "
          f"{statistics.median(upd):.2f} ms of its step). Median block, then fastest block (less "
          f"exposed to a busy machine):")
    print(f"  {'variant':32s} {'ms/step':>8s} {'vs PyTorch NCHW':>16s} {'vs same layout':>15s}"
          f" | {'ms/step':>8s} {'vs NCHW':>8s} {'vs same':>8s}")
    for label in med:
        twin = label.replace("brewnet", "pytorch") if label.startswith("brewnet") else label
        print(f"  {label:32s} {med[label]:8.2f} {med['pytorch'] / med[label]:15.2f}x "
              f"{med[twin] / med[label]:14.2f}x | {best[label]:8.2f} {best['pytorch'] / best[label]:7.2f}x "
              f"{best[twin] / best[label]:7.2f}x")
    return med


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    ap.add_argument("--compile", action="store_true",
                    help="also time the hand-written channels-last model under torch.compile")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: CUDA is not available")
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, batch {args.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        bench("lenet_bn", lenet_bn_prototxt(args.batch), LeNetBN, (args.batch, 1, 28, 28), args, device, tmp)
        bench("resnet_small", resnet_prototxt(args.batch), ResNetSmall, (args.batch, 3, 32, 32), args, device, tmp)


if __name__ == "__main__":
    main()
