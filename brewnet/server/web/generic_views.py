"""DIGITS' view extensions of generic inference (doc digits-other-jobs.md §1.8), as pure functions:
numpy arrays in, what a page shows out (PNG data URLs, numbers, chart data).  No request, no
file: :mod:`brewnet.server.web.generic_inference_pages` feeds them and renders the result.

A view is picked with the form field ``view_extension_id`` plus its own config fields
(:data:`VIEWS`; :func:`parse_view_config` checks them with DIGITS' defaults).  Per inferred item
:func:`render_item` gives the view of its outputs (``{blob: array without the batch axis}``) over
its input image; over a labelled set :func:`segmentation_summary` (per-class IoU, mean IoU, pixel
accuracy from the evaluation) and :func:`regression_summary` (predicted-vs-true scatter and error
histogram) give what is shown once for the whole set.

Views:
- ``all-raw-data``: every output blob as numbers; arrays of more than :data:`RAW_VALUES_MAX`
  values are summarised (shape, min, max, mean, std, the first values).
- ``image-image-output``: the first output as a C×H×W image with 1 or 3 channels (``channel_order``
  rgb/bgr, ``pixel_conversion`` normalize: min..max → 0..255, or clip to 0..255).
- ``image-segmentation``: the first output as C×H×W class scores, its per-pixel argmax coloured
  with ``colormap`` dataset (the dataset's palette), paired (ColorBrewer's 12 "Paired" colours,
  matplotlib's map of that name) or none (grey levels), over the input; class 0 (background) is
  left transparent; the class borders are drawn opaque; a legend of the classes present.
- ``image-gradients``: the first output's two values (gx, gy) as an arrow from the image centre
  along (gx·W, gy·H), ``arrow_size`` % long, in ``arrow_color``.
"""
from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from PIL import Image

from ..errors import FormErrors

#: arrays of up to this many values are shown whole by the raw view, larger ones summarised
RAW_VALUES_MAX = 64
#: values of a summarised array shown as its beginning
RAW_HEAD = 8
#: points of the regression scatter (a sample of the set beyond that)
SCATTER_MAX = 2000
#: bins of the regression error histogram
HIST_BINS = 30
#: opacity of a class colour over the input image (the borders are opaque)
OVERLAY_ALPHA = 0.5
#: ColorBrewer's "Paired" (matplotlib's colormap of that name): 12 colours, cycled for more classes
PAIRED = ("#a6cee3", "#1f78b4", "#b2df8a", "#33a02c", "#fb9a99", "#e31a1c",
          "#fdbf6f", "#ff7f00", "#cab2d6", "#6a3d9a", "#ffff99", "#b15928")
ARROW_COLORS = {"red": "#e00000", "green": "#00b000", "blue": "#0040ff"}
NO_PALETTE = "No palette found in dataset - choose other colormap"   # DIGITS' text


@dataclass(frozen=True)
class ConfigField:
    """One config field of a view: a select (``choices``) or a whole number ≥ ``minimum``."""
    name: str
    label: str
    default: str
    choices: tuple[tuple[str, str], ...] = ()
    minimum: int | None = None


@dataclass(frozen=True)
class View:
    id: str
    title: str
    fields: tuple[ConfigField, ...] = field(default_factory=tuple)


VIEWS: dict[str, View] = {v.id: v for v in (
    View("all-raw-data", "Raw Data"),
    View("image-image-output", "Image output", (
        ConfigField("channel_order", "Channel order", "rgb", (("rgb", "RGB"), ("bgr", "BGR"))),
        ConfigField("pixel_conversion", "Pixel conversion", "normalize",
                    (("normalize", "Normalize (min..max to 0..255)"), ("clip", "Clip to 0..255"))))),
    View("image-segmentation", "Image Segmentation", (
        ConfigField("colormap", "Colormap", "dataset",
                    (("dataset", "From dataset"), ("paired", "Paired (matplotlib)"),
                     ("none", "None (grey levels)"))),)),
    View("image-gradients", "Gradients", (
        ConfigField("arrow_color", "Arrow color", "red", tuple((c, c.title()) for c in ARROW_COLORS)),
        ConfigField("arrow_size", "Arrow size (%)", "80", minimum=1))),
)}
DEFAULT_VIEW = "all-raw-data"


