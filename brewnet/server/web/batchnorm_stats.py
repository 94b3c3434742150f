"""BatchNorm health of a model job for its page: statistics read from its snapshots, and the
train-vs-global-statistics gap that ``brewnet doctor`` measures.

Training records no BatchNorm statistics over time, but every snapshot holds them, so:

- :func:`running_stats`: for each ``snapshot_iter_N.caffemodel`` of the job, per BatchNorm layer,
  the mean over channels of its running mean and of its running variance -- the statistics as
  Caffe uses them (the accumulators divided by the scale factor blob, 0 when the factor is 0;
  :func:`brewnet.formats.batchnorm_layouts.detect` also reads NVCaffe's layouts).  Cached in the job's
  ``batchnorm_stats.json``, keyed by snapshot file name and mtime, so each file is read once.
- :func:`gap_state`: :func:`brewnet.batchnorm.doctor.diagnose` of the newest snapshot on a few
  validation batches (the TEST phase of ``train_val.prototxt``, as ``brewnet doctor -model
  train_val.prototxt -weights snapshot`` does): per layer ``||y_batch - y_global|| / ||y_batch||``,
  the mean shift and variance difference, and every Accuracy with global vs batch statistics.
  It runs in a subprocess (``python -m brewnet.server.web.batchnorm_stats gap ...``) started by a
  worker thread, so the server process never loads the net; the answer is cached in the same
  file, keyed by that snapshot's name and mtime.  Until it is there the state says "computing".

Every path is the job directory's own: snapshot files outside it are refused.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ...child_processes import die_with_parent
from ...formats import blob_to_array, read_caffemodel
from ...formats.batchnorm_layouts import detect
from ...proto import caffe_pb2
from ..jobs.jobdir import write_json_atomic
from ..jobs.progress import read_plan

CACHE_FILE = "batchnorm_stats.json"
CACHE_VERSION = 1
GAP_BATCHES_MAX = 10      # validation batches the gap is measured on (at most)
GAP_BATCHES_DEFAULT = 5   # when plan.json does not say how many the validation set has
GAP_TIMEOUT_S = 600.0

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()
_in_flight: dict[str, tuple] = {}       # job dir -> key of the gap being computed
_in_flight_guard = threading.Lock()
#: one measurement at a time in the whole server (each loads a net; trainings run beside it)
_measuring = threading.Semaphore(1)


def _lock(jobdir: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(jobdir), threading.Lock())


def _finite(x: float) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _inside(path: Path, jobdir: Path) -> Path:
    full = Path(path).resolve()
    if full.parent != Path(jobdir).resolve():
        raise ValueError(f"{path} is not a file of the job's directory")
    return full


def _key(path: Path) -> list:
    st = path.stat()
    return [path.name, st.st_mtime_ns, st.st_size]


# ----------------------------------------------------------------------- statistics per snapshot

def layer_stats(caffemodel: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Per BatchNorm layer of a caffemodel, in file order: ``{"mean": mean over channels of the
    running mean, "var": ... of the running variance, "channels", "layout"}`` (statistics as
    Caffe uses them: accumulators / scale factor)."""
    param = read_caffemodel(caffemodel)
    out: dict[str, dict[str, Any]] = {}
    for lp in param.layer:
        if lp.type != "BatchNorm" or not lp.blobs:
            continue
        info = detect([blob_to_array(b) for b in lp.blobs], lp, lp.name)
        out[lp.name] = {"mean": _finite(info.mean.mean()) if info.mean.size else None,
                        "var": _finite(info.var.mean()) if info.var.size else None,
                        "channels": int(info.channels), "layout": info.layout}
    return out


