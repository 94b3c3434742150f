"""Scoring detections against ground truth: DetectNet's own numbers and a true average precision.

DetectNet's validation numbers (DIGITS' ``mean_ap.py``, digits-other-jobs.md §3.6) are counts:
each ground-truth box claims the first unclaimed detection that overlaps it with IoU >= 0.7,
confidence playing no part; precision and recall are percentages of those counts, and DetectNet's
"mAP" is precision x recall / 100, a percentage that is *not* an average precision.

:class:`AveragePrecision` is the detection-benchmark number beside it: detections of all images
ranked by confidence, each matched to a ground-truth box at IoU >= 0.5, and the area under the
precision/recall curve with all-point interpolation (PASCAL VOC 2010 and later), in 0..1.
"""
from __future__ import annotations

import numpy as np

from .boxes import from_bbox_list, iou_matrix

#: tags of a scored row (DIGITS' ScoreDetections): a matched detection, an unmatched detection,
#: an unmatched ground-truth box (DIGITS calls those "true negatives"; they are misses)
TRUE_POSITIVE, FALSE_POSITIVE, MISS = 1, 2, 3


def _rows(boxes, what: str) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 4))
    if arr.ndim != 2 or arr.shape[1] < 4:
        raise ValueError(f"{what}: expected boxes (n, >=4), got shape {arr.shape}")
    return arr[:, :4]


def score_detections(gt, det, iou_threshold: float = 0.7) -> np.ndarray:
    """Tag one image's detections and ground truth, as DIGITS' ScoreDetections (§3.6).

    ``gt`` (g, >=4) and ``det`` (m, >=4) corner boxes (padding rows already dropped).  Each ground-
    truth box in order takes the first detection not yet taken with IoU >= ``iou_threshold``.
    Returns (m + misses, 5) rows ``[x1, y1, x2, y2, tag]``: the detections in their order tagged
    TRUE_POSITIVE (1) or FALSE_POSITIVE (2), then the unmatched ground-truth boxes tagged MISS (3).
    """
    gt, det = _rows(gt, "score_detections (gt)"), _rows(det, "score_detections (det)")
    overlaps = iou_matrix(gt, det) if len(gt) and len(det) else np.zeros((len(gt), len(det)))
    taken = np.zeros(len(det), dtype=bool)
    missed = np.zeros(len(gt), dtype=bool)
    for g, row in enumerate(overlaps):
        free = np.flatnonzero((row >= iou_threshold) & ~taken)
        if free.size:
            taken[free[0]] = True
        else:
            missed[g] = True
    tags = np.where(taken, TRUE_POSITIVE, FALSE_POSITIVE)
    scored = np.concatenate([np.column_stack([det, tags]),
                             np.column_stack([gt[missed], np.full(missed.sum(), MISS)])])
    return scored.reshape(-1, 5)


def detectnet_map(tag_rows_per_image) -> dict:
    """DetectNet's ``mAP`` layer over a batch (§3.6): counts the tags of every image's scored rows
    (arrays (k, 5), tag in the last column; all-zero padding rows are ignored) and returns
    ``{"mAP", "precision", "recall"}`` in DetectNet's units, percentages:
    precision = TP / (TP + FP) * 100, recall = TP / (TP + misses) * 100 (0 when the denominator is
    0), and "mAP" = precision * recall / 100."""
    counts = np.zeros(4, dtype=np.int64)
    for rows in tag_rows_per_image:
        rows = np.asarray(rows)
        if rows.size:
            tags = rows.reshape(-1, rows.shape[-1])[:, -1].astype(np.int64)
            counts += np.bincount(tags[(tags >= 1) & (tags <= 3)], minlength=4)
    tp, fp, miss = counts[TRUE_POSITIVE], counts[FALSE_POSITIVE], counts[MISS]
    precision = 100.0 * tp / (tp + fp) if tp + fp else 0.0
    recall = 100.0 * tp / (tp + miss) if tp + miss else 0.0
    return {"mAP": precision * recall / 100.0, "precision": float(precision), "recall": float(recall)}


