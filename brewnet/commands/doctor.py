"""brewnet doctor: BatchNorm statistics of a trained model against real batches; recalibration.

Batches come from the net's own data layers (``-data`` replaces their LMDB source), or for nets
fed through Input layers from ``-data`` (raw Datums times ``-scale``) or Gaussian noise.
``-recalibrate N -output X.caffemodel`` re-estimates every BatchNorm's statistics over N batches
(exact population mean and unbiased variance, layer by layer) and writes a new caffemodel.
"""
from __future__ import annotations

import os

from ..errors import BrewnetError
from .shared_flags import flag


def add_arguments(p) -> None:
    flag(p, "model", required=True, help="network prototxt (train_val or deploy)")
    flag(p, "weights", required=True, help="trained caffemodel")
    flag(p, "data", help="LMDB to read batches from (replaces the Data layers' source)")
    flag(p, "iterations", type=int, default=10, help="batches for the report (default 10)")
    flag(p, "phase", choices=("TRAIN", "TEST"), default="TEST", help="which phase's data layers (TEST)")
    flag(p, "recalibrate", type=int, metavar="N", help="re-estimate the statistics over N batches")
    flag(p, "output", help="caffemodel to write the recalibrated statistics to")
    flag(p, "scale", type=float, default=1.0, help="multiply LMDB values by this (Input-fed nets only)")
    flag(p, "seed", type=int, default=0, help="seed of random batches")


def run(args) -> int:
    import torch

    from .. import formats
    from ..proto import caffe_pb2

    from ..batchnorm import doctor
    from ..net import Net
    if args.recalibrate is not None and not args.output:
        raise BrewnetError("-recalibrate needs -output X.caffemodel")
    if args.iterations <= 0 or (args.recalibrate is not None and args.recalibrate <= 0):
        raise BrewnetError("-iterations and -recalibrate must be positive")
    model = formats.read_net(args.model)
    phase = getattr(caffe_pb2, args.phase)
    if args.data:
        for lp in model.layer:
            if lp.type == "Data":
                lp.data_param.source = os.path.abspath(args.data)
    # a path keeps Caffe's relative-source resolution; an edited NetParameter has absolute sources
    net = Net(model if args.data else args.model, args.weights, phase, dtype=torch.float64)
    if not doctor.batchnorm_layers(net):
        print("the net has no BatchNorm layers")
        return 0
    total = max(args.iterations, args.recalibrate or 0)
    batches = doctor.collect_batches(net, total, seed=args.seed, lmdb=args.data, scale=args.scale)
    src = "the net's data layers" if any(
        lyr.is_data and not getattr(lyr, "reads_blob_storage", False) for lyr in net.layers) else (
        args.data if args.data else "Gaussian noise")
    print(f"batches from {src}")
    print(doctor.diagnose(net, batches[:args.iterations]).format())
    if args.recalibrate:
        stats = doctor.recalibrate(net, batches[:args.recalibrate])
        print(f"\nrecalibrated {len(stats)} BatchNorm layer(s) over {args.recalibrate} batch(es); after:")
        print(doctor.diagnose(net, batches[:args.iterations]).format())
        doctor.write_recalibrated(formats.read_caffemodel(args.weights), net, stats, args.output)
        print(f"wrote {args.output}")
    return 0
