"""The ``brewnet`` command: the ``caffe`` tool's verbs plus brewnet's own.

``main(argv)`` parses the verb and runs it.  Each verb lives in ``brewnet/commands/<verb>.py``
with ``add_arguments(parser)`` and ``run(args) -> int``.  Flags take both Caffe's ``-flag value``
and ``--flag value`` spellings.  A user mistake (BrewnetError) prints one clear line and exits 1,
never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import BrewnetError

VERBS = {
    "train": "Train a network from a solver (caffe train)",
    "test": "Score a trained model over some iterations (caffe test)",
    "time": "Time forward and backward per layer (caffe time)",
    "convert": "Convert a model between BVLC, NVCaffe, PyTorch and ONNX",
    "lint": "Find BatchNorm and deploy pitfalls in a prototxt",
    "doctor": "Check BatchNorm statistics of a trained model against real batches",
    "dataset": "Build LMDB datasets the way DIGITS does",
    "demo": "Train LeNet with BatchNorm on Fashion-MNIST and report test accuracy",
    "deploy": "Write a deploy bundle: deploy net, weights, labels and the validation preprocessing",
    "classify": "Classify images, a list, a folder or an LMDB with a deploy bundle",
    "infer": "Run a deploy bundle of any net on images, a list, a folder or an LMDB; keep every output",
    "draw": "Draw a network as a PNG or SVG graph (caffe's draw_net.py)",
    "serve": "Start the DIGITS server (web app and REST API)",
}


def _available_verbs() -> dict[str, object]:
    found = {}
    for verb in VERBS:
        try:
            found[verb] = importlib.import_module(f"brewnet.commands.{verb}")
        except ModuleNotFoundError as e:
            if e.name != f"brewnet.commands.{verb}":
                raise
    return found


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    verbs = _available_verbs()
    parser = argparse.ArgumentParser(prog="brewnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb, module in verbs.items():
        p = sub.add_parser(verb, help=VERBS[verb], description=VERBS[verb])
        module.add_arguments(p)
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # as given (brewnet train's ranks)
    if args.verb is None:
        parser.print_help()
        return 2
    try:
        return int(verbs[args.verb].run(args) or 0)
    except BrewnetError as e:
        print(f"brewnet {args.verb}: error: {e}", file=sys.stderr)
        return 1
    except FileNotFoundError as e:
        print(f"brewnet {args.verb}: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"brewnet {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
