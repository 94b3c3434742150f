"""``brewnet time``: time forward and backward of every layer, like ``caffe time``.

    brewnet time -model M [-iterations 50] [-gpu 0] [-phase TRAIN|TEST] [-forward_only]

Two measurements, both printed:

- per layer: every layer runs on inputs detached from the previous layer's graph, so each
  layer's backward is its own autograd call, run in reverse layer order and timed alone
  (``torch.cuda.synchronize`` around each on a GPU).  These times include one autograd call's
  overhead each, and BatchNorm and the Scale after it run as two layers; their sums are printed
  as "per-layer passes".
- the whole net as training runs it (one forward with BatchNorm + Scale fused, one
  ``loss.backward()``): Caffe's summary lines ``Average Forward pass``, ``Average Backward pass``
  and ``Average Forward-Backward`` and the per-iteration lines come from this, so they compare
  with ``caffe time``'s (where the layer-by-layer loop *is* how Caffe trains).
"""
from __future__ import annotations

import logging
import os
import time

import torch

from ..cli import flag
from ..errors import BrewnetError

log = logging.getLogger("brewnet")


def add_arguments(parser) -> None:
    flag(parser, "model", default="", help="the net prototxt")
    flag(parser, "iterations", type=int, default=50, help="number of iterations to time")
    flag(parser, "gpu", default="", help="GPU id to use (default: CPU)")
    flag(parser, "phase", default="TRAIN", choices=("TRAIN", "TEST"), help="net phase (default TRAIN)")
    flag(parser, "forward_only", action="store_true", help="time the forward pass only")
    flag(parser, "level", type=int, default=0, help="NetState level")
    flag(parser, "stage", default="", help="NetState stages, comma separated")
    flag(parser, "weights", default="", help="optional caffemodel to load first")
    from .train import add_speed_flags
    add_speed_flags(parser)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LayerTimer:
    """Runs a Net layer by layer, each layer's autograd graph separate, and times each part."""

    def __init__(self, net):
        self.net = net
        self.device = net.device
        n = len(net.layers)
        self.fwd = [0.0] * n
        self.bwd = [0.0] * n

    def forward(self):
        net, dev = self.net, self.device
        env: dict[str, tuple[torch.Tensor, tuple[int, int]]] = {}  # name -> (tensor, producer)
        records = []
        loss = 0.0
        grad = torch.is_grad_enabled()
        for i, layer in enumerate(net.layers):
            lp = layer.param
            leaves, srcs = [], []
            _sync(dev)
            t0 = time.perf_counter()
            if getattr(layer, "reads_blob_storage", False):
                outs = [net.blobs[t]._value(dev).to(net.dtype) for t in lp.top]
            else:
                for j, b in enumerate(lp.bottom):
                    if b in env:
                        t, src = env[b]
                    else:
                        t, src = net.blobs[b]._value(dev), None
                    need = grad and t.requires_grad and not net._detach[i][j]
                    leaf = t.detach().requires_grad_(need) if need else t.detach()
                    leaves.append(leaf)
                    srcs.append(src if need else None)
                with net._autocast():
                    outs = layer(*leaves)
                if isinstance(outs, torch.Tensor):
                    outs = (outs,)
                if not lp.bottom:
                    outs = [o.to(dev, net.dtype) for o in outs]
            _sync(dev)
            self.fwd[i] += time.perf_counter() - t0
            outs = list(outs)
            for j, (name, t) in enumerate(zip(lp.top, outs)):
                env[name] = (t, (i, j))
                w = net._loss_weights.get(name)
                if w is not None:
                    loss += float(t.detach().sum()) * w
            records.append((leaves, srcs, outs))
        for name, (t, _) in env.items():
            net.blobs[name]._set_value(t)
        return loss, records

    def backward(self, records):
        net, dev = self.net, self.device
        grads: dict[tuple[int, int], torch.Tensor] = {}
        for i, layer in enumerate(net.layers):
            for j, name in enumerate(layer.param.top):
                w = net._loss_weights.get(name)
                if w is not None and records[i][2][j].requires_grad:
                    grads[(i, j)] = torch.full_like(records[i][2][j], w)
        for i in range(len(net.layers) - 1, -1, -1):
            leaves, srcs, outs = records[i]
            roots, gs = [], []
            for j, t in enumerate(outs):
                g = grads.pop((i, j), None)
                if g is not None and t.requires_grad:
                    roots.append(t)
                    gs.append(g)
            if not roots:
                continue
            _sync(dev)
            t0 = time.perf_counter()
            torch.autograd.backward(roots, gs)
            _sync(dev)
            self.bwd[i] += time.perf_counter() - t0
            for leaf, src in zip(leaves, srcs):
                if src is not None and leaf.grad is not None:
                    prev = grads.get(src)
                    grads[src] = leaf.grad if prev is None else prev + leaf.grad


