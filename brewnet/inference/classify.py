"""Classify any number of images with a deploy bundle, streaming: ``brewnet classify``'s engine
(the run; what it reads is :mod:`brewnet.inference.sources`, the net it runs
:mod:`brewnet.inference.loaded`, what it finds :mod:`brewnet.inference.results`).

    from brewnet.inference.classify import classify
    from brewnet.inference.sources import sources_from_folder
    result = classify("bundle/", sources_from_folder("photos/"), top=5)
    result.top1, result.confusion, result.per_class, result.write_json("out.json")

How a run goes: the main thread reads source items in chunks; worker threads (or processes)
decode them to the dataset's uint8 C×H×W (:mod:`brewnet.inference.workers`, with the
:class:`~brewnet.inference.preprocess.Preprocessor`); at most a few chunks are in flight, so
memory holds a few batches whatever the number of images.  The main thread stacks decoded images
into batches, applies the validation transform and runs the net under ``torch.inference_mode``.
Per-image predictions go to a temporary file (or are only counted, ``summary_only``), so the
result's size does not grow with the images either.  A file that cannot be decoded is recorded
in ``errors`` (source and reason) and the run goes on.
"""
from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from ..errors import BrewnetError, DataError
from .loaded import LoadedBundle
from .results import ClassifyResult
from .sources import as_sources
from .workers import choose_worker_kind, decoded_chunks, default_workers

log = logging.getLogger("brewnet")


def classify(bundle_or_path, sources, *, top: int = 5, batch: int | None = None, workers: int | None = None,
             device=None, progress: Callable[[int, int], None] | None = None, summary_only: bool = False,
             worker_kind: str = "auto",
             on_scores: Callable[[list[str], np.ndarray], None] | None = None) -> ClassifyResult:
    """Classify every image of ``sources`` with a bundle; see the module docstring.

    Args:
        bundle_or_path: a bundle directory, a :class:`~brewnet.inference.bundle.Bundle` or a :class:`LoadedBundle`.
        sources: a :class:`~brewnet.inference.sources.Sources` (``sources_from_*``), or image
            paths.
        top: predictions kept per image (top-N labels with probabilities).
        batch: images per forward (default: see :class:`LoadedBundle`).
        workers: decode workers (default :func:`~brewnet.inference.workers.default_workers`; 0
            decodes in this thread).
        device: torch device for the net (default: brewnet's default device).
        progress: called as ``progress(done, total)`` after each batch.
        summary_only: keep only counts and metrics, not per-image predictions.
        worker_kind: ``"thread"``, ``"process"`` or ``"auto"``
            (:func:`~brewnet.inference.workers.choose_worker_kind`).
        on_scores: called with each batch's sources and (n, K) probabilities (e.g. a
            :class:`~brewnet.inference.results.TopImages` keeping the most confident images per class).
    """
    t0 = time.perf_counter()
    if isinstance(bundle_or_path, LoadedBundle):
        loaded = bundle_or_path
        if batch is not None and batch != loaded.batch:
            if batch < 1:
                raise BrewnetError(f"batch must be at least 1, got {batch}")
            loaded.batch = int(batch)
    else:
        loaded = LoadedBundle(bundle_or_path, device=device, batch=batch)
    if top < 1:
        raise BrewnetError(f"top must be at least 1, got {top}")
    src = as_sources(sources)
    labels = loaded.labels
    k = len(labels)
    items = src.items(labels)  # checks the source's labels against the bundle first
    pre = loaded.preprocessor
    warn_before, pre.warn = pre.warn, False  # this run reports conversions itself, once per kind
    result = ClassifyResult(labels=labels, top_n=min(top, k), summary_only=summary_only,
                            confusion=np.zeros((k, k), dtype=np.int64),
                            conversions={key: 0 for key in pre.conversions})
    if not summary_only:
        result.keep_predictions()
    workers = default_workers() if workers is None else int(workers)
    worker_kind = choose_worker_kind(worker_kind, src, workers)
    warned: set[str] = set()
    c, h, w = pre.stored_shape
    batch_n = loaded.batch if not src.count else min(loaded.batch, src.count)
    buf = None  # (batch_n, C, H, W) stored images waiting for the net
    meta: list[tuple[str, int | None]] = []
    done = 0

    def flush() -> None:
        nonlocal done
        n = len(meta)
        if not n:
            return
        if n < batch_n:  # a short last batch runs padded: every forward of a run has one shape
            buf[n:] = 0
        x = pre.transform(buf)                  # (batch_n, C, h, w) float32
        probs = loaded.scores(x)[:n]            # (n, K)
        result.record(probs, meta)
        if on_scores is not None:
            on_scores([source for source, _ in meta], probs)
        done += len(meta)
        meta.clear()
        if progress is not None:
            progress(done + len(result.errors), src.count)

    def take(results, delta, messages) -> None:
        nonlocal buf
        for key, n in delta.items():
            result.conversions[key] = result.conversions.get(key, 0) + n
            if n and key not in warned:  # once per run and kind
                warned.add(key)
                log.warning("warning: %s (further such images are converted and counted, not logged)",
                            messages.get(key, key))
        for (arr, extra), item in results:
            if arr is None:
                result.errors.append({"source": item.source, "error": str(extra)})
                log.warning("classify: cannot read %s: %s", item.source, extra)
                continue
            label = item.label if item.data is None else int(extra)
            if label is not None and not 0 <= label < k:
                raise DataError(f"{item.source}: label {label}, but the bundle has {k} labels "
                                f"(0..{k - 1} in labels.txt): mismatched labels")
            if buf is None:
                buf = np.empty((batch_n, c, h, w), dtype=arr.dtype)
            buf[len(meta)] = arr
            meta.append((item.source, label))
            if len(meta) == batch_n:
                flush()

    try:
        # decoding runs ahead of the net by a few batches, never more (memory stays flat)
        for out, delta, msgs, chunk in decoded_chunks(items, pre, workers, worker_kind):
            take(zip(out, chunk), delta, msgs)
        flush()
    except BaseException:
        result.close()
        raise
    finally:
        pre.warn = warn_before
    result.elapsed_s = time.perf_counter() - t0
    return result
