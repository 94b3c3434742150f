"""KITTI object labels (doc §2.4): label files, the class table and the label record DetectNet reads.

A label file holds one object per line, 15 fields separated by single spaces (a 16th, the score
of a results file, is ignored): type, truncated, occluded, alpha, the box (left, top, right,
bottom, pixels), the dimensions (height, width, length, metres), the location (x, y, z, metres)
and rotation_y.  DIGITS splits the line with Python's csv module on one space, so a run of spaces
makes an empty field: here that is an error naming the file, the line and the field, not a
silently wrong object.

The label record of one image is a float32 array (1, max_boxes + 1, 16) (the layout of DIGITS'
object-detection extension, which NVCaffe's DetectNetTransformation reads):

- row 0: ``[n, 16, 0, ...]``, n the image's object count (DontCare objects included);
- rows 1..n: ``[x, y, w, h, alpha, class, 0, rotation_y, truncated, occluded, length, width,
  height, loc_x, loc_y, loc_z]``, the box in pixels of the stored (padded, resized) image;
- the rest zeros.  Rows 1..n are sorted by loc_z descending (far objects first, so that near
  objects, written later, win the grid cells they share); ties keep the reversed file order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ...errors import DataError
from ..lmdb_io import parse_datum

LABEL_WIDTH = 16
#: the fields of a KITTI label line, in order (a 16th, score, is ignored)
KITTI_FIELDS = ("type", "truncated", "occluded", "alpha", "left", "top", "right", "bottom",
                "height", "width", "length", "x", "y", "z", "rotation_y")
DONTCARE = 0

#: DIGITS' default class table (doc §2.4): name -> class id; any other name is DontCare (0).
#: ``pedestrian`` is KITTI's name for class 8 and comes first, so it is the name shown for id 8.
DEFAULT_CLASSES = {
    "dontcare": 0, "car": 1, "van": 2, "truck": 3, "bus": 4, "pickup": 5, "vehicle-with-trailer": 6,
    "special-vehicle": 7, "pedestrian": 8, "person": 8, "person-fa": 9, "person?": 10, "people": 11,
    "cyclist": 12, "tram": 13, "person_sitting": 14, "misc": 15,
}


@dataclass(frozen=True)
class KittiObject:
    """One line of a KITTI label file; ``line`` is its 1-based line number (for messages)."""
    type: str
    truncated: float
    occluded: float
    alpha: float
    left: float
    top: float
    right: float
    bottom: float
    height: float
    width: float
    length: float
    x: float
    y: float
    z: float
    rotation_y: float
    line: int = 0

    @property
    def box_width(self) -> float:
        return self.right - self.left

    @property
    def box_height(self) -> float:
        return self.bottom - self.top


def class_ids(custom_classes: str = "") -> dict[str, int]:
    """The class table: DIGITS' default, or ``custom_classes`` ("dontcare,car,...": stripped,
    lower-cased names with ids 0, 1, 2... in order).  Names missing from the table map to 0."""
    if not custom_classes or not custom_classes.strip():
        return dict(DEFAULT_CLASSES)
    names = [n.strip().lower() for n in custom_classes.split(",")]
    if "" in names:
        raise DataError(f"custom_classes {custom_classes!r}: an empty class name (the names are comma-separated, "
                        "e.g. 'dontcare,car,pedestrian')")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataError(f"custom_classes {custom_classes!r}: {', '.join(repeated)} named twice")
    return {n: i for i, n in enumerate(names)}


def class_names(table: dict[str, int]) -> list[str]:
    """Class id -> name (the first name of each id); ids without a name are ``class K``."""
    names: dict[int, str] = {}
    for name, k in table.items():
        names.setdefault(k, name)
    return [names.get(k, f"class {k}") for k in range(max(names) + 1)]


def _number(text: str, path: str, line: int, index: int) -> float:
    try:
        value = float(text)
    except ValueError:
        hint = " (fields are separated by single spaces)" if text == "" else ""
        raise DataError(f"Invalid label format in \"{path}\", line {line}: field {index + 1} "
                        f"({KITTI_FIELDS[index]}) {text!r} is not a number{hint}") from None
    if not math.isfinite(value):
        raise DataError(f"Invalid label format in \"{path}\", line {line}: field {index + 1} "
                        f"({KITTI_FIELDS[index]}) is {text}")
    return value


def parse_kitti_line(text: str, path: str = "?", line: int = 0) -> KittiObject | None:
    """One label line as an object; None for an empty line."""
    text = text.rstrip("\r\n")
    if not text.strip():
        return None
    fields = text.split(" ")
    if len(fields) < len(KITTI_FIELDS):
        raise DataError(f"Invalid label format in \"{path}\", line {line}: {len(fields)} fields, a KITTI label "
                        f"line has {len(KITTI_FIELDS)} ({' '.join(KITTI_FIELDS)})")
    values = [_number(fields[i], path, line, i) for i in range(1, len(KITTI_FIELDS))]
    return KittiObject(fields[0], *values, line=line)


def read_kitti_labels(path: str) -> list[KittiObject]:
    """The objects of one KITTI label file, in file order (DataError names the file and line)."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise DataError(f"label file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read label file {path}: {e}") from None
    objects = (parse_kitti_line(text, path, n) for n, text in enumerate(lines, 1))
    return [o for o in objects if o is not None]


