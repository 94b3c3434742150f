"""DetectNet's box clustering: from a net's coverage map and box regressions to detections.

A DetectNet predicts, for every grid cell, a coverage value per class (is an object here?) and
four pixel offsets from the cell's top-left corner to the corners of the object's box.  DIGITS'
``ClusterDetections`` layer (digits-other-jobs.md §3.5) turns that into a list of boxes: every cell
whose coverage reaches ``gridbox_cvg_threshold`` proposes its box, the proposals vote through
OpenCV's ``groupRectangles`` rule (``gridbox_rect_thresh``, ``gridbox_rect_eps``), clusters lower
than ``min_height`` are dropped, and each remaining cluster is one detection whose confidence is
ln(number of votes).  ``ClusterGroundtruth`` reads the ground-truth targets the same way, without
voting: every covered cell's box, duplicates removed.

We implement DIGITS **0.17**'s behaviour: proposals go to the vote as (x, y, w, h) and the height
test is on the cluster's h.  (0.15 passed the corner quadruple where (x, y, w, h) was expected,
so its similarity was computed on the wrong numbers.)
"""
from __future__ import annotations

import dataclasses

import numpy as np


def _similar(rects: np.ndarray, eps: float) -> np.ndarray:
    """OpenCV's rectangle-equivalence predicate for every pair of (n, 4) x, y, w, h rects: (n, n) bool.

    Two rects are alike when each of their four edges (left, top, right, bottom) differ by at most
    delta = eps * (min(w1, w2) + min(h1, h2)) / 2."""
    x, y, w, h = rects.T
    delta = eps * (np.minimum(w[:, None], w[None, :]) + np.minimum(h[:, None], h[None, :])) / 2
    edges = (x, y, x + w, y + h)
    alike = np.ones((len(rects), len(rects)), dtype=bool)
    for e in edges:
        alike &= np.abs(e[:, None] - e[None, :]) <= delta
    return alike


def _components(alike: np.ndarray) -> np.ndarray:
    """Labels 0, 1, ... of the connected components of the graph ``alike`` (n, n), numbered in order
    of each component's first member (so the result does not depend on the traversal)."""
    n = len(alike)
    labels = np.full(n, -1, dtype=np.int64)
    count = 0
    for start in range(n):
        if labels[start] >= 0:
            continue
        labels[start] = count
        frontier = np.array([start])
        while frontier.size:  # breadth-first over the whole frontier at once
            reached = np.flatnonzero(alike[frontier].any(axis=0) & (labels < 0))
            labels[reached] = count
            frontier = reached
        count += 1
    return labels


def group_rectangles(rects, threshold: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Vote on rectangles by OpenCV's ``groupRectangles`` rule (written by us from its documented
    behaviour; digits-other-jobs.md §3.5).

    ``rects`` is (n, 4) x, y, w, h.  Returns the grouped (m, 4) x, y, w, h float64 rects and their
    (m,) int weights (member counts), in order of each cluster's first member:

    1. ``threshold <= 0`` (or no rects): nothing is grouped, the rects come back as given, weight 1.
    2. Similarity: two rects are alike when |Δleft|, |Δtop|, |Δright|, |Δbottom| are all
       <= eps * (min(w1, w2) + min(h1, h2)) / 2.  Clusters are the classes of the equivalence this
       generates (alike rects, and rects linked by a chain of alike rects, share a cluster).
    3. Clusters with <= ``threshold`` members are dropped; each other cluster becomes the mean of its
       members, with weight = member count.
    4. OpenCV's second pass (its documentation: "filters out small rectangles inside larger ones that
       have more hits"): a cluster i is dropped when it lies inside another kept cluster j widened
       by eps * w_j on the left and right and eps * h_j at the top and bottom, and either j has more
       than max(3, n_i) members or i has fewer than 3.

    One deliberate difference: OpenCV's rects are integers (the averages and the widening margins
    are rounded to whole pixels); here everything stays floating point, so boxes keep their
    sub-pixel means.
    """
    rects = np.asarray(rects, dtype=np.float64).reshape(-1, 4)
    if threshold <= 0 or len(rects) == 0:
        return rects.copy(), np.ones(len(rects), dtype=np.int64)
    labels = _components(_similar(rects, eps))
    counts = np.bincount(labels)
    sums = np.zeros((len(counts), 4))
    np.add.at(sums, labels, rects)
    kept = np.flatnonzero(counts > threshold)
    means, weights = sums[kept] / counts[kept, None], counts[kept]
    x, y, w, h = means.T
    # the widened rect of every cluster j: (left, top, right, bottom), each (m,)
    left, top = x - eps * w, y - eps * h
    right, bottom = x + w + eps * w, y + h + eps * h
    inside = ((x[:, None] >= left[None, :]) & (y[:, None] >= top[None, :])
              & ((x + w)[:, None] <= right[None, :]) & ((y + h)[:, None] <= bottom[None, :]))
    stronger = (weights[None, :] > np.maximum(3, weights)[:, None]) | (weights < 3)[:, None]
    swallowed = inside & stronger
    np.fill_diagonal(swallowed, False)
    survivors = ~swallowed.any(axis=1)
    return means[survivors], weights[survivors]


def _grid(shape, image_size_x: int, image_size_y: int, stride: int, what: str) -> tuple[int, int, float, float]:
    """The read part of a (…, Gy, Gx) map: its first image_size/stride rows and columns, and the
    cell size in pixels (image_size / grid size, as DIGITS computes it)."""
    grid_x, grid_y = int(image_size_x / stride), int(image_size_y / stride)
    if grid_x < 1 or grid_y < 1:
        raise ValueError(f"{what}: image size {image_size_x}x{image_size_y} and stride {stride} give an empty grid")
    if shape[-2] < grid_y or shape[-1] < grid_x:
        raise ValueError(f"{what}: the maps are {shape[-2]}x{shape[-1]} (rows x columns) but image size "
                         f"{image_size_x}x{image_size_y} at stride {stride} needs {grid_y}x{grid_x}")
    return grid_x, grid_y, image_size_x / grid_x, image_size_y / grid_y


def _cell_boxes(mask: np.ndarray, bboxes: np.ndarray, cell_w: float, cell_h: float) -> np.ndarray:
    """The absolute corner boxes (n, 4) of the cells where ``mask`` (Gy, Gx) is true, in row-major
    cell order: each cell's origin plus its four predicted offsets ``bboxes`` (4, Gy, Gx)."""
    ys, xs = np.nonzero(mask)
    offsets = bboxes[:, ys, xs].T.astype(np.float64)  # (n, 4)
    origin = np.stack([xs * cell_w, ys * cell_h, xs * cell_w, ys * cell_h], axis=1)
    return offsets + origin


