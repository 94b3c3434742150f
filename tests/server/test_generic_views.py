"""brewnet.server.web.generic_views: DIGITS' view extensions of generic inference (doc §1.8) as pure
functions, checked on hand-made arrays whose pictures are known pixel by pixel."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from brewnet.server.errors import FormErrors
from brewnet.server.web import generic_views as gv


def _decode(url: str) -> np.ndarray:
    head, data = url.split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def test_view_config_defaults_and_checks():
    assert gv.parse_view_config({}) == ("all-raw-data", {})
    assert gv.parse_view_config({"view_extension_id": "image-image-output"}) == (
        "image-image-output", {"channel_order": "rgb", "pixel_conversion": "normalize"})
    assert gv.parse_view_config({"view_extension_id": "image-gradients", "arrow_size": "50"}) == (
        "image-gradients", {"arrow_color": "red", "arrow_size": 50})
    with pytest.raises(FormErrors) as e:
        gv.parse_view_config({"view_extension_id": "no-such-view"})
    assert "view_extension_id" in e.value.errors
    with pytest.raises(FormErrors) as e:
        gv.parse_view_config({"view_extension_id": "image-segmentation", "colormap": "jet"})
    assert "colormap" in e.value.errors
    with pytest.raises(FormErrors) as e:
        gv.parse_view_config({"view_extension_id": "image-gradients", "arrow_size": "0"})
    assert e.value.errors["arrow_size"] == ["Number must be at least 1."]


def test_dataset_colormap_needs_a_palette():
    with pytest.raises(FormErrors) as e:
        gv.check_view_against_dataset("image-segmentation", {"colormap": "dataset"}, {"color_palette": None})
    assert e.value.errors["colormap"] == ["No palette found in dataset - choose other colormap"]
    gv.check_view_against_dataset("image-segmentation", {"colormap": "paired"}, {})
    gv.check_view_against_dataset("image-segmentation", {"colormap": "dataset"}, {"color_palette": [0] * 768})


def test_raw_view_shows_small_arrays_whole_and_summarises_large_ones():
    small = np.array([0.5, -0.25], np.float32)
    large = np.arange(100, dtype=np.float32).reshape(1, 10, 10)
    view = gv.render_item("all-raw-data", {}, {"output": small, "big": large})
    a, b = view["blobs"]
    assert a == {"name": "output", "shape": [2], "count": 2, "values": [0.5, -0.25], "summarised": False}
    assert b["summarised"] and b["shape"] == [1, 10, 10] and b["count"] == 100
    assert b["head"] == list(range(8)) and b["min"] == 0 and b["max"] == 99
    assert b["mean"] == pytest.approx(49.5)


def test_image_output_normalize_clip_and_channel_order():
    a = np.zeros((3, 2, 2), np.float32)
    a[0] = [[-1, 0], [1, 3]]          # R: min -1, max 3 over the whole array
    view = gv.image_output_view({"out": a}, "rgb", "normalize")
    img = _decode(view["image"])
    assert img.shape == (2, 2, 3)
    assert img[..., 0].tolist() == [[0, 64], [128, 255]]     # (v + 1) * 255 / 4, rounded
    assert img[..., 1].tolist() == [[64, 64], [64, 64]]
    flipped = _decode(gv.image_output_view({"out": a}, "bgr", "normalize")["image"])
    assert flipped[..., 2].tolist() == img[..., 0].tolist()
    grey = np.array([[[-5.0, 100.4], [300.0, 254.6]]], np.float32)   # 1×2×2
    clipped = _decode(gv.image_output_view({"out": grey}, "rgb", "clip")["image"])
    assert clipped.tolist() == [[0, 100], [255, 255]]
    bad = gv.render_item("image-image-output", {}, {"out": np.zeros((2, 4, 4))})
    assert "1 or 3 channels" in bad["error"] and bad["blobs"][0]["shape"] == [2, 4, 4]


def test_segmentation_overlay_mask_and_legend():
    scores = np.zeros((3, 4, 4), np.float32)
    scores[0] = 1.0
    scores[2, :2, :2] = 5.0           # class 2 in the top-left 2×2
    palette = [0, 0, 0, 10, 20, 30, 200, 100, 0] + [0] * (768 - 9)
    image = np.full((8, 8, 3), 40, np.uint8)   # resized to the 4×4 output
    view = gv.segmentation_view({"score": scores}, image, "dataset", palette, ["background", "square", "disc"])
    mask = _decode(view["mask"])
    assert mask.shape == (4, 4, 4)
    assert mask[0, 0].tolist() == [200, 100, 0, 255]
    assert mask[3, 3, 3] == 0                       # background: transparent
    overlay = _decode(view["overlay"])
    assert overlay[3, 3].tolist() == [40, 40, 40]   # background keeps the image
    assert overlay[1, 1].tolist() == [200, 100, 0]  # a border pixel of the class: opaque
    # (0,0) has only class-2 neighbours: no border, so the colour is blended half over the image
    assert overlay[0, 0].tolist() == [120, 70, 20]
    assert view["legend"] == [{"index": 0, "name": "background", "pixels": 12, "color": "#000000"},
                              {"index": 2, "name": "disc", "pixels": 4, "color": "#c86400"}]
    none = gv.segmentation_view({"score": scores}, None, "none", None, None)
    assert [entry["name"] for entry in none["legend"]] == ["Class #0", "Class #2"]
    assert none["legend"][1]["color"] == "#ffffff"   # the last of 3 grey levels
    with pytest.raises(ValueError, match="No palette"):
        gv.segmentation_view({"score": scores}, None, "dataset", None, None)
    assert "C ≥ 2" in gv.render_item("image-segmentation", {"colormap": "paired"},
                                     {"score": np.zeros((1, 4, 4))})["error"]


def test_segmentation_blends_inside_a_region():
    scores = np.zeros((2, 5, 5), np.float32)
    scores[1, 1:4, 1:4] = 1.0         # a 3×3 square: its centre is no border
    view = gv.segmentation_view({"s": scores}, np.zeros((5, 5, 3), np.uint8), "paired")
    overlay = _decode(view["overlay"])
    r, g, b = (int(gv.PAIRED[0][i:i + 2], 16) for i in (1, 3, 5))   # class 1: Paired's first colour
    assert overlay[2, 2].tolist() == [round(r * 0.5), round(g * 0.5), round(b * 0.5)]
    assert overlay[1, 1].tolist() == [r, g, b]


def test_gradients_arrow():
    view = gv.gradients_view({"output": np.array([[[0.5, -0.25]]])}, np.zeros((20, 40), np.uint8), "blue", 50)
    assert (view["width"], view["height"]) == (40, 20)
    assert (view["x1"], view["y1"]) == (20.0, 10.0)
    assert view["x2"] == pytest.approx(20 + 0.5 * 40 * 0.5)
    assert view["y2"] == pytest.approx(10 - 0.25 * 20 * 0.5)
    assert view["color"] == gv.ARROW_COLORS["blue"]
    assert "two values" in gv.render_item("image-gradients", {"arrow_size": 80}, {"o": np.zeros(1)})["error"]


def test_segmentation_summary_reads_task_metric_names():
    metrics = {"score/pixel_accuracy": 0.9, "score/mean_iou": 0.75, "score/iou[0]": 0.95, "score/iou[2]": 0.55,
               "score/iou[1]": float("nan")}
    table = gv.segmentation_summary(metrics, {"class_labels": ["bg", "a", "b"]})
    assert table["pixel_accuracy"] == 0.9 and table["mean_iou"] == 0.75
    assert table["classes"] == [{"index": 0, "name": "bg", "iou": 0.95}, {"index": 1, "name": "a", "iou": None},
                                {"index": 2, "name": "b", "iou": 0.55}]
    assert gv.segmentation_summary({"loss": 1.0}) == {}


def test_regression_summary_scatter_and_histogram():
    true = [np.array([0.1 * i, -0.1 * i]) for i in range(5)]
    pred = [t + np.array([0.1, -0.1]) for t in true]
    s = gv.regression_summary(pred, true)
    assert s["count"] == 5 and s["dimensions"] == 2
    assert s["scatter"][0]["true"] == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert s["scatter"][1]["predicted"] == pytest.approx([-0.1, -0.2, -0.3, -0.4, -0.5])
    assert sum(s["histogram"]["counts"]) == 10
    assert len(s["histogram"]["edges"]) == gv.HIST_BINS + 1
    assert s["rmse"] == pytest.approx(0.1) and s["mae"] == pytest.approx(0.1)
    given = gv.regression_summary(pred, true, {"loss/rmse": 0.123, "loss/mae": 0.05})
    assert (given["rmse"], given["mae"]) == (0.123, 0.05)
    with pytest.raises(ValueError, match="values an item"):
        gv.regression_summary([np.zeros(2)], [np.zeros(3)])
