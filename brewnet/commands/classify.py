"""``brewnet classify``: classify images, a list, a folder or an LMDB with a deploy bundle.

    brewnet classify -bundle DIR (IMAGE... | -list FILE | -folder DIR | -lmdb PATH) [-top 5]
                     [-json OUT] [-batch B] [-gpu ID] [-summary_only] [-workers N]
                     [-visualize OUTDIR]

Images go through the dataset's resize and the validation transform (the bundle's
preprocess.json); the LMDB is read as the Data layer reads it.  Prints the top-N labels per image
(up to PRINT_LIMIT images; beyond that only the summary, with -json OUT holding every
prediction) and, when the images have labels (-list with labels, -folder, -lmdb), top-1/top-5
accuracy, the confusion matrix and per-class precision/recall.  Unreadable images are listed and
counted; the run goes on.  The engine is brewnet.inference.classify.classify.
"""
from __future__ import annotations

import sys

from ..errors import BrewnetError
from .shared_flags import flag

#: per-image predictions are printed for at most this many images
PRINT_LIMIT = 50


def add_arguments(parser) -> None:
    parser.add_argument("images", nargs="*", metavar="IMAGE", help="image files to classify")
    flag(parser, "bundle", default="", help="the deploy bundle directory (brewnet deploy writes it)")
    flag(parser, "list", default="", metavar="FILE",
         help="a list file of 'path [label]' lines (paths relative to the list's folder)")
    flag(parser, "folder", default="", metavar="DIR", help="a folder of class sub-folders named as the labels")
    flag(parser, "lmdb", default="", metavar="PATH", help="an LMDB of Datum records (e.g. a val_db)")
    flag(parser, "top", type=int, default=5, help="labels shown per image (default 5)")
    flag(parser, "json", default="", metavar="OUT", help="write the results (and every prediction) as JSON")
    flag(parser, "batch", type=int, default=None,
         help="images per forward (default: the deploy net's batch, or 64 when it is 1)")
    flag(parser, "gpu", default="", help="GPU id to use (default: CPU)")
    parser.add_argument("-summary_only", "--summary_only", "--summary-only", dest="summary_only",
                        action="store_true", help="keep only counts and metrics, not per-image predictions")
    flag(parser, "workers", type=int, default=None,
         help="image decoding workers (default: up to 4; processes for 1000+ images to decode, "
              "threads otherwise; 0 decodes in the main thread)")
    flag(parser, "top_images", type=int, default=0, metavar="K",
         help="keep the K most confident images of each class: a thumbnail grid per class in "
              "-top_images_dir and the list in the JSON")
    flag(parser, "top_images_dir", default="top_images", metavar="DIR",
         help="where -top_images writes (default ./top_images)")
    flag(parser, "visualize", default="", metavar="OUTDIR",
         help="with one image: write per-layer activations and weights (PNG + JSON) to OUTDIR")


def _sources(args):
    from .shared_flags import image_sources

    return image_sources(args, "nothing to classify: give image files, -list FILE, -folder DIR or -lmdb PATH")


def _print_predictions(result, out) -> None:
    for p in result.iter_predictions():
        truth = f"  (true: {p['label']})" if "label" in p else ""
        out.write(f"{p['source']}{truth}\n")
        for rank, (label, prob) in enumerate(p["top"], 1):
            out.write(f"  {rank}. {prob:.4f}  {label}\n")


