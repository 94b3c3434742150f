"""Classify any number of images with a deploy bundle, streaming: ``brewnet classify``'s engine.

    from brewnet.inference.classify import classify, sources_from_folder
    result = classify("bundle/", sources_from_folder("photos/"), top=5)
    result.top1, result.confusion, result.per_class, result.write_json("out.json")

Sources (each a re-iterable stream of images, never a list of pixels):
:func:`sources_from_images` (paths), :func:`sources_from_list` (Caffe's ``path [label]`` lines),
:func:`sources_from_folder` (class sub-folders named as the bundle's labels) and
:func:`sources_from_lmdb` (Datum records with their labels, as the Data layer reads them).

How a run goes: the main thread reads source items in chunks; worker threads (or processes)
decode them to the dataset's uint8 C×H×W (:class:`~brewnet.inference.preprocess.Preprocessor`);
at most a few chunks are in flight, so memory holds a few batches whatever the number of images.
The main thread stacks decoded images into batches, applies the validation transform and runs
the net under ``torch.inference_mode``.  Per-image predictions go to a temporary file (or are only
counted, ``summary_only``), so the result's size does not grow with the images either.  A file
that cannot be decoded is recorded in ``errors`` (source and reason) and the run goes on.
"""
from __future__ import annotations

import itertools
import json
import logging
import os
import tempfile
import time
from collections import deque
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from ..errors import BrewnetError, DataError
from .bundle import Bundle, BundleError
from .preprocess import Preprocessor

log = logging.getLogger("brewnet")

#: images per decode task (one task per chunk keeps the per-image overhead of a pool small)
CHUNK = 32
#: "auto" decodes in processes from this many images on (see choose_worker_kind)
PROCESS_MIN_IMAGES = 1000
#: LMDB bytes read through one opening of the environment (see sources_from_lmdb)
MAP_WINDOW = 8 << 20
#: the default batch when the deploy Input holds a single image
DEFAULT_BATCH = 64


# ----- sources -------------------------------------------------------------------------------------
@dataclass
class Item:
    """One image to classify: where it comes from and, when known, its class index."""

    source: str                # a file path, or "LMDB:key"
    label: int | None = None   # index into the bundle's labels
    data: bytes | None = None  # a serialized Datum (LMDB sources); None: read the file at source


class Sources:
    """A re-iterable stream of :class:`Item` with its length (for the progress bar).

    ``items(labels)`` yields the items with label indices resolved against the bundle's label
    names; a source that cannot fit those labels raises a DataError naming the place.
    ``decodes``: its images need decoding (files, encoded Datums), not just a copy (raw Datums).
    """

    def __init__(self, kind: str, name: str, count: int,
                 factory: Callable[[list[str]], Iterator[Item]], labelled: bool,
                 check: Callable[[list[str]], None] | None = None, decodes: bool = True):
        self.kind, self.name, self.count, self.labelled = kind, name, count, labelled
        self.decodes = decodes
        self._factory = factory
        self._check = check

    def __len__(self) -> int:
        return self.count

    def check(self, labels: list[str]) -> None:
        """Raise DataError when the labels of this source do not fit ``labels`` (before a run)."""
        if self._check is not None:
            self._check(labels)

    def items(self, labels: list[str]) -> Iterator[Item]:
        self.check(labels)
        return self._factory(labels)

    def __repr__(self) -> str:
        return f"<Sources {self.kind} {self.name!r}: {self.count} image(s)>"


def sources_from_images(paths: Iterable[str]) -> Sources:
    """Image files given by path (no labels)."""
    paths = [os.fspath(p) for p in paths]
    for p in paths:
        if os.path.isdir(p):
            raise DataError(f"{p} is a folder: classify a folder of class sub-folders with -folder "
                            "(sources_from_folder)")
    return Sources("images", f"{len(paths)} image(s)", len(paths),
                   lambda labels: (Item(p) for p in paths), labelled=False)


def _parse_list_line(line: str) -> tuple[str, int | None]:
    """Caffe's ``path label`` (the label after the last space); a line whose last word is not an
    integer is a path alone (paths may hold spaces)."""
    name, sep, last = line.rpartition(" ")
    if sep:
        try:
            return name.strip(), int(last)
        except ValueError:
            pass
    return line, None