def run(args) -> int:
    from ..net import TEST, TRAIN, Net
    from .train import device_from_flag

    if not args.model:
        raise BrewnetError("time needs a model: brewnet time -model net.prototxt")
    if not os.path.exists(args.model):
        raise BrewnetError(f"model file not found: {args.model}")
    if args.iterations < 1:
        raise BrewnetError(f"-iterations must be at least 1, got {args.iterations}")
    device = device_from_flag(args.gpu)
    stages = [s.strip() for s in args.stage.split(",") if s.strip()]
    phase = TRAIN if args.phase == "TRAIN" else TEST
    net = Net(args.model, phase=phase, level=args.level, stages=stages, device=device)
    from .train import apply_speed_flags
    apply_speed_flags([net], args)
    if args.weights:
        net.copy_from(args.weights)
    timer = LayerTimer(net)
    backward = not args.forward_only
    print("Performing Forward")
    with torch.set_grad_enabled(backward):
        loss, records = timer.forward()
    print(f"Initial loss: {loss:.6g}")
    if backward:
        print("Performing Backward")
        timer.backward(records)
    timer.fwd = [0.0] * len(net.layers)
    timer.bwd = [0.0] * len(net.layers)
    n = args.iterations
    print("*** Benchmark begins ***")
    print(f"Testing for {n} iterations.")
    # per layer
    layer_fwd = layer_bwd = 0.0
    for _ in range(n):
        with torch.set_grad_enabled(backward):
            _sync(device)
            t0 = time.perf_counter()
            _, records = timer.forward()
            _sync(device)
            layer_fwd += time.perf_counter() - t0
        if backward:
            t0 = time.perf_counter()
            timer.backward(records)
            _sync(device)
            layer_bwd += time.perf_counter() - t0
        del records
        net.clear_param_diffs()
    print("Average time per layer: ")
    for name, f, b in zip(net._layer_names, timer.fwd, timer.bwd):
        print(f"{name:>10}\tforward: {f * 1e3 / n:.6g} ms.")
        print(f"{name:>10}\tbackward: {b * 1e3 / n:.6g} ms.")
    if backward:
        print("Backward timing method: each layer's backward runs as its own autograd call on a "
              "per-layer graph segment, timed alone (reverse layer order)")
    print(f"Per-layer passes (each layer timed alone): forward {layer_fwd * 1e3 / n:.6g} ms, "
          f"backward {layer_bwd * 1e3 / n:.6g} ms.")
    # the whole net, as training runs it
    print("Whole net, as training runs it (one forward, one backward):")
    fwd_total = bwd_total = 0.0
    _sync(device)
    total0 = time.perf_counter()
    for it in range(n):
        t_iter = time.perf_counter()
        with torch.set_grad_enabled(backward):
            loss, _ = net.forward_loss()
        _sync(device)
        t_mid = time.perf_counter()
        fwd_total += t_mid - t_iter
        if backward and loss is not None and loss.requires_grad:
            loss.backward()
            _sync(device)
        bwd_total += time.perf_counter() - t_mid
        net.clear_param_diffs()
        print(f"Iteration: {it + 1} forward-backward time: {(time.perf_counter() - t_iter) * 1e3:.4g} ms.")
    total = time.perf_counter() - total0
    print(f"Average Forward pass: {fwd_total * 1e3 / n:.6g} ms.")
    print(f"Average Backward pass: {bwd_total * 1e3 / n:.6g} ms.")
    print(f"Average Forward-Backward: {total * 1e3 / n:.6g} ms.")
    print(f"Total Time: {total * 1e3:.6g} ms.")
    print("*** Benchmark ends ***")
    return 0
