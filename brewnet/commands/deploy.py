"""``brewnet deploy``: write a deploy bundle from a train_val prototxt and a snapshot.

    brewnet deploy -model train_val.prototxt -weights W.caffemodel -output DIR
                   [-labels labels.txt] [-tar] [-bake] [-name NAME] [-input_shape C,H,W]
                   [-metrics FILE] [-dataset DIR]

A thin layer over :func:`brewnet.inference.deploy.write_bundle`; prints what it wrote and the
preprocessing in one paragraph.
"""
from __future__ import annotations

import json
import os

from ..errors import BrewnetError
from .shared_flags import flag


def add_arguments(parser) -> None:
    flag(parser, "model", default="", help="the train_val prototxt the snapshot was trained with")
    flag(parser, "weights", default="", help="the trained caffemodel (a snapshot)")
    flag(parser, "output", default="", help="the bundle directory to write (replaced if it is a bundle)")
    flag(parser, "labels", default="", help="class names, one per line (default: the dataset's labels.txt)")
    flag(parser, "tar", action="store_true",
         help="also write OUTPUT.tar.gz, the files at its root as in DIGITS' model download")
    flag(parser, "bake", action="store_true",
         help="fold mean and scale into the net (it then takes raw 0-255 BGR pixels at the crop size)")
    flag(parser, "name", default="", help="the model's name in info.json (default: the directory's)")
    flag(parser, "input_shape", default="",
         help="C,H,W of the input when the validation data cannot be read")
    flag(parser, "metrics", default="",
         help="the training's metrics JSON lines, for the validation accuracy at the snapshot's "
              "iteration (default <snapshot_prefix>_metrics.jsonl, brewnet train's default)")
    flag(parser, "dataset", default="", metavar="DIR",
         help="a generic dataset directory (brewnet dataset create --kind ...): its kind, feature dims, "
              "class labels and colour palette go into the bundle (default: the dataset the net reads)")


def _shape(text: str) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        dims = tuple(int(d) for d in text.replace("x", ",").split(",") if d.strip())
    except ValueError:
        dims = ()
    if not dims or min(dims) <= 0:
        raise BrewnetError(f"-input_shape wants positive C,H,W, got {text!r}")
    return dims


def run(args) -> int:
    from ..inference.deploy import write_bundle
    from ..inference.preprocess_spec import describe_preprocess

    for what in ("model", "weights", "output"):
        if not getattr(args, what):
            raise BrewnetError("deploy needs -model train_val.prototxt -weights W.caffemodel -output DIR "
                               f"(missing -{what})")
    out = write_bundle(args.model, args.weights, args.output, labels=args.labels or None, tar=args.tar,
                       bake=args.bake, name=args.name or None, input_shape=_shape(args.input_shape),
                       metrics=args.metrics or None, dataset=args.dataset or None)
    with open(os.path.join(out, "info.json"), encoding="utf-8") as f:
        info = json.load(f)
    with open(os.path.join(out, "preprocess.json"), encoding="utf-8") as f:
        spec = json.load(f)
    files = sorted(os.listdir(out))
    shape = "x".join(str(d) for d in info["input_shape"])
    it = f" from iteration {info['iteration']}" if info.get("iteration") is not None else ""
    acc = f", validation {info['accuracy_output']} {info['accuracy']:.4g} at that iteration" \
        if info.get("accuracy") is not None else ""
    tar = f" and {out}.tar.gz" if args.tar else ""
    bn = " (NVCaffe BatchNorm converted to BVLC BatchNorm + Scale)" if info.get("batchnorm_converted") else ""
    if info.get("task") == "generic":
        kind = (info.get("dataset") or {}).get("kind") or "generic"
        outputs = ", ".join(f"'{o}' {'x'.join(str(d) for d in info['output_shapes'][o])}" for o in info["outputs"])
        what = f"outputs {outputs} (a {kind} net)"
    else:
        what = f"outputs '{info['output']}' ({info['classes']} classes)"
    print(f"Wrote deploy bundle {out}{tar}: {', '.join(files)}; the net takes '{info['input']}' "
          f"{shape} and {what}{it}{acc}{bn}. "
          f"Preprocessing: {describe_preprocess(spec)}.")
    return 0
