"""Inference for the server: deploy bundles of a model job's snapshots, DIGITS' download archives,
and classify-one in a worker process.

- :func:`ensure_bundle` makes ``<model dir>/bundles/iter_N/`` (brewnet.inference.deploy's
  :func:`~brewnet.inference.deploy.write_bundle` of ``train_val.prototxt`` and
  ``snapshot_iter_N.caffemodel``, the dataset's ``labels.txt``) once: built in a temporary
  directory inside ``bundles/`` and renamed into place, under a lock file, so concurrent callers
  (threads, the worker, a classify job's ``brewnet deploy``) never see half a bundle and build
  it once.
- :func:`bundle_archive` writes DIGITS' flat download archive ``<id>_epoch_<E>.<ext>``
  (solver/train_val/deploy/original prototxt, labels.txt, mean.binaryproto, the snapshot,
  info.json, plus the bundle's preprocess.json), cached per iteration, extension and info;
  deploy.prototxt with net-level inputs and mean.binaryproto with legacy dims, the forms DIGITS
  writes and its examples/classification scripts read.
- :class:`InferencePool` runs classification (and a generic net's infer-one: every output
  blob) in one ``spawn``ed worker process that keeps the loaded bundles; the event loop awaits
  it with ``asyncio.wrap_future`` and never blocks (torch is never imported by the server
  process for this).  The worker ends when the server dies,
  SIGKILL included (brewnet.child_processes.end_with_parent).
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import io
import json
import logging
import math
import multiprocessing
import os
import shutil
import tarfile
import tempfile
import threading
import time
import zipfile
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from google.protobuf import text_format

from .. import formats
from ..child_processes import end_with_parent
from .errors import ApiError
from .jobs.epochs import epoch_of_iteration
from .jobs.progress import METRICS_FILE
from .jobs.tasks import PYTHON_LAYER_DIR

log = logging.getLogger("brewnet.server")

#: DIGITS' download extensions -> how to write them
ARCHIVE_FORMATS = {"tar": "w", "tar.gz": "w:gz", "tgz": "w:gz", "tar.bz2": "w:bz2", "zip": "zip"}
#: the archives' form, part of their cache key: archives cached in an older form are rebuilt
#: (2: deploy.prototxt with net-level inputs, mean.binaryproto with legacy dims)
ARCHIVE_FORM = 2
#: the model job's files that go into the archive when present: DIGITS' name -> where the job
#: keeps it (an uploaded Python layer file lives in the job's python_layers/ folder)
MODEL_FILES = {name: name for name in ("solver.prototxt", "train_val.prototxt", "deploy.prototxt",
                                       "original.prototxt")}
MODEL_FILES["digits_python_layers.py"] = f"{PYTHON_LAYER_DIR}/digits_python_layers.py"
#: bundles a worker keeps loaded (least recently used ones are dropped)
WORKER_CACHE = 4


# ----- bundles ----------------------------------------------------------------------------------
def bundle_path(model_dir: str | os.PathLike, iteration: int) -> Path:
    """Where the bundle of snapshot ``iteration`` lives: ``<model dir>/bundles/iter_N``."""
    return Path(model_dir) / "bundles" / f"iter_{int(iteration)}"


def _is_complete(bundle: Path) -> bool:
    # write_bundle writes info.json with the rest and renames the whole directory into place
    return (bundle / "info.json").is_file() and (bundle / "preprocess.json").is_file()


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive ``flock`` on ``path`` (created if needed): one builder at a time, across
    threads (each opens its own descriptor) and processes."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _snapshot(model_dir: Path, iteration: int) -> Path:
    weights = model_dir / f"snapshot_iter_{int(iteration)}.caffemodel"
    if not weights.is_file():
        raise ApiError(404, f"Model {model_dir.name} has no snapshot at iteration {int(iteration)}")
    return weights


def ensure_bundle(model_dir: str | os.PathLike, iteration: int, dataset_dir: str | os.PathLike | None) -> Path:
    """The deploy bundle of the model job's snapshot ``iteration``, made if missing; returns
    ``<model dir>/bundles/iter_N``.

    Raises ApiError 404 when the snapshot or ``train_val.prototxt`` is missing, 500 when
    brewnet deploy cannot make a bundle of them (the message says why)."""
    from ..errors import BrewnetError
    from ..inference.deploy import write_bundle

    model_dir = Path(model_dir)
    target = bundle_path(model_dir, iteration)
    if _is_complete(target):
        return target
    weights = _snapshot(model_dir, iteration)
    train_val = model_dir / "train_val.prototxt"
    if not train_val.is_file():
        raise ApiError(404, f"Model {model_dir.name} has no train_val.prototxt")
    generic = _is_generic(model_dir)
    # a generic model's bundle takes its dataset's facts (C1 folder), no class labels file
    labels = Path(dataset_dir) / "labels.txt" if dataset_dir and not generic else None
    bundles = target.parent
    bundles.mkdir(parents=True, exist_ok=True)
    with _locked(bundles / f".{target.name}.lock"):
        if _is_complete(target):  # another caller built it while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.build-", dir=bundles))
        try:
            built = write_bundle(str(train_val), str(weights), str(tmp / target.name),
                                 labels=str(labels) if labels is not None and labels.is_file() else None,
                                 name=f"{model_dir.name} iteration {int(iteration)}",
                                 metrics=model_dir / METRICS_FILE,
                                 dataset=str(dataset_dir) if generic and dataset_dir else None)
            if target.exists():  # an incomplete leftover (the lock makes a finished one impossible)
                shutil.rmtree(target, ignore_errors=True)
            try:
                os.rename(built, target)
            except OSError:
                # a builder outside the lock (`brewnet deploy -output`) won the race: keep theirs
                if not _is_complete(target):
                    raise
        except BrewnetError as e:
            raise ApiError(500, f"Could not make the deploy bundle of iteration {int(iteration)}: {e}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


# ----- download archives ------------------------------------------------------------------------
def _epoch(model_dir: Path, iteration: int) -> int | float:
    """DIGITS' epoch of a snapshot, from plan.json's max_iter and train_epochs
    (jobs.epochs.epoch_of_iteration); the iteration
    itself when the plan does not say."""
    try:
        plan = json.loads((model_dir / "plan.json").read_text(encoding="utf-8"))
        epochs, max_iter = float(plan["train_epochs"]), int(plan["max_iter"])
    except (OSError, ValueError, KeyError, TypeError):
        return int(iteration)
    if max_iter <= 0:
        return int(iteration)
    return epoch_of_iteration(int(iteration), {"max_iter": max_iter}, epochs)


def archive_name(model_id: str, epoch: int | float, ext: str) -> str:
    """DIGITS' download name ``<id>_epoch_<E>.<ext>``."""
    return f"{model_id}_epoch_{epoch}.{ext}"