def parse_view_config(form: Mapping[str, str]) -> tuple[str, dict]:
    """``(view_extension_id, config)`` from a form: DIGITS' default view and field defaults for
    what is missing; FormErrors (400) for an unknown view or a value out of its choices."""
    view_id = str(form.get("view_extension_id") or DEFAULT_VIEW).strip()
    view = VIEWS.get(view_id)
    if view is None:
        raise FormErrors({"view_extension_id": [f"Not a valid choice: {view_id!r} (one of {', '.join(VIEWS)})"]})
    config, errors = {}, {}
    for f in view.fields:
        raw = str(form.get(f.name) or "").strip() or f.default
        if f.choices:
            if raw not in {c for c, _ in f.choices}:
                errors[f.name] = [f"Not a valid choice: {raw!r} (one of {', '.join(c for c, _ in f.choices)})"]
            config[f.name] = raw
        else:
            try:
                value = int(raw)
            except ValueError:
                errors[f.name] = [f"Not a valid integer value: {raw!r}"]
                continue
            if f.minimum is not None and value < f.minimum:
                errors[f.name] = [f"Number must be at least {f.minimum}."]
            config[f.name] = value
    if errors:
        raise FormErrors(errors)
    return view_id, config


def check_view_against_dataset(view_id: str, config: Mapping, facts: Mapping) -> None:
    """The checks a view makes before anything runs: the segmentation view's ``dataset``
    colormap needs the dataset's palette (DIGITS' message)."""
    if view_id == "image-segmentation" and config.get("colormap") == "dataset" and not facts.get("color_palette"):
        raise FormErrors({"colormap": [NO_PALETTE]})


# ----------------------------------------------------------------------- helpers