def sources_from_list(path: str) -> Sources:
    """A list file of ``path [label]`` lines (Caffe's ImageData list); relative paths are taken
    from the list file's folder.  Labels are class indices into the bundle's labels.txt."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"list file not found: {path}")
    base = os.path.dirname(os.path.abspath(path))
    count, max_label, max_line, neg_line, labelled = 0, -1, 0, 0, False
    with open(path, encoding="utf-8") as f:  # one pass to count and find the largest label
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            count += 1
            _, label = _parse_list_line(line)
            if label is not None:
                labelled = True
                if label > max_label:
                    max_label, max_line = label, lineno
                if label < 0 and not neg_line:
                    neg_line = lineno
    if not count:
        raise DataError(f"list file is empty: {path}")

    def check(labels: list[str]) -> None:
        if neg_line:
            raise DataError(f"{path}:{neg_line}: a negative label; labels are class indices 0..{len(labels) - 1}")
        if max_label >= len(labels):
            raise DataError(f"{path}:{max_line}: label {max_label}, but the bundle has {len(labels)} labels "
                            f"(0..{len(labels) - 1} in labels.txt): mismatched label file")

    def items(labels: list[str]) -> Iterator[Item]:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    name, label = _parse_list_line(line)
                    yield Item(name if os.path.isabs(name) else os.path.join(base, name), label)

    return Sources("list", path, count, items, labelled, check)


def _class_folders(folder: str) -> list[str]:
    # the builder's rule (brewnet dataset create): sorted sub-folders, hidden ones skipped
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))


def _walk_images(folder: str) -> Iterator[str]:
    from ..data.builder import IMAGE_EXTENSIONS

    for root, dirs, files in os.walk(folder):  # the builder's order: sorted folders, sorted files
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                yield os.path.join(root, f)


def sources_from_folder(folder: str) -> Sources:
    """A folder of class sub-folders (images found recursively in each), as ``brewnet dataset
    create`` reads one; each sub-folder's name must be one of the bundle's labels."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"folder not found: {folder}")
    classes = _class_folders(folder)
    if not classes:
        raise DataError(f"{folder}: no class sub-folders (give images by path, or use -list)")
    count = sum(1 for c in classes for _ in _walk_images(os.path.join(folder, c)))

    def check(labels: list[str]) -> None:
        unknown = [c for c in classes if c not in labels]
        if unknown:
            raise DataError(f"{folder}: sub-folder(s) {', '.join(repr(c) for c in unknown)} are not labels of the "
                            f"bundle ({', '.join(labels)})")

    def items(labels: list[str]) -> Iterator[Item]:
        index = {name: i for i, name in enumerate(labels)}
        for c in classes:
            for p in _walk_images(os.path.join(folder, c)):
                yield Item(p, index[c])

    return Sources("folder", folder, count, items, True, check)


def sources_from_lmdb(path: str) -> Sources:
    """The Datum records of an LMDB in key order (as Caffe's Data layer reads them), with their
    labels; each item's source is ``path:key``."""
    from ..data.lmdb_io import count_records, iter_records

    path = os.fspath(path)
    count = count_records(path)  # DataError when it is no LMDB
    encoded = False
    if count:  # the first record says whether the images are encoded (Caffe's Data layer too)
        from ..data.lmdb_io import read_datums
        encoded = bool(next(read_datums(path, limit=1))[1].encoded)

    def items(labels: list[str]) -> Iterator[Item]:
        for key, value in iter_records(path, MAP_WINDOW):  # a reopened map: RSS stays flat
            yield Item(f"{path}:{key.decode('ascii', 'replace')}", None, value)

    return Sources("lmdb", path, count, items, True, decodes=encoded)


def _as_sources(sources) -> Sources:
    if isinstance(sources, Sources):
        return sources
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    return sources_from_images(sources)