def _is_generic(model_dir: Path) -> bool:
    """A generic model job (plan.json's ``kind``, digits/generic_model_files.py)."""
    try:
        return json.loads((Path(model_dir) / "plan.json").read_text(encoding="utf-8")).get("kind") == "generic"
    except (OSError, ValueError, AttributeError):
        return False


def _members(model_dir: Path, iteration: int, dataset_dir: Path | None,
             bundle: Path) -> dict[str, Path | bytes]:
    """archive name -> file (or its contents in DIGITS' form), flat, in DIGITS' order; a
    generic model's has no labels.txt (DIGITS' generic download holds none) and its mean is
    the bundle's (a C1 dataset keeps it in train_db/)."""
    out: dict[str, Path | bytes] = {}
    generic = _is_generic(model_dir)
    for name, stored in MODEL_FILES.items():
        p = model_dir / stored
        if p.is_file():
            out[name] = p
        elif name == "deploy.prototxt" and (bundle / name).is_file():
            out[name] = bundle / name  # a custom net without its own deploy file: the bundle's
    for name in ("mean.binaryproto",) if generic else ("labels.txt", "mean.binaryproto"):
        p = dataset_dir / name if dataset_dir is not None and not generic else None
        if p is not None and p.is_file():
            out[name] = p
        elif (bundle / name).is_file():
            out[name] = bundle / name
    out[f"snapshot_iter_{int(iteration)}.caffemodel"] = _snapshot(model_dir, iteration)
    out["preprocess.json"] = bundle / "preprocess.json"
    for name in ("deploy.prototxt", "mean.binaryproto"):
        if name in out:
            out[name] = _in_digits_form(name, out[name])
    return out