def _check_maps(coverage, bboxes, what: str) -> tuple[np.ndarray, np.ndarray]:
    coverage, bboxes = np.asarray(coverage), np.asarray(bboxes)
    if coverage.ndim != 3 or bboxes.ndim != 3 or bboxes.shape[0] != 4 or coverage.shape[1:] != bboxes.shape[1:]:
        raise ValueError(f"{what}: expected coverage (K, Gy, Gx) and bboxes (4, Gy, Gx) on one grid, "
                         f"got {coverage.shape} and {bboxes.shape}")
    return coverage, bboxes


def cluster_detections(coverage, bboxes, *, image_size_x: int, image_size_y: int, stride: int,
                       cvg_threshold: float, rect_threshold: int, rect_eps: float,
                       min_height: float) -> list[np.ndarray]:
    """One image's detections per class, DIGITS 0.17's ``ClusterDetections`` (§3.5).

    ``coverage`` (K, Gy, Gx), ``bboxes`` (4, Gy, Gx) pixel offsets from each cell's top-left.  Only
    the first ``image_size_y / stride`` rows and ``image_size_x / stride`` columns are read (the
    KITTI prototxt's 352 of 384 rows quirk).  Returns K arrays (m, 5) of ``[x1, y1, x2, y2,
    ln(weight)]``, weight being the cluster's vote count.
    """
    coverage, bboxes = _check_maps(coverage, bboxes, "cluster_detections")
    grid_x, grid_y, cell_w, cell_h = _grid(coverage.shape, image_size_x, image_size_y, stride, "cluster_detections")
    offsets = bboxes[:, :grid_y, :grid_x]
    out = []
    for cvg in coverage[:, :grid_y, :grid_x]:
        corners = _cell_boxes(cvg >= cvg_threshold, offsets, cell_w, cell_h)
        xywh = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
        rects, weights = group_rectangles(xywh, rect_threshold, rect_eps)
        tall = rects[:, 3] >= min_height
        rects, weights = rects[tall], weights[tall]
        out.append(np.concatenate([rects[:, :2], rects[:, :2] + rects[:, 2:], np.log(weights)[:, None]], axis=1))
    return out