def _print_summary(result, out) -> None:
    rate = f", {result.images_per_s:.0f} images/s" if result.elapsed_s > 0 else ""
    out.write(f"classified {result.count} image(s) in {result.elapsed_s:.1f} s{rate}\n")
    if result.errors:
        out.write(f"{len(result.errors)} image(s) could not be read:\n")
        for e in result.errors[:20]:
            out.write(f"  {e['source']}: {e['error']}\n")
        if len(result.errors) > 20:
            out.write(f"  ... and {len(result.errors) - 20} more (all of them in -json OUT)\n")
    conv = {k: v for k, v in result.conversions.items() if v}
    if conv:
        out.write("converted to the bundle's " + ", ".join(f"{k} ({v} image(s))" for k, v in conv.items()) + "\n")
    if not result.labelled:
        return
    n = result.labelled
    k5 = min(5, len(result.labels))
    out.write(f"top-1 accuracy: {result.top1:.4f} ({result.correct1}/{n})\n")
    out.write(f"top-{k5} accuracy: {result.top5:.4f} ({result.correct5}/{n})\n")
    names = result.labels
    cm = result.confusion
    w = max(5, len(str(int(cm.max()))) + 1)
    out.write("confusion matrix (rows: true class, columns: predicted class):\n")
    out.write(" " * 5 + "".join(f"{j:>{w}}" for j in range(len(names))) + "\n")
    for i, row in enumerate(cm):
        out.write(f"{i:>4} " + "".join(f"{int(v):>{w}}" for v in row) + f"   {names[i]}\n")
    lw = max(len("class"), *(len(x) for x in names))
    out.write(f"{'class':<{lw}} {'count':>7} {'precision':>10} {'recall':>8}\n")
    for pc in result.per_class:
        p = "-" if pc["precision"] is None else f"{pc['precision']:.4f}"
        r = "-" if pc["recall"] is None else f"{pc['recall']:.4f}"
        out.write(f"{pc['label']:<{lw}} {pc['count']:>7} {p:>10} {r:>8}\n")


def _visualize(loaded, args) -> None:
    if len(args.images) != 1:
        raise BrewnetError("-visualize OUTDIR takes exactly one IMAGE")
    from ..inference.visualize import visualize_net
    info = visualize_net(loaded.net, loaded.input_of(args.images[0]), args.visualize)
    count = len(info.get("blobs", [])) if isinstance(info, dict) else 0
    print(f"wrote per-layer visualisations of {args.images[0]} to {args.visualize}"
          + (f" ({count} blobs)" if count else ""))


def run(args) -> int:
    from ..reporting.task_progress import Progress
    from ..inference.classify import classify
    from ..inference.loaded import LoadedBundle
    from ..inference.results import TopImages
    from ..inference.sources import load_source_image
    from .shared_flags import device_from_flag

    if not args.bundle:
        raise BrewnetError("classify needs a bundle: brewnet classify -bundle DIR IMAGE... "
                           "(brewnet deploy writes one)")
    if args.top < 1:
        raise BrewnetError(f"-top must be at least 1, got {args.top}")
    if args.batch is not None and args.batch < 1:
        raise BrewnetError(f"-batch must be at least 1, got {args.batch}")
    if args.workers is not None and args.workers < 0:
        raise BrewnetError(f"-workers must be 0 or more, got {args.workers}")
    if args.top_images < 0:
        raise BrewnetError(f"-top_images must be 0 or more, got {args.top_images}")
    if args.visualize and len(args.images) != 1:
        raise BrewnetError("-visualize OUTDIR takes exactly one IMAGE")
    sources = _sources(args)
    device = device_from_flag(args.gpu)
    loaded = LoadedBundle(args.bundle, device=device, batch=args.batch)
    bar = Progress(sources.count, "classify", sys.stderr)
    tops = TopImages(len(loaded.labels), args.top_images) if args.top_images else None
    result = classify(loaded, sources, top=args.top, workers=args.workers,
                      progress=lambda done, total: bar.update(done - bar.done),
                      summary_only=args.summary_only, on_scores=tops)
    bar.close()
    try:
        if tops is not None:
            from ..inference.visualize import top_images_per_class
            result.top_images = top_images_per_class(tops.candidates(), loaded.labels, args.top_images,
                                                     args.top_images_dir, load_source_image)
            print(f"wrote the {args.top_images} most confident images per class to {args.top_images_dir}")
        out = sys.stdout
        if not args.summary_only:
            if result.count <= PRINT_LIMIT:
                _print_predictions(result, out)
            else:
                where = f"; all of them are in {args.json}" if args.json else "; -json OUT writes them all"
                out.write(f"({result.count} images: per-image predictions are printed for at most "
                          f"{PRINT_LIMIT}{where})\n")
        _print_summary(result, out)
        if args.json:
            result.write_json(args.json)
            out.write(f"wrote {args.json}\n")
        if args.visualize:
            _visualize(loaded, args)
    finally:
        result.close()
    return 0 if result.count else 1
