"""``brewnet infer``: run a deploy bundle of any net (regression, segmentation, image-to-image)
on images, a list, a folder or an LMDB and keep every output blob.

    brewnet infer -bundle DIR (IMAGE... | -list FILE | -folder DIR | -lmdb DB) [-output OUTDIR]
                  [-json FILE] [-dont_resize] [-batch N] [-gpu ID] [-workers N]
                  [-evaluate segmentation|regression -label_lmdb DB]

Streams as ``brewnet classify`` does (decode workers, a few batches in memory): ``-output``
gets one ``.npy`` per image and output blob plus ``index.json`` (key -> files and shapes),
``-json`` DIGITS' ``{"outputs": {key: {blob: values}}}``; keys are image paths or LMDB keys.
``-evaluate`` compares the main output over ``-lmdb`` with the records of the same keys in
``-label_lmdb`` using the solver's test-phase metrics (mean IoU, per-class IoU, pixel accuracy;
RMSE, MAE), printed and written to the JSON. With no -output and no -json the outputs' shapes
and ranges are printed. The engine is brewnet.inference.infer.
"""
from __future__ import annotations

import sys

from ..errors import BrewnetError
from .shared_flags import flag

#: outputs are described on stdout for at most this many images (without -output/-json)
PRINT_LIMIT = 20


def add_arguments(parser) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files to run the net on")
    flag(parser, "bundle", default="", help="the deploy bundle directory (brewnet deploy writes it)")
    flag(parser, "list", default="", metavar="FILE",
         help="a list file of image paths (relative to the list's folder; a trailing integer is ignored)")
    flag(parser, "folder", default="", metavar="DIR", help="a folder of images (sub-folders too)")
    flag(parser, "lmdb", default="", metavar="DB", help="an LMDB of Datum records (e.g. val_db/features)")
    flag(parser, "output", default="", metavar="OUTDIR",
         help="write each image's output blobs as .npy files and an index.json here")
    flag(parser, "json", default="", metavar="FILE", help="write every output (as lists) and the summary as JSON")
    parser.add_argument("-dont_resize", "--dont_resize", "--dont-resize", dest="dont_resize", action="store_true",
                        help="keep each image's size (only channels are converted); the net is reshaped to it")
    flag(parser, "batch", type=int, default=None,
         help="images per forward (default: the deploy net's batch, or 64 when it is 1)")
    flag(parser, "gpu", default="", help="GPU id to use (default: CPU)")
    flag(parser, "workers", type=int, default=None,
         help="image decoding workers (default: up to 4; 0 decodes in the main thread)")
    flag(parser, "evaluate", default="", choices=("", "segmentation", "regression"),
         help="compare the main output with -label_lmdb: segmentation (IoU) or regression (RMSE, MAE)")
    flag(parser, "label_lmdb", default="", metavar="DB",
         help="with -evaluate: the labels LMDB, the same keys as -lmdb (e.g. val_db/labels)")


def _sources(args):
    from .shared_flags import image_sources

    return image_sources(args, "nothing to run on: give image files, -list FILE, -folder DIR or -lmdb DB",
                         class_folders=False)


def _check(args) -> None:
    if not args.bundle:
        raise BrewnetError("infer needs a bundle: brewnet infer -bundle DIR IMAGE... (brewnet deploy writes one)")
    if args.batch is not None and args.batch < 1:
        raise BrewnetError(f"-batch must be at least 1, got {args.batch}")
    if args.workers is not None and args.workers < 0:
        raise BrewnetError(f"-workers must be 0 or more, got {args.workers}")
    if args.evaluate and not (args.lmdb and args.label_lmdb):
        raise BrewnetError(f"-evaluate {args.evaluate} needs -lmdb DB (the features) and -label_lmdb DB "
                           "(the labels, the same keys)")
    if args.label_lmdb and not args.evaluate:
        raise BrewnetError("-label_lmdb is read by -evaluate segmentation|regression only")


def _describe(key: str, outputs: dict, out) -> None:
    out.write(f"{key}\n")
    for blob, v in outputs.items():
        shape = "x".join(str(d) for d in v.shape) or "scalar"
        values = ", ".join(f"{x:.6g}" for x in v.ravel()) if v.size <= 8 else \
            f"min {v.min():.6g}, max {v.max():.6g}, mean {v.mean():.6g}"
        out.write(f"  {blob} [{shape}]: {values}\n")


def _print_metrics(result: dict, out) -> None:
    out.write(f"{result['kind']} of '{result['output']}' over {result['count']} image(s):\n")
    for name, value in result.items():
        if isinstance(value, float):
            out.write(f"  {name} = {value:.6g}\n")


def run(args) -> int:
    import os

    from ..inference.infer import GenericBundle, OutputWriter, evaluate, infer_images
    from ..reporting.task_progress import Progress
    from .shared_flags import device_from_flag

    _check(args)
    sources = _sources(args)
    if not os.path.exists(args.bundle):
        raise BrewnetError(f"bundle not found: {args.bundle} (brewnet deploy writes one)")
    loaded = GenericBundle(args.bundle, device=device_from_flag(args.gpu), batch=args.batch,
                           dont_resize=args.dont_resize)
    bar = Progress(sources.count, "infer", sys.stderr)
    out = sys.stdout
    printed = 0

    def show(key, outputs):
        nonlocal printed
        if not (args.output or args.json) and printed < PRINT_LIMIT:
            _describe(key, outputs, out)
            printed += 1

    with OutputWriter(args.output or None, args.json or None) as writer:
        def each(key, outputs):
            writer.add(key, outputs)
            show(key, outputs)

        def progress(done, total):
            bar.update(done - bar.done)

        summary: dict = {}
        if args.evaluate:
            result = evaluate(loaded, args.lmdb, args.label_lmdb, args.evaluate, dont_resize=args.dont_resize,
                              workers=args.workers, progress=progress, on_output=each)
            errors = result.pop("errors")
            summary["evaluation"] = result
        else:
            stream = infer_images(loaded, sources, dont_resize=args.dont_resize, workers=args.workers,
                                  progress=progress)
            for key, outputs in stream:
                each(key, outputs)
            errors = stream.errors
        bar.close()
        summary.update({"count": writer.count, "outputs_named": loaded.outputs, "errors": errors})
        writer.finish(summary)
    if printed < writer.count and not (args.output or args.json):
        out.write(f"({writer.count} images: outputs are described for at most {PRINT_LIMIT}; "
                  "-output OUTDIR or -json FILE keeps them all)\n")
    out.write(f"ran {writer.count} image(s) through {args.bundle}: outputs {', '.join(loaded.outputs)}\n")
    if errors:
        out.write(f"{len(errors)} image(s) could not be read:\n")
        for e in errors[:20]:
            out.write(f"  {e['source']}: {e['error']}\n")
    if args.evaluate:
        _print_metrics(summary["evaluation"], out)
    if args.output:
        out.write(f"wrote {writer.count} image(s)' outputs and index.json to {args.output}\n")
    if args.json:
        out.write(f"wrote {args.json}\n")
    return 0 if writer.count else 1
