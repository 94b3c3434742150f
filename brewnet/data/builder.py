"""``brewnet dataset create``: build Caffe LMDBs the way DIGITS does.

SOURCE is one of
- a folder of class sub-folders (class names sorted; images found recursively in each; with
  ``digits_labels`` the names are DIGITS': ``_`` in a folder name becomes a space),
- a list file of "path label" lines (relative paths joined to ``list_root``, else to the list
  file's folder; class names from ``labels_file``, line i+1 naming label i, else a labels.txt
  beside the list, else "0".."N-1"),
- a folder holding IDX files (MNIST / Fashion-MNIST): ``train-*`` gives the train and validation
  sets, ``t10k-*`` the test set; classes are named 0..9 (Fashion-MNIST's names when the folder's
  path says "fashion").

Per class (DIGITS' order): shuffle, keep at most ``max_per_class``, drop classes with fewer than
``min_per_class`` (the remaining classes are renumbered), then split into train / val / test by
percentages (``round(n·(100−val−test)/100)`` train, up to ``round(n·(100−test)/100)`` val, the
rest test).  Each split is shuffled and written with keys ``%08d`` as Datums: uint8 C×H×W, BGR for
colour (or encoded PNG/JPEG bytes of the RGB image, which Caffe decodes to BGR), with the label.

DIGITS' separate sets: ``val_folder`` / ``test_folder`` (folders with the train folder's class
sub-folders; sub-folders of unknown classes are skipped with a warning) or ``val_list`` /
``test_list`` (list files with the train list's label indices; relative paths joined to
``val_list_root`` / ``test_list_root``, else to the list's folder) give that split instead of
the percentage, which is then ignored.  Their ``{val,test}_{min,max}_per_class`` work per class
as the train set's do, except that a class below the minimum only loses that split's images (the
classes come from the train set).

OUTDIR gets ``train_db/``, ``val_db/``, ``test_db/`` (non-empty splits only), ``labels.txt``,
``train.txt`` / ``val.txt`` / ``test.txt`` (``<absolute image path> <label>`` per record, in LMDB
order; IDX records are named ``<images file>#<index>``), ``mean.binaryproto`` (the train set's
mean image, 1×C×H×W, in stored channel order), ``mean.jpg`` (the same mean as a W×H JPEG image,
RGB or grey, as DIGITS showed it) and ``summary.json`` / ``summary.txt`` (image size and
channels, resize mode, encoding, counts per class and split, skipped files).
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from .. import formats
from ..errors import DataError
from ..proto import caffe_pb2
from .image import RESIZE_MODES, digits_resize, encode_image
from .idx import find_idx_sets, load_idx_set
from .labels import read_labels, write_labels
from .lmdb_io import DatumWriter
from ..reporting.task_progress import Progress

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".gif", ".webp")
SPLITS = ("train", "val", "test")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")


@dataclasses.dataclass
class BuildOptions:
    val_percent: float | None = None   # None: 25 for folders and list files, 10 for IDX
    test_percent: float = 0.0          # folders and list files (IDX: the t10k files are the test set)
    min_per_class: int = 1
    max_per_class: int | None = None
    color: bool | None = None          # None: colour for folders/lists, grey for IDX
    resize: tuple[int, int] | None = None  # (width, height)
    resize_mode: str = "squash"
    encoding: str | None = None        # png | jpg | none; None: png for images, none for IDX
    shuffle: bool = True
    seed: int | None = None
    workers: int = 0
    overwrite: bool = False
    stream: object = None              # progress and warnings (default stderr)
    # DIGITS' separate validation and test sets (the percentage is then ignored for that split)
    val_folder: str | None = None
    test_folder: str | None = None
    val_list: str | None = None
    test_list: str | None = None
    labels_file: str | None = None     # list files: line i+1 names label i
    list_root: str | None = None       # prefix of relative paths in the train list
    val_list_root: str | None = None
    test_list_root: str | None = None
    digits_labels: bool = False        # folder classes named as DIGITS did ('_' -> ' ')
    val_min_per_class: int = 0
    val_max_per_class: int | None = None
    test_min_per_class: int = 0
    test_max_per_class: int | None = None


@dataclasses.dataclass
class Sample:
    ref: object  # a file path, or an index into an IDX array
    label: int
    pool: str = "train"  # the set it came from: 'train' (split by percent), 'val' or 'test'
    name: str = ""       # what train.txt/val.txt/test.txt call it (default: the path)

    def listed(self) -> str:
        return self.name or os.path.abspath(str(self.ref))


def _class_dirs(folder: str) -> list[str]:
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: folder not found")
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d))
                  and not d.startswith("."))


def _folder_images(folder: str, label: int, pool: str) -> list[Sample]:
    samples = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                samples.append(Sample(os.path.join(root, f), label, pool))
    return samples


def digits_label(folder_name: str) -> str:
    """DIGITS' class name for a class sub-folder: its name with ``_`` replaced by a space."""
    return folder_name.replace("_", " ")


