"""What the verbs share: :func:`flag` (Caffe's ``-flag`` spelling, every verb), and the ``-gpu``
and speed flags that ``train``, ``test``, ``time`` and ``demo`` take: their argparse definitions
and what they do to nets and the process.

Not a verb (brewnet/commands/main.py lists the verbs); commands import this module, never each other.
torch is imported inside the functions, so building the parser costs nothing.
"""
from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from ..errors import BrewnetError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("brewnet")


def flag(parser: argparse.ArgumentParser, name: str, **kwargs):
    """Add an option accepted as both -name and --name (Caffe's gflags style)."""
    return parser.add_argument(f"-{name}", f"--{name}", dest=name.replace("-", "_"), **kwargs)


def add_speed_flags(parser) -> None:
    """Switches for the speed-ups that keep Caffe's numbers (each on by its net default)."""
    flag(parser, "fuse", default=None, choices=("on", "off"),
         help="run BatchNorm + Scale pairs as one fused batch norm in training (default on)")
    flag(parser, "channels_last", default=None, choices=("on", "off"),
         help="feed 4-D data channels-last (NHWC memory) to the convolutions")
    flag(parser, "amp", default="off", choices=("on", "off"),
         help="mixed precision: autocast to float16 on CUDA (with loss scaling) or bfloat16 on the "
              "CPU (default off: not within float32 tolerance of Caffe)")
    flag(parser, "tf32", default="off", choices=("on", "off"),
         help="on CUDA, let convolutions and matrix products use TF32 (faster on Ampere and later, "
              "about 1e-3 from float32 Caffe; default off)")


def amp_dtype(device: torch.device) -> torch.dtype:
    """What ``-amp on`` autocasts to: float16 on CUDA (tensor cores), bfloat16 elsewhere."""
    import torch

    return torch.float16 if device.type == "cuda" else torch.bfloat16


def apply_speed_flags(nets, args) -> None:
    """Apply the speed flags to the nets (and TF32 to the process)."""
    from .. import runtime

    runtime.set_tf32(getattr(args, "tf32", "off") == "on")
    for net in nets:
        if getattr(args, "fuse", None) is not None:
            net.fuse = args.fuse == "on"
        if getattr(args, "channels_last", None) is not None:
            net.channels_last = args.channels_last == "on"
        if getattr(args, "amp", "off") == "on":
            net.autocast = amp_dtype(net.device)


def gpu_ids_from_flag(gpu: str | None, what: str = "-gpu") -> list[int]:
    """The GPU ids a Caffe ``-gpu`` value names ('' = none: the CPU; 'all' = every GPU)."""
    import torch

    gpu = (gpu or "").strip()
    if not gpu:
        return []
    if not torch.cuda.is_available():
        raise BrewnetError(f"{what} {gpu}: CUDA is not available on this machine "
                           "(torch.cuda.is_available() is False); run without -gpu to use the CPU")
    count = torch.cuda.device_count()
    if gpu == "all":
        ids = list(range(count))
    else:
        try:
            ids = [int(x) for x in gpu.split(",") if x.strip()]
        except ValueError:
            raise BrewnetError(f"{what} '{gpu}': give a GPU id, a comma separated list, or 'all'") from None
    bad = [i for i in ids if not 0 <= i < count]
    if bad or not ids:
        raise BrewnetError(f"{what} {gpu}: no such GPU (this machine has {count}: ids 0..{count - 1})")
    if len(set(ids)) != len(ids):
        raise BrewnetError(f"{what} {gpu}: a GPU is listed twice")
    return ids


def device_from_flag(gpu: str | None, what: str = "-gpu"):
    """The torch device for a Caffe ``-gpu`` value ('' = CPU); the first of several."""
    import torch

    ids = gpu_ids_from_flag(gpu, what)
    if not ids:
        return torch.device("cpu")
    if len(ids) > 1:
        log.warning("%s %s: this command runs on one GPU; using GPU %d (brewnet train -gpu %s "
                    "trains data-parallel on all of them)", what, gpu, ids[0], gpu)
    torch.cuda.set_device(ids[0])
    return torch.device(f"cuda:{ids[0]}")


def image_sources(args, nothing: str, class_folders: bool = True):
    """The one source of images that ``IMAGE...``, ``-list``, ``-folder`` or ``-lmdb`` names
    (classify, infer); ``nothing``: the message when none is given. ``class_folders``: -folder
    holds class sub-folders (classify) rather than just images (infer)."""
    from ..inference import sources as src

    given = [name for name, value in (("IMAGE", args.images), ("-list", args.list),
                                      ("-folder", args.folder), ("-lmdb", args.lmdb)) if value]
    if not given:
        raise BrewnetError(nothing)
    if len(given) > 1:
        raise BrewnetError(f"give one source of images, not {' and '.join(given)}")
    if args.images:
        return src.sources_from_images(args.images)
    if args.list:
        return src.sources_from_list(args.list)
    if args.folder:
        return (src.sources_from_folder if class_folders else src.sources_from_image_folder)(args.folder)
    return src.sources_from_lmdb(args.lmdb)
