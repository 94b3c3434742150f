"""``summary.json`` and ``summary.txt`` of a generic dataset (contract C1).

summary.json is written last and atomically: its presence means the dataset is complete.  Paths
in it are absolute when written; :func:`read_summary` also accepts paths relative to the dataset
folder (a moved dataset) and gives them back absolute.
"""
from __future__ import annotations

import json
import os

from ... import formats
from ...errors import DataError

SUMMARY = "summary.json"
SUMMARY_TEXT = "summary.txt"
STAGES = ("train", "val", "test")
KINDS = ("generic", "gradients", "processing", "segmentation", "detection")


def write_summary(outdir: str, summary: dict) -> None:
    """summary.txt, then summary.json (atomically; last: it marks the dataset complete)."""
    formats.atomic_write(os.path.join(outdir, SUMMARY_TEXT), summary_text(summary).encode("utf-8"))
    formats.atomic_write(os.path.join(outdir, SUMMARY), (json.dumps(summary, indent=2) + "\n").encode("utf-8"))


def _absolute(path, outdir: str):
    if path is None or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(outdir, path))


def read_summary(outdir: str) -> dict:
    """The summary of the generic dataset in ``outdir``, its paths absolute.

    DataError when summary.json is missing (the dataset is incomplete or not a generic one),
    unreadable, or lacks its ``kind`` and ``stages``."""
    path = os.path.join(outdir, SUMMARY)
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{outdir}: no {SUMMARY}: not a complete dataset") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the dataset summary: {e}") from None
    if not isinstance(summary, dict) or summary.get("kind") not in KINDS or not isinstance(summary.get("stages"), dict):
        raise DataError(f"{path}: not a generic dataset's summary (needs a kind of {', '.join(KINDS)} and stages)")
    for stage in summary["stages"].values():
        for key in ("features", "labels", "mean"):
            stage[key] = _absolute(stage.get(key), outdir)
    summary["mean_file"] = _absolute(summary.get("mean_file"), outdir)
    return summary


def _shape_text(shape) -> str:
    return "x".join(str(n) for n in shape) if shape else "varies"


def summary_text(summary: dict) -> str:
    """The summary for people: kind, stages with entries and shapes, classes and their pixels."""
    lines = [f"kind: {summary['kind']}",
             f"feature encoding: {summary.get('feature_encoding')}, label encoding: {summary.get('label_encoding')}, "
             f"same shape: {'yes' if summary.get('force_same_shape') else 'no'}",
             f"seed: {summary.get('seed')}", ""]
    lines.append(f"{'stage':<6}{'entries':>9}  {'feature (CxHxW)':<18}{'label':<14}features db")
    for name, st in summary["stages"].items():
        lines.append(f"{name:<6}{st['entries']:>9}  {_shape_text(st['feature_shape']):<18}"
                     f"{_shape_text(st['label_shape']):<14}{st['features']}")
    if summary.get("mean_file"):
        lines += ["", f"mean: {summary['mean_file']}"]
    if summary.get("label_range"):
        lines += [f"label range (train): {summary['label_range'][0]:g} .. {summary['label_range'][1]:g}"]
    counts = summary.get("class_pixel_counts")
    if counts:
        names = summary.get("class_labels") or []
        width = max([len("class")] + [len(n) for n in names] + [len(f"class {summary.get('num_classes', 0)}")])
        lines += ["", f"{'class':<{width}}" + "".join(f"{s:>14}" for s in counts)]
        for k in range(len(next(iter(counts.values())))):
            label = names[k] if k < len(names) else f"class {k}"
            lines.append(f"{label:<{width}}" + "".join(f"{counts[s][k]:>14}" for s in counts))
    boxes = summary.get("box_counts")
    if boxes:
        names = [n for n in next(iter(boxes.values())) if any(b.get(n) for b in boxes.values())] or ["dontcare"]
        width = max(len("class"), *(len(n) for n in names))
        lines += ["", f"image size (WxH): {_shape_text(summary.get('image_size'))}",
                  f"{'boxes':<{width}}" + "".join(f"{s:>10}" for s in boxes)]
        lines += [f"{n:<{width}}" + "".join(f"{boxes[s].get(n, 0):>10}" for s in boxes) for n in names]
    return "\n".join(lines) + "\n"
