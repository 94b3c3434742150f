"""A generated KITTI-format detection set (contract C3): RGB PNGs and KITTI label files.

Each image is a textured, noisy grey background (issue 22's :func:`textured_background`) with 1 to
4 objects of the classes asked for, each class with a look of its own that a small DetectNet can
learn on a CPU:

- ``car``: wider than tall, a red-orange body, a dark cabin with windows, two black wheels;
- ``pedestrian``: tall and narrow, a skin-toned head over a blue torso and dark legs;
- ``cyclist``: about square, a green rider over two dark wheels joined by a frame.

Object heights run from about 12 to 64 pixels (bounded by the image).  The label files carry all
15 KITTI fields: type (KITTI's spelling: ``Car``, ``Pedestrian``, ``Cyclist``, ``DontCare``),
truncated 0, occluded 0, alpha and rotation_y drawn in [-π, π], the box, dimensions in metres
near KITTI's typical ones, and a camera location whose depth z falls as the object's pixel
height grows (a pinhole with the focal length = the image height), so depths vary and far
objects are painted first.  About a third of the images also hold a DontCare region (a grey
striped patch).  Boxes are placed so that objects overlap little.  Deterministic in ``seed``.
"""
from __future__ import annotations

import colorsys
import math
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ...errors import DataError
from ..generic.synthetic import textured_background

#: the looks this generator draws: name -> (KITTI type, hue band (fractions of a turn), aspect w/h,
#: typical dimensions (height, width, length) in metres)
LOOKS = {
    "car": ("Car", (0.97, 1.06), 2.0, (1.5, 1.6, 3.9)),
    "pedestrian": ("Pedestrian", (0.55, 0.66), 0.4, (1.75, 0.6, 0.8)),
    "cyclist": ("Cyclist", (0.25, 0.38), 0.9, (1.7, 0.6, 1.8)),
}
MIN_SIDE, MAX_HEIGHT = 12, 64


@dataclass
class _Object:
    kind: str            # a LOOKS name, or "dontcare"
    box: tuple[float, float, float, float]   # left, top, right, bottom (pixels)


def _colour(rng: np.random.Generator, band: tuple[float, float], saturation=(0.7, 1.0), value=(0.6, 1.0)):
    hue = rng.uniform(*band) % 1.0
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, rng.uniform(*saturation), rng.uniform(*value)))


def _draw(draw: ImageDraw.ImageDraw, obj: _Object, rng: np.random.Generator) -> None:
    x1, y1, x2, y2 = obj.box
    w, h = x2 - x1, y2 - y1
    dark = tuple(int(v) for v in rng.integers(10, 45, size=3))
    if obj.kind == "dontcare":
        grey = int(rng.integers(90, 170))
        draw.rectangle([x1, y1, x2 - 1, y2 - 1], fill=(grey, grey, grey))
        for k in range(int(x1), int(x2), 4):
            draw.line([k, y1, k, y2 - 1], fill=(grey - 40,) * 3, width=1)
        return
    body = _colour(rng, LOOKS[obj.kind][1])
    if obj.kind == "car":
        draw.rectangle([x1, y1 + 0.35 * h, x2 - 1, y2 - 0.2 * h], fill=body)
        draw.polygon([(x1 + 0.2 * w, y1 + 0.35 * h), (x1 + 0.3 * w, y1), (x1 + 0.75 * w, y1),
                      (x1 + 0.85 * w, y1 + 0.35 * h)], fill=body)
        glass = (int(rng.integers(40, 90)), int(rng.integers(60, 110)), int(rng.integers(110, 170)))
        draw.polygon([(x1 + 0.27 * w, y1 + 0.33 * h), (x1 + 0.34 * w, y1 + 0.08 * h), (x1 + 0.71 * w, y1 + 0.08 * h),
                      (x1 + 0.78 * w, y1 + 0.33 * h)], fill=glass)
        r = 0.2 * h
        for cx in (x1 + 0.25 * w, x1 + 0.75 * w):
            draw.ellipse([cx - r, y2 - 2 * r, cx + r, y2 - 1], fill=dark)
    elif obj.kind == "pedestrian":
        skin = _colour(rng, (0.05, 0.1), (0.3, 0.6), (0.7, 1.0))
        head = 0.11 * h
        cx = (x1 + x2) / 2
        draw.ellipse([cx - head, y1, cx + head, y1 + 2 * head], fill=skin)
        draw.rectangle([x1, y1 + 2 * head, x2 - 1, y1 + 0.6 * h], fill=body)
        draw.rectangle([x1 + 0.1 * w, y1 + 0.6 * h, cx - 0.08 * w, y2 - 1], fill=dark)
        draw.rectangle([cx + 0.08 * w, y1 + 0.6 * h, x2 - 1 - 0.1 * w, y2 - 1], fill=dark)
    else:   # cyclist
        r = 0.24 * min(w, h)
        line = max(1, int(0.08 * min(w, h)))
        wheels = ((x1 + r, y2 - r), (x2 - r, y2 - r))
        for cx, cy in wheels:
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=dark, width=line)
        seat = ((x1 + x2) / 2, y1 + 0.5 * h)
        draw.line([wheels[0], seat, wheels[1]], fill=dark, width=line)
        draw.ellipse([x1 + 0.35 * w, y1, x1 + 0.6 * w, y1 + 0.22 * h], fill=body)
        draw.polygon([(x1 + 0.3 * w, y1 + 0.2 * h), (x1 + 0.65 * w, y1 + 0.2 * h), seat], fill=body)


