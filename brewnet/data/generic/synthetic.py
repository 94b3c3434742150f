"""Synthetic data for the generic kinds: DIGITS' gradient images and a shapes segmentation set.

- :func:`gradient_image`: the image of gradient (gx, gy), by the formula of DIGITS' image-gradients
  extension (doc §2.3): ``a = gx·255/W``, ``b = gy·255/H``, ``pixel(x, y) = a·(x − W/2) + b·(y − H/2)
  + 127.5``, truncated to uint8 (the range is 0..255 for gx, gy in [-0.5, 0.5]).
- :func:`make_shapes_dataset`: RGB images of squares, discs and triangles on textured, noisy
  backgrounds, with label images in mode ``P`` (class index per pixel, palette: class i's colour).
  Each class's shapes are painted from its own band of hues (and the backgrounds are low in
  saturation), so that a small FCN on a CPU can learn the set in minutes; the shapes differ too.
"""
from __future__ import annotations

import colorsys
import os

import numpy as np
from PIL import Image, ImageDraw

SHAPE_CLASSES = ("background", "square", "disc", "triangle")
#: class i's colour in the label images' palette (PASCAL VOC's first colours; 255 is "don't care")
PALETTE_COLOURS = ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0))
HUE_BANDS = {1: (0.95, 1.08), 2: (0.28, 0.42), 3: (0.58, 0.72)}   # red, green, blue (fractions of a turn)


def gradient_image(gx: float, gy: float, width: int, height: int) -> np.ndarray:
    """The H×W uint8 image of the gradient (gx, gy)."""
    a = float(gx) * 255.0 / width
    b = float(gy) * 255.0 / height
    x = np.arange(width, dtype=np.float64)[None, :]
    y = np.arange(height, dtype=np.float64)[:, None]
    values = a * (x - width / 2.0) + b * (y - height / 2.0) + 127.5
    return np.clip(values, 0, 255).astype(np.uint8)


def shapes_palette() -> list[int]:
    """The label images' palette: 256 RGB triples (768 ints), class i's colour at entry i."""
    palette = [0] * 768
    for i, colour in enumerate(PALETTE_COLOURS):
        palette[3 * i:3 * i + 3] = colour
    palette[765:768] = (224, 224, 192)
    return palette


def textured_background(rng: np.random.Generator, height: int, width: int | None = None) -> np.ndarray:
    """A textured grey-ish H×W×3 float background: a few random waves, a tint and pixel noise
    (values around 70..180, not clipped).  ``width`` defaults to ``height`` (a square)."""
    width = height if width is None else width
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    y, x = y / height, x / width
    base = rng.uniform(70, 180)
    texture = np.zeros((height, width))
    for _ in range(3):
        fx, fy = rng.uniform(1, 6, size=2)
        texture += rng.uniform(10, 30) * np.sin(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi))
    tint = rng.uniform(-12, 12, size=3)
    rgb = base + texture[..., None] + tint + rng.normal(0, 10, size=(height, width, 3))
    return rgb


def _shape_mask(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A bool mask of one shape of class ``kind`` at a random place and size."""
    r = rng.uniform(0.1, 0.2) * size
    cx, cy = rng.uniform(r, size - r, size=2)
    im = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(im)
    if kind == 1:
        draw.rectangle([cx - r, cy - r, cx + r, cy + r], fill=1)
    elif kind == 2:
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    else:
        turn = rng.uniform(0, 2 * np.pi)
        points = [(cx + 1.2 * r * np.cos(turn + k * 2 * np.pi / 3), cy + 1.2 * r * np.sin(turn + k * 2 * np.pi / 3))
                  for k in range(3)]
        draw.polygon(points, fill=1)
    return np.asarray(im, dtype=bool)


def _shape_colour(kind: int, rng: np.random.Generator) -> np.ndarray:
    low, high = HUE_BANDS[kind]
    hue = rng.uniform(low, high) % 1.0
    return 255 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.6, 1.0)))


def make_shapes_dataset(root: str, count: int = 120, size: int = 64, seed: int = 0) -> tuple[str, str, str]:
    """Write ``count`` image/label pairs of ``size``×``size`` under ``root``; returns (images folder,
    labels folder, class labels file).  Each image has 1 to 4 shapes; every class appears in the set
    (the first three images hold a square, a disc and a triangle each).  Deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    images_dir, labels_dir = os.path.join(root, "images"), os.path.join(root, "labels")
    os.makedirs(images_dir, exist_ok=True)
    os.makedirs(labels_dir, exist_ok=True)
    palette = shapes_palette()
    for n in range(count):
        rgb = textured_background(rng, size)
        label = np.zeros((size, size), dtype=np.uint8)
        kinds = [1 + n % 3] if n < 3 else list(rng.integers(1, 4, size=int(rng.integers(1, 5))))
        for kind in kinds:
            mask = _shape_mask(int(kind), rng, size)
            rgb[mask] = _shape_colour(int(kind), rng) + rng.normal(0, 8, size=(int(mask.sum()), 3))
            label[mask] = kind
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(os.path.join(images_dir, f"{n:05d}.png"))
        label_im = Image.fromarray(label)
        label_im.putpalette(palette)   # an L image with a palette becomes mode P
        label_im.save(os.path.join(labels_dir, f"{n:05d}.png"))
    classes_file = os.path.join(root, "classes.txt")
    with open(classes_file, "w", encoding="utf-8") as f:
        f.write("".join(f"{c}\n" for c in SHAPE_CLASSES))
    return images_dir, labels_dir, classes_file