def object_class(obj: KittiObject, table: dict[str, int], min_box_size: float = 0) -> int:
    """The class id of an object: its lower-cased type in ``table`` (else DontCare); DontCare too
    when ``min_box_size`` > 0 and the box's width or height (label-file pixels) is below it."""
    if min_box_size > 0 and (obj.box_width < min_box_size or obj.box_height < min_box_size):
        return DONTCARE
    return table.get(obj.type.lower(), DONTCARE)


def label_array(objects: list[KittiObject], classes: list[int], max_boxes: int,
                scale: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """The label record (1, max_boxes + 1, 16) float32 of one image's objects (file order) with
    their class ids; ``scale`` = (x, y) ratios of the stored image to the label file's pixels."""
    if len(objects) != len(classes):
        raise ValueError(f"{len(objects)} objects but {len(classes)} class ids")
    if len(objects) > max_boxes:
        raise DataError(f"{len(objects)} objects, more than the stage's max_boxes {max_boxes}")
    sx, sy = scale
    rows = np.zeros((max_boxes + 1, LABEL_WIDTH), dtype=np.float64)
    rows[0, 0], rows[0, 1] = len(objects), LABEL_WIDTH
    order = list(reversed(range(len(objects))))
    order.sort(key=lambda i: -objects[i].z)   # stable: equal depths keep the reversed file order
    for r, i in enumerate(order, 1):
        o = objects[i]
        x1, y1, x2, y2 = o.left * sx, o.top * sy, o.right * sx, o.bottom * sy
        rows[r] = (x1, y1, x2 - x1, y2 - y1, o.alpha, classes[i], 0, o.rotation_y, o.truncated, o.occluded,
                   o.length, o.width, o.height, o.x, o.y, o.z)
    return rows.astype(np.float32)[None]


def read_detection_labels(label_datum_bytes: bytes) -> np.ndarray:
    """The (n, 16) label rows of one serialized label Datum (row 0's n, then rows 1..n)."""
    datum = parse_datum(label_datum_bytes, "label")
    if datum.width != LABEL_WIDTH or datum.channels != 1 or datum.height < 1:
        raise DataError(f"a detection label Datum is 1×R×{LABEL_WIDTH}, got "
                        f"{datum.channels}×{datum.height}×{datum.width}")
    values = np.asarray(datum.float_data, dtype=np.float32)
    if values.size != datum.height * LABEL_WIDTH:
        raise DataError(f"a detection label Datum of 1×{datum.height}×{LABEL_WIDTH} holds {values.size} floats "
                        "(float_data)")
    rows = values.reshape(datum.height, LABEL_WIDTH)
    n = int(rows[0, 0])
    if n < 0 or n > datum.height - 1 or rows[0, 0] != n:
        raise DataError(f"a detection label Datum's row 0 says {rows[0, 0]:g} boxes, it has room for "
                        f"{datum.height - 1}")
    return rows[1:1 + n].copy()