def _read_cache(jobdir: Path) -> dict:
    try:
        d = json.loads((jobdir / CACHE_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"version": CACHE_VERSION, "snapshots": {}, "gap": None}
    if not isinstance(d, dict) or d.get("version") != CACHE_VERSION:
        return {"version": CACHE_VERSION, "snapshots": {}, "gap": None}
    d.setdefault("snapshots", {})
    d.setdefault("gap", None)
    return d


def _write_cache(jobdir: Path, cache: dict) -> None:
    try:
        write_json_atomic(jobdir / CACHE_FILE, cache)
    except (OSError, ValueError):
        pass   # a job being deleted, a full disk: the numbers are computed again next time


def running_stats(jobdir: str | os.PathLike, snapshots: list[dict]) -> dict:
    """The BatchNorm statistics of every snapshot (``snapshots``: the server's snapshot_list,
    ``[{"iteration", "epoch", "path"}]`` ascending):

    ``{"layers": [names in net order], "snapshots": [{"iteration", "epoch", "file",
    "layers": {name: {"mean", "var", "channels", "layout"}}, "error"?}]}``.

    A snapshot read before is taken from the cache when its mtime and size are unchanged."""
    jobdir = Path(jobdir)
    out: list[dict] = []
    names: list[str] = []
    with _lock(jobdir):
        cache = _read_cache(jobdir)
        cached = cache["snapshots"]
        changed = False
        seen = set()
        for snap in snapshots:
            try:
                path = _inside(Path(snap["path"]), jobdir)
                key = _key(path)
            except (OSError, ValueError):
                continue   # removed meanwhile, or not the job's own file
            seen.add(path.name)
            entry = cached.get(path.name)
            if not entry or entry.get("key") != key:
                try:
                    entry = {"key": key, "layers": layer_stats(path)}
                except Exception as e:  # noqa: BLE001 - a damaged file is reported, not raised
                    entry = {"key": key, "layers": {}, "error": f"{type(e).__name__}: {e}"[:300]}
                cached[path.name] = entry
                changed = True
            row = {"iteration": snap["iteration"], "epoch": snap["epoch"], "file": path.name,
                   "layers": entry.get("layers") or {}}
            if entry.get("error"):
                row["error"] = entry["error"]
            out.append(row)
            for name in row["layers"]:
                if name not in names:
                    names.append(name)
        for gone in set(cached) - seen:
            del cached[gone]
            changed = True
        if changed:
            _write_cache(jobdir, cache)
    return {"layers": names, "snapshots": out}


# ----------------------------------------------------------------------- the doctor's gap

def gap_batches(jobdir: Path) -> int:
    """How many validation batches the gap is measured on: the validation set's (plan.json's
    test_iter), at most :data:`GAP_BATCHES_MAX`."""
    try:
        n = int(read_plan(jobdir).get("test_iter") or GAP_BATCHES_DEFAULT)
    except (TypeError, ValueError):
        n = GAP_BATCHES_DEFAULT
    return max(1, min(n, GAP_BATCHES_MAX))


def compute_gap(jobdir: str | os.PathLike, snapshot: str | os.PathLike, batches: int) -> dict:
    """``brewnet doctor``'s report of one snapshot on ``batches`` validation batches (the TEST
    phase of the job's train_val.prototxt), as JSON.  Loads the net: call it in a subprocess
    (:func:`gap_state` does) or in tests."""
    import torch  # the server starts without torch

    from ...batchnorm import doctor  # it imports torch: the server starts without it
    from ...net import Net  # it imports torch: the server starts without it

    jobdir = Path(jobdir)
    snapshot = _inside(Path(snapshot), jobdir)
    net = Net(str(jobdir / "train_val.prototxt"), str(snapshot), caffe_pb2.TEST, dtype=torch.float64)
    if not doctor.batchnorm_layers(net):
        return {"batches": 0, "layers": [], "accuracy_global": {}, "accuracy_batch": {}}
    report = doctor.diagnose(net, doctor.collect_batches(net, batches))
    return {"batches": report.batches,
            "layers": [{"name": r.name, "channels": r.channels, "output_gap": _finite(r.output_gap),
                        "mean_shift_max": _finite(r.mean_shift_max), "mean_shift_avg": _finite(r.mean_shift_avg),
                        "var_rel_max": _finite(r.var_rel_max), "var_rel_median": _finite(r.var_rel_median),
                        "layout": r.layout} for r in report.layers],
            "accuracy_global": {k: _finite(v) for k, v in report.accuracy_global.items()},
            "accuracy_batch": {k: _finite(v) for k, v in report.accuracy_batch.items()}}


def _run_gap_subprocess(jobdir: Path, snapshot: Path, batches: int, timeout_s: float) -> dict:
    """:func:`compute_gap` in a child process on one CPU thread (trainings run beside it);
    ``{"error": ...}`` when it fails."""
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[3])
    env["PYTHONPATH"] = os.pathsep.join([package_parent, *filter(None, [env.get("PYTHONPATH")])])
    env.update({"PYTHONSAFEPATH": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                "CUDA_VISIBLE_DEVICES": ""})
    argv = [sys.executable, "-m", "brewnet.server.web.batchnorm_stats", "gap", str(jobdir), snapshot.name,
            str(batches)]
    kwargs = {"preexec_fn": die_with_parent(os.getpid())} if os.name == "posix" else {}
    try:
        done = subprocess.run(argv, cwd=str(jobdir), env=env, capture_output=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, **kwargs)
    except subprocess.TimeoutExpired:
        return {"error": f"the measurement took longer than {timeout_s:g} s"}
    except OSError as e:
        return {"error": f"could not start the measurement ({type(e).__name__})"}
    lines = done.stdout.decode("utf-8", "replace").strip().splitlines()
    if done.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            pass
    err = [ln for ln in done.stderr.decode("utf-8", "replace").strip().splitlines() if ln.strip()]
    return {"error": (err[-1] if err else f"the measurement ended with status {done.returncode}")[:300]}


