"""Kind ``detection`` (DIGITS' ``image-object-detection`` extension): KITTI folders into LMDBs.

Per stage (train; val when its folders are given — DIGITS has no percentage split here): the
images under the image folder (a recursive walk), each paired with ``ID.txt`` at the top level of
the label folder.  Every image is converted (``channel_conversion``), pasted at the top-left of a
black canvas of the padding size (a larger image is an error), then squashed to the resize size
(Pillow bilinear, as DIGITS' resize); its boxes are scaled by the same x and y ratios.  The label
record is :func:`.kitti.label_array`, with R = the stage's largest object count + 1.

DIGITS shuffles the images of each stage without a seed.  Here the shuffle is seeded (``seed``, or
a fresh one recorded in summary.json): Caffe's Data layer reads an LMDB in key order, so the order
written is the order trained, and a recorded seed lets the same folders be rebuilt into the same
LMDBs, byte for byte, to compare or reproduce a run.

``val_min_box_size`` (val only) turns an object whose width or height, in the label file's pixels,
is below it into DontCare.  The writer and the summary are issue 22's (:mod:`brewnet.data.generic`).
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ...errors import DataError
from ..generic.build import Stage, base_summary, new_seed, prepare_outdir, write_stages
from ..generic.folders import find_images
from ..generic.summary import write_summary
from ..generic.writer import WriteOptions, check_conversion, check_encoding, read_image
from ..image import digits_resize
from ..labels import write_labels
from .kitti import KittiObject, class_ids, class_names, label_array, object_class, read_kitti_labels


@dataclass(frozen=True)
class Entry:
    """One image of a stage, its label file, objects (file order) and their class ids."""
    image: str
    label: str
    objects: tuple[KittiObject, ...]
    classes: tuple[int, ...]


@dataclass(frozen=True)
class Frame:
    """Where the boxes live: the padding canvas and the resize size, (width, height) or None."""
    padding: tuple[int, int] | None
    resize: tuple[int, int] | None

    def check(self, width: int, height: int, path: str) -> None:
        """DIGITS' error for an image larger than the padding canvas."""
        if self.padding is not None:
            pw, ph = self.padding
            if width > pw:
                raise DataError(f"{path}: Source image width {width} is greater than padding width {pw}")
            if height > ph:
                raise DataError(f"{path}: Source image height {height} is greater than padding height {ph}")

    def check_files(self, paths: list[str]) -> None:
        """Every image's size against the padding, from the file headers (before anything is written)."""
        if self.padding is None:
            return
        for path in paths:
            try:
                with Image.open(path) as im:
                    size = im.size
            except (OSError, ValueError) as e:
                raise DataError(f"cannot read image {path}: {e}") from None
            self.check(*size, path)

    def place(self, chw: np.ndarray, path: str) -> tuple[np.ndarray, tuple[float, float]]:
        """The image padded and resized, and the (x, y) scale from its label file's pixels."""
        c, h, w = chw.shape
        if self.padding is not None:
            self.check(w, h, path)
            pw, ph = self.padding
            canvas = np.zeros((c, ph, pw), dtype=np.uint8)   # black, the image at the top-left
            canvas[:, :h, :w] = chw
            chw, (h, w) = canvas, (ph, pw)
        if self.resize is None or self.resize == (w, h):
            return chw, (1.0, 1.0)
        rw, rh = self.resize
        im = Image.fromarray(chw[0] if c == 1 else chw.transpose(1, 2, 0))
        out = np.asarray(digits_resize(im, rw, rh, "squash"), dtype=np.uint8)
        out = out[None] if out.ndim == 2 else out.transpose(2, 0, 1)
        return np.ascontiguousarray(out), (rw / w, rh / h)


def _size_pair(width, height, what: str, flags: tuple[str, str], minimum: int) -> tuple[int, int] | None:
    """(width, height), or None when neither is given (None or 0); both or neither."""
    given = [v is not None and v != 0 for v in (width, height)]
    if not any(given):
        return None
    if not all(given):
        missing = flags[1] if given[0] else flags[0]
        raise DataError(f"{what}: {flags[0]} and {flags[1]} go together ({missing} is missing)")
    for flag, v in zip(flags, (width, height)):
        if int(v) != v or v < minimum:
            raise DataError(f"{flag} {v}: {what} must be a whole number >= {minimum}")
    return int(width), int(height)


def label_files(folder: str, flag: str) -> dict[str, str]:
    """ID -> path of the ``ID.txt`` files at the top level of a label folder."""
    if not os.path.isdir(folder):
        raise DataError(f"{flag} {folder}: Folder does not exist or is not reachable")
    found = {os.path.splitext(n)[0]: os.path.join(folder, n) for n in sorted(os.listdir(folder))
             if n.lower().endswith(".txt") and os.path.isfile(os.path.join(folder, n))}
    if not found:
        raise DataError(f"error: no label files found in {folder} ({flag}: ID.txt for each image ID.png)")
    return found


