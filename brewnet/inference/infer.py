"""Run a deploy bundle of any net (regression, segmentation, image-to-image; DIGITS' generic
models) on images, streaming, and keep every output blob: ``brewnet infer``'s engine.

    from brewnet.inference.infer import evaluate, infer_images
    from brewnet.inference.sources import sources_from_lmdb
    for key, outputs in infer_images("bundle/", sources_from_lmdb("val_db/features")):
        outputs["score"]            # (C, H, W) float32, one image's blob without the batch axis
    evaluate("bundle/", "val_db/features", "val_db/labels", "segmentation")["mean_iou"]

The sources are classify's (:mod:`brewnet.inference.sources`: image paths, a list file, a
folder, an LMDB); images are decoded by the same workers, a bounded window of chunks ahead of
the net, so memory holds a few batches whatever the number of images, and each image's outputs
are handed on as soon as its batch ran. Keys: the path of an image file, the record key of an
LMDB entry (as DIGITS' ``infer_db.json`` names them).

``dont_resize`` (DIGITS' "do not resize"): an image keeps its size, only its channels are
converted, a mean image is resized to it and the net is reshaped to each image's size; images of
one size run in one batch.

:func:`evaluate` runs the bundle over a features LMDB and compares the main output with the
labels LMDB's record of the same key, with the metrics the solver logs in its test phase
(:mod:`brewnet.solver.task_metrics`): the same numbers as the training's metrics file when the
validation set is the same.

torch is imported where used, so that importing this module does not.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Callable, Iterator

import numpy as np

from ..data.lmdb_io import count_records, iter_records, parse_datum
from ..errors import BrewnetError, DataError
from .bundle import Bundle, BundleError
from .loaded import DEFAULT_BATCH
from .preprocess import Preprocessor
from .sources import Item, Sources, as_sources, sources_from_lmdb
from .workers import choose_worker_kind, decoded_chunks, default_workers

log = logging.getLogger("brewnet")

#: what -evaluate computes
EVALUATE_KINDS = ("segmentation", "regression")


class GenericBundle:
    """A bundle with its net built for inference of every output blob (reuse it across calls:
    the server's worker keeps one). ``batch``: images per forward (default: the deploy Input's
    batch, or 64 when that is 1). ``dont_resize``: see the module docstring."""

    def __init__(self, bundle: Bundle | str, device=None, batch: int | None = None, dont_resize: bool = False):
        import torch

        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.info = self.bundle.info
        self.dont_resize = bool(dont_resize)
        self.preprocessor = Preprocessor(self.bundle.preprocess, self.bundle.mean,
                                         where=f"{self.bundle.path}/preprocess.json", keep_size=self.dont_resize)
        self.device = torch.device(device) if device is not None else None
        self.net = self.bundle.net(device=self.device)
        self.input = self.bundle.preprocess["input"]
        where = f"{self.bundle.path}/deploy.prototxt"
        if self.input not in self.net.inputs:
            raise BundleError(f"{where}: preprocess.json's input blob '{self.input}' is not an input of the net "
                              f"(inputs: {', '.join(self.net.inputs) or 'none'})")
        named = self.info.get("outputs") or []
        self.outputs = [o for o in named if o in self.net.blobs] or list(self.net.outputs)
        self.output = self.info.get("output") if self.info.get("output") in self.outputs else self.outputs[-1]
        shape = tuple(self.net.blobs[self.input].shape)
        if batch is not None and batch < 1:
            raise BrewnetError(f"batch must be at least 1, got {batch}")
        self.batch = int(batch or (shape[0] if shape[0] > 1 else DEFAULT_BATCH))
        self._shape_now: tuple[int, ...] | None = None

    def forward(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """(n, C, h, w) transformed input -> {output blob: (n, ...) float32 array}, the net
        reshaped to the input's shape when it differs from the last one."""
        import torch

        if self._shape_now != x.shape:
            self.net.blobs[self.input].reshape(*x.shape)
            self.net.reshape()
            self._shape_now = tuple(x.shape)
        self.net.blobs[self.input].data[...] = x
        with torch.inference_mode():
            self.net.forward()
        return {o: np.array(self.net.blobs[o].data, dtype=np.float32, copy=True) for o in self.outputs}


