"""``brewnet dataset create SOURCE OUTDIR``: build LMDBs for Caffe's Data layer, as DIGITS does.

SOURCE: a folder of class sub-folders, a list file ("path label" lines) or a folder of IDX files
(MNIST/Fashion-MNIST: ``train-*`` -> train and val, ``t10k-*`` -> test).  OUTDIR receives
train_db/, val_db/, test_db/ and train.txt, val.txt, test.txt (non-empty splits), labels.txt,
mean.binaryproto, mean.jpg, summary.json and summary.txt.  Defaults: --val-percent 25 (folders,
list files) or 10 (IDX); colour and PNG for images, grey and raw (none) for IDX.

DIGITS' options: -val-folder/-test-folder (a folder SOURCE's separate sets), -val-list/-test-list,
-labels, -list-root/-val-list-root/-test-list-root (list files), -digits-labels (folder class
names with '_' as a space), -{val,test}-{min,max}-per-class.  A separate set replaces that
split's percentage.

DIGITS' generic kinds (--kind; brewnet.data.generic writes them, summary.json last):
  --kind generic OUTDIR -train-images DB [-train-labels DB] [-val-images DB] [-val-labels DB] [-mean FILE]
  --kind gradients OUTDIR [-train-count 1000] [-val-count 250] [-test-count 0] [-width 32] [-height 32]
  --kind processing INPUT_DIR TARGET_DIR OUTDIR [-val-input-folder DIR -val-target-folder DIR | -val-percent 10]
  --kind segmentation IMAGE_DIR LABEL_DIR OUTDIR [-val-image-folder DIR -val-label-folder DIR | -val-percent 10]
         [-class-labels FILE] [-colormap label|textfile|none] [-colormap-file FILE]
  --kind detection TRAIN_IMAGES TRAIN_LABELS OUTDIR [-val-image-folder DIR -val-label-folder DIR]
         [-padding-width 1248 -padding-height 384] [-resize-width W -resize-height H]
         [-val-min-box-size 25] [-custom-classes "dontcare,car,..."]   (KITTI label files)
"""
from __future__ import annotations

import argparse
import re

from ..errors import DataError
from .shared_flags import flag

KINDS = ("classification", "generic", "gradients", "processing", "segmentation", "detection")
#: the positional paths of each kind, before OUTDIR
POSITIONALS = {"classification": ("source",), "generic": (), "gradients": (),
               "processing": ("input_dir", "target_dir"), "segmentation": ("image_dir", "label_dir"),
               "detection": ("train_image_folder", "train_label_folder")}
_EXTENSIONS = ("gradients", "processing", "segmentation", "detection")
_DETECTION = ("padding_width", "padding_height", "resize_width", "resize_height", "val_min_box_size",
              "custom_classes")
#: flags whose builder keyword has another name (flag dest -> keyword)
KEYWORDS = {"padding_width": "padding_image_width", "padding_height": "padding_image_height",
            "resize_width": "resize_image_width", "resize_height": "resize_image_height"}
