"""The inference pages of generic models (DIGITS' "Other": regression, image-to-image,
segmentation): the result pages of ``infer_one``, ``infer_many`` and ``infer_db`` with the view
picked by ``view_extension_id`` (:mod:`.generic_views`), and the page of a generic inference job.

- :func:`render_infer_one`: the outputs of one image under the view (``generic_infer.html``).
- :func:`render_infer_job`: a finished ``infer_many`` / ``infer_db`` job: the first
  :data:`ITEMS_SHOWN` items under the view, and for a labelled set (an LMDB of the model's dataset
  with its labels) the evaluation: per-class IoU, mean IoU and pixel accuracy (segmentation), or
  RMSE and MAE with a predicted-vs-true scatter and an error histogram (regression, Plotly).
  While the job runs, ``/jobs/<id>`` shows its progress (inference_job.html) and reloads when done.
- :func:`forms_context`: what ``generic_inference_forms.html`` (the model page's forms for a
  generic model) needs: the views and their config fields, the dataset's LMDBs, a default view.

The server process never loads a net here: outputs come from the worker (infer_one) or the
job's ``.npy`` files; input images and labels are decoded with Pillow and numpy.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image

from ...data.lmdb_io import parse_datum, read_record
from ..app_state import server_of
from ..errors import ApiError
from ..threads import in_thread
from . import generic_views as gv
from .source_images import source_image
from .render import page

#: items shown with their view on a result page (the JSON has them all)
ITEMS_SHOWN = 50
#: labels read for the regression charts (a sample of the set beyond that)
REGRESSION_ITEMS_MAX = 5000
#: the view the model page preselects for a dataset kind (DIGITS' default otherwise: raw data)
KIND_VIEWS = {"segmentation": "image-segmentation", "gradients": "image-gradients",
              "processing": "image-image-output"}


def image_array(path_or_image) -> np.ndarray | None:
    """An input image as H×W×3 uint8 RGB for the views (P/RGBA composed on white, as DIGITS
    loads them), or None when it cannot be read."""
    try:
        im = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
        im.load()
        if im.mode in ("P", "RGBA", "LA", "PA"):
            im = im.convert("RGBA")
            white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(white, im)
        return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError):
        return None


def _label_values(db: str, key: str) -> np.ndarray | None:
    """The values of a labels LMDB record (float_data, raw uint8 or an encoded image)."""
    try:
        datum = parse_datum(read_record(db, key), key)
    except Exception:  # a record gone or unreadable: no point in the chart, not a 500
        return None
    if len(datum.float_data):
        return np.asarray(datum.float_data, dtype=np.float64)
    if datum.encoded:
        return np.asarray(Image.open(io.BytesIO(datum.data)), dtype=np.float64).reshape(-1)
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).astype(np.float64)
    return np.asarray([float(datum.label)])


def forms_context(server, model) -> dict:
    """The generic model's inference forms: ``views`` ([{id, title, fields}]), ``default_view``,
    ``dbs`` ([{stage, path}] of the dataset's features LMDBs), ``default_db``."""
    facts = server.dataset_facts(model)
    dbs = [{"stage": stage, "path": st["features"]} for stage, st in facts["stages"].items() if st.get("features")]
    order = {"val": 0, "test": 1, "train": 2}
    dbs.sort(key=lambda d: order.get(d["stage"], 3))
    return {"views": list(gv.VIEWS.values()), "default_view": KIND_VIEWS.get(str(facts.get("kind")), gv.DEFAULT_VIEW),
            "dbs": dbs, "default_db": dbs[0]["path"] if dbs else "", "dataset_kind": facts.get("kind"),
            "has_palette": bool(facts.get("color_palette"))}


def _view_title(view_id: str) -> str:
    return gv.VIEWS[view_id].title


async def render_infer_one(request, model, result: dict, image: np.ndarray | None, view_id: str, config: dict,
                           source: str):
    """The page of DIGITS' infer_one: ``result`` is the service's (outputs with the batch axis)."""
    server = server_of(request)
    facts = await in_thread(server.dataset_facts, model)
    outputs = {b: np.asarray(v)[0] for b, v in result["outputs"].items()}
    item = gv.render_item(view_id, config, outputs, image, facts)
    return page(request, "generic_infer.html", title=f"Infer one: {model.name}", model=model, job=None,
                view_id=view_id, view_title=_view_title(view_id), config=config,
                items=[{"key": source, "view": item}], total=1, shown=1,
                segmentation=None, regression=None, snapshot_epoch=result.get("snapshot_epoch"), kind="infer_one")


def _job_context(server, job, view_id: str, config: dict) -> dict:
    spec = job.spec or {}
    model = server.find_job(spec.get("model_id") or job.parent_id or "")
    facts = server.dataset_facts(model) if model is not None else {}
    db = (spec.get("source") or {}).get("lmdb")
    items, total = [], 0
    for key, source, arrays in server.generic_items(job):
        if total < ITEMS_SHOWN:
            try:
                img = image_array(source_image(server, source))
            except ApiError:
                img = None
            items.append({"key": key, "view": gv.render_item(view_id, config, arrays, img, facts)})
        total += 1
    evaluation = server.generic_evaluation(job)
    ev_kind = (spec.get("evaluate") or {}).get("kind")
    segmentation = gv.segmentation_summary(evaluation, facts) if ev_kind == "segmentation" else None
    regression = None
    if ev_kind == "regression":
        labels_db = spec["evaluate"]["labels"]
        pred, true = [], []
        for key, _, arrays in server.generic_items(job, limit=REGRESSION_ITEMS_MAX):
            lab = _label_values(labels_db, key)
            out = next(iter(arrays.values()), None)
            if lab is not None and out is not None and lab.size == out.size:
                pred.append(out)
                true.append(lab)
        try:
            regression = gv.regression_summary(pred, true, evaluation) or None
        except ValueError:
            regression = None
    return {"model": model, "job": job, "items": items, "total": total, "shown": len(items),
            "segmentation": segmentation, "regression": regression, "db": db, "kind": spec.get("kind"),
            "evaluation": evaluation}


async def render_infer_job(request, job, view_id: str, config: dict):
    """The result page of a finished infer_many / infer_db job under the view."""
    server = server_of(request)
    ctx = await in_thread(_job_context, server, job, view_id, config)
    name = ctx["model"].name if ctx["model"] is not None else job.name
    what = "Infer many" if ctx["kind"] == "infer_many" else "Infer DB"
    return page(request, "generic_infer.html", title=f"{what}: {name}", view_id=view_id,
                view_title=_view_title(view_id), config=config, snapshot_epoch=None, **ctx)


async def render_generic_job(request, job):
    """``/jobs/<id>`` of a generic inference job: the result under the view of the query
    (``view_extension_id`` and its fields; default: the dataset kind's view) once it is Done,
    else its progress page."""
    from ..jobs import states

    server = server_of(request)
    if job.status != states.DONE:
        return None
    model = await in_thread(server.find_job, (job.spec or {}).get("model_id") or job.parent_id or "")
    query = dict(request.query_params)
    if "view_extension_id" not in query and model is not None:
        facts = await in_thread(server.dataset_facts, model)
        query["view_extension_id"] = KIND_VIEWS.get(str(facts.get("kind")), gv.DEFAULT_VIEW)
    view_id, config = gv.parse_view_config(query)
    return await render_infer_job(request, job, view_id, config)


def is_generic_job(job) -> bool:
    from ..jobs.tasks import GENERIC_INFER_KINDS

    return (job.spec or {}).get("kind") in GENERIC_INFER_KINDS