class InferStream:
    """The iterator :func:`infer_images` returns: ``(key, {blob: array})`` per image in source
    order. While it runs, ``done`` counts images that ran, ``errors`` lists ``{source, error}``
    of those that could not be read (left out, as DIGITS leaves them out), ``total`` is the
    source's length. :meth:`close` stops it early (a ``for`` loop that breaks should call it)."""

    def __init__(self, loaded: GenericBundle, sources: Sources, workers: int | None, worker_kind: str,
                 progress: Callable[[int, int], None] | None):
        self.loaded, self.sources = loaded, sources
        self.total = sources.count
        self.done = 0
        self.errors: list[dict] = []
        self.conversions: dict[str, int] = {}
        self._progress = progress
        self._gen = self._run(default_workers() if workers is None else int(workers), worker_kind)

    def __iter__(self) -> "InferStream":
        return self

    def __next__(self) -> tuple[str, dict[str, np.ndarray]]:
        return next(self._gen)

    def close(self) -> None:
        self._gen.close()

    def _key(self, item: Item) -> str:
        if self.sources.kind == "lmdb" and item.source.startswith(self.sources.name + ":"):
            return item.source[len(self.sources.name) + 1:]
        return item.source

    def _fail(self, item: Item, error) -> None:
        self.errors.append({"source": item.source, "error": str(error)})
        log.warning("infer: cannot read %s: %s", item.source, error)

    def _batches(self, decoded) -> Iterator[list[tuple[Item, np.ndarray]]]:
        """Decoded images in runs of one shape, at most a batch each."""
        run: list[tuple[Item, np.ndarray]] = []
        for arr, item in decoded:
            if run and (len(run) == self.loaded.batch or run[0][1].shape != arr.shape):
                yield run
                run = []
            run.append((item, arr))
        if run:
            yield run

    def _decoded(self, workers: int, worker_kind: str) -> Iterator[tuple[np.ndarray, Item]]:
        pre = self.loaded.preprocessor
        kind = choose_worker_kind(worker_kind, self.sources, workers)
        warned: set[str] = set()
        for out, delta, messages, chunk in decoded_chunks(self.sources.items(None), pre, workers, kind):
            for key, n in delta.items():
                self.conversions[key] = self.conversions.get(key, 0) + n
                if n and key not in warned:  # once per run and kind
                    warned.add(key)
                    log.warning("warning: %s (further such images are converted and counted, not logged)",
                                messages.get(key, key))
            for (arr, extra), item in zip(out, chunk):
                if arr is None:
                    self._fail(item, extra)
                else:
                    yield arr, item

    def _run(self, workers: int, worker_kind: str):
        pre = self.loaded.preprocessor
        warn_before, pre.warn = pre.warn, False  # conversions are reported once per run and kind
        try:
            for run in self._batches(self._decoded(workers, worker_kind)):
                try:
                    x = pre.transform(np.stack([arr for _, arr in run]))
                except DataError as e:  # e.g. an image smaller than the crop (-dont_resize)
                    for item, _ in run:
                        self._fail(item, e)
                    continue
                out = self.loaded.forward(x)
                n = len(run)
                self.done += n
                if self._progress is not None:
                    self._progress(self.done + len(self.errors), self.total)
                for i, (item, _) in enumerate(run):
                    yield self._key(item), {b: (v[i] if v.shape[:1] == (n,) else v) for b, v in out.items()}
        finally:
            pre.warn = warn_before


def _loaded(bundle_dir, dont_resize: bool, batch: int | None, device) -> GenericBundle:
    if isinstance(bundle_dir, GenericBundle):
        if bool(dont_resize) != bundle_dir.dont_resize:
            raise BrewnetError("this GenericBundle was loaded with dont_resize="
                               f"{bundle_dir.dont_resize}; load another for dont_resize={dont_resize}")
        if batch is not None:
            if batch < 1:
                raise BrewnetError(f"batch must be at least 1, got {batch}")
            bundle_dir.batch = int(batch)
        return bundle_dir
    return GenericBundle(bundle_dir, device=device, batch=batch, dont_resize=dont_resize)