# ----- the bundle, loaded ---------------------------------------------------------------------------
class LoadedBundle:
    """A bundle with its net built and weights loaded, ready to score batches (reuse it across
    :func:`classify` calls: the web app's worker keeps one).

    ``batch``: images per forward (default: the deploy Input's batch, the shape validation ran
    in, or 64 when that is 1).  ``scores(x)`` returns class probabilities.
    """

    def __init__(self, bundle: Bundle | str, device=None, batch: int | None = None):
        import torch

        self.bundle = bundle if isinstance(bundle, Bundle) else Bundle.load(bundle)
        self.preprocessor = Preprocessor.from_bundle(self.bundle)
        self.device = torch.device(device) if device is not None else None
        self.net = self.bundle.net(device=self.device)
        spec = self.bundle.preprocess
        self.input = spec["input"]
        where = f"{self.bundle.path}/deploy.prototxt"
        if self.input not in self.net.inputs:
            raise BundleError(f"{where}: preprocess.json's input blob '{self.input}' is not an input of the net "
                              f"(inputs: {', '.join(self.net.inputs) or 'none'})")
        shape = tuple(self.net.blobs[self.input].shape)
        if tuple(shape[1:]) != self.preprocessor.input_shape:
            raise BundleError(f"{where}: the net's input '{self.input}' is {list(shape[1:])} per image, "
                              f"preprocess.json makes {list(self.preprocessor.input_shape)}")
        if batch is not None and batch < 1:
            raise BrewnetError(f"batch must be at least 1, got {batch}")
        self.batch = int(batch or (shape[0] if shape[0] > 1 else DEFAULT_BATCH))
        self.output, self.apply_softmax = self._pick_output()
        self._batch_now = 0
        labels = list(self.bundle.labels)
        self._reshape(1)
        k = int(np.prod(self.net.blobs[self.output].shape[1:]))
        if labels and len(labels) != k:
            raise BundleError(f"{self.bundle.path}/labels.txt has {len(labels)} labels but the net's output "
                              f"'{self.output}' has {k} scores per image: mismatched label file")
        self.labels = labels or [str(i) for i in range(k)]

    def _pick_output(self) -> tuple[str, bool]:
        """The probabilities: the top of a Softmax that is a net output; else the only output,
        with a softmax applied here."""
        producer = {t: layer for layer in self.net.layers for t in layer.param.top}
        soft = [o for o in self.net.outputs if o in producer and producer[o].type == "Softmax"]
        if soft:
            return soft[-1], False
        if len(self.net.outputs) == 1:
            return self.net.outputs[0], True
        raise BundleError(f"{self.bundle.path}/deploy.prototxt: several outputs ({', '.join(self.net.outputs)}) "
                          "and none made by a Softmax layer; which one holds the class scores?")

    def _reshape(self, n: int) -> None:
        if n != self._batch_now:
            c, h, w = self.preprocessor.input_shape
            self.net.blobs[self.input].reshape(n, c, h, w)
            self.net.reshape()
            self._batch_now = n

    def scores(self, x: np.ndarray) -> np.ndarray:
        """(n, C, h, w) transformed input -> (n, K) float32 probabilities.

        Runs the net on min(``self.batch``, n) images at a time; a short last batch is padded with
        zeros (images do not mix in a TEST net), so every forward of a call has the same shape.
        """
        import torch

        n = x.shape[0]
        out = np.empty((n, len(self.labels)), dtype=np.float32)
        for s in range(0, n, self.batch):
            part = x[s:s + self.batch]
            self._reshape(min(self.batch, n))
            blob = self.net.blobs[self.input].data  # (B, C, h, w), the blob's own storage
            blob[:part.shape[0]] = part
            blob[part.shape[0]:] = 0
            with torch.inference_mode():
                res = self.net.forward()[self.output]
            probs = res.reshape(res.shape[0], -1)[:part.shape[0]]  # (n_part, K)
            if self.apply_softmax:
                probs = torch.softmax(torch.from_numpy(np.array(probs, dtype=np.float32)), dim=1).numpy()
            out[s:s + part.shape[0]] = probs
        return out

    def input_of(self, path: str) -> np.ndarray:
        """One image file as the net's float32 (C, h, w) input."""
        return self.preprocessor(path)


