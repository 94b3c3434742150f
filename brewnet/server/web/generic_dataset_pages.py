"""The pages of generic datasets (DIGITS' "Other" and its data extensions; docs:
digits-other-jobs.md §1.1–1.3, §2.1–2.3): the new-dataset form of each kind, a generic dataset's
page and DIGITS' explore gallery, with their data routes.

The forms keep DIGITS' field names and post them, over fetch, to DIGITS' create routes
(``/datasets/images/generic.json``, ``/datasets/generic/create/<extension_id>.json``); errors come
back per field and are shown next to it, as on the classification form.

A dataset's page shows its status and progress (live), the entries, feature and label shapes per
stage, the mean image (when the dataset has one), a gallery of records read back from its LMDBs
(segmentation: each image, its mask coloured through the dataset's palette and the two overlaid;
gradients: the label values; processing: input and target) and, for segmentation, the pixels of
each class per stage (a table and a plotly bar chart).

Data routes (read access, as every page):

    GET /datasets/<id>/generic/records.json?stage=train&page=1&per_page=24
        a page of records: index, LMDB key, the feature's image URL and the label (a value, a
        list of values, or image URLs)
    GET /datasets/<id>/generic/<stage>/<db>/<index>.png?view=plain|color|overlay&full=0
        record ``index`` (LMDB order) of the stage's ``features`` or ``labels`` LMDB as a PNG;
        ``color``: a segmentation label through the palette; ``overlay``: that mask over its image
    GET /datasets/<id>/generic/mean.png       the dataset's mean image
"""
from __future__ import annotations

import re
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
from fastapi import Query, Request
from fastapi.responses import Response
from PIL import Image

from ...data.lmdb_io import acquire_env, parse_datum, read_record, release_env
from ...errors import DataError
from ..app_state import server_of
from ..digits.generic_forms import EXTENSION_TITLES
from ..errors import ApiError
from ..jobs import states
from ..jobs.specs import KIND_EXTENSIONS
from ..service.generic_datasets import generic_kind
from ..threads import in_thread
from .dataset_pages import IMAGE_CACHE, chw_to_image, field_values, mean_file_png, png_bytes, thumbnail
from .render import page
from .routers import page_router

router = page_router()

STAGES = ("train", "val", "test")
DBS = ("features", "labels")
PER_PAGE = 24
MAX_PER_PAGE = 200
TITLES = {"generic": "New Image Dataset", "gradients": "New Dataset: Gradients",
          "processing": "New Dataset: Processing", "segmentation": "New Dataset: Segmentation"}
KIND_NAMES = {"generic": "Generic Image Dataset (pre-built LMDBs)", "gradients": "Gradients",
              "processing": "Processing", "segmentation": "Segmentation"}
#: a segmentation mask's opacity over its image (background, class 0, stays transparent)
OVERLAY_ALPHA = 0.55
EXPLORE_DB = re.compile(r"^(train|val|test)_db/(features|labels)$")


# ----------------------------------------------------------------------- the forms

async def render_new_generic_dataset(request: Request, kind: str, fields: dict, clone: str | None):
    server = server_of(request)
    extension = KIND_EXTENSIONS.get(kind)
    action = "/datasets/images/generic.json" if kind == "generic" else f"/datasets/generic/create/{extension}.json"
    title = TITLES[kind]
    return page(request, "new_dataset_generic.html", title=title, nav="new-dataset", kind=kind,
                extension=extension, extension_title=EXTENSION_TITLES.get(extension or "", ""),
                action=action, values=field_values(fields), clone=clone,
                data_roots=[str(r) for r in (server.config.data_roots or [])])


# ----------------------------------------------------------------------- reading the LMDBs

_keys_lock = threading.Lock()


@lru_cache(maxsize=16)
def _cached_keys(path: str, mtime_ns: int, size: int) -> tuple[bytes, ...]:
    env = acquire_env(path)
    try:
        with env.begin() as txn:
            return tuple(bytes(k) for k in txn.cursor().iternext(keys=True, values=False))
    finally:
        release_env(env)


def lmdb_keys(path: str) -> tuple[bytes, ...]:
    """The keys of an LMDB in its order (cached while its data file is unchanged)."""
    data = Path(path) / "data.mdb"
    try:
        st = data.stat()
    except OSError:
        raise ApiError(404, f"The LMDB {path} is missing") from None
    with _keys_lock:
        try:
            return _cached_keys(str(path), st.st_mtime_ns, st.st_size)
        except DataError as e:
            raise ApiError(422, str(e)) from None


def read_datum(path: str, key: bytes):
    """The Datum of ``key`` in the LMDB ``path`` (404 when it has none)."""
    try:
        return parse_datum(read_record(path, key), key)
    except DataError as e:
        raise ApiError(404 if "no record" in str(e) else 422, str(e)) from None


def _job_summary(server, job_id: str) -> tuple:
    job = server.get_job(job_id, states.DATASET)
    if generic_kind(job) is None:
        raise ApiError(404, "Not a generic dataset")
    return job, server.generic_summary(job)


