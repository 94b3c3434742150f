"""What a classify run found (:class:`ClassifyResult`): top-1/top-5, the confusion matrix,
precision and recall per class, the per-image top-N predictions (spilled to a temporary file so
that memory stays flat), and :class:`TopImages`, the most confident images per class over
batches.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..errors import BrewnetError


@dataclass
class ClassifyResult:
    """What a run found.  Accuracy fields are None when no image had a known label.

    - ``count``: images classified (``errors`` lists those that could not be read);
    - ``top1``/``top5``: the share of labelled images whose label is the first / among the first
      five (or all, with fewer classes) predictions;
    - ``confusion``: (K, K) counts, row = true class, column = predicted class;
    - ``per_class``: ``{label, count, precision, recall}`` per class; count is the images of that
      true class; precision (recall) is None when no image was predicted as (is of) the class;
    - ``conversions``: images converted to the bundle's channel count (``channels``) or size
      (``size``), each logged as a warning the first time;
    - predictions, when kept (:meth:`keep_predictions`): ``iter_predictions()`` streams
      ``{source, top: [[label, prob], ...], label?}`` from a temporary file.

    :meth:`record` adds a batch's probabilities.
    """

    labels: list[str]
    top_n: int
    summary_only: bool = False
    count: int = 0
    labelled: int = 0
    correct1: int = 0
    correct5: int = 0
    confusion: np.ndarray | None = None
    errors: list[dict] = field(default_factory=list)
    conversions: dict = field(default_factory=dict)
    elapsed_s: float = 0.0
    #: {label: [{source, prob}, ...]} when the run kept the most confident images per class
    top_images: dict | None = None
    _spill: object = field(default=None, init=False, repr=False)

    @property
    def top1(self) -> float | None:
        return self.correct1 / self.labelled if self.labelled else None

    @property
    def top5(self) -> float | None:
        return self.correct5 / self.labelled if self.labelled else None

    @property
    def images_per_s(self) -> float:
        return self.count / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def per_class(self) -> list[dict] | None:
        if self.confusion is None or not self.labelled:
            return None
        cm = self.confusion
        rows, cols, diag = cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
        return [{"label": name, "count": int(rows[k]),
                 "precision": float(diag[k] / cols[k]) if cols[k] else None,
                 "recall": float(diag[k] / rows[k]) if rows[k] else None}
                for k, name in enumerate(self.labels)]

    def keep_predictions(self) -> None:
        """From now on, :meth:`record` writes each image's top-N predictions to a temporary
        file (deleted by :meth:`close`)."""
        if self._spill is None:
            self._spill = tempfile.TemporaryFile("w+", encoding="utf-8", prefix="brewnet-classify-")

    def record(self, probs: np.ndarray, meta: list[tuple[str, int | None]]) -> None:
        """Add a batch's (n, K) probabilities of the images ``meta`` ((source, label index or
        None) each): counts, confusion, top-k, predictions."""
        k = len(self.labels)
        n = probs.shape[0]
        order = np.argsort(-probs, axis=1, kind="stable")  # (n, K); ties keep the lower class first
        self.count += n
        labels = np.array([-1 if lab is None else lab for _, lab in meta], dtype=np.int64)
        has = labels >= 0
        if has.any():
            t = labels[has]
            ranked = order[has]
            self.labelled += int(has.sum())
            self.correct1 += int((ranked[:, 0] == t).sum())
            self.correct5 += int((ranked[:, :min(5, k)] == t[:, None]).any(axis=1).sum())
            np.add.at(self.confusion, (t, ranked[:, 0]), 1)
        f = self._spill
        if f is None:
            return
        names = self.labels
        top = order[:, :self.top_n]
        lines = []
        for i, (source, lab) in enumerate(meta):
            rec = {"source": source, "top": [[names[j], float(probs[i, j])] for j in top[i]]}
            if lab is not None:
                rec["label"] = names[lab]
            lines.append(json.dumps(rec))
        f.write("\n".join(lines) + "\n")

    def iter_predictions(self) -> Iterator[dict]:
        """Per-image predictions in source order (empty with summary_only)."""
        if self._spill is None:
            return
        f = self._spill
        f.flush()
        f.seek(0)
        for line in f:
            yield json.loads(line)
        f.seek(0, os.SEEK_END)

    @property
    def predictions(self) -> list[dict] | None:
        """All predictions as a list (None with summary_only; prefer iter_predictions for many)."""
        return None if self.summary_only else list(self.iter_predictions())

    def summary(self) -> dict:
        """Everything but the predictions, JSON-ready."""
        return {"count": self.count, "labelled": self.labelled, "top1": self.top1, "top5": self.top5,
                "labels": list(self.labels),
                "confusion": None if self.confusion is None or not self.labelled else self.confusion.tolist(),
                "per_class": self.per_class, "errors": list(self.errors), "error_count": len(self.errors),
                "conversions": dict(self.conversions), "elapsed_s": round(self.elapsed_s, 3),
                "images_per_s": round(self.images_per_s, 1),
                **({"top_images": self.top_images} if self.top_images is not None else {})}

    def to_json(self) -> dict:
        """The summary plus ``predictions`` (left out with summary_only)."""
        out = self.summary()
        if not self.summary_only:
            out["predictions"] = list(self.iter_predictions())
        return out

    def write_json(self, path: str) -> None:
        """``to_json()`` written to ``path``, predictions streamed (memory stays flat)."""
        summary = self.summary()
        with open(path, "w", encoding="utf-8") as f:
            text = json.dumps(summary, indent=1)
            if self.summary_only:
                f.write(text + "\n")
                return
            f.write(text[:-2] + ',\n "predictions": [')  # reopen the object before its last "}"
            for i, p in enumerate(self.iter_predictions()):
                f.write(("\n  " if i == 0 else ",\n  ") + json.dumps(p))
            f.write("\n ]\n}\n")

    def close(self) -> None:
        """Delete the predictions' temporary file."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class TopImages:
    """The images that can still be among the ``k`` most confident of some class, over batches of
    any number of images: after each batch only those in some class's top ``k`` stay (at most
    classes·k of them, with their probability vectors, in arrival order so that equal
    probabilities keep the earlier image).  ``candidates()`` feeds
    :func:`brewnet.inference.visualize.top_images_per_class`, which makes the final choice."""

    def __init__(self, num_classes: int, k: int):
        if k < 1:
            raise BrewnetError(f"top images: k must be at least 1, got {k}")
        self.k = int(k)
        self.num_classes = int(num_classes)
        self._sources: list[str] = []
        self._probs = np.zeros((0, self.num_classes), dtype=np.float32)

    def __call__(self, sources: list[str], probs: np.ndarray) -> None:
        self._sources.extend(sources)
        allp = np.concatenate([self._probs, np.asarray(probs, dtype=np.float32)])  # (m, K)
        keep = np.zeros(len(allp), dtype=bool)
        for c in range(self.num_classes):
            order = np.argsort(-allp[:, c], kind="stable")  # ties: the earlier image first
            keep[order[:self.k]] = True
        idx = np.flatnonzero(keep)  # arrival order
        self._sources = [self._sources[i] for i in idx]
        self._probs = allp[idx]

    def candidates(self) -> Iterator[tuple[str, np.ndarray]]:
        return zip(list(self._sources), list(self._probs))
