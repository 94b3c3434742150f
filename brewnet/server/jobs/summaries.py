"""Summaries of a job's files, the numbers the server keeps in its row: a dataset's labels, sizes
and LMDBs (from summary.json), a model's snapshots and best validation value (from its plan and
metrics), an inference job's scores (from result.json); a snapshot's epoch is jobs.epochs'."""
from __future__ import annotations

import json
from pathlib import Path

from .epochs import snapshot_epoch
from .progress import best_value, read_metrics, read_plan
from .specs import GENERIC_KINDS
from .tasks import snapshots


def dataset_summary(jobdir: Path) -> dict:
    """A dataset job's summary from the summary.json that ``brewnet dataset create`` wrote:
    labels, image dims, counts per split (and per class), the LMDBs and the mean file (absolute
    paths); {} when the file is absent or unreadable."""
    try:
        with open(jobdir / "summary.json", encoding="utf-8") as f:
            s = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    if s.get("kind") in GENERIC_KINDS:   # a classification summary's "kind" is its source (folder, ...)
        return generic_dataset_summary(jobdir, s)
    splits = s.get("splits") or {}
    out = {
        "labels": list(s.get("labels") or []),
        "num_classes": len(s.get("labels") or []),
        "image": s.get("image") or {},
        "counts": {k: int(v.get("total", 0)) for k, v in splits.items()},
        "per_class": {k: v.get("per_class", {}) for k, v in splits.items()},
        "dbs": {k: str(jobdir / v.get("db", f"{k}_db")) for k, v in splits.items()},
        "lists": {k: str(jobdir / v["list"]) for k, v in splits.items()
                  if v.get("list") and (jobdir / v["list"]).is_file()},
        "encoding": s.get("encoding"),
        "resize": s.get("resize"),
        "resize_mode": s.get("resize_mode"),
        "sets": s.get("sets") or {},
        "skipped": len(s.get("skipped") or []),
    }
    for k in ("min_per_class", "max_per_class"):
        if k in s:
            out[k] = s[k]
    mean = jobdir / "mean.binaryproto"
    out["mean_file"] = str(mean) if mean.is_file() else None
    mean_image = jobdir / "mean.jpg"
    out["mean_image"] = str(mean_image) if mean_image.is_file() else None
    return out


def _absolute(jobdir: Path, path) -> str | None:
    """A path of a generic summary.json: absolute as written, or relative to the dataset dir."""
    if not path:
        return None
    p = Path(path)
    return str(p if p.is_absolute() else jobdir / p)


def generic_dataset_summary(jobdir: Path, s: dict) -> dict:
    """A generic dataset's summary.json (``brewnet dataset create --kind``: every key of it, its
    paths made absolute) plus the keys the server reads of every dataset: ``counts`` per stage,
    ``labels`` (the class labels), ``num_classes``, ``image`` (from ``feature_dims``), ``dbs``
    (the features LMDBs) and ``mean_file``."""
    out = dict(s)
    stages = {}
    for name, st in (s.get("stages") or {}).items():
        st = dict(st or {})
        for key in ("features", "labels", "mean"):
            st[key] = _absolute(jobdir, st.get(key))
        stages[name] = st
    out["stages"] = stages
    out["mean_file"] = _absolute(jobdir, s.get("mean_file"))
    out["counts"] = {k: int(v.get("entries") or 0) for k, v in stages.items()}
    out["labels"] = list(s.get("class_labels") or [])
    out["num_classes"] = int(s.get("num_classes") or 0)
    dims = s.get("feature_dims")
    out["image"] = {"height": dims[0], "width": dims[1], "channels": dims[2]} \
        if isinstance(dims, list) and len(dims) == 3 else {}
    out["dbs"] = {k: v["features"] for k, v in stages.items() if v.get("features")}
    return out


def model_summary(jobdir: Path, spec: dict, records: list[dict], newest_iter: int | None = None) -> dict:
    """A model job's summary: its snapshots ``[{iteration, epoch}]``, the best validation value
    (``best``: Caffe's moving-average statistics unless -bn_recalibrate ran, and then
    ``best_moving_bn`` the same net with the moving averages) and the newest train iteration."""
    plan = read_plan(jobdir)
    snaps = [{"iteration": it, "epoch": snapshot_epoch(it, plan, spec.get("train_epochs"))}
             for it, _ in snapshots(jobdir)]
    if newest_iter is None:
        its = [r["iter"] for r in records if r.get("phase") == "train" and isinstance(r.get("iter"), int)]
        newest_iter = max(its) if its else None
    out = {"snapshots": snaps, "best": best_value(records, "test"), "iteration": newest_iter,
           "max_iter": plan.get("max_iter")}
    moving = best_value(records, "test_moving_bn")
    if moving is not None:
        out["best_moving_bn"] = moving
    return out


def inference_summary(jobdir: Path) -> dict:
    """An inference job's summary from classify's result.json (without per-image predictions)."""
    path = jobdir / "result.json"
    try:
        with open(path, encoding="utf-8") as f:
            r = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    keys = ("count", "labelled", "top1", "top5", "error_count", "elapsed_s", "images_per_s")
    return {k: r.get(k) for k in keys if k in r}


def all_records(jobdir: Path) -> list[dict]:
    """Every metric record of a model job (the whole metrics file)."""
    records, _ = read_metrics(jobdir, 0)
    return records