def _db_path(summary: dict, stage: str, db: str) -> str:
    if stage not in STAGES:
        raise ApiError(400, f"stage must be one of {', '.join(STAGES)}", field="stage")
    if db not in DBS:
        raise ApiError(400, f"db must be one of {', '.join(DBS)}", field="db")
    st = (summary.get("stages") or {}).get(stage)
    if not st:
        raise ApiError(404, f"This dataset has no {stage} stage (yet)", field="stage")
    path = st.get(db)
    if not path:
        raise ApiError(404, f"The {stage} stage has no {db} LMDB", field="db")
    return path


def palette_of(summary: dict) -> np.ndarray:
    """The dataset's palette as 256×3 uint8 (DIGITS' ``color_palette``); without one, grey
    levels spread over the classes (DIGITS' colormap ``none`` is grey = class index)."""
    pal = summary.get("color_palette")
    if isinstance(pal, list) and len(pal) >= 3:
        arr = np.zeros(768, np.uint8)
        vals = np.clip(np.asarray(pal[:768], dtype=np.int64), 0, 255)
        arr[:len(vals)] = vals
        return arr.reshape(256, 3)
    n = max(2, int(summary.get("num_classes") or 0))
    grey = np.clip(np.arange(256) * (255 // max(1, n - 1)), 0, 255).astype(np.uint8)
    grey[255] = 255
    return np.repeat(grey[:, None], 3, axis=1)


def _label_indexes(chw: np.ndarray) -> np.ndarray:
    a = np.asarray(chw)
    return np.clip(np.rint(a[0]).astype(np.int64), 0, 255) if a.dtype != np.uint8 else a[0]


def _decode(datum, what: str) -> np.ndarray:
    from ...data.image import datum_to_chw  # it imports torch: the server starts without it

    try:
        return datum_to_chw(datum, what=what)
    except DataError as e:
        raise ApiError(422, f"The record cannot be shown: {e}") from None


def _show_array(chw: np.ndarray) -> Image.Image:
    """Any stored array as a picture: uint8 as it is; floats scaled min..max to 0..255."""
    a = np.asarray(chw)
    if a.dtype != np.uint8:
        lo, hi = float(a.min()), float(a.max())
        a = ((a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)).astype(np.uint8)
    if a.shape[0] not in (1, 3):
        a = a[:1]
    return chw_to_image(a)


def record_image(server, job_id: str, stage: str, db: str, index: int, view: str, full: bool) -> bytes:
    _, summary = _job_summary(server, job_id)
    path = _db_path(summary, stage, db)
    keys = lmdb_keys(path)
    if not 0 <= index < len(keys):
        raise ApiError(404, "No such record")
    key = keys[index]
    chw = _decode(read_datum(path, key), f"record {key.decode(errors='replace')} of {stage} {db}")
    if view == "plain":
        im = _show_array(chw)
    elif view in ("color", "overlay"):
        if db != "labels":
            raise ApiError(400, "view color/overlay shows a label image: db must be labels", field="view")
        rgb = palette_of(summary)[_label_indexes(chw)]
        im = Image.fromarray(rgb, "RGB")
        if view == "overlay":
            fpath = _db_path(summary, stage, "features")
            fkeys = lmdb_keys(fpath)
            feat = _show_array(_decode(read_datum(fpath, fkeys[index]), "feature")).convert("RGB")
            if feat.size != im.size:
                feat = feat.resize(im.size, Image.BILINEAR)
            mask = (_label_indexes(chw) != 0)[..., None]
            base = np.asarray(feat, dtype=np.float32)
            mixed = np.where(mask, (1 - OVERLAY_ALPHA) * base + OVERLAY_ALPHA * rgb, base)
            im = Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8), "RGB")
    else:
        raise ApiError(400, "view must be plain, color or overlay", field="view")
    return png_bytes(im if full else thumbnail(im, 160))


@router.get("/datasets/{job_id}/generic/{stage}/{db}/{index}.png")
async def record_png(request: Request, job_id: str, stage: str, db: str, index: int,
                     view: str = "plain", full: bool = False):
    data = await in_thread(record_image, server_of(request), job_id, stage, db, index, view, full)
    return Response(data, media_type="image/png", headers={"Cache-Control": IMAGE_CACHE})


def _label_of(summary: dict, kind: str, stage: str, index: int, key: bytes, feature_datum, base: str) -> dict:
    st = (summary.get("stages") or {}).get(stage) or {}
    if not st.get("labels"):
        return {"type": "scalar", "value": float(feature_datum.label)}
    if kind == "segmentation":
        return {"type": "mask", "url": f"{base}/labels/{index}.png?view=color",
                "overlay": f"{base}/labels/{index}.png?view=overlay"}
    datum = read_datum(st["labels"], key)
    if kind == "processing" or (datum.encoded or len(datum.data)):
        return {"type": "image", "url": f"{base}/labels/{index}.png"}
    values = [float(v) for v in datum.float_data]
    return {"type": "values", "values": values, "shape": [datum.channels, datum.height, datum.width]}


