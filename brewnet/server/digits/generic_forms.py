"""DIGITS' generic dataset forms (docs: digits-other-jobs.md §1.2, §1.3, §2.1–2.3) into
:class:`GenericDatasetSpec`: the "Other" form of pre-built LMDBs and the data extensions'
forms (image-gradients, image-processing, image-segmentation), with DIGITS' field names,
defaults and messages.

- Every error is collected and raised together: the extension's own fields and the common
  ``dsopts_*`` fields in one ``FormErrors`` dict (400 ``{"errors": ...}``), as DIGITS merges them.
- Server paths must resolve under one of the server's ``--data-root`` folders.  The class labels
  file and the colour map file of a segmentation dataset may be uploads (a file in the field
  ``class_labels_file`` / ``colormap_text_file``) or server paths (the same field as text).
- Where brewnet differs: a missing ``dsopts_label_encoding`` means the kind's natural choice
  (``png`` for the image labels of processing and segmentation, ``none`` for gradients, whose
  float labels need it; DIGITS' default was ``none`` everywhere), a pre-built LMDB folder must
  hold an LMDB (``data.mdb``), a colour map file is checked here rather than when the job runs,
  and ``colormap_method`` also takes ``none`` (no palette: the pages then show class indexes
  in grey).  A ``seed`` field (0–1000 drawn when missing, as DIGITS drew it) is kept in the spec,
  so that a clone splits the same way.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Mapping

from ..config import ServerConfig
from ..errors import FormErrors
from ..jobs.specs import EXTENSION_KINDS, GenericDatasetSpec
from .fields import REQUIRED, Fields
from .forms import confine_field, data_roots

NOT_REACHABLE = "Folder does not exist or is not reachable"
NOT_LMDB = "Not an LMDB folder (it has no data.mdb)"
FLOAT_LABELS = "Float labels (image gradients) need label encoding none"
#: DIGITS' extension titles (the form pages' headings)
EXTENSION_TITLES = {"image-gradients": "Gradients", "image-processing": "Processing",
                    "image-segmentation": "Segmentation"}
ENCODINGS = ("none", "png", "jpg")
#: the biggest synthetic gradients set a form may ask for (entries per stage, pixels per side)
MAX_GRADIENT_IMAGES = 1_000_000
MAX_GRADIENT_SIDE = 4096


def _name_fields(f: Fields, kind: str) -> GenericDatasetSpec:
    return GenericDatasetSpec(kind=kind, name=f.text("dataset_name", required=True), group=f.text("group_name"))


def _same_shape(f: Fields, name: str) -> bool:
    return f.choice(name, ("1", "0"), "1") == "1"


def parse_prebuilt_form(form: Mapping[str, Any], config: ServerConfig) -> GenericDatasetSpec:
    """DIGITS' "Other" dataset form (pre-built LMDBs, §1.2) -> GenericDatasetSpec (kind generic).
    Raises FormErrors naming DIGITS' fields."""
    f = Fields(form)
    roots = data_roots(config)
    spec = _name_fields(f, "generic")
    f.choice("method", ("prebuilt",), "prebuilt")
    for name, attr, required in (("prebuilt_train_images", "train_images", True),
                                 ("prebuilt_train_labels", "train_labels", False),
                                 ("prebuilt_val_images", "val_images", False),
                                 ("prebuilt_val_labels", "val_labels", False)):
        text = f.text(name, required=required)
        if attr == "val_labels" and not spec.val_images:
            continue   # DIGITS reads the validation labels only with validation images
        path = confine_field(f, name, text, roots, "dir")
        if path is not None and not (path / "data.mdb").is_file():
            f.error(name, NOT_LMDB)
            path = None
        setattr(spec, attr, str(path) if path is not None else None)
    mean = confine_field(f, "prebuilt_mean_file", f.text("prebuilt_mean_file"), roots, "file")
    spec.mean_file = str(mean) if mean is not None else None
    spec.force_same_shape = _same_shape(f, "force_same_shape")
    if f.errors:
        raise FormErrors(f.errors)
    return spec


def parse_extension_form(extension_id: str, form: Mapping[str, Any], uploads: Mapping[str, str],
                         config: ServerConfig) -> GenericDatasetSpec:
    """A data extension's dataset form (§1.3 and the extension's §2.x) -> GenericDatasetSpec.
    ``uploads``: field -> the saved file's path (in the job's folder).  An unknown extension is
    a KeyError (the route answers 404)."""
    kind = EXTENSION_KINDS[extension_id]
    f = Fields(form)
    roots = data_roots(config)
    spec = _name_fields(f, kind)
    spec.feature_encoding = f.choice("dsopts_feature_encoding", ENCODINGS, "png")
    spec.label_encoding = f.choice("dsopts_label_encoding", ENCODINGS, "none" if kind == "gradients" else "png")
    spec.batch_size = f.number("dsopts_batch_size", int, 32, lo=1) or 32
    spec.num_threads = f.number("dsopts_num_threads", int, 4, lo=1) or 4
    spec.backend = f.choice("dsopts_backend", ("lmdb",), "lmdb")
    spec.force_same_shape = _same_shape(f, "dsopts_force_same_shape")
    seed = f.number("seed", int, None, lo=0, optional=True)
    spec.seed = seed if seed is not None else random.randint(0, 1000)
    if kind == "gradients":
        _gradient_fields(f, spec)
    else:
        _folder_fields(f, spec, roots)
        if kind == "segmentation":
            _segmentation_fields(f, spec, uploads, roots)
    if f.errors:
        raise FormErrors(f.errors)
    return spec