#: the generic kinds' options: which kinds take them (argparse dest -> kinds)
GENERIC_OPTIONS = {
    **{d: ("generic",) for d in ("train_images", "train_labels", "val_images", "val_labels", "mean")},
    **{d: ("gradients",) for d in ("train_count", "val_count", "test_count", "width", "height")},
    "val_input_folder": ("processing",), "val_target_folder": ("processing",),
    **{d: ("segmentation",) for d in ("class_labels", "colormap", "colormap_file")},
    **{d: ("segmentation", "detection") for d in ("val_image_folder", "val_label_folder")},
    **{d: ("detection",) for d in _DETECTION},
    "channel_conversion": ("processing", "segmentation", "detection"),
    "val_percent": ("classification", "processing", "segmentation"),
    "seed": ("classification",) + _EXTENSIONS,
    "workers": ("classification",) + _EXTENSIONS,
    "feature_encoding": _EXTENSIONS, "label_encoding": _EXTENSIONS[:3],
    "force_same_shape": ("generic",) + _EXTENSIONS[:3],
}
#: today's options of the classification builder, which the generic kinds refuse
CLASSIFICATION_ONLY = ("test_percent", "min_per_class", "max_per_class", "color", "resize", "resize_mode",
                       "encoding", "shuffle", "val_folder", "test_folder", "val_list", "test_list", "labels",
                       "list_root", "val_list_root", "test_list_root", "digits_labels", "val_min_per_class",
                       "val_max_per_class", "test_min_per_class", "test_max_per_class")


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise argparse.ArgumentTypeError(f"expected WxH (e.g. 256x256), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("create", help="build train/val/test LMDBs, labels, mean image and a summary",
                       description=__doc__.splitlines()[0])
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="SOURCE OUTDIR (classification: SOURCE is a folder of class sub-folders, a list file, "
                        "or a folder of IDX files); OUTDIR (generic, gradients); INPUT_DIR TARGET_DIR OUTDIR "
                        "(processing); IMAGE_DIR LABEL_DIR OUTDIR (segmentation); TRAIN_IMAGES TRAIN_LABELS "
                        "OUTDIR (detection)")
    flag(p, "kind", choices=KINDS, default="classification",
         help="what the dataset is for (default classification; the others are DIGITS' generic kinds)")
    flag(p, "val-percent", type=float, default=None,
         help="percent of each class for validation (default 25; 10 for IDX)")
    flag(p, "test-percent", type=float, default=0.0,
         help="percent of each class for a test set (default 0; IDX uses its t10k files)")
    flag(p, "min-per-class", type=int, default=1, help="drop classes with fewer images (default 1)")
    flag(p, "max-per-class", type=int, default=None, help="keep at most this many images per class")
    g = p.add_mutually_exclusive_group()
    g.add_argument("-grayscale", "--grayscale", dest="color", action="store_false", default=None,
                   help="store one grey channel (default for IDX)")
    g.add_argument("-color", "--color", dest="color", action="store_true", default=None,
                   help="store three channels, BGR (default for images)")
    flag(p, "resize", type=_size, default=None, metavar="WxH", help="resize every image to W×H")
    flag(p, "resize-mode", choices=["squash", "crop", "fill", "half_crop"], default="squash",
         help="how --resize keeps the aspect ratio (DIGITS' modes; default squash)")
    flag(p, "encoding", choices=["png", "jpg", "none"], default=None,
         help="store images encoded or raw (default png for images, none for IDX)")
    s = p.add_mutually_exclusive_group()
    s.add_argument("-shuffle", "--shuffle", dest="shuffle", action="store_true", default=True,
                   help="shuffle each class before splitting and each split before writing (default)")
    s.add_argument("-no-shuffle", "--no-shuffle", dest="shuffle", action="store_false")
    flag(p, "seed", type=int, default=None, help="random seed (default: random, recorded in summary.json)")
    flag(p, "workers", type=int, default=0, help="image loading threads (default: up to 8)")
    p.add_argument("--overwrite", action="store_true", help="replace existing *_db folders in OUTDIR")
    d = p.add_argument_group("DIGITS' separate sets and list files (the percentage is then ignored for that split)")
    flag(d, "val-folder", default=None, metavar="DIR",
         help="a folder SOURCE's validation set: a folder with the same class sub-folders")
    flag(d, "test-folder", default=None, metavar="DIR", help="the same for the test set")
    flag(d, "val-list", default=None, metavar="FILE",
         help="a list-file SOURCE's validation set: 'path label' lines with the same label indices")
    flag(d, "test-list", default=None, metavar="FILE", help="the same for the test set")
    flag(d, "labels", default=None, metavar="FILE",
         help="class names of list files: line i+1 names label i (default: a labels.txt beside the "
              "list, else 0..N-1)")
    flag(d, "list-root", default=None, metavar="DIR",
         help="prefix of relative paths in the train list (default: the list's folder)")
    flag(d, "val-list-root", default=None, metavar="DIR", help="the same for -val-list")
    flag(d, "test-list-root", default=None, metavar="DIR", help="the same for -test-list")
    flag(d, "digits-labels", action="store_true", default=False,
         help="name folder classes as DIGITS did: the sub-folder name with '_' replaced by a space")
    for split in ("val", "test"):
        flag(d, f"{split}-min-per-class", type=int, default=0,
             help=f"a separate {split} set: classes with fewer images get no {split} images")
        flag(d, f"{split}-max-per-class", type=int, default=None,
             help=f"a separate {split} set: keep at most this many images per class")
    _add_generic_arguments(p)
    parser.set_defaults(_dataset_parser=parser, _create_parser=p)


