"""Per-layer visualisation data: what DIGITS' "visualizations and statistics" showed, done right.

:func:`visualize_net` runs one preprocessed image through a TEST-phase net and writes, into a
directory, a tiled PNG and statistics (shape, mean, std, min, max, 20-bin histogram) for every
blob, and the same for every layer's parameters, with the parameter count split into learnable
parameters and statistics.  BatchNorm is shown as what it normalises with: the running mean and
variance *after* Caffe's scale factor (BVLC stores unnormalised sums and their weight s; the
statistics are sums / s, 0 when s = 0), and γ, β when the layer has them (NVCaffe
``scale_bias``).  DIGITS drew the three raw accumulator blobs as "weights"; they are listed here
only as what is stored (``stored``), never drawn as weights.

:func:`top_images_per_class` keeps, over a stream of (source, probabilities) pairs of any
length, the K most confident images of each class in O(classes·K) memory, and writes a grid of
thumbnails per class.

Both write JSON with paths relative to the output directory and return the same dict, for the
``brewnet classify -visualize`` command and the web app (which calls them in a worker process).

PNG layout (every image is RGB): a grid of tiles, row-major, separated by 1-px lines of
:data:`SEPARATOR_RGB`; unused grid cells and padding are that colour too, so a tile that is all
white is still told apart from its neighbours.  Grey tiles map the blob's finite minimum to 0 and
its maximum to 255 (one range per PNG, so tiles compare with each other; a constant blob is all
0).  Small tiles are enlarged by an integer ``zoom`` (nearest neighbour) to at least
``min_tile_px`` pixels.  Each image's JSON says its ``rows``, ``cols``, ``tile_height`` and
``tile_width`` (in values), ``zoom``, the ``range`` mapped to 0–255 and how many tiles of how
many are shown, so a viewer can map a pixel back to a value.
"""
from __future__ import annotations

import heapq
import json
import math
import os
import re
from typing import Callable, Iterable

import numpy as np
from PIL import Image

from ..errors import BrewnetError

VISUALIZATION_VERSION = 1
#: separators, empty grid cells and padding (a blue no grey value can be mistaken for)
SEPARATOR_RGB = (0, 90, 150)
HIST_BINS = 20
#: default cap on the tiles of one PNG (the first channels are shown; the JSON says so)
MAX_TILES = 256
#: a 2-D weight matrix is drawn whole up to this many rows and columns, cropped beyond
MAX_MATRIX_SIDE = 1024
#: 1-D parameter blobs up to this size also list their values in the JSON (for bar charts)
MAX_LISTED_VALUES = 4096
#: top_images_per_class: thumbnail cell size and the gap between cells, in pixels
THUMB_PX = 64
THUMB_GAP = 2


class VisualizeError(BrewnetError):
    """The net or the input cannot be visualised as asked."""


# ----- names and statistics ------------------------------------------------------------------
def safe_name(index: int, name: str, max_len: int = 80) -> str:
    """A file name for the ``index``-th blob/layer called ``name``, safe on any file system.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``_`` (Caffe names
    such as ``conv1/3x3 reduce`` hold slashes and spaces).  The ordinal prefix keeps names that
    sanitise alike distinct (``a/b`` and ``a b``) and files sorted in net order.
    """
    body = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip("._")[:max_len] or "unnamed"
    return f"{index:03d}_{body}"