def _gap_worker(jobdir: Path, snapshot: Path, key: list, timeout_s: float) -> None:
    try:
        with _measuring:
            result = _run_gap_subprocess(jobdir, snapshot, gap_batches(jobdir), timeout_s)
        result.update({"key": key, "file": snapshot.name, "time": time.time()})
        if jobdir.is_dir():
            with _lock(jobdir):
                cache = _read_cache(jobdir)
                cache["gap"] = result
                _write_cache(jobdir, cache)
    finally:
        with _in_flight_guard:
            if _in_flight.get(str(jobdir)) == tuple(key):
                del _in_flight[str(jobdir)]


def gap_state(jobdir: str | os.PathLike, snapshot: dict | None, start: bool = True,
              timeout_s: float = GAP_TIMEOUT_S) -> dict:
    """The gap of ``snapshot`` (the newest; None: the job has none):

    - ``{"status": "ready", "file", "batches", "layers": [...], "accuracy_global", "accuracy_batch"}``;
    - ``{"status": "error", "file", "error"}`` when the measurement failed for this snapshot;
    - ``{"status": "computing", "file", "previous": <the last result of an older snapshot> | None}``
      while it runs (started here when ``start``, unless it already runs);
    - ``{"status": "none"}`` without a snapshot."""
    if snapshot is None:
        return {"status": "none"}
    jobdir = Path(jobdir)
    try:
        path = _inside(Path(snapshot["path"]), jobdir)
        key = _key(path)
    except (OSError, ValueError):
        return {"status": "none"}
    with _lock(jobdir):
        cached = _read_cache(jobdir).get("gap")
    if cached and cached.get("key") == key:
        out = {k: v for k, v in cached.items() if k != "key"}
        out["status"] = "error" if cached.get("error") else "ready"
        out["iteration"], out["epoch"] = snapshot["iteration"], snapshot["epoch"]
        return out
    with _in_flight_guard:
        running = _in_flight.get(str(jobdir))
        if start and running != tuple(key):
            _in_flight[str(jobdir)] = tuple(key)
            threading.Thread(target=_gap_worker, args=(jobdir, path, key, timeout_s),
                             name=f"bn-gap-{jobdir.name}", daemon=True).start()
    previous = None
    if cached and not cached.get("error"):
        previous = {k: v for k, v in cached.items() if k != "key"}
    return {"status": "computing", "file": path.name, "iteration": snapshot["iteration"],
            "epoch": snapshot["epoch"], "previous": previous}


def batchnorm_json(jobdir: str | os.PathLike, snapshots: list[dict], start_gap: bool = True) -> dict:
    """GET /models/<id>/batchnorm.json: :func:`running_stats` and the newest snapshot's
    :func:`gap_state` (``{"layers", "snapshots", "gap"}``)."""
    stats = running_stats(jobdir, snapshots)
    stats["gap"] = gap_state(jobdir, snapshots[-1] if snapshots else None, start=start_gap)
    return stats


def main(argv: list[str]) -> int:
    """``python -m brewnet.server.web.batchnorm_stats gap JOBDIR SNAPSHOT BATCHES``: the gap as
    one line of JSON on stdout."""
    if len(argv) != 4 or argv[0] != "gap":
        print("usage: python -m brewnet.server.web.batchnorm_stats gap JOBDIR SNAPSHOT BATCHES", file=sys.stderr)
        return 2
    import torch  # the server starts without torch

    torch.set_num_threads(1)
    jobdir = Path(argv[1])
    result = compute_gap(jobdir, jobdir / argv[2], int(argv[3]))
    sys.stdout.write(json.dumps(result, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as e:  # noqa: BLE001 - one line for the server, never a traceback
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