# ----- results --------------------------------------------------------------------------------------
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
    - predictions, unless ``summary_only``: ``iter_predictions()`` streams
      ``{source, top: [[label, prob], ...], label?}`` from a temporary file.
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
    _spill: object = field(default=None, repr=False)

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


# ----- decoding in workers --------------------------------------------------------------------------
_WORKER_PRE: Preprocessor | None = None  # a process worker's own Preprocessor


def _init_process_worker(spec: dict, mean: np.ndarray | None) -> None:
    global _WORKER_PRE
    logging.getLogger("brewnet").setLevel(logging.ERROR)  # the parent reports conversions
    import torch  # already imported by the parent; one thread, as DataLoader workers run
    torch.set_num_threads(1)
    _WORKER_PRE = Preprocessor(spec, mean, warn=False)


def _decode_one(pre: Preprocessor, item: Item):
    """-> (uint8 C×H×W array, None) or (None, reason)."""
    try:
        if item.data is None:
            return pre.load_file(item.source), None
        from ..data.lmdb_io import parse_datum
        datum = parse_datum(item.data, item.source)
        return pre.datum_to_input(datum, what=item.source), datum.label
    except DataError as e:
        return None, e
    except Exception as e:  # a reason, never a crash of the run
        return None, DataError(f"{item.source}: {type(e).__name__}: {e}")


def _decode_chunk(pre: Preprocessor | None, items: list[Item]):
    """Decode a chunk: [(array or None, datum label / error)], conversions counted meanwhile."""
    pre = pre if pre is not None else _WORKER_PRE
    counts = pre.counting()
    out = [_decode_one(pre, it) for it in items]
    return out, dict(counts), {k: pre.messages.get(k, k) for k in counts}


def _make_pool(kind: str, workers: int, pre: Preprocessor) -> Executor | None:
    if workers <= 0:
        return None
    if kind == "thread":
        return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="brewnet-classify")
    if kind == "process":
        import multiprocessing as mp
        # fork: workers start at once (no re-import of torch) and only decode with Pillow
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_process_worker,
                                   initargs=(pre.spec, pre.mean))
    raise BrewnetError(f"unknown worker kind {kind!r} (thread or process)")


def choose_worker_kind(kind: str, sources: Sources, workers: int) -> str:
    """``"auto"``: processes when there are enough images that need decoding (decoding small
    images is mostly Python, which threads run one at a time: measured on 2 cores, 28x28 JPEGs
    decode at ~6k images/s in one thread, the same in 2 or 4 threads, ~10k in 2 processes) and
    ``fork`` starts them at once; threads otherwise (raw Datums only need a copy, and a few
    images do not pay for starting processes)."""
    if kind != "auto":
        return kind
    import multiprocessing as mp

    if (workers > 0 and sources.decodes and sources.count >= PROCESS_MIN_IMAGES
            and "fork" in mp.get_all_start_methods()):
        return "process"
    return "thread"


def default_workers() -> int:
    """Decode threads by default: as many as cores, at most 4 (the net needs cores too)."""
    return max(1, min(4, os.cpu_count() or 1))