def _collect_folder(folder: str, digits_labels: bool = False):
    classes = _class_dirs(folder)
    if not classes:
        raise DataError(f"{folder}: no class sub-folders found (and no IDX files)")
    samples = []
    for label, name in enumerate(classes):
        samples += _folder_images(os.path.join(folder, name), label, "train")
    names = [digits_label(c) for c in classes] if digits_labels else list(classes)
    return names, samples, classes


def _read_labels_file(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise DataError(f"labels file not found: {path}")
    names = read_labels(path)
    if not names:
        raise DataError(f"labels file is empty: {path}")
    return names


def _list_samples(path: str, root: str | None, pool: str) -> list[Sample]:
    """The samples of a "path label" list: relative paths joined to ``root`` (default: the
    list's folder)."""
    from .sources import read_list_file
    if root is not None and not os.path.isdir(root):
        raise DataError(f"list root folder not found: {root}")
    base = root if root is not None else os.path.dirname(os.path.abspath(path))
    lines = read_list_file(path, where="dataset")
    samples = [Sample(p if os.path.isabs(p) else os.path.join(base, p), lab, pool) for p, lab in lines]
    bad = next((s for s in samples if s.label < 0), None)
    if bad is not None:
        raise DataError(f"{path}: labels must be non-negative integers (got {bad.label} for {bad.ref})")
    return samples


def _collect_list(path: str, root: str | None = None, labels_file: str | None = None):
    samples = _list_samples(path, root, "train")
    n = max(s.label for s in samples) + 1
    if labels_file:
        return _read_labels_file(labels_file), samples
    names_file = os.path.join(os.path.dirname(os.path.abspath(path)), "labels.txt")
    names = [str(i) for i in range(n)]
    if os.path.isfile(names_file):
        given = read_labels(names_file)
        if len(given) >= n:
            names = given[:n]
    return names, samples


def three_way_split(n: int, val_pct: float, test_pct: float) -> tuple[int, int]:
    """DIGITS' split indices: [0, a) train, [a, b) val, [b, n) test."""
    a = int(round(n * (100 - val_pct - test_pct) / 100.0))
    b = int(round(n * (100 - test_pct) / 100.0))
    return a, b


class DatasetBuilder:
    def __init__(self, source: str, outdir: str, options: BuildOptions | None = None):
        self.source = source
        self.outdir = outdir
        self.o = options or BuildOptions()
        self.stream = self.o.stream if self.o.stream is not None else sys.stderr
        self.skipped: list[dict] = []
        self.idx_arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def log(self, msg: str) -> None:
        self.stream.write(msg + "\n")
        self.stream.flush()

    # ----- collecting and splitting ---------------------------------------------------------
    def collect(self):
        """(class names, samples): the train set's samples (pool "train") and those of separate
        validation and test sets (pools "val", "test")."""
        src = self.source
        o = self.o
        if not os.path.exists(src):
            raise DataError(f"dataset source not found: {src}")
        folders = [f for f, v in (("--val-folder", o.val_folder), ("--test-folder", o.test_folder)) if v]
        lists = [f for f, v in (("--val-list", o.val_list), ("--test-list", o.test_list),
                                ("--labels", o.labels_file), ("--list-root", o.list_root),
                                ("--val-list-root", o.val_list_root),
                                ("--test-list-root", o.test_list_root)) if v]
        if os.path.isdir(src):
            sets = find_idx_sets(src)
            if sets:
                self.kind = "idx"
                if folders or lists:
                    raise DataError(f"{src} holds IDX files: {', '.join(folders + lists)} "
                                    "apply to image folders and list files only")
                if "train" not in sets:
                    raise DataError(f"{src}: IDX test files found but no train-* files")
                for name, (im, lb) in sets.items():
                    self.idx_arrays[name] = load_idx_set(im, lb)
                n = int(max(a[1].max() for a in self.idx_arrays.values())) + 1
                names = [str(i) for i in range(n)]
                if n == 10 and "fashion" in os.path.abspath(src).lower():
                    names = list(FASHION_MNIST_CLASSES)
                samples = [Sample(i, int(lab), pool, f"{os.path.abspath(sets[pool][0])}#{i}")
                           for pool, (_, labels) in self.idx_arrays.items() for i, lab in enumerate(labels)]
                return names, samples
            self.kind = "folder"
            if lists:
                raise DataError(f"{', '.join(lists)}: for a list-file SOURCE; a folder SOURCE takes "
                                "--val-folder / --test-folder")
            names, samples, dirs = _collect_folder(src, o.digits_labels)
            for pool, folder in (("val", o.val_folder), ("test", o.test_folder)):
                if folder:
                    samples += self._extra_folder(folder, dirs, pool)
            return names, samples
        self.kind = "list"
        if folders:
            raise DataError(f"{', '.join(folders)}: for a folder SOURCE; a list-file SOURCE takes "
                            "--val-list / --test-list")
        names, samples = _collect_list(src, o.list_root, o.labels_file)
        for pool, path, root in (("val", o.val_list, o.val_list_root), ("test", o.test_list, o.test_list_root)):
            if path:
                samples += _list_samples(path, root, pool)
        n = max(s.label for s in samples) + 1
        if o.labels_file:
            bad = next((s for s in samples if s.label >= len(names)), None)
            if bad is not None:
                raise DataError(f"{bad.ref}: label {bad.label}, but {o.labels_file} names only "
                                f"{len(names)} labels (0..{len(names) - 1})")
        elif len(names) < n:
            names = [str(i) for i in range(n)]
        return names, samples

    def _extra_folder(self, folder: str, class_dirs: list[str], pool: str) -> list[Sample]:
        """A separate val/test folder: its sub-folders named as the train folder's classes."""
        found = _class_dirs(folder)
        if not found:
            raise DataError(f"{folder}: no class sub-folders found (--{pool}-folder)")
        samples = []
        for d in found:
            if d not in class_dirs:
                self.log(f"dataset: skipping {os.path.join(folder, d)}: the train folder has no class '{d}'")
                continue
            samples += _folder_images(os.path.join(folder, d), class_dirs.index(d), pool)
        return samples

    def plan(self):
        o = self.o
        names, samples = self.collect()
        idx = self.kind == "idx"
        val_pct = o.val_percent if o.val_percent is not None else (10.0 if idx else 25.0)
        test_pct = o.test_percent
        # a separate set replaces the percentage (the t10k files are IDX's test set)
        self.separate = {"val": o.val_folder or o.val_list,
                         "test": o.test_folder or o.test_list or (idx and "test" in self.idx_arrays)}
        if self.separate["val"]:
            val_pct = 0.0
        if self.separate["test"]:
            test_pct = 0.0
        if not (0 <= val_pct <= 100 and 0 <= test_pct <= 100 and val_pct + test_pct <= 100):
            raise DataError(f"--val-percent {val_pct} and --test-percent {test_pct} must be between 0 and "
                            "100 and add up to at most 100")
        self.val_pct, self.test_pct = val_pct, test_pct
        if o.seed is None:
            o.seed = int(np.random.SeedSequence().generate_state(1)[0])
        rng = np.random.default_rng(o.seed)
        self.rng = rng
        by_class: dict[tuple[str, int], list[Sample]] = {}
        for s in samples:
            by_class.setdefault((s.pool, s.label), []).append(s)
        kept_labels = []
        for label in range(len(names)):
            train_pool = by_class.get(("train", label), [])
            if len(train_pool[:o.max_per_class] if o.max_per_class else train_pool) < max(1, o.min_per_class):
                self.log(f"dataset: dropping class '{names[label]}': {len(train_pool)} images, fewer than "
                         f"--min-per-class {max(1, o.min_per_class)}")
                continue
            kept_labels.append(label)
        if not kept_labels:
            raise DataError("no class has enough images")
        relabel = {old: new for new, old in enumerate(kept_labels)}
        self.class_names = [names[i] for i in kept_labels]
        limits = {"train": (o.min_per_class, o.max_per_class), "val": (o.val_min_per_class, o.val_max_per_class),
                  "test": (o.test_min_per_class, o.test_max_per_class)}
        splits: dict[str, list[Sample]] = {s: [] for s in SPLITS}
        for (pool, label), items in sorted(by_class.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            if label not in relabel:
                continue
            items = list(items)
            if o.shuffle:
                items = [items[i] for i in rng.permutation(len(items))]
            # IDX's t10k set: the train set's maximum, no minimum (as before separate sets existed)
            low, high = limits[pool] if self.kind != "idx" else (0, o.max_per_class)
            if high:
                items = items[:high]
            for s in items:
                s.label = relabel[label]
            if pool != "train":
                if len(items) < (low or 0):
                    self.log(f"dataset: no {pool} images of class '{names[label]}': {len(items)} images, "
                             f"fewer than --{pool}-min-per-class {low}")
                    continue
                splits[pool].extend(items)
                continue
            a, b = three_way_split(len(items), val_pct, test_pct)
            splits["train"].extend(items[:a])
            splits["val"].extend(items[a:b])
            splits["test"].extend(items[b:])
        if o.shuffle:
            for k in splits:
                splits[k] = [splits[k][i] for i in rng.permutation(len(splits[k]))]
        if not splits["train"]:
            raise DataError("the train split is empty (too few images or --val-percent/--test-percent too high)")
        self.splits = splits
        return splits

    # ----- loading one image ----------------------------------------------------------------
    def _color(self) -> bool:
        return self.o.color if self.o.color is not None else self.kind != "idx"

    def _encoding(self) -> str:
        enc = self.o.encoding or ("none" if self.kind == "idx" else "png")
        if enc not in ("png", "jpg", "none"):
            raise DataError(f"unknown --encoding {enc!r} (png, jpg or none)")
        return enc

    def _pil(self, s: Sample) -> Image.Image:
        if self.kind == "idx":
            arr = self.idx_arrays[s.pool][0][s.ref]
            if arr.ndim == 3 and arr.shape[2] == 1:
                arr = arr[:, :, 0]
            return Image.fromarray(np.ascontiguousarray(arr))
        with Image.open(s.ref) as im:
            im.load()
            return im.copy()

    def load(self, s: Sample, seed: int):
        """(Datum-ready C×H×W uint8 array in stored order, encoded bytes or None) or an error string."""
        try:
            im = self._pil(s)
            im = im.convert("RGB" if self._color() else "L")
            if self.o.resize:
                w, h = self.o.resize
                im = digits_resize(im, w, h, self.o.resize_mode, np.random.default_rng(seed))
            hwc = np.asarray(im, dtype=np.uint8)
        except Exception as e:
            return f"{e}"
        if hwc.ndim == 2:
            chw = hwc[None]
        else:
            chw = hwc[:, :, ::-1].transpose(2, 0, 1)  # RGB -> BGR, as Caffe stores colour
        enc = self._encoding()
        data = None if enc == "none" else encode_image(hwc, enc)
        return np.ascontiguousarray(chw), data

    # ----- writing --------------------------------------------------------------------------
    def build(self) -> dict:
        o = self.o
        if o.resize_mode not in RESIZE_MODES:
            raise DataError(f"unknown --resize-mode {o.resize_mode!r} (one of {', '.join(RESIZE_MODES)})")
        splits = self.plan()
        enc = self._encoding()
        os.makedirs(self.outdir, exist_ok=True)
        for split in SPLITS:
            db = os.path.join(self.outdir, f"{split}_db")
            if os.path.exists(db):
                if not o.overwrite:
                    raise DataError(f"{db} already exists (choose a new OUTDIR or pass --overwrite)")
                shutil.rmtree(db)
            listed = os.path.join(self.outdir, f"{split}.txt")
            if os.path.exists(listed) and o.overwrite:
                os.unlink(listed)  # an old run's list of a split this run may leave empty
        self.shape = None
        self.shape_from = None
        counts: dict[str, dict[str, int]] = {}
        mean_sum = None
        from ..reporting.progress_file import from_env
        announce = from_env()
        if announce is not None:
            # every split's total up front, so that a reader's done/total over the tasks does not
            # reach 1 when the train split alone is written
            with announce:
                for split in SPLITS:
                    if splits[split]:
                        announce.update(f"{split}_db", 0, len(splits[split]), force=True)
        workers = o.workers or min(8, os.cpu_count() or 1)
        pool = ThreadPoolExecutor(max_workers=workers) if workers > 1 and self.kind != "idx" else None
        try:
            for split in SPLITS:
                items = splits[split]
                if not items:
                    continue
                per_class = [0] * len(self.class_names)
                listed: list[str] = []  # "<path> <label>" of each record, in LMDB order
                path = os.path.join(self.outdir, f"{split}_db")
                seeds = self.rng.integers(0, 2**63 - 1, size=len(items))
                progress = Progress(len(items), f"{split}_db", self.stream)
                with DatumWriter(path) as writer:
                    chunk = 256
                    for start in range(0, len(items), chunk):
                        part = items[start:start + chunk]
                        args = list(zip(part, seeds[start:start + chunk]))
                        results = pool.map(lambda a: self.load(*a), args) if pool else [self.load(*a) for a in args]
                        for s, res in zip(part, results):
                            progress.update()
                            if isinstance(res, str):
                                self._skip(s, res)
                                continue
                            chw, data = res
                            self._check_shape(chw, s)
                            datum = caffe_pb2.Datum()
                            datum.channels, datum.height, datum.width = chw.shape
                            datum.label = s.label
                            if data is None:
                                datum.data = chw.tobytes()
                            else:
                                datum.data = data
                                datum.encoded = True
                            writer.put(datum)
                            listed.append(f"{s.listed()} {s.label}\n")
                            per_class[s.label] += 1
                            if split == "train":
                                mean_sum = chw.astype(np.float64) if mean_sum is None else mean_sum + chw
                progress.close()
                counts[split] = dict(zip(self.class_names, per_class))
                if writer.count == 0:
                    shutil.rmtree(path, ignore_errors=True)
                    raise DataError(f"no image of the {split} split could be read")
                formats.atomic_write(os.path.join(self.outdir, f"{split}.txt"), "".join(listed).encode("utf-8"))
        finally:
            if pool:
                pool.shutdown()
        n_train = sum(counts["train"].values())
        mean = (mean_sum / n_train).astype(np.float32)[None]
        # legacy num/channels/height/width dims, as DIGITS and Caffe's compute_image_mean write
        # them (DIGITS' example scripts read those fields)
        formats.write_binary(formats.array_to_blob(mean, legacy_4d=True),
                            os.path.join(self.outdir, "mean.binaryproto"))
        write_mean_jpg(mean[0], os.path.join(self.outdir, "mean.jpg"))
        write_labels(self.class_names, os.path.join(self.outdir, "labels.txt"))
        summary = {
            "source": os.path.abspath(self.source), "kind": self.kind,
            "labels": self.class_names,
            "image": {"channels": int(self.shape[0]), "height": int(self.shape[1]), "width": int(self.shape[2]),
                      "channel_order": "BGR" if self.shape[0] == 3 else "gray"},
            "encoding": enc, "resize": list(o.resize) if o.resize else None,
            "resize_mode": o.resize_mode if o.resize else None,
            "val_percent": self.val_pct, "test_percent": self.test_pct,
            "min_per_class": o.min_per_class, "max_per_class": o.max_per_class,
            # where each split came from: the source's split by percent, or a separate set
            "sets": {"train": os.path.abspath(self.source),
                     "val": _abs_or_none(o.val_folder or o.val_list),
                     "test": _abs_or_none(o.test_folder or o.test_list)},
            "per_split_limits": {"val": {"min": o.val_min_per_class, "max": o.val_max_per_class},
                                 "test": {"min": o.test_min_per_class, "max": o.test_max_per_class}},
            "digits_labels": o.digits_labels,
            "shuffle": o.shuffle, "seed": o.seed,
            "splits": {k: {"total": sum(v.values()), "per_class": v,
                           "db": f"{k}_db", "list": f"{k}.txt"} for k, v in counts.items()},
            "files": {"labels": "labels.txt", "mean": "mean.binaryproto", "mean_image": "mean.jpg"},
            "skipped": self.skipped,
        }
        with open(os.path.join(self.outdir, "summary.json"), "w", encoding="utf-8") as f:
            json.dump(summary, f, indent=2)
        text = summary_text(summary)
        with open(os.path.join(self.outdir, "summary.txt"), "w", encoding="utf-8") as f:
            f.write(text)
        return summary

    def _skip(self, s: Sample, err: str) -> None:
        self.skipped.append({"file": str(s.ref), "error": err})
        self.log(f"dataset: skipping unreadable image {s.ref}: {err} ({len(self.skipped)} skipped so far)")

    def _check_shape(self, chw: np.ndarray, s: Sample) -> None:
        if self.shape is None:
            self.shape, self.shape_from = chw.shape, s.ref
        elif chw.shape != self.shape:
            raise DataError(f"image {s.ref} is {chw.shape[2]}x{chw.shape[1]} with {chw.shape[0]} channel(s), but "
                            f"{self.shape_from} is {self.shape[2]}x{self.shape[1]} with {self.shape[0]}; "
                            "give --resize WxH so all images have one size")


def _abs_or_none(path: str | None) -> str | None:
    return os.path.abspath(path) if path else None


def write_mean_jpg(mean_chw: np.ndarray, path: str) -> None:
    """The mean image (C, H, W) in stored order (BGR or grey) as a W×H JPEG, RGB or grey, rounded
    to 0..255 — the picture of the mean DIGITS showed beside the dataset."""
    a = np.clip(np.rint(np.asarray(mean_chw, dtype=np.float64)), 0, 255).astype(np.uint8)
    if a.shape[0] == 1:
        im = Image.fromarray(a[0])  # grey (L)
    else:
        im = Image.fromarray(np.ascontiguousarray(a[::-1].transpose(1, 2, 0)))  # BGR -> RGB
    jpeg = io.BytesIO()
    im.save(jpeg, "JPEG", quality=90)
    formats.atomic_write(path, jpeg.getvalue())


def summary_text(summary: dict) -> str:
    names = summary["labels"]
    splits = list(summary["splits"])
    im = summary["image"]
    lines = [f"source: {summary['source']} ({summary['kind']})",
             f"images: {im['width']}x{im['height']}, {im['channels']} channel(s) ({im['channel_order']}), "
             f"encoding {summary['encoding']}"
             + (f", resized ({summary['resize_mode']})" if summary["resize"] else ""),
             f"seed: {summary['seed']}", ""]
    w = max([len("class")] + [len(n) for n in names])
    lines.append(f"{'class':<{w}}" + "".join(f"{s:>10}" for s in splits))
    for n in names:
        lines.append(f"{n:<{w}}" + "".join(f"{summary['splits'][s]['per_class'][n]:>10}" for s in splits))
    lines.append(f"{'total':<{w}}" + "".join(f"{summary['splits'][s]['total']:>10}" for s in splits))
    if summary["skipped"]:
        lines += ["", f"skipped {len(summary['skipped'])} unreadable image(s):"]
        lines += [f"  {s['file']}: {s['error']}" for s in summary["skipped"]]
    return "\n".join(lines) + "\n"


def create_dataset(source: str, outdir: str, **options) -> dict:
    """Build the LMDBs, labels, mean and summary; returns the summary dict."""
    return DatasetBuilder(source, outdir, BuildOptions(**options)).build()