def _overlaps(box, boxes, limit: float = 0.15) -> bool:
    for other in boxes:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw > 0 and ih > 0:
            inter = iw * ih
            smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
            if inter > limit * smaller:
                return True
    return False


def _place(kind: str, rng: np.random.Generator, width: int, height: int, taken: list) -> _Object | None:
    aspect = LOOKS[kind][2] if kind in LOOKS else rng.uniform(0.7, 1.5)
    top_h = min(MAX_HEIGHT, int(0.9 * height), int(0.9 * width / aspect))
    low_h = max(MIN_SIDE, math.ceil(MIN_SIDE / aspect))
    if top_h < low_h:
        raise DataError(f"make_kitti_dataset: a {width}x{height} image cannot hold a {kind} of at least "
                        f"{MIN_SIDE} px a side")
    for _ in range(20):
        h = float(rng.uniform(low_h, top_h))
        w = h * aspect
        left, top = rng.uniform(0, width - w), rng.uniform(0, height - h)
        box = (round(left, 2), round(top, 2), round(left + w, 2), round(top + h, 2))
        if not _overlaps(box, taken):
            return _Object(kind, box)
    return None


def _label_line(obj: _Object, rng: np.random.Generator, width: int, height: int) -> tuple[str, float]:
    """The object's KITTI label line and its depth z."""
    x1, y1, x2, y2 = obj.box
    focal = float(height)
    if obj.kind == "dontcare":
        return f"DontCare -1 -1 -10 {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} -1 -1 -1 -1000 -1000 -1000 -10", -1000.0
    name, _, _, dims = LOOKS[obj.kind]
    dh, dw, dl = (d * rng.uniform(0.9, 1.1) for d in dims)
    z = focal * dh / (y2 - y1)
    x = ((x1 + x2) / 2 - width / 2) * z / focal
    y = (y2 - height / 2) * z / focal
    alpha, rotation = rng.uniform(-math.pi, math.pi, size=2)
    return (f"{name} 0.00 0 {alpha:.2f} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f} {dh:.2f} {dw:.2f} {dl:.2f} "
            f"{x:.2f} {y:.2f} {z:.2f} {rotation:.2f}"), z


def _write_stage(folder: str, count: int, classes: tuple[str, ...], width: int, height: int,
                 rng: np.random.Generator) -> tuple[str, str]:
    images, labels = os.path.join(folder, "images"), os.path.join(folder, "labels")
    os.makedirs(images, exist_ok=True)
    os.makedirs(labels, exist_ok=True)
    for n in range(count):
        # the first images hold one object of each class, so every class is in every stage
        kinds = [classes[n]] if n < len(classes) else [classes[int(k)] for k in
                                                       rng.integers(0, len(classes), size=int(rng.integers(1, 5)))]
        if rng.uniform() < 1 / 3:
            kinds.append("dontcare")
        objects: list[_Object] = []
        for kind in kinds:
            obj = _place(kind, rng, width, height, [o.box for o in objects])
            if obj is not None:
                objects.append(obj)
        lines, depth = zip(*[_label_line(o, rng, width, height) for o in objects]) if objects else ((), ())
        im = Image.fromarray(np.clip(textured_background(rng, height, width), 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(im)
        for i in sorted(range(len(objects)), key=lambda i: -depth[i]):   # far first: near objects cover them
            _draw(draw, objects[i], rng)
        rgb = np.asarray(im, dtype=np.float32) + 6 * rng.standard_normal((height, width, 3), dtype=np.float32)
        # noisy pixels compress poorly: the fastest zlib level makes the set several times faster to write
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(os.path.join(images, f"{n:06d}.png"),
                                                                     compress_level=1)
        with open(os.path.join(labels, f"{n:06d}.txt"), "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
    return images, labels


def make_kitti_dataset(root: str, *, train_count: int = 300, val_count: int = 60, width: int = 256,
                       height: int = 128, seed: int = 0,
                       classes: tuple[str, ...] = ("car", "pedestrian", "cyclist")) -> dict:
    """Write ``root/train/{images,labels}`` (and ``root/val/...`` when ``val_count`` > 0); returns
    {"train_images", "train_labels", "val_images", "val_labels"} (the val ones None without a val set)."""
    unknown = [c for c in classes if c not in LOOKS]
    if unknown or not classes:
        raise DataError(f"make_kitti_dataset: classes {list(classes)}: each one of {', '.join(LOOKS)}")
    if train_count < 1 or val_count < 0:
        raise DataError(f"make_kitti_dataset: train_count {train_count} must be >= 1, val_count {val_count} >= 0")
    rng = np.random.default_rng(seed)
    out = {"val_images": None, "val_labels": None}
    out["train_images"], out["train_labels"] = _write_stage(os.path.join(root, "train"), train_count, tuple(classes),
                                                            width, height, rng)
    if val_count:
        out["val_images"], out["val_labels"] = _write_stage(os.path.join(root, "val"), val_count, tuple(classes),
                                                            width, height, rng)
    return out