def _in_digits_form(name: str, path: Path) -> Path | bytes:
    """deploy.prototxt with net-level inputs and mean.binaryproto with legacy dims, as DIGITS
    writes them and its example scripts read them (``path`` itself when it already is so, or
    when it cannot be read: the download still holds the job's file, and the log says why)."""
    from ..errors import BrewnetError
    from ..inference.digits_files import legacy_mean_blob, net_level_inputs
    from ..proto import caffe_pb2

    try:
        if name == "deploy.prototxt":
            net = formats.read_prototxt(path)
            digits = net_level_inputs(net)
            return path if digits == net else text_format.MessageToString(digits).encode("utf-8")
        blob = formats.read_binary(path, caffe_pb2.BlobProto)
        if all(blob.HasField(d) for d in ("num", "channels", "height", "width")) and not blob.HasField("shape"):
            return path
        from ..data.transformer import load_mean
        return legacy_mean_blob(load_mean(str(path), where=name)).SerializeToString()
    except BrewnetError as e:
        log.warning("download: %s goes into the archive as it is, not in DIGITS' form: %s", path, e)
        return path


def bundle_archive(model_dir: str | os.PathLike, iteration: int, dataset_dir: str | os.PathLike | None,
                   ext: str, info: dict, *, epoch: int | float | None = None) -> Path:
    """DIGITS' download of snapshot ``iteration``: a flat archive of solver.prototxt,
    train_val.prototxt, deploy.prototxt, original.prototxt, labels.txt, mean.binaryproto,
    snapshot_iter_N.caffemodel, digits_python_layers.py (if any) and info.json (``info``, the
    model's short JSON), plus the bundle's preprocess.json; returns its path, named
    ``<id>_epoch_<E>.<ext>`` (``epoch`` default: from plan.json).

    ``ext``: tar, tar.gz, tgz, tar.bz2 or zip, else ApiError 400.  Written to a temporary file
    and renamed; kept under ``bundles/archives/`` and reused while the snapshot, extension and
    ``info`` are the same."""
    if ext not in ARCHIVE_FORMATS:
        raise ApiError(400, f"Unsupported archive extension '{ext}': use one of "
                            f"{', '.join(ARCHIVE_FORMATS)}")
    model_dir = Path(model_dir)
    dataset_dir = Path(dataset_dir) if dataset_dir else None
    bundle = ensure_bundle(model_dir, iteration, dataset_dir)
    members = _members(model_dir, iteration, dataset_dir, bundle)
    info_bytes = (json.dumps(info, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")
    key = hashlib.sha256(info_bytes + f"|{int(iteration)}|{ext}|{ARCHIVE_FORM}".encode()).hexdigest()[:16]
    name = archive_name(model_dir.name, _epoch(model_dir, iteration) if epoch is None else epoch, ext)
    folder = model_dir / "bundles" / "archives" / key
    target = folder / name
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with formats.atomic_path(target) as tmp:  # the one atomic write: fsynced, renamed into place
        _write_archive(tmp, ARCHIVE_FORMATS[ext], members, info_bytes)
    _prune_archives(folder.parent, keep=folder, name=name)
    return target


def _write_archive(path: str | os.PathLike, mode: str, members: dict[str, Path | bytes], info_bytes: bytes) -> None:
    if mode == "zip":
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
            for arcname, p in members.items():
                if isinstance(p, bytes):
                    z.writestr(arcname, p)
                else:
                    z.write(p, arcname)
            z.writestr("info.json", info_bytes)
        return

    def add_bytes(tar, arcname: str, data: bytes) -> None:
        ti = tarfile.TarInfo(arcname)
        ti.size, ti.mtime, ti.mode = len(data), int(time.time()), 0o644
        tar.addfile(ti, io.BytesIO(data))

    with tarfile.open(path, mode) as tar:
        for arcname, p in members.items():
            if isinstance(p, bytes):
                add_bytes(tar, arcname, p)
            else:
                tar.add(str(p), arcname=arcname, recursive=False)
        add_bytes(tar, "info.json", info_bytes)


def _prune_archives(root: Path, keep: Path, name: str) -> None:
    """Drop older archives of the same download (another info.json): snapshots are large."""
    for other in root.glob(f"*/{name}"):
        if other.parent != keep:
            with contextlib.suppress(OSError):
                other.unlink()
                other.parent.rmdir()


# ----- the worker process -----------------------------------------------------------------------
_cache: "OrderedDict[str, tuple[float, object]]" = OrderedDict()
_device = None


def _init_worker(device: str | None, server_pid: int) -> None:
    """Runs once in the spawned worker: it ends when the server dies, however the server dies
    (a SIGKILLed server leaves no worker holding its memory); its device.  One torch thread
    per worker would starve a single classify, so torch keeps its default."""
    global _device
    end_with_parent(server_pid)
    _device = device


@contextlib.contextmanager
def _model_modules(python_path: tuple[str, ...]):
    """Within: ``python_path`` (a model's Python layer folders) first on the worker's module
    path.  The worker serves every model, and models' own layer files share one module name
    (``digits_python_layers``), so the modules of those folders are forgotten before and after:
    each model's net imports its own file, and a loaded net keeps the classes it made."""
    if not python_path:
        yield
        return
    import sys

    names = {f.stem for folder in python_path for f in Path(folder).glob("*.py")}

    def forget() -> None:
        for name in names:
            sys.modules.pop(name, None)

    forget()
    sys.path[:0] = list(python_path)
    try:
        yield
    finally:
        for folder in python_path:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
        forget()


def _cached(key: str, bundle_dir: str, python_path: tuple[str, ...], make):
    """The worker's loaded net of ``bundle_dir`` under ``key``, made by ``make()`` once (again
    if the bundle was replaced: info.json's mtime changed); its Python layers import from
    ``python_path``."""
    stamp = os.stat(os.path.join(bundle_dir, "info.json")).st_mtime
    hit = _cache.get(key)
    if hit is not None and hit[0] == stamp:
        _cache.move_to_end(key)
        return hit[1]
    with _model_modules(python_path):
        loaded = make()
    _cache[key] = (stamp, loaded)
    _cache.move_to_end(key)
    while len(_cache) > WORKER_CACHE:
        _cache.popitem(last=False)
    return loaded


def _loaded(bundle_dir: str, python_path: tuple[str, ...] = ()):
    """The worker's LoadedBundle (classification) of ``bundle_dir`` (see :func:`_cached`)."""
    from ..inference.loaded import LoadedBundle

    return _cached(bundle_dir, bundle_dir, python_path, lambda: LoadedBundle(bundle_dir, device=_device, batch=1))


def _generic_loaded(bundle_dir: str, dont_resize: bool, python_path: tuple[str, ...] = ()):
    """The worker's GenericBundle (every output blob) of ``bundle_dir`` (see :func:`_cached`);
    one per ``dont_resize``, which decides how images are prepared."""
    from ..inference.infer import GenericBundle

    return _cached(f"{bundle_dir}|generic|{int(dont_resize)}", bundle_dir, python_path,
                   lambda: GenericBundle(bundle_dir, device=_device, batch=1, dont_resize=dont_resize))


def _visualizations(loaded, x, vis_dir: str) -> list[dict]:
    """Per-blob activations and per-layer weights of one image: PNG paths relative to
    ``vis_dir`` with their statistics (brewnet.inference.visualize writes them and
    visualization.json, the full detail)."""
    from ..inference.visualize import visualize_net

    info = visualize_net(loaded.net, x, vis_dir, input_name=loaded.input)
    loaded.input_reshaped()  # visualize_net reshaped the input: scores() reshapes again

    def stats(st: dict) -> dict:
        return {k: st.get(k) for k in ("shape", "mean", "std", "min", "max", "histogram")}

    out = []
    for b in info["blobs"]:
        out.append({"name": b["name"], "kind": "activation", "layer": (b["produced_by"] or [None])[-1],
                    **stats(b["stats"]), "image": b["image"]["path"]})
    for layer in info["layers"]:
        for w in layer["weights"]:
            out.append({"name": f"{layer['name']}/{w['name']}", "kind": "weights", "layer": layer["name"],
                        "label": w["label"], "role": w["role"], **stats(w["stats"]),
                        "image": w["image"]["path"]})
    return out


def _classify_one(bundle_dir: str, image_path: str, top: int, visualize: bool, vis_dir: str | None,
                  python_path: tuple[str, ...] = ()) -> dict:
    """Worker side of :meth:`InferencePool.classify_one`.  Errors come back as
    ``{"error": [status, message]}`` (ApiError does not survive pickling)."""
    from ..errors import BrewnetError, DataError

    try:
        loaded = _loaded(bundle_dir, python_path)
        try:
            stored = loaded.preprocessor.load_file(image_path)  # (C, H, W) uint8 at the stored size
        except DataError as e:
            return {"error": [400, f"Could not read image: {e}"]}
        x = loaded.preprocessor.transform(stored[None])[0]  # (C, h, w) float32, the net's input
        probs = loaded.scores(x[None])[0]  # (K,)
        order = sorted(range(len(probs)), key=lambda i: -float(probs[i]))[:max(1, int(top))]
        result: dict = {"predictions": [[loaded.labels[i], round(100.0 * float(probs[i]), 2)] for i in order]}
        if visualize:
            result["visualizations"] = _visualizations(loaded, x, vis_dir)
            result["visualization_dir"] = vis_dir
        if any(not math.isfinite(p[1]) for p in result["predictions"]):
            return {"error": [500, "the net gave non-finite scores for this image"]}
        return result
    except (BrewnetError, OSError) as e:
        return {"error": [500, f"Inference failed: {e}"]}


def _infer_one(bundle_dir: str, image_path: str, dont_resize: bool, python_path: tuple[str, ...] = ()) -> dict:
    """Worker side of :meth:`InferencePool.infer_one`; errors as for :func:`_classify_one`."""
    import numpy as np

    from ..errors import BrewnetError
    from ..inference.infer import infer_images

    try:
        loaded = _generic_loaded(bundle_dir, dont_resize, python_path)
        stream = infer_images(loaded, [image_path], dont_resize=dont_resize, workers=0)
        try:
            got = next(stream, None)
        finally:
            stream.close()
        if got is None:
            why = stream.errors[0]["error"] if stream.errors else "it gave no result"
            return {"error": [400, f"Could not read image: {why}"]}
        _, outputs = got
        if not all(np.isfinite(v).all() for v in outputs.values()):
            return {"error": [500, "the net gave non-finite outputs for this image"]}
        return {"outputs": {b: np.asarray(v)[None] for b, v in outputs.items()}}   # DIGITS keeps the batch axis
    except (BrewnetError, OSError) as e:
        return {"error": [500, f"Inference failed: {e}"]}


def _ensure_bundle_worker(model_dir: str, iteration: int, dataset_dir: str | None,
                          python_path: tuple[str, ...] = ()) -> dict:
    try:
        with _model_modules(python_path):
            return {"path": str(ensure_bundle(model_dir, iteration, dataset_dir))}
    except ApiError as e:
        return {"error": [e.status, e.message]}


class InferencePool:
    """Classification in ``workers`` spawned processes (default one) that keep loaded bundles;
    the coroutines await them without blocking the event loop.  A worker that dies (killed,
    out of memory) is replaced on the next call and that call answers ApiError 500."""

    def __init__(self, workers: int = 1, device: str | None = None):
        self.workers = max(1, int(workers))
        self.device = device
        self._lock = threading.Lock()
        self._executor: ProcessPoolExecutor | None = None

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                # spawn: a fork of a server with threads (uvicorn, the scheduler) may deadlock.
                # Workers are started by submit(), i.e. from the event loop's thread, which lives
                # as long as the server: the thread PR_SET_PDEATHSIG follows (child_processes)
                self._executor = ProcessPoolExecutor(
                    max_workers=self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker, initargs=(self.device, os.getpid()))
            return self._executor

    async def _run(self, fn, *args) -> dict:
        pool = self._pool()
        try:
            result = await asyncio.wrap_future(pool.submit(fn, *args))
        except BrokenProcessPool:
            with self._lock:
                if self._executor is pool:
                    self._executor = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise ApiError(500, "Inference failed: the inference worker process died") from None
        if "error" in result:
            status, message = result["error"]
            raise ApiError(int(status), message)
        return result

    async def classify_one(self, bundle_dir: str | os.PathLike, image_path: str | os.PathLike, top: int = 5,
                           visualize: bool = False, vis_dir: str | os.PathLike | None = None,
                           python_path: list[str] | tuple[str, ...] = ()) -> dict:
        """DIGITS' classify_one answer for one image: ``{"predictions": [[label, conf %], ...]}``
        (at most ``top``, descending, ``round(100·p, 2)``).  With ``visualize``, per-layer
        visualisations written into ``vis_dir`` (required then): ``"visualizations"``, a list of
        {name, kind (activation/weights), layer, shape, mean, std, min, max, histogram, image
        (a PNG path relative to vis_dir)}, and ``visualization.json`` there with the details.

        ``python_path``: the folders the model's Python layers import from (its own
        ``python_layers/``, the server's folder), tasks.python_path's answer for the model.

        An unreadable image: ApiError 400 "Could not read image: ..."; a bundle or net failure:
        ApiError 500."""
        if visualize and vis_dir is None:
            raise ValueError("classify_one(visualize=True) needs vis_dir, where the PNGs go")
        return await self._run(_classify_one, os.fspath(bundle_dir), os.fspath(image_path), int(top),
                               bool(visualize), os.fspath(vis_dir) if vis_dir is not None else None,
                               tuple(python_path))

    async def infer_one(self, bundle_dir: str | os.PathLike, image_path: str | os.PathLike,
                        dont_resize: bool = False, python_path: list[str] | tuple[str, ...] = ()) -> dict:
        """Every output blob of a (generic) bundle's net for one image: ``{blob: ndarray of shape
        (1, ...)}`` (DIGITS' infer_one keeps the batch axis), in the deploy net's output order;
        ``dont_resize``: the image keeps its size (DIGITS' "do not resize").  An unreadable image:
        ApiError 400 "Could not read image: ..."; a net failure or non-finite outputs: ApiError 500."""
        result = await self._run(_infer_one, os.fspath(bundle_dir), os.fspath(image_path), bool(dont_resize),
                                 tuple(python_path))
        return result["outputs"]

    async def ensure_bundle(self, model_dir: str | os.PathLike, iteration: int,
                            dataset_dir: str | os.PathLike | None,
                            python_path: list[str] | tuple[str, ...] = ()) -> Path:
        """:func:`ensure_bundle` run in the worker (building a bundle loads the net: seconds);
        ``python_path`` as for :meth:`classify_one`."""
        result = await self._run(_ensure_bundle_worker, os.fspath(model_dir), int(iteration),
                                 os.fspath(dataset_dir) if dataset_dir else None, tuple(python_path))
        return Path(result["path"])

    def close(self) -> None:
        """Stop the worker (pending calls are cancelled)."""
        with self._lock:
            pool, self._executor = self._executor, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
