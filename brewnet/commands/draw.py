"""``brewnet draw``: a picture of a net definition, like Caffe's ``python/draw_net.py``.

    brewnet draw -model net.prototxt -output net.png|net.svg|net.pdf|net.raw
                 [-rankdir LR|TB|BT|RL] [-phase TRAIN|TEST|ALL] [-display_lrm]

The format follows the output's extension (``.raw`` writes the DOT source); rendering needs
Graphviz's ``dot`` (``apt-get install graphviz``).  ``-phase`` keeps the layers of one phase
(default ALL: every layer); ``-display_lrm`` shows learning rate multipliers.  A thin layer over
:func:`brewnet.draw.draw_net_to_file`.
"""
from __future__ import annotations

import os

from ..errors import BrewnetError
from .shared_flags import flag

RANKDIRS = ("LR", "TB", "BT", "RL")
PHASES = ("TRAIN", "TEST", "ALL")


def add_arguments(parser) -> None:
    flag(parser, "model", default="", help="the net prototxt to draw")
    flag(parser, "output", default="", help="the picture to write; its extension (.png, .svg, "
         ".pdf, .raw for DOT source) chooses the format")
    flag(parser, "rankdir", default="LR", type=str.upper, choices=RANKDIRS,
         help="direction of the graph: LR (left to right, default), TB, BT or RL")
    flag(parser, "phase", default="ALL", type=str.upper, choices=PHASES,
         help="draw the layers of this phase only (default ALL: every layer)")
    flag(parser, "display_lrm", action="store_true",
         help="show the learning rate multipliers of Convolution, Deconvolution and "
              "InnerProduct layers")


def _one_line(text: str) -> str:
    """Graphviz's messages span lines; the CLI prints one."""
    return " ".join(str(text).split())


def run(args) -> int:
    from ..pycaffe import draw
    from ..formats import read_net
    from ..proto import caffe_pb2

    if not args.model:
        raise BrewnetError("draw needs a model: brewnet draw -model net.prototxt -output net.png")
    if not args.output:
        raise BrewnetError("draw needs an output picture: give -output net.png (or .svg, .pdf, "
                           ".raw)")
    if not os.path.isfile(args.model):
        raise BrewnetError(f"model file not found: {args.model}")
    if not os.path.splitext(args.output)[1]:
        raise BrewnetError(f"-output {args.output}: give it an extension to choose the format "
                           "(.png, .svg, .pdf, .raw)")
    net = read_net(args.model)
    phase = {"TRAIN": caffe_pb2.TRAIN, "TEST": caffe_pb2.TEST, "ALL": None}[args.phase]
    try:
        draw.draw_net_to_file(net, args.output, args.rankdir, phase, args.display_lrm)
    except BrewnetError as e:  # Graphviz missing or failing: its message, on one line
        raise BrewnetError(_one_line(e)) from None
    except ValueError as e:  # a layer with both include and exclude rules, ...
        raise BrewnetError(f"{args.model}: {_one_line(e)}") from None
    except OSError as e:  # the output cannot be written
        raise BrewnetError(f"cannot write {args.output}: {e.strerror or e}") from None
    print(f"Drew {args.model} to {args.output}")
    return 0