def records(server, job_id: str, stage: str, page_no: int, per_page: int) -> dict:
    job, summary = _job_summary(server, job_id)
    kind = job.spec["kind"]
    path = _db_path(summary, stage, "features")
    keys = lmdb_keys(path)
    total = len(keys)
    pages = max(1, -(-total // per_page))
    page_no = min(max(1, page_no), pages)
    items = []
    base = f"/datasets/{job_id}/generic/{stage}"
    for i in range((page_no - 1) * per_page, min(total, page_no * per_page)):
        datum = read_datum(path, keys[i])
        items.append({"index": i, "key": keys[i].decode(errors="replace"),
                      "feature": f"{base}/features/{i}.png",
                      "label": _label_of(summary, kind, stage, i, keys[i], datum, base)})
    return {"job_id": job_id, "kind": kind, "stage": stage, "page": page_no, "pages": pages,
            "per_page": per_page, "total": total, "items": items}


@router.get("/datasets/{job_id}/generic/records.json")
async def records_json(request: Request, job_id: str, stage: str = "train", page: int = Query(1, ge=1),
                       per_page: int = Query(PER_PAGE, ge=1, le=MAX_PER_PAGE)):
    return await in_thread(records, server_of(request), job_id, stage, page, per_page)


def mean_image(server, job_id: str) -> bytes:
    _, summary = _job_summary(server, job_id)
    path = summary.get("mean_file")
    if not path or not Path(path).is_file():
        raise ApiError(404, "This dataset has no mean image")
    return mean_file_png(Path(path))


@router.get("/datasets/{job_id}/generic/mean.png")
async def mean_png(request: Request, job_id: str):
    data = await in_thread(mean_image, server_of(request), job_id)
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})


# ----------------------------------------------------------------------- the dataset page

def _hex(rgb) -> str:
    return "#%02x%02x%02x" % tuple(int(c) for c in rgb)


def page_data(server, job) -> dict:
    kind = job.spec["kind"]
    summary = server.generic_summary(job)
    n = int(summary.get("num_classes") or 0)
    counts = summary.get("class_pixel_counts") or {}
    if not n and counts:
        n = max(len(v) for v in counts.values())
    names = list(summary.get("class_labels") or [])
    pal = palette_of(summary)
    classes = [{"index": i, "name": names[i] if i < len(names) else f"Class #{i}", "color": _hex(pal[i])}
               for i in range(min(n, 256))]
    return {"kind": kind, "stages": summary.get("stages") or {}, "feature_dims": summary.get("feature_dims"),
            "has_mean": bool(summary.get("mean_file")), "classes": classes, "pixel_counts": counts,
            "label_range": summary.get("label_range"), "ready": bool(summary.get("stages"))}


async def render_generic_dataset(request: Request, job):
    server = server_of(request)

    def context():
        return {"row": server.table_row(job), "data": page_data(server, job),
                "dependents": [{"id": m.id, "name": m.name, "status": m.status} for m in server.dependents(job)]}
    ctx = await in_thread(context)
    kind = job.spec["kind"]
    return page(request, "dataset_generic.html", title=job.name, nav="", job=job, spec=job.spec, kind=kind,
                kind_name=KIND_NAMES[kind], type_name=states.job_type_name(job),
                clone_url=f"/clone/{job.id}", per_page=PER_PAGE, finished=job.status in states.FINISHED,
                page_data=ctx["data"], row=ctx["row"], dependents=ctx["dependents"])


# ----------------------------------------------------------------------- DIGITS' explore page

async def render_explore(request: Request, job_id: str, db: str, page_no: int, size: int):
    """DIGITS' ``/datasets/generic/explore``: ``size`` records of one LMDB (``train_db/features``,
    ``val_db/labels``, ...) from page ``page_no`` (0-based).  DIGITS showed encoded LMDBs only;
    raw ones are shown too (float arrays scaled to grey)."""
    server = server_of(request)
    m = EXPLORE_DB.match(db or "")
    if not m:
        raise ApiError(400, "db must be <stage>_db/features or <stage>_db/labels (stage train, val or test)",
                       field="db")
    stage, which = m.groups()
    size = min(max(1, int(size)), MAX_PER_PAGE)

    def context():
        job, summary = _job_summary(server, job_id)
        keys = lmdb_keys(_db_path(summary, stage, which))
        total = len(keys)
        pages = max(1, -(-total // size))
        p = min(max(0, int(page_no)), pages - 1)
        view = "color" if which == "labels" and job.spec["kind"] == "segmentation" else "plain"
        items = [{"index": i, "key": keys[i].decode(errors="replace"),
                  "url": f"/datasets/{job_id}/generic/{stage}/{which}/{i}.png?view={view}"}
                 for i in range(p * size, min(total, (p + 1) * size))]
        return job, {"items": items, "total": total, "pages": pages, "page": p}
    job, ctx = await in_thread(context)
    return page(request, "dataset_explore_generic.html", title=f"Explore {job.name}", nav="", job=job, db=db,
                size=size, **ctx)