def png_data_url(arr: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URL of an H×W (grey), H×W×3 (RGB) or H×W×4 (RGBA) uint8 array."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _finite_stats(a: np.ndarray) -> dict:
    f = a[np.isfinite(a)] if a.size else a
    if not f.size:
        return {"min": None, "max": None, "mean": None, "std": None}
    return {"min": float(f.min()), "max": float(f.max()), "mean": float(f.mean()), "std": float(f.std())}


def summarise_array(name: str, a: np.ndarray) -> dict:
    """The raw view of one blob: ``{name, shape, count, values}`` with every value when there
    are at most :data:`RAW_VALUES_MAX`, else ``{..., summarised: True, head, min, max, mean, std}``."""
    a = np.asarray(a, dtype=np.float64)
    out = {"name": name, "shape": list(a.shape), "count": int(a.size)}
    if a.size <= RAW_VALUES_MAX:
        out["values"] = a.tolist()
        out["summarised"] = False
        return out
    out.update(summarised=True, head=a.reshape(-1)[:RAW_HEAD].tolist(), **_finite_stats(a))
    return out


def _first(outputs: Mapping[str, np.ndarray]) -> tuple[str, np.ndarray]:
    if not outputs:
        raise ValueError("the net gave no output blob")
    name = next(iter(outputs))
    return name, np.asarray(outputs[name])


def _hex_rgb(colour: str) -> tuple[int, int, int]:
    return int(colour[1:3], 16), int(colour[3:5], 16), int(colour[5:7], 16)


def class_colours(num_classes: int, colormap: str, palette: list[int] | None) -> np.ndarray:
    """(num_classes, 3) uint8 colour of each class index under ``colormap`` (dataset: the
    768-int palette, zeros past its end; paired: PAIRED cycled from class 1; none: grey levels
    spread over 0..255, so that neighbouring indices stay apart)."""
    n = max(1, int(num_classes))
    if colormap == "dataset":
        if not palette:
            raise ValueError(NO_PALETTE)
        pal = np.zeros((max(n, 256), 3), np.uint8)
        flat = np.asarray(palette[:768], dtype=np.int64).clip(0, 255).astype(np.uint8)
        pal.reshape(-1)[:flat.size] = flat
        return pal[:n]
    if colormap == "paired":
        out = np.zeros((n, 3), np.uint8)
        for k in range(1, n):
            out[k] = _hex_rgb(PAIRED[(k - 1) % len(PAIRED)])
        return out
    grey = np.round(np.arange(n) * (255.0 / max(n - 1, 1))).astype(np.uint8)
    return np.stack([grey] * 3, axis=1)


def class_name(index: int, class_labels: list[str] | None) -> str:
    """DIGITS' legend text: the dataset's class label, else ``Class #i``."""
    if class_labels and 0 <= index < len(class_labels):
        return str(class_labels[index])
    return f"Class #{index}"


def _rgb(image: np.ndarray | None, height: int, width: int) -> np.ndarray:
    """``image`` (H×W grey, H×W×3/4) as H×W×3 uint8 at ``height``×``width``; mid-grey when absent."""
    if image is None:
        return np.full((height, width, 3), 128, np.uint8)
    im = Image.fromarray(np.ascontiguousarray(image)).convert("RGB")
    if im.size != (width, height):
        im = im.resize((width, height), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8)


def _borders(classes: np.ndarray) -> np.ndarray:
    """H×W bool: pixels whose class differs from a 4-neighbour's (both sides of each border)."""
    b = np.zeros(classes.shape, bool)
    dy = classes[1:, :] != classes[:-1, :]
    dx = classes[:, 1:] != classes[:, :-1]
    b[1:, :] |= dy
    b[:-1, :] |= dy
    b[:, 1:] |= dx
    b[:, :-1] |= dx
    return b


# ----------------------------------------------------------------------- the views of one item

def raw_view(outputs: Mapping[str, np.ndarray]) -> dict:
    return {"view": "all-raw-data", "blobs": [summarise_array(k, v) for k, v in outputs.items()]}


def image_output_view(outputs: Mapping[str, np.ndarray], channel_order: str = "rgb",
                      pixel_conversion: str = "normalize") -> dict:
    """The first output as an image (see the module docstring); ValueError when it is not
    C×H×W (or H×W) with 1 or 3 channels."""
    name, a = _first(outputs)
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ValueError(f"Image output needs a C×H×W output with 1 or 3 channels; "
                         f"'{name}' has shape {list(np.shape(outputs[name]))}")
    if a.shape[0] == 3 and channel_order == "bgr":
        a = a[::-1]
    if pixel_conversion == "normalize":
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    a = np.nan_to_num(a, nan=0.0).clip(0, 255)
    hwc = np.rint(a).astype(np.uint8).transpose(1, 2, 0)
    picture = hwc[..., 0] if hwc.shape[2] == 1 else hwc
    return {"view": "image-image-output", "blob": name, "image": png_data_url(picture),
            "width": int(hwc.shape[1]), "height": int(hwc.shape[0])}


def segmentation_view(outputs: Mapping[str, np.ndarray], image: np.ndarray | None, colormap: str = "dataset",
                      palette: list[int] | None = None, class_labels: list[str] | None = None) -> dict:
    """The first output's per-pixel argmax coloured over ``image`` (see the module docstring):
    ``{overlay, mask (RGBA, background transparent), legend: [{index, name, color, pixels}]}``."""
    name, a = _first(outputs)
    a = np.asarray(a)
    if a.ndim != 3 or a.shape[0] < 2:
        raise ValueError(f"Image Segmentation needs C×H×W class scores with C ≥ 2; "
                         f"'{name}' has shape {list(a.shape)}")
    num_classes, height, width = a.shape
    classes = np.argmax(np.nan_to_num(a, nan=-np.inf), axis=0)          # (H, W) class index
    colours = class_colours(num_classes, colormap, palette)              # (C, 3)
    painted = colours[classes]                                           # (H, W, 3)
    fg = classes > 0
    edge = _borders(classes) & fg
    base = _rgb(image, height, width).astype(np.float64)
    overlay = base.copy()
    overlay[fg] = (1 - OVERLAY_ALPHA) * base[fg] + OVERLAY_ALPHA * painted[fg]
    overlay[edge] = painted[edge]
    mask = np.zeros((height, width, 4), np.uint8)
    mask[..., :3] = painted
    mask[..., 3] = np.where(fg, 255, 0)
    counts = np.bincount(classes.reshape(-1), minlength=num_classes)
    legend = [{"index": k, "name": class_name(k, class_labels), "pixels": int(counts[k]),
               "color": "#%02x%02x%02x" % tuple(int(c) for c in colours[k])}
              for k in range(num_classes) if counts[k]]
    return {"view": "image-segmentation", "blob": name, "overlay": png_data_url(np.rint(overlay).astype(np.uint8)),
            "mask": png_data_url(mask), "legend": legend, "width": int(width), "height": int(height)}


def gradients_view(outputs: Mapping[str, np.ndarray], image: np.ndarray | None, arrow_color: str = "red",
                   arrow_size: int = 80) -> dict:
    """The first output's (gx, gy) as an arrow from the centre of ``image``: ``{image, width,
    height, gx, gy, x1, y1, x2, y2, color}`` (pixel coordinates for an SVG over the image)."""
    name, a = _first(outputs)
    flat = np.asarray(a, dtype=np.float64).reshape(-1)
    if flat.size < 2:
        raise ValueError(f"Gradients needs an output of two values (gx, gy); '{name}' has shape {list(np.shape(a))}")
    gx, gy = float(flat[0]), float(flat[1])
    if image is None:
        height = width = 64
    else:
        height, width = int(image.shape[0]), int(image.shape[1])
    rgb = _rgb(image, height, width)
    scale = float(arrow_size) / 100.0
    x1, y1 = width / 2.0, height / 2.0
    x2 = x1 + (gx * width * scale if math.isfinite(gx) else 0.0)
    y2 = y1 + (gy * height * scale if math.isfinite(gy) else 0.0)
    return {"view": "image-gradients", "blob": name, "image": png_data_url(rgb), "width": width, "height": height,
            "gx": gx, "gy": gy, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
            "color": ARROW_COLORS.get(arrow_color, ARROW_COLORS["red"])}


def render_item(view_id: str, config: Mapping, outputs: Mapping[str, np.ndarray], image: np.ndarray | None = None,
                facts: Mapping | None = None) -> dict:
    """The view ``view_id`` of one item's outputs; a view that cannot show them answers
    ``{"view", "error"}`` with the reason and the raw numbers, so one odd item never hides the rest."""
    facts = facts or {}
    try:
        if view_id == "image-image-output":
            return image_output_view(outputs, config.get("channel_order", "rgb"),
                                     config.get("pixel_conversion", "normalize"))
        if view_id == "image-segmentation":
            return segmentation_view(outputs, image, config.get("colormap", "dataset"),
                                     facts.get("color_palette"), facts.get("class_labels"))
        if view_id == "image-gradients":
            return gradients_view(outputs, image, config.get("arrow_color", "red"), int(config.get("arrow_size", 80)))
        return raw_view(outputs)
    except ValueError as e:
        return {**raw_view(outputs), "view": view_id, "error": str(e)}


# ----------------------------------------------------------------------- summaries of a labelled set

def segmentation_summary(metrics: Mapping[str, float], facts: Mapping | None = None) -> dict:
    """The evaluation's segmentation metrics (names of brewnet.solver.task_metrics:
    ``pixel_accuracy``, ``mean_iou``, ``iou[k]``, possibly with a ``<layer>/`` prefix) as a table:
    ``{pixel_accuracy, mean_iou, classes: [{index, name, iou}]}`` (None when absent)."""
    facts = facts or {}
    ious: dict[int, float] = {}
    found: dict[str, float] = {}
    for key, value in metrics.items():
        bare = key.rsplit("/", 1)[-1]
        if bare.startswith("iou[") and bare.endswith("]"):
            try:
                ious.setdefault(int(bare[4:-1]), float(value))
            except ValueError:
                continue
        elif bare in ("pixel_accuracy", "mean_iou"):
            found.setdefault(bare, float(value))
    if not ious and not found:
        return {}
    classes = [{"index": k, "name": class_name(k, facts.get("class_labels")),
                "iou": None if not math.isfinite(v) else v} for k, v in sorted(ious.items())]
    return {"pixel_accuracy": found.get("pixel_accuracy"), "mean_iou": found.get("mean_iou"), "classes": classes}


def regression_summary(predicted: list[np.ndarray], true: list[np.ndarray], metrics: Mapping[str, float] | None = None,
                       names: list[str] | None = None) -> dict:
    """Predicted vs true values over a labelled set (item i: ``predicted[i]``, ``true[i]``,
    arrays of one size): per output dimension a scatter (at most :data:`SCATTER_MAX` points)
    and, for all dimensions together, a histogram of predicted − true; ``rmse``/``mae`` from
    ``metrics`` (the evaluation's), else computed here over the same values."""
    if not predicted:
        return {}
    p = np.stack([np.asarray(x, dtype=np.float64).reshape(-1) for x in predicted])   # (N, D)
    t = np.stack([np.asarray(x, dtype=np.float64).reshape(-1) for x in true])        # (N, D)
    if p.shape != t.shape:
        raise ValueError(f"predictions have {p.shape[1]} values an item, labels {t.shape[1]}")
    n, dims = p.shape
    step = max(1, math.ceil(n / SCATTER_MAX))
    scatter = [{"dimension": d, "name": (names[d] if names and d < len(names) else f"output[{d}]"),
                "true": t[::step, d].tolist(), "predicted": p[::step, d].tolist()} for d in range(dims)]
    err = (p - t).reshape(-1)
    err = err[np.isfinite(err)]
    counts, edges = np.histogram(err, bins=HIST_BINS) if err.size else (np.zeros(0, int), np.zeros(1))
    metrics = dict(metrics or {})
    rmse = _metric(metrics, "rmse")
    mae = _metric(metrics, "mae")
    if rmse is None and err.size:
        rmse = float(np.sqrt(np.mean(err ** 2)))
    if mae is None and err.size:
        mae = float(np.mean(np.abs(err)))
    lo = float(min(t.min(), p.min())) if t.size else 0.0
    hi = float(max(t.max(), p.max())) if t.size else 1.0
    return {"count": int(n), "dimensions": int(dims), "scatter": scatter, "range": [lo, hi],
            "histogram": {"counts": counts.tolist(), "edges": edges.tolist()}, "rmse": rmse, "mae": mae}


def _metric(metrics: Mapping[str, float], name: str) -> float | None:
    for key, value in metrics.items():
        if key.rsplit("/", 1)[-1] == name:
            return float(value)
    return None
