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
"""
from __future__ import annotations

import argparse
import re

from ..errors import DataError
from .shared_flags import flag


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) <= 0 or int(m.group(2)) <= 0:
        raise argparse.ArgumentTypeError(f"expected WxH (e.g. 256x256), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION")
    p = sub.add_parser("create", help="build train/val/test LMDBs, labels, mean image and a summary",
                       description=__doc__.splitlines()[0])
    p.add_argument("source", metavar="SOURCE", help="folder of class sub-folders, list file, or folder of IDX files")
    p.add_argument("outdir", metavar="OUTDIR", help="output folder")
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
    parser.set_defaults(_dataset_parser=parser)


def run(args) -> int:
    if getattr(args, "action", None) != "create":
        args._dataset_parser.print_help()
        return 2
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