def all_point_average_precision(ranked_hits, truths: int) -> float:
    """Area under the precision/recall curve of detections ranked best first (``ranked_hits``: bool,
    true for a true positive) against ``truths`` ground-truth boxes, with all-point interpolation:
    the precision at each recall is the best precision at that recall or any higher one.  0 when
    there are no ground-truth boxes."""
    hits = np.asarray(ranked_hits, dtype=bool)
    if truths <= 0 or hits.size == 0:
        return 0.0
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, hits.size + 1)
    recall = tp / truths
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at this recall or beyond
    steps = np.diff(np.concatenate([[0.0], recall]))          # recall gained at each rank (0 at an FP)
    return float(np.sum(steps * envelope))


class AveragePrecision:
    """True average precision of detections over a set of images, at one IoU threshold.

    Feed it image by image with :meth:`update`; :meth:`result` ranks every detection seen by its
    confidence (the fifth column) and integrates precision over recall (all-point interpolation,
    PASCAL VOC 2010+).  Within an image, detections are matched best-confidence first, each to the
    not yet matched ground-truth box of highest IoU >= ``iou_threshold``; the rest are false
    positives.  Equal confidences (DetectNet's are ln of whole vote counts, so ties are common)
    keep the order in which the detections were fed.  For one number per class use one instance
    per class."""

    def __init__(self, iou_threshold: float = 0.5):
        self.iou_threshold = float(iou_threshold)
        self.reset()

    def reset(self) -> None:
        self._confidences: list[np.ndarray] = []
        self._hits: list[np.ndarray] = []
        self._truths = 0

    def update(self, detections, truths) -> None:
        """Add images: ``detections`` a list of (m, 5) arrays ``[x1, y1, x2, y2, confidence]`` and
        ``truths`` a list of (g, >=4) arrays, one of each per image.  All-zero rows (the padding of
        DetectNet's box lists) are ignored, so the layers' (50, 5) lists can be passed as they are."""
        detections, truths = list(detections), list(truths)
        if len(detections) != len(truths):
            raise ValueError(f"AveragePrecision.update: {len(detections)} images of detections "
                             f"but {len(truths)} of ground truth")
        for det, gt in zip(detections, truths):
            det = from_bbox_list(np.asarray(det, dtype=np.float64).reshape(-1, 5))
            gt = np.asarray(gt, dtype=np.float64)
            gt = _rows(from_bbox_list(gt.reshape(-1, gt.shape[-1])) if gt.size else gt, "AveragePrecision truths")
            order = np.argsort(-det[:, 4], kind="stable")
            det = det[order]
            overlaps = iou_matrix(det, gt) if len(det) and len(gt) else np.zeros((len(det), len(gt)))
            matched = np.zeros(len(gt), dtype=bool)
            hits = np.zeros(len(det), dtype=bool)
            for d, row in enumerate(overlaps):
                candidates = np.where(matched, -1.0, row)
                best = int(np.argmax(candidates)) if len(gt) else -1
                if best >= 0 and candidates[best] >= self.iou_threshold:
                    matched[best] = hits[d] = True
            self._confidences.append(det[:, 4])
            self._hits.append(hits)
            self._truths += len(gt)

    def result(self) -> dict:
        """``{"average_precision", "precision", "recall"}`` in 0..1 (precision and recall over all
        the detections seen; each 0 when its denominator is 0) and the ``detections`` and
        ``truths`` counts."""
        confidences = np.concatenate(self._confidences) if self._confidences else np.zeros(0)
        hits = np.concatenate(self._hits) if self._hits else np.zeros(0, dtype=bool)
        ranked = hits[np.argsort(-confidences, kind="stable")]
        tp = int(hits.sum())
        return {"average_precision": all_point_average_precision(ranked, self._truths),
                "precision": tp / len(hits) if len(hits) else 0.0,
                "recall": tp / self._truths if self._truths else 0.0,
                "detections": int(len(hits)), "truths": int(self._truths)}