def infer_images(bundle_dir, sources, *, dont_resize: bool = False, batch: int | None = None, device=None,
                 workers: int | None = None, worker_kind: str = "auto",
                 progress: Callable[[int, int], None] | None = None) -> InferStream:
    """Every output blob of the bundle's net for each image of ``sources``, streaming: an
    iterator of ``(key, {blob: ndarray})`` (one image's values, without the batch axis) in
    source order; see the module docstring.

    Args:
        bundle_dir: a bundle directory, a :class:`~brewnet.inference.bundle.Bundle` or a
            :class:`GenericBundle` (reused: the net is not built again).
        sources: :class:`~brewnet.inference.sources.Sources` (``sources_from_*``) or image paths.
        dont_resize: images keep their size (DIGITS' "do not resize").
        batch: images per forward (default: see :class:`GenericBundle`).
        device: torch device for the net (default: brewnet's default device).
        workers: decode workers (default up to 4; 0 decodes in this thread).
        worker_kind: ``"thread"``, ``"process"`` or ``"auto"``.
        progress: called as ``progress(done, total)`` after each batch.
    """
    loaded = _loaded(bundle_dir, dont_resize, batch, device)
    return InferStream(loaded, as_sources(sources), workers, worker_kind, progress)


# ----- -evaluate ---------------------------------------------------------------------------------------
def _label_array(value: bytes, key: str, where: str) -> np.ndarray:
    from ..data.image import datum_to_chw  # torch

    return datum_to_chw(parse_datum(value, key), what=f"{where}:{key}")


def _metrics(kind: str, loaded: GenericBundle):
    from ..solver.task_metrics import RegressionMetrics, SegmentationMetrics  # torch

    if kind == "regression":
        return RegressionMetrics()
    classes = int(loaded.net.blobs[loaded.output].shape[1])
    ignore = loaded.info.get("ignore_label")
    return SegmentationMetrics(classes, ignore_label=None if ignore is None else int(ignore))


def evaluate(bundle_dir, features_lmdb, labels_lmdb, kind: str, *, dont_resize: bool = False,
             batch: int | None = None, device=None, workers: int | None = None,
             progress: Callable[[int, int], None] | None = None,
             on_output: Callable[[str, dict], None] | None = None) -> dict:
    """The task metrics of the bundle's main output over ``features_lmdb`` against the records
    of the same keys in ``labels_lmdb`` (``kind`` "segmentation": the label records are the
    class index images; "regression": the target values), computed by the solver's own
    :mod:`brewnet.solver.task_metrics` classes, so the numbers are those the training logged
    for the same set. Returns ``{"kind", "output", "count", "errors", <metric>: value ...}``
    (segmentation: ``pixel_accuracy``, ``mean_iou``, ``iou[k]``; regression: ``rmse``, ``mae``).
    ``on_output(key, outputs)`` sees each image's outputs as they come (e.g. to write them).

    DataError when an LMDB is missing, the two LMDBs differ in length or keys, or a label's shape
    does not fit the output's.
    """
    if kind not in EVALUATE_KINDS:
        raise BrewnetError(f"evaluate: kind {kind!r}; one of {', '.join(EVALUATE_KINDS)}")
    features_lmdb, labels_lmdb = os.fspath(features_lmdb), os.fspath(labels_lmdb)
    for what, path in (("features", features_lmdb), ("labels", labels_lmdb)):
        if not os.path.exists(path):
            raise DataError(f"{what} LMDB not found: {path}")
    n_feat, n_lab = count_records(features_lmdb), count_records(labels_lmdb)
    if n_feat != n_lab:
        raise DataError(f"the labels LMDB {labels_lmdb} has {n_lab} records but the features LMDB "
                        f"{features_lmdb} has {n_feat}: they must hold the same keys")
    loaded = _loaded(bundle_dir, dont_resize, batch, device)
    metrics = _metrics(kind, loaded)
    labels = iter_records(labels_lmdb)
    stream = infer_images(loaded, sources_from_lmdb(features_lmdb), dont_resize=dont_resize, workers=workers,
                          progress=progress)
    count = 0
    try:
        for key, outputs in stream:
            label = _next_label(labels, key, labels_lmdb, features_lmdb)
            pred = outputs[loaded.output]
            target = _label_array(label, key, labels_lmdb)
            if kind == "segmentation":
                if target.shape[0] != 1 or target.shape[1:] != pred.shape[1:]:
                    raise DataError(f"{labels_lmdb}:{key}: label of shape {list(target.shape)}, but the output "
                                    f"'{loaded.output}' is {list(pred.shape)}: a segmentation label is 1xHxW "
                                    "class indices of the output's H and W")
                metrics.update(pred[None], target[None])
            else:
                if target.size != pred.size:
                    raise DataError(f"{labels_lmdb}:{key}: label of {target.size} value(s) {list(target.shape)}, but "
                                    f"the output '{loaded.output}' has {pred.size} {list(pred.shape)}")
                metrics.update(pred.reshape(1, -1), target.reshape(1, -1).astype(np.float32))
            if on_output is not None:
                on_output(key, outputs)
            count += 1
    finally:
        stream.close()
    result = {"kind": kind, "output": loaded.output, "count": count, "errors": list(stream.errors)}
    if count:
        result.update({k: float(v) for k, v in metrics.result().items()})
    return result