def stage_entries(image_folder: str, label_folder: str, table: dict[str, int], min_box_size: float,
                  flags: tuple[str, str]) -> list[Entry]:
    """The entries of one stage (sorted by image path), every label file read and checked."""
    images = find_images(image_folder, flags[0])
    if not images:
        raise DataError(f"{flags[0]} {image_folder}: no images found")
    labels = label_files(label_folder, flags[1])
    entries = []
    for image in images:
        key = os.path.splitext(os.path.basename(image))[0]
        if key not in labels:
            raise DataError(f"Label key {key} not found in label folder {label_folder} (for image {image})")
        objects = tuple(read_kitti_labels(labels[key]))
        classes = tuple(object_class(o, table, min_box_size) for o in objects)
        entries.append(Entry(image, labels[key], objects, classes))
    return entries


def create_detection_dataset(outdir: str, *, train_image_folder: str, train_label_folder: str,
                             val_image_folder: str | None = None, val_label_folder: str | None = None,
                             padding_image_width: int | None = 1248, padding_image_height: int | None = 384,
                             resize_image_width: int | None = None, resize_image_height: int | None = None,
                             channel_conversion: str = "RGB", val_min_box_size: float = 25,
                             custom_classes: str = "", feature_encoding: str = "png", seed: int | None = None,
                             workers: int = 0, overwrite: bool = False, stream=None) -> dict:
    """Build a KITTI-format detection dataset in ``outdir``; returns its summary (contract C3).

    Padding or resize of None (or 0, both) is none: then the images keep their sizes, which may
    vary (summary ``force_same_shape`` false, ``image_size`` null)."""
    given = dict(locals())
    del given["outdir"]
    check_conversion(channel_conversion)
    check_encoding(feature_encoding, "-feature-encoding")
    frame = Frame(_size_pair(padding_image_width, padding_image_height, "padding",
                             ("-padding-width", "-padding-height"), 1),
                  _size_pair(resize_image_width, resize_image_height, "resize",
                             ("-resize-width", "-resize-height"), 1))
    if val_min_box_size is None or val_min_box_size < 0:
        raise DataError(f"-val-min-box-size {val_min_box_size}: must be 0 (off) or more")
    if bool(val_image_folder) != bool(val_label_folder):
        given_flag, missing = (("-val-image-folder", "-val-label-folder") if val_image_folder
                               else ("-val-label-folder", "-val-image-folder"))
        raise DataError(f"{given_flag} needs {missing} (a validation set is a folder of images and one of labels)")
    table = class_ids(custom_classes)
    names = class_names(table)
    entries = {"train": stage_entries(train_image_folder, train_label_folder, table, 0,
                                      ("TRAIN_IMAGES", "TRAIN_LABELS"))}
    if val_image_folder:
        entries["val"] = stage_entries(val_image_folder, val_label_folder, table, val_min_box_size,
                                       ("-val-image-folder", "-val-label-folder"))
    seed = new_seed(seed)
    rng = random.Random(seed)
    for items in entries.values():
        rng.shuffle(items)
    max_boxes = {s: max(len(e.objects) for e in items) for s, items in entries.items()}
    for items in entries.values():
        frame.check_files([e.image for e in items])
    prepare_outdir(outdir, overwrite)

    def stage(items: list[Entry], boxes: int) -> Stage:
        def load(i: int):
            image, scale = frame.place(read_image(items[i].image, channel_conversion), items[i].image)
            return image, label_array(list(items[i].objects), list(items[i].classes), boxes, scale)
        return Stage(len(items), load, lambda i: items[i].image)

    same_shape = frame.padding is not None or frame.resize is not None
    options = WriteOptions(feature_encoding, "none", same_shape, workers, stream, mean=False)
    results = write_stages(outdir, {s: stage(items, max_boxes[s]) for s, items in entries.items()}, options)
    write_labels(names, os.path.join(outdir, "labels.txt"))
    shape = results["train"].feature_shape
    summary = base_summary("detection", results, shape is not None, (feature_encoding, "none"), seed, given)
    summary.update(
        image_size=[shape[2], shape[1]] if shape else None,
        class_names=names, class_labels=names, num_classes=len(names),
        box_counts={s: box_counts(items, names) for s, items in entries.items()},
        max_boxes=max_boxes)
    write_summary(outdir, summary)
    return summary


def box_counts(entries: list[Entry], names: list[str]) -> dict[str, int]:
    """Objects per class name (every class of the table, DontCare included) of one stage."""
    counts = np.bincount([k for e in entries for k in e.classes], minlength=len(names))
    return {name: int(counts[k]) for k, name in enumerate(names)}