def _add_generic_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--kind generic: existing LMDBs (DIGITS' \"Other\" dataset)")
    flag(g, "train-images", default=None, metavar="DB", help="the train features LMDB (required)")
    flag(g, "train-labels", default=None, metavar="DB", help="the train labels LMDB")
    flag(g, "val-images", default=None, metavar="DB", help="the val features LMDB")
    flag(g, "val-labels", default=None, metavar="DB", help="the val labels LMDB")
    flag(g, "mean", default=None, metavar="FILE", help="the mean file (.binaryproto)")
    g = p.add_argument_group("--kind gradients: synthetic regression images and their (gx, gy)")
    flag(g, "train-count", type=int, default=None, help="train images (default 1000)")
    flag(g, "val-count", type=int, default=None, help="val images (default 250)")
    flag(g, "test-count", type=int, default=None, help="test images (default 0)")
    flag(g, "width", type=int, default=None, help="image width (default 32)")
    flag(g, "height", type=int, default=None, help="image height (default 32)")
    g = p.add_argument_group("--kind processing / segmentation: paired folders (sorted, matching basenames)")
    flag(g, "val-input-folder", default=None, metavar="DIR", help="processing: the val inputs")
    flag(g, "val-target-folder", default=None, metavar="DIR", help="processing: the val targets")
    flag(g, "val-image-folder", default=None, metavar="DIR", help="segmentation, detection: the val images")
    flag(g, "val-label-folder", default=None, metavar="DIR",
         help="segmentation: the val label images; detection: the val KITTI label files")
    flag(g, "channel-conversion", choices=("RGB", "L", "none"), default=None,
         help="convert the images (processing: inputs and targets) to RGB or grey L (default none: as they are; "
              "detection: RGB)")
    flag(g, "class-labels", default=None, metavar="FILE", help="segmentation: class names, line i+1 names class i")
    flag(g, "colormap", choices=("label", "textfile", "none"), default=None,
         help="segmentation: class index from the label images' palette (label, the default), from the RGB "
              "colours of -colormap-file (textfile), or the grey value (none)")
    flag(g, "colormap-file", default=None, metavar="FILE", help="segmentation: one 'R G B' line per class")
    g = p.add_argument_group("--kind detection: KITTI folders (image ID.png, label ID.txt), DIGITS' fields")
    flag(g, "padding-width", type=int, default=None, metavar="PX",
         help="paste each image at the top-left of a black canvas this wide (default 1248; 0 with "
              "-padding-height 0: no padding)")
    flag(g, "padding-height", type=int, default=None, metavar="PX", help="the canvas height (default 384)")
    flag(g, "resize-width", type=int, default=None, metavar="PX",
         help="then squash to this width (with -resize-height; boxes scaled alike)")
    flag(g, "resize-height", type=int, default=None, metavar="PX", help="the resize height")
    flag(g, "val-min-box-size", type=int, default=None, metavar="PX",
         help="val objects narrower or lower than this become DontCare (default 25; 0: off)")
    flag(g, "custom-classes", default=None, metavar="NAMES",
         help="class names for ids 0, 1, ... (\"dontcare,car,...\"; default: DIGITS' KITTI table)")
    g = p.add_argument_group("--kind gradients / processing / segmentation / detection: how records are stored")
    flag(g, "feature-encoding", choices=("png", "jpg", "none"), default=None, help="default png")
    flag(g, "label-encoding", choices=("png", "jpg", "none"), default=None,
         help="default png (segmentation, processing), none (gradients; float labels require none)")
    s = g.add_mutually_exclusive_group()
    s.add_argument("-force-same-shape", "--force-same-shape", dest="force_same_shape", action="store_true",
                   default=None, help="every feature and label has the first one's shape; write the mean (default)")
    s.add_argument("-no-force-same-shape", "--no-force-same-shape", dest="force_same_shape",
                   action="store_false", default=None, help="shapes may vary (segmentation at batch 1); no mean")


def _flag_name(dest: str) -> str:
    return "-" + dest.replace("_", "-")


def _given(args, dest: str) -> bool:
    return getattr(args, dest) != args._create_parser.get_default(dest)


def _check_kind_options(args) -> None:
    """A flag of another kind is an error (not silently ignored)."""
    kind = args.kind
    for dest, kinds in GENERIC_OPTIONS.items():
        if kind not in kinds and _given(args, dest):
            raise DataError(f"{_flag_name(dest)} is not an option of --kind {kind} (it is for --kind "
                            f"{' / '.join(kinds)})")
    if kind != "classification":
        for dest in CLASSIFICATION_ONLY:
            if _given(args, dest):
                raise DataError(f"{_flag_name(dest)} is an option of --kind classification, not {kind}")
    names = POSITIONALS[kind] + ("outdir",)
    if len(args.paths) != len(names):
        usage = " ".join(n.upper() for n in names)
        raise DataError(f"--kind {kind} takes {usage} ({len(names)} path(s)), got {len(args.paths)}: "
                        f"{' '.join(args.paths)}")
    for name, value in zip(names, args.paths):
        setattr(args, name, value)


def _run_generic(args) -> int:
    from ..data.generic import create_generic_dataset
    from ..data.generic.summary import summary_text
    options = {name: getattr(args, name) for name in POSITIONALS[args.kind]}
    options.update({KEYWORDS.get(d, d): getattr(args, d) for d, kinds in GENERIC_OPTIONS.items()
                    if args.kind in kinds and getattr(args, d) is not None})
    options["overwrite"] = args.overwrite
    if not options.get("workers"):
        options.pop("workers", None)
    summary = create_generic_dataset(args.kind, args.outdir, **options)
    print(summary_text(summary), end="")
    print(f"wrote {args.outdir}: " + ", ".join(f"{s}_db ({st['entries']})" for s, st in summary["stages"].items())
          if args.kind != "generic" else f"wrote {args.outdir}: summary.json, summary.txt")
    return 0


def run(args) -> int:
    if getattr(args, "action", None) != "create":
        args._dataset_parser.print_help()
        return 2
    _check_kind_options(args)
    if args.kind != "classification":
        return _run_generic(args)
    from ..data.builder import create_dataset
    for name in ("max_per_class", "val_max_per_class", "test_max_per_class"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise DataError(f"--{name.replace('_', '-')} must be positive")
    for name in ("val_min_per_class", "test_min_per_class"):
        if getattr(args, name) < 0:
            raise DataError(f"--{name.replace('_', '-')} must be 0 or more")
    summary = create_dataset(
        args.source, args.outdir, val_percent=args.val_percent, test_percent=args.test_percent,
        min_per_class=args.min_per_class, max_per_class=args.max_per_class, color=args.color,
        resize=args.resize, resize_mode=args.resize_mode, encoding=args.encoding, shuffle=args.shuffle,
        seed=args.seed, workers=args.workers, overwrite=args.overwrite,
        val_folder=args.val_folder, test_folder=args.test_folder, val_list=args.val_list,
        test_list=args.test_list, labels_file=args.labels, list_root=args.list_root,
        val_list_root=args.val_list_root, test_list_root=args.test_list_root,
        digits_labels=args.digits_labels, val_min_per_class=args.val_min_per_class,
        val_max_per_class=args.val_max_per_class, test_min_per_class=args.test_min_per_class,
        test_max_per_class=args.test_max_per_class)
    from ..data.builder import summary_text
    print(summary_text(summary), end="")
    print(f"wrote {args.outdir}: " + ", ".join(f"{k}_db ({v['total']})" for k, v in summary["splits"].items())
          + ", " + ", ".join(f"{k}.txt" for k in summary["splits"])
          + ", labels.txt, mean.binaryproto, mean.jpg, summary.json, summary.txt")
    return 0
