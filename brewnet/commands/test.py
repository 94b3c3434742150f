"""``brewnet test``: score a trained model over some batches, like ``caffe test``.

    brewnet test -model M -weights W [-iterations 50] [-gpu 0] [-level L] [-stage a,b]

Each batch's outputs are logged (``Batch 3, accuracy = 0.9``); the averages are printed on
stdout as Caffe prints them: ``Loss: 0.31``, ``accuracy = 0.9012``,
``loss = 0.31 (* 1 = 0.31 loss)``.
"""
from __future__ import annotations

import logging
import os

from ..errors import BrewnetError
from ..reporting.caffe_log import caffe_float
from .shared_flags import add_speed_flags, flag, apply_speed_flags, device_from_flag

log = logging.getLogger("brewnet")


def add_arguments(parser) -> None:
    flag(parser, "model", default="", help="the net prototxt (TEST phase is used)")
    flag(parser, "weights", default="", help="the trained caffemodel(s), comma separated")
    flag(parser, "iterations", type=int, default=50, help="number of batches to score")
    flag(parser, "gpu", default="", help="GPU id to use (default: CPU)")
    flag(parser, "level", type=int, default=0, help="NetState level")
    flag(parser, "stage", default="", help="NetState stages, comma separated")
    add_speed_flags(parser)


def run(args) -> int:
    import torch

    from ..net import TEST, Net

    if not args.model:
        raise BrewnetError("test needs a model: brewnet test -model net.prototxt -weights w.caffemodel")
    if not args.weights:
        raise BrewnetError("test needs model weights to score: give -weights w.caffemodel")
    if args.iterations < 1:
        raise BrewnetError(f"-iterations must be at least 1, got {args.iterations}")
    if not os.path.exists(args.model):
        raise BrewnetError(f"model file not found: {args.model}")
    device = device_from_flag(args.gpu)
    stages = [s.strip() for s in args.stage.split(",") if s.strip()]
    net = Net(args.model, phase=TEST, level=args.level, stages=stages, device=device)
    apply_speed_flags([net], args)
    for w in (w.strip() for w in args.weights.split(",") if w.strip()):
        if not os.path.exists(w):
            raise BrewnetError(f"weights file not found: {w}")
        net.copy_from(w)
    log.info("Running for %d iterations.", args.iterations)
    sums = None
    loss_total = 0.0
    with torch.no_grad():
        for i in range(args.iterations):
            loss, outs = net.forward_loss(outputs=net.outputs)
            loss_total += float(loss) if loss is not None else 0.0
            vals = [outs[n].detach().reshape(-1).double().cpu() for n in net.outputs]
            for name, v in zip(net.outputs, vals):
                for x in v.tolist():
                    log.info("Batch %d, %s = %s", i, name, caffe_float(x))
            if sums is None:
                sums = [v.clone() for v in vals]
            else:
                for s, v in zip(sums, vals):
                    s.add_(v)
    print(f"Loss: {caffe_float(loss_total / args.iterations)}")
    weights = net.blob_loss_weights
    for name, s in zip(net.outputs, sums or []):
        w = weights.get(name, 0.0)
        for mean in (s / args.iterations).tolist():
            extra = f" (* {caffe_float(w)} = {caffe_float(w * mean)} loss)" if w else ""
            print(f"{name} = {caffe_float(mean)}{extra}")
    return 0