def array_stats(values: np.ndarray, bins: int = HIST_BINS) -> dict:
    """Shape, element count, mean, std (population, ddof 0), min, max and a ``bins``-bin
    histogram (``edges``: bins + 1 values, ``counts``: bins integers) of an array.

    Accumulated in float64 over the finite elements (``nonfinite`` counts the others); with no
    finite element the numbers are None.  The histogram spans [min, max] (numpy's rule: the
    last bin includes max; a constant array gets the range value ± 0.5).
    """
    x = np.asarray(values)
    flat = x.reshape(-1)
    finite = np.isfinite(flat)
    n_bad = int(flat.size - np.count_nonzero(finite))
    if n_bad:
        flat = flat[finite]
    out: dict = {"shape": [int(d) for d in x.shape], "count": int(x.size), "nonfinite": n_bad}
    if flat.size == 0:
        out.update(mean=None, std=None, min=None, max=None, histogram=None)
        return out
    # reductions accumulate in float64 without a float64 copy of a large float32 weight blob
    counts, edges = np.histogram(flat, bins=bins)
    out.update(mean=float(flat.mean(dtype=np.float64)), std=float(flat.std(dtype=np.float64)),
               min=float(flat.min()), max=float(flat.max()),
               histogram={"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]})
    return out


# ----- tiling -----------------------------------------------------------------------------------
def _near_square(n: int) -> tuple[int, int]:
    """(rows, cols) of the most square grid holding n cells, cols >= rows."""
    cols = max(1, math.ceil(math.sqrt(n)))
    return max(1, math.ceil(n / cols)), cols


class _Tiles:
    """Tiles to draw: ``values`` (T, h, w) grey or (T, h, w, 3) RGB, float; ``valid`` (T, h, w)
    False where a pixel is padding; the grid shape and what the layout means."""

    def __init__(self, values: np.ndarray, rows: int, cols: int, layout: str, total: int,
                 valid: np.ndarray | None = None, truncated: bool | None = None, **meta):
        self.values = values
        self.valid = np.ones(values.shape[:3], dtype=bool) if valid is None else valid
        self.rows, self.cols, self.layout, self.total, self.meta = rows, cols, layout, total, meta
        #: not everything is drawn (tiles capped, a matrix cropped)
        self.truncated = values.shape[0] < total if truncated is None else truncated


def _vector_tiles(v: np.ndarray) -> _Tiles:
    """A 1-D array as one near-square tile, row-major, padded at the end."""
    v = v.reshape(-1)
    h, w = _near_square(v.size)
    cells = np.zeros(h * w)
    cells[:v.size] = v
    valid = np.zeros(h * w, dtype=bool)
    valid[:v.size] = True
    return _Tiles(cells.reshape(1, h, w), 1, 1, "vector", 1, valid.reshape(1, h, w),
                  note=f"{v.size} values row-major in a {h}x{w} tile")


def _matrix_tiles(m: np.ndarray) -> _Tiles:
    """A 2-D array as one tile (rows x columns), cropped to MAX_MATRIX_SIDE each way."""
    r, c = min(m.shape[0], MAX_MATRIX_SIDE), min(m.shape[1], MAX_MATRIX_SIDE)
    note = f"matrix {m.shape[0]}x{m.shape[1]} as one tile"
    if (r, c) != m.shape:
        note += f", first {r} rows and {c} columns shown"
    return _Tiles(m[:r, :c].reshape(1, r, c), 1, 1, "matrix", 1, truncated=(r, c) != m.shape, note=note)


def _channel_tiles(x: np.ndarray, max_tiles: int) -> _Tiles:
    """(C, H, W): one grey tile per channel, near-square grid, the first max_tiles channels."""
    c = x.shape[0]
    shown = min(c, max_tiles)
    rows, cols = _near_square(shown)
    return _Tiles(x[:shown], rows, cols, "channels", c,
                  note=f"one tile per channel, first {shown} of {c}" if shown < c else
                  "one tile per channel")


def _filter_tiles(wt: np.ndarray, max_tiles: int, axes: tuple[str, str]) -> _Tiles:
    """4-D filters (A, B, kh, kw).  B == 3: one colour tile per filter, channels reversed
    from Caffe's BGR to RGB; B == 1: one grey tile per filter; otherwise a grid with one row per
    index of axis 0 and one column per index of axis 1 (rows x cols <= max_tiles)."""
    a, b = wt.shape[:2]
    if b == 3:
        shown = min(a, max_tiles)
        rows, cols = _near_square(shown)
        rgb = np.moveaxis(wt[:shown, ::-1], 1, -1)  # (T, kh, kw, 3), BGR -> RGB
        return _Tiles(rgb, rows, cols, "filters_rgb", a, colour="RGB from Caffe's BGR",
                      note=f"one colour tile per {axes[0]} ({shown} of {a}); its 3 {axes[1]}s "
                           "drawn as RGB, reversed from Caffe's BGR order")
    if b == 1:
        shown = min(a, max_tiles)
        rows, cols = _near_square(shown)
        return _Tiles(wt[:shown, 0], rows, cols, "filters", a,
                      note=f"one tile per {axes[0]} ({shown} of {a})")
    cols = min(b, max(1, math.isqrt(max_tiles)))
    rows = min(a, max(1, max_tiles // cols))
    tiles = wt[:rows, :cols].reshape(rows * cols, *wt.shape[2:])
    return _Tiles(tiles, rows, cols, "filter_grid", a * b, row_axis=axes[0], col_axis=axes[1],
                  note=f"row = {axes[0]} (first {rows} of {a}), column = {axes[1]} "
                       f"(first {cols} of {b})")


def _tiles_for(x: np.ndarray, max_tiles: int) -> _Tiles:
    """The generic layout of an array by rank: (C,H,W) channels, 4-D filters, 2-D matrix,
    anything else as a vector."""
    if x.ndim == 3:
        return _channel_tiles(x, max_tiles)
    if x.ndim == 4:
        return _filter_tiles(x, max_tiles, ("index of axis 0", "index of axis 1"))
    if x.ndim == 2:
        return _matrix_tiles(x)
    return _vector_tiles(x)


def _finite_range(x: np.ndarray) -> tuple[float, float] | None:
    fin = np.isfinite(x)
    f = x if fin.all() else x[fin]
    return (float(f.min()), float(f.max())) if f.size else None


def _render(tiles: _Tiles, lo: float, hi: float, min_tile_px: int) -> tuple[np.ndarray, int]:
    """The grid as an (H, W, 3) uint8 image and the zoom used."""
    t, h, w = tiles.values.shape[:3]
    zoom = max(1, math.ceil(min_tile_px / max(h, w)))
    span = hi - lo
    with np.errstate(invalid="ignore"):
        g = (np.clip(tiles.values, lo, hi) - lo) * (255.0 / span) if span > 0 else \
            np.zeros_like(tiles.values)
    g = np.rint(np.nan_to_num(g, nan=0.0)).astype(np.uint8)
    if g.ndim == 3:
        g = np.repeat(g[..., None], 3, axis=-1)  # grey -> (T, h, w, 3)
    g[~tiles.valid] = SEPARATOR_RGB
    if zoom > 1:
        g = g.repeat(zoom, axis=1).repeat(zoom, axis=2)
    th, tw = h * zoom, w * zoom
    out = np.empty((tiles.rows * th + tiles.rows - 1, tiles.cols * tw + tiles.cols - 1, 3), np.uint8)
    out[...] = SEPARATOR_RGB
    for i in range(t):
        r, c = divmod(i, tiles.cols)
        out[r * (th + 1):r * (th + 1) + th, c * (tw + 1):c * (tw + 1) + tw] = g[i]
    return out, zoom


def _write_tiles(tiles: _Tiles, outdir: str, rel: str, full: np.ndarray, min_tile_px: int) -> dict:
    """Write the PNG at outdir/rel, normalised over ``full`` (the whole array drawn from)."""
    rng = _finite_range(np.asarray(full))
    lo, hi = rng if rng is not None else (0.0, 0.0)
    img, zoom = _render(tiles, lo, hi, min_tile_px)
    path = os.path.join(outdir, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(img, "RGB").save(path)
    n = tiles.values.shape[0]
    return {"path": rel.replace(os.sep, "/"), "width": int(img.shape[1]), "height": int(img.shape[0]),
            "layout": tiles.layout, "rows": tiles.rows, "cols": tiles.cols,
            "tile_height": int(tiles.values.shape[1]), "tile_width": int(tiles.values.shape[2]),
            "zoom": zoom, "separator_px": 1, "range": [lo, hi], "tiles": n, "tiles_total": tiles.total,
            "truncated": tiles.truncated, **tiles.meta}


# ----- the net -----------------------------------------------------------------------------------
def visualize_net(net, input_chw: np.ndarray, outdir: str, *, input_name: str | None = None,
                  max_tiles: int = MAX_TILES, min_tile_px: int = 16) -> dict:
    """Run one preprocessed image through a TEST-phase ``net`` and write what every blob and
    every parametrised layer holds (see the module docstring for the PNG layout).

    ``input_chw``: the net's input for one image, e.g. (C, H, W) float32 after the bundle's
    transform; its shape must be the input blob's without the batch axis.  The input blob is
    set to batch 1 for the pass and given back its shape afterwards (its values, and the
    other blobs', are then this pass's).  ``input_name``: which input, when the net has several.

    Writes ``outdir/visualization.json`` and ``outdir/blobs/*.png``, ``outdir/params/*.png``;
    returns the JSON's dict: ``blobs`` (net order: name, shape, producing layers, stats,
    image), ``layers`` (each layer with blobs: ``params`` counts {learnable, statistics, total},
    ``stored`` (the blobs as the caffemodel holds them, with their role), ``weights`` (what is
    drawn, with ``role`` learnable/statistics, stats, image, and ``values`` for small 1-D
    blobs), ``batchnorm`` details for BatchNorm) and ``totals`` (each owned blob once).
    """
    from ..proto import caffe_pb2
    if getattr(net, "phase", None) != caffe_pb2.TEST:
        raise VisualizeError("visualize_net needs a TEST-phase net (a TRAIN net normalises with "
                             "batch statistics and updates BatchNorm's running averages)")
    if input_name is None:
        if len(net.inputs) != 1:
            raise VisualizeError(f"the net has {len(net.inputs)} input blobs ({', '.join(net.inputs) or 'none'}); "
                                 "give input_name (a net fed by a Data layer needs its deploy version)")
        input_name = net.inputs[0]
    elif input_name not in net.inputs:
        raise VisualizeError(f"'{input_name}' is not an input blob of the net (inputs: {', '.join(net.inputs)})")
    x = np.asarray(input_chw, dtype=np.float32)
    blob = net.blobs[input_name]
    want = tuple(blob.shape[1:])
    if x.shape != want:
        raise VisualizeError(f"the input has shape {x.shape}, the net's input '{input_name}' takes "
                             f"{want} per image (shape {tuple(blob.shape)} with the batch axis)")
    os.makedirs(outdir, exist_ok=True)
    original = tuple(blob.shape)
    try:
        if original[0] != 1:
            blob.reshape(1, *want)
        blob.data[...] = x[None]
        outputs = net.forward()
        blobs = _blob_entries(net, outdir, max_tiles, min_tile_px)
        layers, totals = _layer_entries(net, outdir, max_tiles, min_tile_px)
    finally:
        if original[0] != 1:
            blob.reshape(*original)
            net.reshape()
    result = {
        "version": VISUALIZATION_VERSION,
        "net": net.name,
        "input": {"blob": input_name, "shape": [int(d) for d in want]},
        "outputs": {n: [float(v) for v in np.asarray(a).reshape(-1)[:MAX_LISTED_VALUES]]
                    for n, a in outputs.items()},
        "max_tiles": max_tiles,
        "blobs": blobs,
        "layers": layers,
        "totals": totals,
    }
    with open(os.path.join(outdir, "visualization.json"), "w") as f:
        json.dump(result, f, indent=1, allow_nan=False)
    return result


def _producers(net) -> dict[str, list]:
    """blob name -> the layers (in order) that write it (several when used in place)."""
    out: dict[str, list] = {}
    for layer in net.layers:
        for t in layer.param.top:
            out.setdefault(t, []).append(layer)
    return out


def _blob_entries(net, outdir: str, max_tiles: int, min_tile_px: int) -> list[dict]:
    producers = _producers(net)
    entries: list[dict] = []
    paths: dict[str, dict] = {}
    for i, (name, blob) in enumerate(net.blobs.items()):
        data = np.asarray(blob.data)
        by = producers.get(name, [])
        entry = {"name": name, "produced_by": [layer.name for layer in by], "in_place": len(by) > 1,
                 "stats": array_stats(data)}
        if len(by) > 1:
            entry["note"] = f"written in place by {len(by)} layers: the value after '{by[-1].name}'"
        src = by[-1] if by else None
        if (src is not None and src.type == "Split" and src.param.bottom[0] in paths
                and np.array_equal(data, net.blobs[src.param.bottom[0]].data)):
            # Caffe's Split copies its bottom: point at the bottom's image instead of a copy
            entry["same_as"] = src.param.bottom[0]
            entry["image"] = paths[src.param.bottom[0]]
        else:
            # the first image of the batch (batch 1 here); a 0-/1-D blob is drawn whole
            sample = data[0] if data.ndim >= 2 else data
            tiles = _tiles_for(sample, max_tiles) if sample.ndim == 3 else _vector_tiles(sample)
            entry["image"] = _write_tiles(tiles, outdir, os.path.join("blobs", safe_name(i, name) + ".png"),
                                          sample, min_tile_px)
        paths[name] = entry["image"]
        entries.append(entry)
    return entries


_BLOB_LABELS = {  # (layer type, blob attribute) -> (key, label)
    ("Convolution", "weight"): ("weights", "filters"),
    ("Deconvolution", "weight"): ("weights", "filters"),
    ("InnerProduct", "weight"): ("weights", "weights"),
    ("Scale", "weight"): ("gamma", "scale γ"),
    ("Scale", "bias"): ("beta", "bias β"),
    ("PReLU", "weight"): ("slope", "negative slope"),
}


def _layer_entries(net, outdir: str, max_tiles: int, min_tile_px: int) -> tuple[list[dict], dict]:
    owned = {(id(e.layer), e.index) for e in net.caffe_params}
    owner_of = {id(e.tensor): e.layer.name for e in net.caffe_params}
    entries = []
    for li, layer in enumerate(net.layers):
        tensors = layer.blob_tensors
        if not tensors:
            continue
        stored, learnable, statistics = [], 0, 0
        for bi, t in enumerate(tensors):
            role = "learnable" if layer.blob_is_learnable(bi) else "statistics"
            n = int(t.numel())
            learnable += n if role == "learnable" else 0
            statistics += n if role == "statistics" else 0
            s = {"index": bi, "name": layer.blob_names[bi], "shape": [int(d) for d in t.shape],
                 "count": n, "role": role}
            if role == "learnable":
                s["lr_mult"] = float(layer.param_spec(bi).lr_mult)
            if (id(layer), bi) not in owned:
                s["shared_from"] = owner_of.get(id(t))
            stored.append(s)
        entry = {"name": layer.name, "type": layer.type, "bottoms": list(layer.param.bottom),
                 "tops": list(layer.param.top),
                 "params": {"learnable": learnable, "statistics": statistics, "total": learnable + statistics},
                 "stored": stored}
        base = os.path.join("params", safe_name(li, layer.name))
        if layer.type == "BatchNorm" and hasattr(layer, "_global_stats"):
            views, entry["batchnorm"] = _batchnorm_views(layer)
        else:
            views = [_plain_view(net, layer, bi) for bi in range(len(tensors))]
        entry["weights"] = [_weight_entry(v, outdir, base, max_tiles, min_tile_px) for v in views]
        entries.append(entry)
    totals = {"learnable": sum(int(e.tensor.numel()) for e in net.caffe_params if e.learnable),
              "statistics": sum(int(e.tensor.numel()) for e in net.caffe_params if not e.learnable)}
    totals["total"] = totals["learnable"] + totals["statistics"]
    return entries, totals


def _np(t) -> np.ndarray:
    """A parameter tensor as numpy, in its own precision (float32: no float64 copy of fc6)."""
    import torch
    t = t.detach().cpu()
    return (t if t.dtype == torch.float64 else t.float()).numpy()


def _plain_view(net, layer, bi: int) -> dict:
    """How to show blob ``bi`` of a layer that is not a BatchNorm."""
    attr = layer.blob_names[bi]
    key, label = _BLOB_LABELS.get((layer.type, attr), (attr, attr))
    arr = _np(layer.blob_tensors[bi])
    tiles = None
    if arr.ndim == 4 and layer.type in ("Convolution", "Deconvolution"):
        axes = ("output channel", "input channel") if layer.type == "Convolution" else \
            ("input channel", "output channel")
        tiles = lambda mt: _filter_tiles(arr, mt, axes)  # noqa: E731
    elif layer.type == "InnerProduct" and attr == "weight" and not layer.param.inner_product_param.transpose:
        # a row of W is a template over the bottom's (C, H, W): draw it as filters
        p = layer.param.inner_product_param
        bshape = tuple(net.blobs[layer.param.bottom[0]].shape)
        axis = p.axis % len(bshape)
        per = bshape[axis:]
        if len(per) == 3 and per[1] * per[2] > 1 and math.prod(per) == arr.shape[1]:
            filt = arr.reshape(arr.shape[0], *per)
            tiles = lambda mt: _filter_tiles(filt, mt, ("output", "input channel"))  # noqa: E731
    return {"key": key, "label": label, "role": "learnable" if layer.blob_is_learnable(bi) else "statistics",
            "from_blobs": [bi], "values": arr, "tiles": tiles}


def _batchnorm_views(layer) -> tuple[list[dict], dict]:
    """BatchNorm as it normalises in TEST: the global statistics the layer itself computes
    (BVLC: blob0 / s, blob1 / s with s = blob2, 0 when s == 0; NVCaffe: the normalised averages,
    over the correction blob), then γ and β with ``scale_bias``."""
    mean, var = (_np(t) for t in layer._global_stats())  # (C,), (C,)
    s = float(layer.factor.reshape(-1)[0])
    nv = bool(getattr(layer, "nvcaffe", False))
    div = "correction" if nv else "s"
    views = [
        {"key": "running_mean", "label": f"running mean (blob 0 / {div})", "role": "statistics",
         "from_blobs": [0, 2], "values": mean, "tiles": None},
        {"key": "running_var", "label": f"running variance (blob 1 / {div})", "role": "statistics",
         "from_blobs": [1, 2], "values": var, "tiles": None},
    ]
    if getattr(layer, "scale_bias", False):
        views += [{"key": "gamma", "label": "scale γ", "role": "learnable", "from_blobs": [3],
                   "values": _np(layer.weight), "tiles": None},
                  {"key": "beta", "label": "bias β", "role": "learnable", "from_blobs": [4],
                   "values": _np(layer.bias), "tiles": None}]
    info = {
        "dialect": "nvcaffe" if nv else "bvlc",
        "scale_factor": s,
        "eps": float(layer.eps),
        "moving_average_fraction": float(layer.maf),
        "normalizes_with": "running statistics" if layer.use_global_stats else "batch statistics",
        "has_scale_bias": bool(getattr(layer, "scale_bias", False)),
        "note": ("Caffe's BatchNorm stores the running sums and their weight s (blob 2); the "
                 "statistics are blob0 / s and blob1 / s, 0 when s == 0" if not nv else
                 "NVCaffe stores normalised running averages; the correction blob (2) is 1"),
    }
    if s == 0:
        info["warning"] = "s is 0: the statistics never accumulated (this layer was not trained)"
    return views, info


def _weight_entry(view: dict, outdir: str, base: str, max_tiles: int, min_tile_px: int) -> dict:
    arr = view["values"]
    entry = {"name": view["key"], "label": view["label"], "role": view["role"],
             "from_blobs": view["from_blobs"], "stats": array_stats(arr)}
    if arr.ndim <= 1 and arr.size <= MAX_LISTED_VALUES:
        entry["values"] = [float(v) for v in arr.reshape(-1)]
    tiles = view["tiles"](max_tiles) if view["tiles"] is not None else _tiles_for(arr, max_tiles)
    entry["image"] = _write_tiles(tiles, outdir, f"{base}_{view['key']}.png", arr, min_tile_px)
    return entry


# ----- top images per class ----------------------------------------------------------------
def class_grid_path(index: int, label: str) -> str:
    """Where :func:`top_images_per_class` writes class ``index``'s grid, relative to OUTDIR."""
    return f"top_images/{safe_name(index, label)}.png"


def top_images_per_class(scores: Iterable[tuple[str, np.ndarray]], labels: list[str], k: int,
                         outdir: str, load_image: Callable[[str], "Image.Image"]) -> dict:
    """The ``k`` most confident images of each class over a stream of (source, probabilities).

    ``scores`` yields (source, probability vector of len(labels)); it is read once and may be
    any length: a min-heap of at most ``k`` entries per class is all that is kept
    (O(classes·k) memory).  An image counts for every class by that class's probability, as
    DIGITS' "top N per category" did; equal probabilities keep the earlier image.

    Writes ``outdir/top_images.json`` = {label: [{"source", "prob"}, ...]} (most confident
    first) and, for each class with images, a grid of ``THUMB_PX``-pixel thumbnails in that
    order at :func:`class_grid_path` (near-square, row-major, ``THUMB_GAP``-pixel gaps).
    ``load_image(source)`` is called only for kept images; one that fails to load leaves its
    cell empty and its entry gets an ``error``.  Returns the JSON's dict.
    """
    if k < 1:
        raise VisualizeError(f"top images per class: k must be at least 1, got {k}")
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise VisualizeError(f"top images per class: labels must be unique ({', '.join(dup)} repeated)")
    c = len(labels)
    heaps: list[list] = [[] for _ in range(c)]
    # floor[j]: the probability a new image must beat to enter class j (-inf until k are kept)
    floor = np.full(c, -np.inf)
    seq = 0
    for source, probs in scores:
        p = np.asarray(probs, dtype=np.float64).reshape(-1)
        if p.size != c:
            raise VisualizeError(f"top images per class: '{source}' has {p.size} scores for {c} labels")
        # entries (prob, -seq, source): the heap's root is the least probable, latest image,
        # so on a tie the newcomer is the one dropped
        for j in np.flatnonzero(p > floor):
            item = (float(p[j]), -seq, source)
            h = heaps[j]
            if len(h) < k:
                heapq.heappush(h, item)
            else:
                heapq.heapreplace(h, item)
            if len(h) == k:
                floor[j] = h[0][0]
        seq += 1
    os.makedirs(outdir, exist_ok=True)
    result: dict = {}
    for j, label in enumerate(labels):
        best = sorted(heaps[j], key=lambda e: (-e[0], -e[1]))
        items = [{"source": src, "prob": prob} for prob, _, src in best]
        if items:
            _write_grid(items, os.path.join(outdir, class_grid_path(j, label)), load_image)
        result[label] = items
    with open(os.path.join(outdir, "top_images.json"), "w") as f:
        json.dump(result, f, indent=1, allow_nan=False)
    return result


def _write_grid(items: list[dict], path: str, load_image: Callable[[str], "Image.Image"]) -> None:
    rows, cols = _near_square(len(items))
    step = THUMB_PX + THUMB_GAP
    grid = Image.new("RGB", (cols * step - THUMB_GAP, rows * step - THUMB_GAP), SEPARATOR_RGB)
    for i, item in enumerate(items):
        try:
            img = load_image(item["source"]).convert("RGB")
        except Exception as e:  # a bad file must not lose the other thumbnails; say why
            item["error"] = f"{type(e).__name__}: {e}"
            continue
        # fit the cell, aspect kept: small images (28-px digits) enlarged with crisp pixels
        f = THUMB_PX / max(img.width, img.height)
        size = (max(1, round(img.width * f)), max(1, round(img.height * f)))
        img = img.resize(size, Image.NEAREST if f > 1 else Image.LANCZOS)
        r, c = divmod(i, cols)
        # centred in its cell (the aspect ratio is kept)
        grid.paste(img, (c * step + (THUMB_PX - img.width) // 2, r * step + (THUMB_PX - img.height) // 2))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    grid.save(path)
