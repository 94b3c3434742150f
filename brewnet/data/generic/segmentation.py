"""Kind ``segmentation`` (DIGITS' ``image-segmentation`` extension): images and label images.

Images and label images are paired as in :mod:`.folders`; the channel conversion applies to the
images only.  Each label image becomes a 1×H×W uint8 array of class indices, stored in the labels
LMDB (grayscale PNG by default) under its image's key.  The class index of a pixel comes from the
colour map (doc §2.2):

- ``label``: label images in mode ``P`` (the pixel's palette index), ``L`` (its grey value) or
  ``1`` (0/1).  The palette of the first label image (sorted order) is the dataset's
  ``color_palette``; every label image must have that same palette.
- ``textfile``: one ``R G B`` line per class (line i+1 = class i); label images are read as RGB and
  each pixel gets the class of the nearest of those colours.  DIGITS pads the palette with black
  entries before quantising, so a dark pixel could get a class past the file's; here only the
  file's colours compete (the saved palette is still padded to 256 entries).
- ``none``: no colour map: a one-channel label image's value is the class index.

``class_pixel_counts`` in the summary counts each stage's pixels per class index 0..num_classes-1;
pixels with a larger index (255, PASCAL's "don't care") are counted in ``other_pixel_counts``.
"""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from ...errors import DataError
from ..labels import read_labels, write_labels
from .build import Stage, base_summary, logger, new_seed, prepare_outdir, write_stages
from .folders import stage_pairs
from .summary import write_summary
from .writer import WriteOptions, check_conversion, check_encoding, read_image

COLORMAPS = ("label", "textfile", "none")
IGNORE = 255   # PASCAL VOC's "don't care" label: not a class


def read_colormap_file(path: str) -> list[tuple[int, int, int]]:
    """The colours of an RGB→class text file: line i+1 (blank lines skipped) is class i's ``R G B``."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.split() for line in f if line.strip()]
    except FileNotFoundError:
        raise DataError(f"-colormap-file {path}: File does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"-colormap-file {path}: cannot read it: {e}") from None
    colours = []
    for n, fields in enumerate(lines, 1):
        for value in fields:
            try:
                int(value)
            except ValueError:
                raise DataError(f"Your color map file seems to be badly formatted: '{value}' is not an integer "
                                f"({path})") from None
        rgb = tuple(int(v) for v in fields)
        if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
            raise DataError(f"Your color map file seems to be badly formatted: class {n - 1} is "
                            f"'{' '.join(fields)}', expected three integers 0..255 (R G B) ({path})")
        colours.append(rgb)
    if not colours:
        raise DataError(f"-colormap-file {path}: no colours in it")
    if len(colours) > 256:
        raise DataError(f"-colormap-file {path}: {len(colours)} colours, at most 256 classes fit in a label image")
    return colours


def _padded(palette) -> list[int] | None:
    if palette is None:
        return None
    palette = list(palette)[:768]
    return palette + [0] * (768 - len(palette))


def _open(path: str) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()
        return im
    except FileNotFoundError:
        raise DataError(f"label image not found: {path}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read label image {path}: {e}") from None


def _indices(im: Image.Image, path: str, how: str) -> np.ndarray:
    """A one-channel label image's values (palette index, grey value, 0/1) as H×W uint8."""
    if im.mode not in ("P", "L", "1"):
        hint = "; use -colormap textfile for RGB label images" if how == "label" else ""
        raise DataError(f"label image {path} is mode {im.mode}: -colormap {how} needs one-channel label images "
                        f"(mode P, L or 1){hint}")
    return np.asarray(im, dtype=np.uint8)