def cluster_groundtruth(coverage_label, bbox_label, *, image_size_x: int, image_size_y: int,
                        stride: int) -> list[np.ndarray]:
    """One image's ground-truth boxes per class, DIGITS' ``ClusterGroundtruth`` (§3.5).

    Every cell with coverage > 0 gives its absolute box (cell origin + the target offsets of
    ``bbox_label`` (4, Gy, Gx)); exact duplicates are removed.  Returns K arrays (m, 5) of ``[x1,
    y1, x2, y2, 0]``, in order of each box's first cell (row-major; DIGITS kept Python's set order,
    which is arbitrary).  An object whose cells were all taken by nearer objects has no box.
    """
    coverage_label, bbox_label = _check_maps(coverage_label, bbox_label, "cluster_groundtruth")
    grid_x, grid_y, cell_w, cell_h = _grid(coverage_label.shape, image_size_x, image_size_y, stride,
                                           "cluster_groundtruth")
    offsets = bbox_label[:, :grid_y, :grid_x]
    out = []
    for cvg in coverage_label[:, :grid_y, :grid_x]:
        corners = _cell_boxes(cvg > 0, offsets, cell_w, cell_h)
        _, first = np.unique(corners, axis=0, return_index=True)
        unique = corners[np.sort(first)]
        out.append(np.concatenate([unique, np.zeros((len(unique), 1))], axis=1))
    return out


@dataclasses.dataclass(frozen=True)
class ClusterParams:
    """The numbers of DIGITS' cluster layers' ``param_str``.

    ClusterDetections: ``image_size_x, image_size_y, stride, gridbox_cvg_threshold,
    gridbox_rect_thresh, gridbox_rect_eps, min_height[, num_classes]``; ClusterGroundtruth: the first
    three and ``num_classes`` (the voting fields then keep their defaults, unused)."""

    image_size_x: int
    image_size_y: int
    stride: int
    gridbox_cvg_threshold: float = 0.0
    gridbox_rect_thresh: int = 0
    gridbox_rect_eps: float = 0.0
    min_height: int = 0
    num_classes: int = 1

    def detection_options(self) -> dict:
        """The keyword arguments of :func:`cluster_detections`."""
        return {"image_size_x": self.image_size_x, "image_size_y": self.image_size_y, "stride": self.stride,
                "cvg_threshold": self.gridbox_cvg_threshold, "rect_threshold": self.gridbox_rect_thresh,
                "rect_eps": self.gridbox_rect_eps, "min_height": self.min_height}

    def groundtruth_options(self) -> dict:
        """The keyword arguments of :func:`cluster_groundtruth`."""
        return {"image_size_x": self.image_size_x, "image_size_y": self.image_size_y, "stride": self.stride}


_DETECTION_FIELDS = (("image_size_x", int), ("image_size_y", int), ("stride", int),
                     ("gridbox_cvg_threshold", float), ("gridbox_rect_thresh", int),
                     ("gridbox_rect_eps", float), ("min_height", int), ("num_classes", int))
_GROUNDTRUTH_FIELDS = (("image_size_x", int), ("image_size_y", int), ("stride", int), ("num_classes", int))


def _parse_fields(s: str, fields, required: int, what: str) -> ClusterParams:
    parts = [p.strip() for p in str(s).split(",")]
    if parts == [""]:
        parts = []
    names = ", ".join(n for n, _ in fields[:required]) + "".join(f"[, {n}]" for n, _ in fields[required:])
    if not required <= len(parts) <= len(fields):
        raise ValueError(f"{what} param_str {s!r}: expected {names} ({required} to {len(fields)} comma-separated "
                         f"values), got {len(parts)}")
    values = {}
    for i, ((name, kind), text) in enumerate(zip(fields, parts)):
        try:
            values[name] = kind(text)
        except ValueError:
            noun = "an integer" if kind is int else "a number"
            raise ValueError(f"{what} param_str {s!r}: field {i + 1} ({name}) is {text!r}, not {noun}") from None
    for name in ("image_size_x", "image_size_y", "stride", "num_classes"):
        if name in values and values[name] < 1:
            raise ValueError(f"{what} param_str {s!r}: {name} must be at least 1, got {values[name]}")
    if values.get("gridbox_rect_eps", 0.0) < 0:
        raise ValueError(f"{what} param_str {s!r}: gridbox_rect_eps must be >= 0, got {values['gridbox_rect_eps']}")
    return ClusterParams(**values)


def parse_cluster_param_str(s: str) -> ClusterParams:
    """ClusterDetections' param_str, e.g. DIGITS' KITTI ``'1248, 352, 16, 0.6, 3, 0.02, 22, 1'``.

    A ValueError names the field, its position and the value that is wrong."""
    return _parse_fields(s, _DETECTION_FIELDS, 7, "ClusterDetections")


def parse_groundtruth_param_str(s: str) -> ClusterParams:
    """ClusterGroundtruth's param_str ``image_size_x, image_size_y, stride[, num_classes]``."""
    return _parse_fields(s, _GROUNDTRUTH_FIELDS, 3, "ClusterGroundtruth")
