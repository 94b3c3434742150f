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

from ..errors import BrewnetError
from .shared_flags import add_speed_flags, flag

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
    add_speed_flags(parser)


def run(args) -> int:
    import torch

    from ..net import TEST, TRAIN, Net
    from ..timing import LayerTimer, sync as _sync
    from .shared_flags import apply_speed_flags, device_from_flag

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