def _nearest(rgb: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Each pixel of an H×W×3 image as the index of its nearest colour (squared RGB distance)."""
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    unique, inverse = np.unique(codes.ravel(), return_inverse=True)
    seen = np.stack([unique >> 16, (unique >> 8) & 255, unique & 255], axis=1)
    distance = ((seen[:, None, :] - colours[None, :, :]) ** 2).sum(axis=2)
    return distance.argmin(axis=1).astype(np.uint8)[inverse].reshape(codes.shape)


class LabelReader:
    """Label image → 1×H×W uint8 class indices, by one colour map (thread-safe: read-only state)."""

    def __init__(self, colormap: str, palette: list[int] | None = None, colours=None):
        self.colormap = colormap
        self.palette = palette
        self.colours = np.asarray(colours, dtype=np.int32) if colours is not None else None

    def __call__(self, path: str) -> np.ndarray:
        with _open(path) as im:
            if self.colormap == "textfile":
                return _nearest(np.asarray(im.convert("RGB")), self.colours)[None]
            values = _indices(im, path, self.colormap)
            if self.colormap == "label":
                palette = _padded(im.getpalette()) if im.mode == "P" else None
                if palette != self.palette:
                    raise DataError(f"All label images must use the same palette: {path} differs from the first "
                                    "label image's")
            return values[None]


def create_segmentation(outdir: str, image_dir: str, label_dir: str, val_image_folder: str | None = None,
                        val_label_folder: str | None = None, val_percent: float = 10.0,
                        class_labels: str | None = None, colormap: str | None = None,
                        colormap_file: str | None = None, channel_conversion: str = "none",
                        seed: int | None = None, feature_encoding: str = "png", label_encoding: str = "png",
                        force_same_shape: bool = True, workers: int = 0, overwrite: bool = False,
                        stream=None) -> dict:
    """Build a segmentation dataset; ``colormap`` None means ``textfile`` when a file is given,
    else ``label``."""
    given = dict(locals())
    del given["outdir"]
    colormap = colormap or ("textfile" if colormap_file else "label")
    if colormap not in COLORMAPS:
        raise DataError(f"-colormap {colormap!r}: one of {', '.join(COLORMAPS)}")
    if colormap == "textfile" and not colormap_file:
        raise DataError("-colormap textfile needs -colormap-file FILE (one 'R G B' line per class)")
    if colormap_file and colormap != "textfile":
        raise DataError(f"-colormap-file is read with -colormap textfile only (not {colormap})")
    check_conversion(channel_conversion)
    check_encoding(feature_encoding, "-feature-encoding")
    if check_encoding(label_encoding, "-label-encoding") == "jpg":
        raise DataError("-label-encoding jpg: JPEG is lossy and would change class indices; use png or none")
    names = None
    if class_labels:
        if not os.path.isfile(class_labels):
            raise DataError(f"-class-labels {class_labels}: File does not exist")
        names = read_labels(class_labels)
        if not names:
            raise DataError(f"-class-labels {class_labels}: the file names no class")
    colours = read_colormap_file(colormap_file) if colormap == "textfile" else None
    seed = new_seed(seed)
    pairs = stage_pairs(image_dir, label_dir, val_image_folder, val_label_folder, val_percent, seed,
                        ("IMAGE_DIR", "LABEL_DIR", "-val-image-folder", "-val-label-folder"))
    palette = None
    if colormap == "label":
        first = min(p.label for p in pairs["train"])
        with _open(first) as im:
            _indices(im, first, "label")
            palette = _padded(im.getpalette()) if im.mode == "P" else None
    elif colormap == "textfile":
        palette = _padded([v for rgb in colours for v in rgb])
    labels = LabelReader(colormap, palette, colours)
    prepare_outdir(outdir, overwrite)

    def stage(items) -> Stage:
        def load(i: int):
            image = read_image(items[i].feature, channel_conversion)
            label = labels(items[i].label)
            if image.shape[1:] != label.shape[1:]:
                raise DataError(f"image {items[i].feature} is {image.shape[2]}x{image.shape[1]} but its label image "
                                f"{items[i].label} is {label.shape[2]}x{label.shape[1]}")
            return image, label
        return Stage(len(items), load, lambda i: items[i].feature)

    options = WriteOptions(feature_encoding, label_encoding, force_same_shape, workers, stream)
    results = write_stages(outdir, {s: stage(p) for s, p in pairs.items()}, options)
    histograms = {s: r.label_histogram for s, r in results.items()}
    if names:
        num_classes = len(names)
    elif colours is not None:
        num_classes = len(colours)
    else:
        used = [int(np.flatnonzero(h[:IGNORE]).max()) for h in histograms.values() if h[:IGNORE].any()]
        num_classes = max(used, default=0) + 1
    beyond = {s: {str(v): int(h[v]) for v in np.flatnonzero(h[num_classes:]) + num_classes}
              for s, h in histograms.items()}
    strays = sorted({int(v) for b in beyond.values() for v in b} - {IGNORE})
    if strays:
        logger(stream)(f"warning: label values {strays} are not among the {num_classes} classes "
                       f"(0..{num_classes - 1})")
    if names:
        write_labels(names, os.path.join(outdir, "labels.txt"))
    summary = base_summary("segmentation", results, force_same_shape, (feature_encoding, label_encoding), seed, given)
    summary.update(class_labels=names, color_palette=palette, num_classes=num_classes,
                   class_pixel_counts={s: h[:num_classes].tolist() for s, h in histograms.items()},
                   other_pixel_counts=beyond if any(beyond.values()) else None, colormap=colormap)
    write_summary(outdir, summary)
    return summary
