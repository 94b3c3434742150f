"""The inference report's pure parts (brewnet/server/web/inference_pages.py): per-class
precision/recall/F1 from a confusion matrix, top images per class from top-k predictions."""
from __future__ import annotations

import pytest

from brewnet.server.web.inference_pages import _per_class, _top_images


def test_per_class_from_confusion():
    # rows = true class, columns = predicted
    cm = [[3, 1, 0],
          [0, 2, 0],
          [1, 1, 0]]
    a, b, c = _per_class(["a", "b", "c"], cm)
    assert (a["count"], a["predicted"]) == (4, 4)
    assert a["precision"] == pytest.approx(3 / 4) and a["recall"] == pytest.approx(3 / 4)
    assert a["f1"] == pytest.approx(0.75)
    assert b["precision"] == pytest.approx(2 / 4) and b["recall"] == pytest.approx(1.0)
    assert b["f1"] == pytest.approx(2 * 0.5 * 1.0 / 1.5)
    # nothing predicted as c: precision undefined, recall 0, F1 undefined
    assert (c["count"], c["predicted"], c["precision"], c["recall"], c["f1"]) == (2, 0, None, 0.0, None)


def test_per_class_f1_zero_when_both_zero():
    (a, b) = _per_class(["a", "b"], [[0, 2], [1, 0]])
    assert a["precision"] == 0.0 and a["recall"] == 0.0 and a["f1"] == 0.0
    assert b["f1"] == 0.0


def test_top_images_rank_by_the_class_probability():
    preds = [{"top": [["a", 0.9], ["b", 0.1]]},
             {"top": [["b", 0.6], ["a", 0.4]]},
             {"top": [["a", 0.95], ["b", 0.05]]},
             {"top": [["b", 0.6], ["a", 0.4]]}]   # equal to image 1: the earlier first
    a, b = _top_images(preds, ["a", "b"], 2)
    assert [i["index"] for i in a["images"]] == [2, 0]
    assert [i["index"] for i in b["images"]] == [1, 3]
    assert b["images"][0]["prob"] == 60.0
    (c,) = _top_images(preds, ["c"], 3)
    assert c == {"label": "c", "images": []}
