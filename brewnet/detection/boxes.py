"""Corner boxes ``[x1, y1, x2, y2]`` and DetectNet's fixed-size box lists.

DetectNet's Python layers hand boxes from layer to layer as arrays of ``MAX_BOXES`` rows of
``[x1, y1, x2, y2, value]`` per image, zero-padded (DIGITS' ``MAX_BOXES = 50``; digits-other-jobs.md
§3.5): an all-zero row is padding, not a box.  Overlap is measured as DIGITS' ``mean_ap.py`` does
(§3.6): areas are ``(x2 - x1) * (y2 - y1)`` with no ``+ 1``, so boxes are continuous rectangles.
"""
from __future__ import annotations

import numpy as np

#: rows in one image's box list (DIGITS' clustering.py MAX_BOXES)
MAX_BOXES = 50


def _corners(boxes, what: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] < 4:
        raise ValueError(f"{what}: expected boxes of shape (n, 4) or wider, got {np.shape(boxes)}")
    return arr[:, :4]


def area(boxes) -> np.ndarray:
    """Areas ``(x2 - x1)(y2 - y1)`` of (n, >=4) corner boxes, 0 for an inverted box.  (n,)"""
    b = _corners(boxes, "area")
    return np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)


def iou_matrix(a, b) -> np.ndarray:
    """Intersection over union of every box of ``a`` (n, >=4) with every box of ``b`` (m, >=4).

    Returns (n, m) float64; a pair whose union is empty (two zero-area boxes) has IoU 0.
    """
    a, b = _corners(a, "iou_matrix (a)"), _corners(b, "iou_matrix (b)")
    # overlap extents, (n, m)
    w = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    h = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(w, 0, None) * np.clip(h, 0, None)
    union = area(a)[:, None] + area(b)[None, :] - inter
    out = np.zeros_like(inter)
    np.divide(inter, union, out=out, where=union > 0)
    return out


def iou(a, b) -> float:
    """Intersection over union of two corner boxes (4,)."""
    return float(iou_matrix(np.asarray(a)[None, :4], np.asarray(b)[None, :4])[0, 0])


def to_bbox_list(boxes) -> np.ndarray:
    """(m, 5) rows -> one image's (MAX_BOXES, 5) float32 list, zero-padded.

    More than MAX_BOXES rows is an error, as in DIGITS (which never truncates)."""
    rows = np.asarray(boxes, dtype=np.float32)
    if rows.size == 0:
        rows = rows.reshape(0, 5)
    if rows.ndim != 2 or rows.shape[1] != 5:
        raise ValueError(f"a box list is made of (m, 5) rows [x1, y1, x2, y2, value], got shape {rows.shape}")
    if len(rows) > MAX_BOXES:
        raise ValueError(f"{len(rows)} boxes in one image, more than DetectNet's box list holds "
                         f"(MAX_BOXES = {MAX_BOXES})")
    out = np.zeros((MAX_BOXES, 5), dtype=np.float32)
    out[:len(rows)] = rows
    return out


def from_bbox_list(rows) -> np.ndarray:
    """One image's box list (R, W) -> its (m, W) rows that are not all zero (the padding), in order."""
    arr = np.asarray(rows)
    if arr.ndim != 2:
        raise ValueError(f"a box list is (rows, columns), got shape {arr.shape}")
    return arr[np.any(arr != 0, axis=1)]
