"""DetectNet's ground truth: the coverage map and bounding-box targets NVCaffe's
``DetectNetTransformation`` computes from an image's label rows.

The facts (NVCaffe's ``detectnet_groundtruth_param`` and its ``CoverageGenerator``) are those of
DIGITS' documentation of the layer; the arithmetic here is ours.  A label, as DIGITS' KITTI
datasets store it, is a float array (1, R, 16): row 0 is ``[n_boxes, 16, 0, ...]``, rows 1..n are
``[x, y, w, h, alpha, class, 0, rot_y, truncated, occluded, l, w, h, lx, ly, lz]`` in pixels, the
rest zeros.

The target of one image is (8 + K, Gy, Gx), Gx = image_size_x // stride, Gy = image_size_y //
stride, zeros except in the grid cells a box covers, where (cell origin (cx, cy) = (gx·stride,
gy·stride), the box's corners x1 = x, y1 = y, x2 = x + w, y2 = y + h)::

    channel 0      1                                    foreground
    channels 1-4   x1 - cx, y1 - cy, x2 - cx, y2 - cy   where the box is, from the cell's origin
    channels 5-6   1 / w, 1 / h                         the box's size, inverted
    channel 7      max(m, stride² / coverage area)      m = 0 with obj_norm, else 1
    channels 8..   1 in channel class_map[class]        0 in the other class channels

Per box, in row order: (1) with ``crop_bboxes`` the box is cut to the image (0, 0, image_size_x,
image_size_y); boxes of classes outside ``class_map`` and boxes with an area below float32's
epsilon are dropped.  (2) The coverage rectangle is centred on the box, each side the box's side
times ``scale_cvg``, then bounded: ``max`` keeps each side <= ``max_cvg_len``; ``min`` makes each
side >= ``min_cvg_len`` but never longer than the box's side.  (3) A cell is covered when the
rectangle overlaps it by more than epsilon·stride² (coverage is binary).  (4) A covered cell takes
all 8 + K values of the box, so later rows overwrite earlier ones: DIGITS sorts the rows far to
near, and near objects own shared cells.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError

#: floats per label row
LABEL_WIDTH = 16
#: the label row's columns that the targets read
X, Y, W, H, CLASS, TRUNCATED = 0, 1, 2, 3, 5, 8
#: channels before the class channels: foreground, 4 bbox, 2 size, obj_norm
FIXED_CHANNELS = 8
#: FLT_EPSILON, the threshold of NVCaffe's area tests
EPSILON = float(np.finfo(np.float32).eps)
GRIDBOX_TYPES = ("max", "min")  # the proto's GridboxType enum: GRIDBOX_MAX = 0, GRIDBOX_MIN = 1


@dataclass
class GroundTruthParams:
    """``detectnet_groundtruth_param`` with NVCaffe's defaults (``coverage_type`` has one value,
    RECTANGULAR, and is not kept).  ``class_map``: dataset class id -> coverage channel."""
    stride: int = 4
    scale_cvg: float = 0.5
    gridbox_type: str = "max"
    max_cvg_len: int = 50
    min_cvg_len: int = 50
    image_size_x: int = 1248
    image_size_y: int = 384
    obj_norm: bool = False
    crop_bboxes: bool = True
    class_map: dict[int, int] = field(default_factory=lambda: {1: 0})

    def __post_init__(self):
        if self.gridbox_type not in GRIDBOX_TYPES:
            raise DataError(f"detectnet_groundtruth_param: gridbox_type must be one of "
                            f"{', '.join(GRIDBOX_TYPES)}, got {self.gridbox_type!r}")
        if self.stride < 1:
            raise DataError(f"detectnet_groundtruth_param: stride must be >= 1, got {self.stride}")
        if self.image_size_x < self.stride or self.image_size_y < self.stride:
            raise DataError(f"detectnet_groundtruth_param: image_size {self.image_size_x}x{self.image_size_y} "
                            f"is smaller than one grid cell (stride {self.stride})")
        if not self.class_map:
            raise DataError("detectnet_groundtruth_param: the class mapping is empty")
        bad = {s: d for s, d in self.class_map.items() if s < 0 or d < 0}
        if bad:
            raise DataError(f"detectnet_groundtruth_param: object_class src and dst must be >= 0, got {bad}")

    @property
    def num_classes(self) -> int:
        """K, the number of coverage channels: the largest ``dst`` + 1."""
        return max(self.class_map.values()) + 1

    @property
    def grid(self) -> tuple[int, int]:
        """(Gy, Gx): the target's grid."""
        return self.image_size_y // self.stride, self.image_size_x // self.stride

    @property
    def channels(self) -> int:
        return FIXED_CHANNELS + self.num_classes

    @classmethod
    def from_proto(cls, p) -> "GroundTruthParams":
        """From a ``DetectNetGroundTruthParameter`` message; no ``object_class`` means {1: 0}.
        A class mapped twice keeps the last ``dst`` (a later entry replaces an earlier one)."""
        class_map = {int(m.src): int(m.dst) for m in p.object_class} or {1: 0}
        return cls(stride=int(p.stride), scale_cvg=float(p.scale_cvg),
                   gridbox_type=GRIDBOX_TYPES[int(p.gridbox_type)], max_cvg_len=int(p.max_cvg_len),
                   min_cvg_len=int(p.min_cvg_len), image_size_x=int(p.image_size_x),
                   image_size_y=int(p.image_size_y), obj_norm=bool(p.obj_norm),
                   crop_bboxes=bool(p.crop_bboxes), class_map=class_map)


