"""The inference pages: classify one image, classify a list, test a snapshot on a labelled set,
and the page of an inference job (``/jobs/<id>``).

- ``GET /models/<id>/classify``: a model's inference forms on a page of their own (the model page
  includes the same ``model_inference_forms.html``).  "Test a single image" posts DIGITS' form to
  ``/models/images/classification/classify_one``, whose page (``classify_one.html``) shows the
  top 5 and, per blob and per parametrised layer, the image written by
  :func:`brewnet.inference.visualize.visualize_net` with its statistics and histogram (BatchNorm
  as its running mean and variance per channel); in the browser the same page is fetched and
  shown in place.  "Test a list of images", "Top images per class" and "Test a labelled set"
  start jobs over ``/api/v1`` and go to the job's page at once.
- :func:`render_inference_job`: the job's page: progress while it runs (SSE), then the report.
- ``GET /inference/<id>/report.json``: what the job page and ``classify_many.html`` draw
  (:func:`inference_report`): top-1/top-5, confusion matrix, per-class precision/recall/F1,
  misclassified images, top images per class, the per-image predictions.
- ``GET /inference/<id>/images/<n>``: a PNG thumbnail of the job's n-th classified image (an
  image file under a ``--data-root``, or an LMDB record inside the jobs folder; nothing else).
- ``GET /inference/list-file?path=``: a list file under a ``--data-root`` as text, so that the
  "server path" of an image list is sent as the ``image_list`` upload the API takes.
"""
from __future__ import annotations

import io
import json
import os
import threading
from collections import OrderedDict
from pathlib import Path

from fastapi import Query, Request
from fastapi.responses import PlainTextResponse, Response
from PIL import Image

from ..app_state import server_of
from ..errors import ApiError
from ..jobs import states
from ..jobs.jobdir import confine_server_path
from ..threads import in_thread
from . import generic_inference_pages as generic
from .render import page
from .source_images import source_image
from .routers import page_router

router = page_router()

#: misclassified images listed in a report (the total is always given)
MISCLASSIFIED_SHOWN = 200
#: per-image predictions listed in a report
IMAGES_SHOWN = 500
#: the default and largest "top images per class"
TOP_N_DEFAULT, TOP_N_MAX = 9, 100
#: thumbnails are at most this many pixels on their longer side
THUMB_MAX_PX = 128
#: the largest list file read by /inference/list-file
LIST_FILE_MAX_BYTES = 16 * 1024 * 1024


# ----------------------------------------------------------------------- helpers

def _snapshots(server, job) -> list[dict]:
    return [{"iteration": s["iteration"], "epoch": s["epoch"]} for s in server.snapshot_list(job)]


def _done_datasets(server) -> list[dict]:
    return [{"id": j.id, "name": j.name} for j in server.list_jobs(states.DATASET) if j.status == states.DONE]


_cache_lock = threading.Lock()
_result_cache: "OrderedDict[str, tuple[tuple, dict]]" = OrderedDict()
_RESULT_CACHE_SIZE = 4


def _read_result(path: Path) -> dict:
    """result.json of an inference job, parsed once per version of the file (thumbnails of one
    page ask for it many times)."""
    try:
        st = path.stat()
    except OSError:
        raise ApiError(404, "The job has no result yet") from None
    stamp = (st.st_mtime_ns, st.st_size)
    key = str(path)
    with _cache_lock:
        hit = _result_cache.get(key)
        if hit is not None and hit[0] == stamp:
            _result_cache.move_to_end(key)
            return hit[1]
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ApiError(500, f"The job's result cannot be read ({type(e).__name__})") from None
    with _cache_lock:
        _result_cache[key] = (stamp, result)
        while len(_result_cache) > _RESULT_CACHE_SIZE:
            _result_cache.popitem(last=False)
    return result


def _finished_inference(server, job_id: str):
    job = server.get_job(job_id, states.INFERENCE)
    if job.status != states.DONE:
        raise ApiError(409, f"Job {job_id} is {job.status}: its report comes when it is Done")
    return job