def _gradient_fields(f: Fields, spec: GenericDatasetSpec) -> None:
    spec.train_count = f.number("train_image_count", int, 1000, lo=1, hi=MAX_GRADIENT_IMAGES) or 1000
    spec.val_count = f.number("val_image_count", int, 250, lo=0, hi=MAX_GRADIENT_IMAGES) or 0
    spec.test_count = f.number("test_image_count", int, 0, lo=0, hi=MAX_GRADIENT_IMAGES) or 0
    spec.width = f.number("image_width", int, 32, lo=1, hi=MAX_GRADIENT_SIDE) or 32
    spec.height = f.number("image_height", int, 32, lo=1, hi=MAX_GRADIENT_SIDE) or 32
    if spec.label_encoding != "none":
        f.error("dsopts_label_encoding", FLOAT_LABELS)


def _folder(f: Fields, name: str, roots: list[Path]) -> str | None:
    path = confine_field(f, name, f.text(name, required=True), roots, "dir", missing=NOT_REACHABLE)
    return str(path) if path is not None else None


def _folder_fields(f: Fields, spec: GenericDatasetSpec, roots: list[Path]) -> None:
    """image-processing's and image-segmentation's folders, split and channel conversion."""
    spec.feature_folder = _folder(f, "feature_folder", roots)
    spec.label_folder = _folder(f, "label_folder", roots)
    pct = f.number("folder_pct_val", int, 10, lo=0, hi=100)
    spec.pct_val = pct if pct is not None else 10
    if f.boolean("has_val_folder"):
        spec.val_feature_folder = _folder(f, "validation_feature_folder", roots)
        spec.val_label_folder = _folder(f, "validation_label_folder", roots)
    spec.channel_conversion = f.choice("channel_conversion", ("RGB", "L", "none"), "none")


def _file(f: Fields, name: str, uploads: Mapping[str, str], roots: list[Path], required: bool) -> Path | None:
    """An upload in field ``name``, else the server path the field names."""
    if uploads.get(name):
        return Path(uploads[name])
    text = f.text(name)
    if not text:
        if required:
            f.error(name, REQUIRED)
        return None
    return confine_field(f, name, text, roots, "file")


def _read_text(f: Fields, name: str, path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        f.error(name, "The file is not UTF-8 text")
    except OSError as e:
        f.error(name, f"The file cannot be read: {e.strerror or e}")
    return None


def colormap_error(text: str) -> str | None:
    """What is wrong with a colour map text file (one ``R G B`` line per class, integers
    0–255), in DIGITS' words where it has them; None when it is good."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return "Your color map file is empty"
    if len(lines) > 256:
        return f"Your color map file has {len(lines)} colours: at most 256 classes"
    for i, parts in enumerate(lines, 1):
        for p in parts:
            try:
                v = int(p)
            except ValueError:
                return f"Your color map file seems to be badly formatted: '{p}' is not an integer"
            if not 0 <= v <= 255:
                return f"Your color map file seems to be badly formatted: {v} (line {i}) is not in 0..255"
        if len(parts) != 3:
            return f"Your color map file seems to be badly formatted: line {i} has {len(parts)} values, not 3"
    return None


def _segmentation_fields(f: Fields, spec: GenericDatasetSpec, uploads: Mapping[str, str],
                         roots: list[Path]) -> None:
    labels = _file(f, "class_labels_file", uploads, roots, required=False)
    if labels is not None:
        text = _read_text(f, "class_labels_file", labels)
        if text is not None and not any(line.strip() for line in text.splitlines()):
            f.error("class_labels_file", "The class labels file names no class")
        spec.class_labels_file = str(labels)
    spec.colormap_method = f.choice("colormap_method", ("label", "textfile", "none"), "label")
    if spec.colormap_method == "textfile":
        path = _file(f, "colormap_text_file", uploads, roots, required=True)
        if path is not None:
            text = _read_text(f, "colormap_text_file", path)
            problem = colormap_error(text) if text is not None else None
            if problem:
                f.error("colormap_text_file", problem)
            spec.colormap_file = str(path)