# ----- the run ----------------------------------------------------------------------------------------
def classify(bundle_or_path, sources, *, top: int = 5, batch: int | None = None, workers: int | None = None,
             device=None, progress: Callable[[int, int], None] | None = None, summary_only: bool = False,
             worker_kind: str = "auto",
             on_scores: Callable[[list[str], np.ndarray], None] | None = None) -> ClassifyResult:
    """Classify every image of ``sources`` with a bundle; see the module docstring.

    Args:
        bundle_or_path: a bundle directory, a :class:`Bundle` or a :class:`LoadedBundle`.
        sources: a :class:`Sources` (``sources_from_*``), or image paths.
        top: predictions kept per image (top-N labels with probabilities).
        batch: images per forward (default: see :class:`LoadedBundle`).
        workers: decode workers (default :func:`default_workers`; 0 decodes in this thread).
        device: torch device for the net (default: brewnet's default device).
        progress: called as ``progress(done, total)`` after each batch.
        summary_only: keep only counts and metrics, not per-image predictions.
        worker_kind: ``"thread"``, ``"process"`` or ``"auto"`` (:func:`choose_worker_kind`).
        on_scores: called with each batch's sources and (n, K) probabilities (e.g. a
            :class:`TopImages` keeping the most confident images per class).
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
    src = _as_sources(sources)
    labels = loaded.labels
    k = len(labels)
    items = src.items(labels)  # checks the source's labels against the bundle first
    pre = loaded.preprocessor
    warn_before, pre.warn = pre.warn, False  # this run reports conversions itself, once per kind
    result = ClassifyResult(labels=labels, top_n=min(top, k), summary_only=summary_only,
                            confusion=np.zeros((k, k), dtype=np.int64),
                            conversions={key: 0 for key in pre.conversions})
    if not summary_only:
        result._spill = tempfile.TemporaryFile("w+", encoding="utf-8", prefix="brewnet-classify-")
    workers = default_workers() if workers is None else int(workers)
    worker_kind = choose_worker_kind(worker_kind, src, workers)
    pool = _make_pool(worker_kind, workers, pre)
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
        _record(result, probs, meta, k)
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
        chunks = iter(lambda: list(itertools.islice(items, CHUNK)), [])
        if pool is None:
            for chunk in chunks:
                out, delta, msgs = _decode_chunk(pre, chunk)
                take(zip(out, chunk), delta, msgs)
        else:
            # a bounded window of chunks in flight: decoding runs ahead of the net by a few
            # batches, never more (memory stays flat)
            in_flight: deque = deque()
            limit = max(2, 2 * workers)
            shared = pre if worker_kind == "thread" else None
            for chunk in chunks:
                in_flight.append((pool.submit(_decode_chunk, shared, chunk), chunk))
                while len(in_flight) >= limit:
                    fut, ch = in_flight.popleft()
                    out, delta, msgs = fut.result()
                    take(zip(out, ch), delta, msgs)
            while in_flight:
                fut, ch = in_flight.popleft()
                out, delta, msgs = fut.result()
                take(zip(out, ch), delta, msgs)
        flush()
    except BaseException:
        result.close()
        raise
    finally:
        pre.warn = warn_before
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    result.elapsed_s = time.perf_counter() - t0
    return result


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


def load_source_image(source: str):
    """A Pillow image of a classified source, for thumbnails: an image file, or an LMDB record
    named ``path:key`` (its Datum decoded; colour shown in RGB)."""
    from PIL import Image

    if os.path.isfile(source):
        return Image.open(source)
    path, _, key = source.rpartition(":")
    from ..data.image import datum_to_chw
    from ..data.lmdb_io import parse_datum, read_record

    chw = datum_to_chw(parse_datum(read_record(path, key), key), what=source)  # (C, H, W), BGR
    chw = np.asarray(chw, dtype=np.uint8)
    if chw.shape[0] == 1:
        return Image.fromarray(chw[0])
    return Image.fromarray(np.ascontiguousarray(chw[::-1].transpose(1, 2, 0)))


def _record(result: ClassifyResult, probs: np.ndarray, meta: list[tuple[str, int | None]], k: int) -> None:
    """Add a batch's (n, K) probabilities to the result: counts, confusion, top-k, predictions."""
    n = probs.shape[0]
    order = np.argsort(-probs, axis=1, kind="stable")  # (n, K); ties keep the lower class first
    result.count += n
    labels = np.array([-1 if lab is None else lab for _, lab in meta], dtype=np.int64)
    has = labels >= 0
    if has.any():
        t = labels[has]
        ranked = order[has]
        result.labelled += int(has.sum())
        result.correct1 += int((ranked[:, 0] == t).sum())
        result.correct5 += int((ranked[:, :min(5, k)] == t[:, None]).any(axis=1).sum())
        np.add.at(result.confusion, (t, ranked[:, 0]), 1)
    f = result._spill
    if f is None:
        return
    names = result.labels
    top = order[:, :result.top_n]
    lines = []
    for i, (source, lab) in enumerate(meta):
        rec = {"source": source, "top": [[names[j], float(probs[i, j])] for j in top[i]]}
        if lab is not None:
            rec["label"] = names[lab]
        lines.append(json.dumps(rec))
    f.write("\n".join(lines) + "\n")