def _display_names(server, job) -> dict[str, str]:
    """source -> the name shown: a classify-many's line as listed (DIGITS' key); an LMDB
    record ``<db>:<key>`` as ``<db folder name>:<key>``."""
    try:
        listed = json.loads((server.job_dir(job.id) / "listed.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {full: key for key, full in listed.get("keys") or []}


def _name_of(source: str, names: dict[str, str]) -> str:
    if source in names:
        return names[source]
    if not os.path.isfile(source) and ":" in source:
        db, _, key = source.rpartition(":")
        return f"{Path(db).name}:{key}"
    return source


def _pct(prob) -> float:
    return round(100.0 * float(prob), 2)


def _per_class(labels: list[str], confusion: list[list[int]]) -> list[dict]:
    """Per class: images of the class, images predicted as it, precision, recall, F1 (None
    where undefined: nothing predicted as / nothing of the class)."""
    out = []
    k = len(labels)
    for c in range(k):
        true = sum(confusion[c])
        predicted = sum(confusion[r][c] for r in range(k))
        hit = confusion[c][c]
        precision = hit / predicted if predicted else None
        recall = hit / true if true else None
        f1 = (2 * precision * recall / (precision + recall)
              if precision is not None and recall is not None and precision + recall > 0 else
              (0.0 if precision is not None and recall is not None else None))
        out.append({"label": labels[c], "count": true, "predicted": predicted,
                    "precision": precision, "recall": recall, "f1": f1})
    return out


def _top_images(predictions: list[dict], labels: list[str], top_n: int) -> list[dict]:
    """The ``top_n`` images most confidently given each class, from the predictions' top
    lists (an image whose top list lacks a class does not count for it)."""
    best: dict[str, list[tuple[float, int]]] = {lab: [] for lab in labels}
    for i, p in enumerate(predictions):
        for lab, prob in p.get("top") or []:
            if lab in best:
                best[lab].append((float(prob), i))
    out = []
    for lab in labels:
        ranked = sorted(best[lab], key=lambda e: (-e[0], e[1]))[:top_n]
        out.append({"label": lab, "images": [{"index": i, "prob": _pct(prob)} for prob, i in ranked]})
    return out


def inference_report(server, job, top_n: int = TOP_N_DEFAULT) -> dict:
    """What the pages show of a Done inference job (see the module docstring).  Accuracy,
    confusion and per-class numbers are None/[] when no image had a ground truth."""
    result = _read_result(server.job_dir(job.id) / "result.json")
    spec = job.spec or {}
    labels = list(result.get("labels") or [])
    predictions = result.get("predictions") or []
    names = _display_names(server, job)
    confusion = result.get("confusion")
    top_kept = int(spec.get("top") or 5)

    def entry(i: int, p: dict) -> dict:
        top = p.get("top") or []
        e = {"index": i, "name": _name_of(str(p.get("source")), names),
             "top": [[lab, _pct(prob)] for lab, prob in top[:5]]}
        if p.get("label") is not None:
            e["label"] = p["label"]
        return e

    misclassified = []
    wrong = 0
    for i, p in enumerate(predictions):
        top = p.get("top") or []
        if p.get("label") is None or not top or top[0][0] == p["label"]:
            continue
        wrong += 1
        if len(misclassified) < MISCLASSIFIED_SHOWN:
            e = entry(i, p)
            e["predicted"], e["confidence"] = top[0][0], _pct(top[0][1])
            truth = [prob for lab, prob in top if lab == p["label"]]
            e["label_confidence"] = _pct(truth[0]) if truth else None
            misclassified.append(e)
    model = server.find_job(spec.get("model_id") or job.parent_id or "")
    return {
        "job_id": job.id, "kind": spec.get("kind"), "status": job.status,
        "model": {"id": model.id, "name": model.name} if model is not None else None,
        "iteration": spec.get("iteration"),
        "count": result.get("count", len(predictions)), "labelled": result.get("labelled", 0),
        "top1": result.get("top1"), "top5": result.get("top5"), "top_kept": top_kept,
        "labels": labels,
        "confusion": confusion,
        "per_class": _per_class(labels, confusion) if confusion else [],
        "errors": (result.get("errors") or [])[:50], "error_count": result.get("error_count", 0),
        "elapsed_s": result.get("elapsed_s"), "images_per_s": result.get("images_per_s"),
        "misclassified": misclassified, "misclassified_total": wrong,
        "images": [entry(i, p) for i, p in enumerate(predictions[:IMAGES_SHOWN])],
        "images_total": len(predictions),
        # exact when every image's top list holds every class
        "top_images": {"top_n": top_n, "exact": len(labels) <= top_kept,
                       "classes": _top_images(predictions, labels, top_n)},
    }


# ----------------------------------------------------------------------- thumbnails

def _thumbnail(server, job_id: str, index: int) -> bytes:
    job = _finished_inference(server, job_id)
    predictions = _read_result(server.job_dir(job.id) / "result.json").get("predictions") or []
    if not 0 <= index < len(predictions):
        raise ApiError(404, f"Job {job_id} has no image {index}")
    img = source_image(server, str(predictions[index].get("source")))
    try:
        img.load()
        img = img.convert("L" if img.mode in ("L", "I", "I;16", "F", "1") else "RGB")
        if max(img.size) > THUMB_MAX_PX:
            img.thumbnail((THUMB_MAX_PX, THUMB_MAX_PX), Image.LANCZOS)
        out = io.BytesIO()
        img.save(out, format="PNG")
    except OSError:
        raise ApiError(404, "This image cannot be read any more") from None
    return out.getvalue()


# ----------------------------------------------------------------------- routes

@router.get("/models/{job_id}/classify")
async def model_inference_page(request: Request, job_id: str):
    """A model's inference forms on a page of their own."""
    server = server_of(request)

    def context():
        job = server.get_job(job_id, states.MODEL)
        return {"job": job, "snapshots": _snapshots(server, job), "inference_datasets": _done_datasets(server),
                "data_roots": [str(r) for r in server.config.data_roots]}
    ctx = await in_thread(context)
    return page(request, "model_inference.html", title=f"Inference: {ctx['job'].name}", **ctx)


@router.get("/inference/{job_id}/report.json")
async def report_json(request: Request, job_id: str,
                      top_n: int = Query(TOP_N_DEFAULT, ge=1, le=TOP_N_MAX)):
    server = server_of(request)
    return await in_thread(lambda: inference_report(server, _finished_inference(server, job_id), top_n))


@router.get("/inference/{job_id}/images/{index}")
async def thumbnail(request: Request, job_id: str, index: int):
    data = await in_thread(_thumbnail, server_of(request), job_id, index)
    return Response(data, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/inference/list-file")
async def list_file(request: Request, path: str = Query("", description="a list file under a --data-root")):
    """A list file on the server as text (the page sends it on as the ``image_list`` upload)."""
    server = server_of(request)

    def read() -> str:
        full = confine_server_path(path, server.config.data_roots, "image_list_path")
        if not full.is_file():
            raise ApiError(400, f"No such file: {path}", field="image_list_path")
        if full.stat().st_size > LIST_FILE_MAX_BYTES:
            raise ApiError(400, f"The list is larger than {LIST_FILE_MAX_BYTES // (1024 * 1024)} MB",
                           field="image_list_path")
        try:
            return full.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "The list is not UTF-8 text", field="image_list_path") from None
    return PlainTextResponse(await in_thread(read))


async def render_inference_job(request: Request, job):
    """``/jobs/<id>`` of an inference job: what it classifies, progress while it runs, then the
    report (drawn by inference.js from ``/inference/<id>/report.json``); a generic model's
    finished infer_many / infer_db: its result page (generic_inference_pages)."""
    server = server_of(request)
    if generic.is_generic_job(job):
        done = await generic.render_generic_job(request, job)
        if done is not None:
            return done

    def context():
        spec = job.spec or {}
        model = server.find_job(spec.get("model_id") or job.parent_id or "")
        source = spec.get("source") or {}
        if "lmdb" in source:
            what = f"the {Path(source['lmdb']).name.removesuffix('_db')} split of dataset {job.dataset_id}"
        else:
            listed = server.job_dir(job.id) / "listed.json"
            try:
                n = len(json.loads(listed.read_text(encoding="utf-8")).get("keys") or [])
                what = f"a list of {n} image{'s' if n != 1 else ''}"
            except (OSError, ValueError):
                what = "a list of images"
        return {"job": job, "model": model, "what": what, "kind": spec.get("kind"),
                "iteration": spec.get("iteration"), "error": getattr(job, "error", None)}
    ctx = await in_thread(context)
    top_n = request.query_params.get("top_n", "")
    ctx["top_n"] = int(top_n) if top_n.isdigit() and 1 <= int(top_n) <= TOP_N_MAX else TOP_N_DEFAULT
    return page(request, "inference_job.html", title=job.name, **ctx)