def _next_label(labels: Iterator[tuple[bytes, bytes]], key: str, labels_lmdb: str, features_lmdb: str) -> bytes:
    """The labels record of ``key``; both LMDBs are read in key order, so records of images that
    could not be read are skipped."""
    for k, value in labels:
        k_text = k.decode("ascii", "replace")
        if k_text == key:
            return value
        if k_text > key:
            break
    raise DataError(f"the labels LMDB {labels_lmdb} has no record with key {key} (a key of the features LMDB "
                    f"{features_lmdb}): the two must hold the same keys")


# ----- writing outputs ---------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)


class OutputWriter:
    """Writes each image's outputs as they come, memory flat whatever their number
    (``brewnet infer -output DIR -json FILE``; a context manager: :meth:`add` per image,
    :meth:`finish` with the run's summary):

    - ``output_dir``: ``NNNNNNNNN_<blob>.npy`` per image (N its position in the run) and blob,
      each written atomically, and ``index.json``: ``{"outputs": {key: {blob: {"file", "shape"}}},
      "count", "errors", ...summary}``;
    - ``json_path``: DIGITS' ``infer_many.json`` shape ``{"outputs": {key: {blob: nested list}}}``
      plus the summary (``count``, ``errors``, ``evaluation`` with -evaluate).

    Both JSON files are streamed into a temporary file beside their target and renamed into
    place by :meth:`finish` (a run that fails leaves no partial file)."""

    def __init__(self, output_dir: str | None = None, json_path: str | None = None):
        from contextlib import ExitStack
        from ..formats import atomic_path

        self.output_dir, self.count = output_dir, 0
        self._finished = False
        self._stack = ExitStack()
        self._files = []
        if output_dir:
            os.makedirs(output_dir, exist_ok=True)
            self._index = self._open(os.path.join(output_dir, "index.json"), atomic_path)
        else:
            self._index = None
        self._json = self._open(json_path, atomic_path) if json_path else None

    def _open(self, path: str, atomic_path):
        tmp = self._stack.enter_context(atomic_path(path))
        f = self._stack.enter_context(open(tmp, "w", encoding="utf-8"))
        f.write('{"outputs": {')
        self._files.append(f)
        return f

    def __enter__(self) -> "OutputWriter":
        return self

    def __exit__(self, *exc) -> None:
        if self._finished:
            return
        # not finished (an error, or a stop): the temporary files go, no target is replaced
        abort = exc if exc[0] is not None else (BrewnetError, BrewnetError("unfinished"), None)
        try:
            self._stack.__exit__(*abort)
        except BrewnetError:
            pass

    def add(self, key: str, outputs: dict[str, np.ndarray]) -> None:
        from ..formats import atomic_path

        sep = "\n  " if self.count == 0 else ",\n  "
        if self._index is not None:
            entry = {}
            for blob, value in outputs.items():
                name = f"{self.count:09d}_{_safe(blob)}.npy"
                with atomic_path(os.path.join(self.output_dir, name)) as tmp:
                    with open(tmp, "wb") as f:
                        np.save(f, value)
                entry[blob] = {"file": name, "shape": list(value.shape)}
            self._index.write(sep + json.dumps(key) + ": " + json.dumps(entry))
        if self._json is not None:
            self._json.write(sep + json.dumps(key) + ": "
                             + json.dumps({b: v.tolist() for b, v in outputs.items()}))
        self.count += 1

    def finish(self, summary: dict) -> None:
        """Close the "outputs" object, add ``summary``'s keys and put the files in place."""
        tail = "".join(f",\n {json.dumps(k)}: {json.dumps(v)}" for k, v in summary.items())
        for f in self._files:
            f.write("\n }" + tail + "\n}\n")
        self._finished = True
        self._stack.close()
