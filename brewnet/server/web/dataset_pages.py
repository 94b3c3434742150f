"""The dataset pages: DIGITS' New Image Classification Dataset form
(/datasets/images/classification/new) and a dataset job's page (/datasets/<id>), with their data
routes.

The form keeps DIGITS' field names (digits-rest.md §3) and posts them, as DIGITS' own page did,
to ``/datasets/images/classification.json``; errors come back per field and are shown next to
it.  Next to the size fields it shows one example picture resized in each of DIGITS' four modes
(squash, crop, fill, half_crop) by brewnet's own dataset resize (``digits_resize``): a built-in
picture, or the first image of the training folder typed in when that folder is under one of the
server's data roots.

The dataset page shows the job's status and progress (live, from the job's event stream), the
images per class and split as a chart, a gallery per class read back from the LMDBs (each record
decoded from its stored Datum), the mean image, the files the job wrote and its log.

Data routes (read access, as every page):

    GET /datasets/resize-example.png?mode=&width=&height=&channels=&folder=
        the example picture resized (mode ``original``: the picture itself); the header
        ``X-Example-Source`` says which picture it is (``built-in`` or the file's name)
    GET /datasets/<id>/gallery.json?split=&label=&page=&per_page=
        the records of one class of one split, a page at a time (record indexes in LMDB order)
    GET /datasets/<id>/images/<split>/<index>.png[?full=1]
        one record of a split's LMDB as a PNG thumbnail (full: the image as stored)
    GET /datasets/<id>/mean.png
        the train set's mean image (mean.binaryproto) as a PNG image
"""
from __future__ import annotations

import io
import os
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np
from fastapi import Query, Request
from fastapi.responses import Response
from PIL import Image

from ...data.labels import read_labels
from ... import formats
from ...data.lmdb_io import iter_records, parse_datum, read_record
from ...errors import DataError
from ..app_state import server_of
from ..errors import ApiError
from ..jobs import states
from ..jobs.jobdir import confine_server_path
from ..jobs.summaries import dataset_summary
from ..threads import in_thread
from .render import page
from .routers import page_router

router = page_router()

SPLITS = ("train", "val", "test")
#: the gallery's page size (DIGITS showed a few dozen images per class)
PER_PAGE = 48
MAX_PER_PAGE = 200
#: the largest example picture made (the form's own sizes may be larger: the example then says so)
MAX_EXAMPLE_SIDE = 1024
#: the built-in example picture's size: wider than tall, so that every mode differs
EXAMPLE_SIZE = (240, 150)
#: files looked at in one class folder when searching the first image of a training folder
MAX_SCANNED = 2000
IMAGE_CACHE = "private, max-age=3600"
#: the gallery's thumbnails: at most this many pixels on their longer side (``?full=1``: as stored)
THUMB_SIDE = 128


# ----------------------------------------------------------------------- the new-dataset form

def field_values(fields: dict) -> dict[str, str]:
    """A cloned job's saved fields as the form shows them."""
    out = {}
    for k, v in (fields or {}).items():
        if isinstance(v, list):
            v = v[-1] if v else ""
        out[k] = "" if v is None else str(v)
    return out


async def render_new_dataset(request: Request, fields: dict, clone: str | None):
    server = server_of(request)
    values = field_values(fields)
    roots = [str(r) for r in (server.config.data_roots or [])]
    uploads_lost = bool(clone) and values.get("method") == "textfile" and \
        values.get("textfile_use_local_files", "") in ("", "false")
    return page(request, "new_dataset.html", title="New image classification dataset", nav="new-dataset",
                values=values, clone=clone, data_roots=roots, uploads_lost=uploads_lost,
                example_size=EXAMPLE_SIZE, max_example_side=MAX_EXAMPLE_SIDE)


# ----------------------------------------------------------------------- resize examples