def label_rows(label: np.ndarray) -> np.ndarray:
    """The box rows 1..n of one image's label (1, R, 16) or (R, 16), n read from row 0."""
    arr = np.asarray(label, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or arr.shape[1] != LABEL_WIDTH or arr.shape[0] < 1:
        raise DataError(f"a DetectNet label must be (1, R, {LABEL_WIDTH}) or (R, {LABEL_WIDTH}) with R >= 1, "
                        f"got shape {tuple(np.shape(label))}")
    n = arr[0, 0]
    if not (math.isfinite(n) and n == int(n) and 0 <= n <= arr.shape[0] - 1):
        raise DataError(f"a DetectNet label's row 0 says {n:g} boxes, but the label holds "
                        f"{arr.shape[0] - 1} box rows (row 0 is [n_boxes, 16, 0, ...])")
    rows = arr[1:1 + int(n)].copy()
    bad = ~np.isfinite(rows[:, [X, Y, W, H, CLASS]]).all(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"a DetectNet label's box row {i + 1} has a value that is not a finite number: "
                        f"x, y, w, h, class = {', '.join(f'{v:g}' for v in rows[i, [X, Y, W, H, CLASS]])}")
    return rows


def prune_box(row: np.ndarray, params: GroundTruthParams) -> np.ndarray | None:
    """Step 1 for one row: the row with its box cut to the image (``crop_bboxes``; ``truncated``
    becomes 1 - (1 - truncated)·(area inside / area)), or None when the class is not mapped or
    the box has no area."""
    cls = row[CLASS]
    if not math.isfinite(cls) or cls != int(cls) or int(cls) not in params.class_map:
        return None
    row = np.array(row, dtype=np.float64)
    if params.crop_bboxes:
        x1, y1 = max(row[X], 0.0), max(row[Y], 0.0)
        x2 = min(row[X] + row[W], float(params.image_size_x))
        y2 = min(row[Y] + row[H], float(params.image_size_y))
        w, h = max(x2 - x1, 0.0), max(y2 - y1, 0.0)
        # the share kept: what truncation left, times the share of the area inside the image
        kept = (1.0 - max(row[TRUNCATED], 0.0)) * (w * h) / max(row[W] * row[H], EPSILON)
        row[TRUNCATED] = min(max(1.0 - kept, 0.0), 1.0)
        row[X], row[Y], row[W], row[H] = x1, y1, w, h
    if row[W] * row[H] < EPSILON or row[W] <= 0 or row[H] <= 0:
        return None
    return row


def coverage_rect(row: np.ndarray, params: GroundTruthParams) -> tuple[float, float, float, float]:
    """Step 2: the coverage rectangle (left, top, right, bottom) of a pruned row."""
    sides = []
    for side in (row[W], row[H]):
        s = side * params.scale_cvg
        if params.gridbox_type == "max":
            s = min(s, float(params.max_cvg_len))
        else:
            s = min(max(s, float(params.min_cvg_len)), side)
        sides.append(s)
    cx, cy = row[X] + row[W] / 2.0, row[Y] + row[H] / 2.0
    return cx - sides[0] / 2.0, cy - sides[1] / 2.0, cx + sides[0] / 2.0, cy + sides[1] / 2.0


def covered_cells(rect: tuple[float, float, float, float], params: GroundTruthParams
                  ) -> tuple[int, int, np.ndarray]:
    """Steps 3-4: the cells the rectangle overlaps by more than epsilon·stride², as (y0, x0,
    mask): ``mask`` (ny, nx) bool over the candidate cells y0.., x0.. (floor(left/stride) ..
    ceil(right/stride), the same in y, clipped to the grid; empty when none is in the grid)."""
    s = params.stride
    gy, gx = params.grid
    left, top, right, bottom = rect
    x0, x1 = max(math.floor(left / s), 0), min(math.ceil(right / s), gx)
    y0, y1 = max(math.floor(top / s), 0), min(math.ceil(bottom / s), gy)
    if x0 >= x1 or y0 >= y1:
        return 0, 0, np.zeros((0, 0), dtype=bool)
    cells_x = np.arange(x0, x1, dtype=np.float64) * s
    cells_y = np.arange(y0, y1, dtype=np.float64) * s
    over_x = np.clip(np.minimum(cells_x + s, right) - np.maximum(cells_x, left), 0.0, None)  # (nx,)
    over_y = np.clip(np.minimum(cells_y + s, bottom) - np.maximum(cells_y, top), 0.0, None)  # (ny,)
    return y0, x0, np.outer(over_y, over_x) / float(s * s) > EPSILON


def coverage_targets(rows: np.ndarray, params: GroundTruthParams) -> np.ndarray:
    """The (8 + K, Gy, Gx) float32 target of one image from its label rows (n, 16), already in
    the output image's frame (see the module docstring for the channels and the rules)."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, LABEL_WIDTH)
    s = params.stride
    gy, gx = params.grid
    out = np.zeros((params.channels, gy, gx), dtype=np.float64)
    floor = 0.0 if params.obj_norm else 1.0
    for raw in rows:
        row = prune_box(raw, params)
        if row is None:
            continue
        rect = coverage_rect(row, params)
        y0, x0, mask = covered_cells(rect, params)
        if not mask.any():
            continue
        ny, nx = mask.shape
        origin_x = np.arange(x0, x0 + nx, dtype=np.float64)[None, :] * s  # (1, nx)
        origin_y = np.arange(y0, y0 + ny, dtype=np.float64)[:, None] * s  # (ny, 1)
        x1, y1, x2, y2 = row[X], row[Y], row[X] + row[W], row[Y] + row[H]
        rect_area = (rect[2] - rect[0]) * (rect[3] - rect[1])
        values = np.zeros((params.channels, ny, nx), dtype=np.float64)  # the box's value in every cell
        values[0] = 1.0
        values[1] = x1 - origin_x
        values[2] = y1 - origin_y
        values[3] = x2 - origin_x
        values[4] = y2 - origin_y
        values[5] = 1.0 / row[W]
        values[6] = 1.0 / row[H]
        values[7] = max(floor, s * s / rect_area)
        values[FIXED_CHANNELS + params.class_map[int(row[CLASS])]] = 1.0
        window = out[:, y0:y0 + ny, x0:x0 + nx]
        window[:, mask] = values[:, mask]
    return out.astype(np.float32)