@lru_cache(maxsize=1)
def builtin_example() -> Image.Image:
    """A small synthetic scene (sky, sun, hills, a house, a framed border), wider than tall."""
    w, h = EXAMPLE_SIZE
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    img = np.zeros((h, w, 3), np.float32)
    t = (yy / h)[..., None]
    img[:] = (1 - t) * np.array([70, 130, 220]) + t * np.array([190, 220, 250])       # sky
    sun = (xx - 0.8 * w) ** 2 + (yy - 0.25 * h) ** 2 < (0.11 * h) ** 2
    img[sun] = (255, 210, 40)
    hill = yy > 0.62 * h + 0.1 * h * np.sin(xx / w * 2 * np.pi * 1.5)
    img[hill] = (60, 150, 60)
    img[hill & ((xx.astype(int) // 12 + yy.astype(int) // 12) % 2 == 0)] = (50, 130, 50)
    hx0, hx1, hy0, hy1 = int(0.2 * w), int(0.42 * w), int(0.45 * h), int(0.8 * h)
    img[hy0:hy1, hx0:hx1] = (200, 80, 60)                                               # house
    img[int(0.58 * h):int(0.8 * h), int(0.28 * w):int(0.34 * w)] = (90, 50, 30)         # door
    roof = (yy < hy0) & (yy > hy0 - 0.2 * h) & \
        (np.abs(xx - (hx0 + hx1) / 2) < (yy - (hy0 - 0.2 * h)) / (0.2 * h) * (hx1 - hx0) * 0.6)
    img[roof] = (120, 40, 40)
    b = max(2, w // 60)                                                                 # frame
    stripes = ((xx + yy).astype(int) // 6) % 2 == 0
    frame = (xx < b) | (xx >= w - b) | (yy < b) | (yy >= h - b)
    img[frame & stripes] = (250, 250, 250)
    img[frame & ~stripes] = (200, 30, 30)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def first_image(folder: Path) -> Path | None:
    """The first image (sorted names) of the first class sub-folder (sorted) of ``folder``
    that has one, looking at a bounded number of entries."""
    from ...data.builder import IMAGE_EXTENSIONS  # it imports torch: the server starts without it

    try:
        classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return None
    for name in classes[:50]:
        names = []
        try:
            with os.scandir(folder / name) as it:
                for i, e in enumerate(it):
                    if i >= MAX_SCANNED:
                        break
                    if e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file():
                        names.append(e.name)
        except OSError:
            continue
        if names:
            return folder / name / min(names)
    return None


def example_source(folder: str | None, roots) -> tuple[Image.Image, str]:
    """The picture the examples resize: the first image of ``folder`` when it is a folder under
    one of ``roots`` with one, else the built-in one.  Never an error: a preview."""
    if folder and folder.strip() and roots:
        try:
            full = confine_server_path(folder, [Path(r) for r in roots], "folder_train")
        except ApiError:
            full = None
        if full is not None and full.is_dir():
            path = first_image(full)
            if path is not None:
                try:   # a class folder or image linked from outside the data roots is not shown
                    path = confine_server_path(str(path), [Path(r) for r in roots], "folder_train")
                except ApiError:
                    path = None
            if path is not None:
                try:
                    with Image.open(path) as im:
                        if im.width * im.height <= 64_000_000:
                            im.load()
                            return im.copy(), path.name
                except Exception:   # unreadable: the built-in picture instead
                    pass
    return builtin_example(), "built-in"


def resize_example(im: Image.Image, mode: str, width: int, height: int, channels: int) -> Image.Image:
    """``im`` as the dataset job would store it: converted to RGB or grey, then resized by
    brewnet's own dataset resize (fill's noise from a fixed seed, so the example is stable)."""
    from ...data.image import digits_resize  # it imports torch: the server starts without it

    im = im.convert("RGB" if channels == 3 else "L")
    if mode == "original":
        return im
    return digits_resize(im, width, height, mode, np.random.default_rng(0))


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


@router.get("/datasets/resize-example.png")
async def resize_example_png(request: Request,
                             mode: str = Query("squash"),
                             width: int = Query(256),
                             height: int = Query(256),
                             channels: int = Query(3),
                             folder: str | None = Query(None, max_length=4096)):
    from ...data.image import RESIZE_MODES  # it imports torch: the server starts without it

    if mode not in (*RESIZE_MODES, "original"):
        raise ApiError(400, f"mode must be one of {', '.join(RESIZE_MODES)} or original", field="resize_mode")
    for name, v in (("resize_width", width), ("resize_height", height)):
        if not 1 <= v <= MAX_EXAMPLE_SIDE:
            raise ApiError(400, f"The example is drawn for sizes from 1 to {MAX_EXAMPLE_SIDE}", field=name)
    if channels not in (1, 3):
        raise ApiError(400, "channels must be 1 or 3", field="resize_channels")
    roots = server_of(request).config.data_roots or []

    def make():
        src, name = example_source(folder, roots)
        return png_bytes(resize_example(src, mode, width, height, channels)), name
    data, name = await in_thread(make)
    return Response(data, media_type="image/png",
                    headers={"X-Example-Source": name.encode("ascii", "replace").decode("ascii"),
                             "Cache-Control": "no-store"})


# ----------------------------------------------------------------------- the dataset page

def _page_context(server, job) -> dict:
    summary = dict(job.summary or {})
    if not summary and job.status == states.DONE:
        summary = dataset_summary(server.job_dir(job.id))
    deps = [{"id": m.id, "name": m.name, "status": m.status} for m in server.dependents(job)]
    spec = job.spec or {}
    jobdir = server.job_dir(job.id)
    lists = {}
    for key in ("train", "val", "test", "labels"):
        p = spec.get(f"textfile_{key}")
        if p:   # an upload (in the job's folder) by its name, a server path as given
            lists[key] = Path(p).name.split("__", 1)[-1] if Path(p).parent == jobdir / "uploads" else p
    page_data = {"labels": summary.get("labels") or [], "per_class": summary.get("per_class") or {},
                 "has_mean": bool(summary.get("mean_file"))}
    return {"row": server.table_row(job), "spec": spec, "summary": summary, "dependents": deps,
            "lists": lists, "page_data": page_data}


async def render_dataset(request: Request, job):
    server = server_of(request)
    ctx = await in_thread(_page_context, server, job)
    return page(request, "dataset.html", title=job.name, nav="", job=job, **ctx,
                per_page=PER_PAGE, finished=job.status in states.FINISHED)


# ----------------------------------------------------------------------- gallery, records, mean

def _dataset_dir(server, job_id: str) -> Path:
    job = server.get_job(job_id, states.DATASET)
    return server.job_dir(job.id)


def _split_of(split: str) -> str:
    if split not in SPLITS:
        raise ApiError(400, f"split must be one of {', '.join(SPLITS)}", field="split")
    return split


_index_lock = threading.Lock()


@lru_cache(maxsize=8)
def _class_index(path: str, mtime_ns: int, size: int) -> dict[int, np.ndarray]:
    """The record indexes (LMDB order) of each label, from a split's list file (``<path>
    <label>`` per record, written in the order of the records)."""
    by_label: dict[int, list[int]] = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for i, line in enumerate(f):
            parts = line.rstrip("\n").rsplit(" ", 1)
            try:
                label = int(parts[-1])
            except ValueError:
                continue
            by_label.setdefault(label, []).append(i)
    return {k: np.asarray(v, dtype=np.int64) for k, v in by_label.items()}


def _lmdb_class_index(db: Path) -> dict[int, np.ndarray]:
    """Without a list file: every record's label read from the LMDB (its keys in order)."""
    by_label: dict[int, list[int]] = {}
    for i, (k, v) in enumerate(iter_records(str(db))):
        by_label.setdefault(int(parse_datum(v, k).label), []).append(i)
    return {k: np.asarray(v, dtype=np.int64) for k, v in by_label.items()}


def class_index(jobdir: Path, split: str) -> dict[int, np.ndarray]:
    listed = jobdir / f"{split}.txt"
    try:
        st = listed.stat()
    except FileNotFoundError:
        db = jobdir / f"{split}_db"
        if not db.is_dir():
            raise ApiError(404, f"This dataset has no {split} set", field="split") from None
        return _lmdb_class_index(db)
    with _index_lock:
        return _class_index(str(listed), st.st_mtime_ns, st.st_size)


def _labels(jobdir: Path) -> list[str]:
    try:
        return read_labels(jobdir / "labels.txt")
    except OSError:
        return []


def gallery(server, job_id: str, split: str, label: int, page_no: int, per_page: int) -> dict:
    jobdir = _dataset_dir(server, job_id)
    split = _split_of(split)
    labels = _labels(jobdir)
    if labels and not 0 <= label < len(labels):
        raise ApiError(400, f"label must be between 0 and {len(labels) - 1}", field="label")
    index = class_index(jobdir, split).get(label, np.zeros(0, np.int64))
    total = int(len(index))
    pages = max(1, -(-total // per_page))
    page_no = min(max(1, page_no), pages)
    chosen = index[(page_no - 1) * per_page: page_no * per_page]
    return {"job_id": job_id, "split": split, "label": label,
            "label_name": labels[label] if label < len(labels) else str(label),
            "page": page_no, "pages": pages, "per_page": per_page, "total": total,
            "items": [{"index": int(i), "url": f"/datasets/{job_id}/images/{split}/{int(i)}.png"} for i in chosen]}


@router.get("/datasets/{job_id}/gallery.json")
async def gallery_json(request: Request, job_id: str, split: str = "train", label: int = 0,
                       page: int = Query(1, ge=1), per_page: int = Query(PER_PAGE, ge=1, le=MAX_PER_PAGE)):
    """One page of the records of class ``label`` in ``split`` (index = position in the LMDB)."""
    return await in_thread(gallery, server_of(request), job_id, split, label, page, per_page)


def chw_to_image(chw: np.ndarray) -> Image.Image:
    """A stored C×H×W array (BGR or grey) as a Pillow image (RGB or grey)."""
    a = np.asarray(chw)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a.astype(np.float64)), 0, 255).astype(np.uint8)
    if a.shape[0] == 1:
        return Image.fromarray(np.ascontiguousarray(a[0]), "L")
    if a.shape[0] == 3:
        return Image.fromarray(np.ascontiguousarray(a[::-1].transpose(1, 2, 0)), "RGB")
    raise ApiError(422, f"Images of {a.shape[0]} channels are not shown")


def thumbnail(im: Image.Image, side: int = THUMB_SIDE) -> Image.Image:
    """``im`` scaled down (aspect ratio kept) to at most ``side`` pixels on its longer side."""
    if max(im.size) <= side:
        return im
    k = side / max(im.size)
    return im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))), Image.BILINEAR, reducing_gap=2.0)


def record_png(server, job_id: str, split: str, index: int, full: bool = False) -> bytes:
    """Record ``index`` of a split's LMDB, its Datum decoded as Caffe's Data layer reads it."""
    from ...data.image import datum_to_chw  # it imports torch: the server starts without it

    jobdir = _dataset_dir(server, job_id)
    db = jobdir / f"{_split_of(split)}_db"
    if index < 0 or not db.is_dir():
        raise ApiError(404, "No such record")
    key = b"%08d" % index
    try:
        datum = parse_datum(read_record(str(db), key), key)
        chw = datum_to_chw(datum, what=f"record {index} of {split}")
    except DataError as e:
        if "no record" in str(e):
            raise ApiError(404, "No such record") from None
        raise ApiError(422, f"The record cannot be shown: {e}") from None
    im = chw_to_image(chw)
    return png_bytes(im if full else thumbnail(im))


@router.get("/datasets/{job_id}/images/{split}/{index}.png")
async def record_image(request: Request, job_id: str, split: str, index: int, full: bool = False):
    """Record ``index`` of the split's LMDB as a PNG thumbnail (``full=1``: as stored)."""
    data = await in_thread(record_png, server_of(request), job_id, split, index, full)
    return Response(data, media_type="image/png", headers={"Cache-Control": IMAGE_CACHE})


def mean_png(server, job_id: str) -> bytes:
    jobdir = _dataset_dir(server, job_id)
    path = jobdir / "mean.binaryproto"
    if not path.is_file():
        raise ApiError(404, "This dataset has no mean image (yet)")
    return mean_file_png(path)


def mean_file_png(path: Path) -> bytes:
    """A mean file (BlobProto 1×C×H×W) as a PNG image (422 when it cannot be shown)."""
    try:
        arr = np.asarray(formats.read_binaryproto(path))
    except Exception as e:   # a damaged file
        raise ApiError(422, f"The mean file cannot be read: {e}") from None
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ApiError(422, f"The mean has shape {arr.shape}, not C×H×W")
    return png_bytes(chw_to_image(arr))


@router.get("/datasets/{job_id}/mean.png")
async def mean_image(request: Request, job_id: str):
    data = await in_thread(mean_png, server_of(request), job_id)
    return Response(data, media_type="image/png", headers={"Cache-Control": "no-cache"})
