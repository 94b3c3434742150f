"""``caffe.io.Transformer``, ``caffe.Classifier.predict`` and ``caffe.Detector`` (crops, context
padding, ``detect_windows``) compute what they computed when pinned: the cases of
tests/pinned_pycaffe_inference.py against tests/pycaffe_io/inference_pinned.npz.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pinned_pycaffe_inference import GROUPS
from numeric import assert_close_f32

PINNED = np.load(Path(__file__).parent / "pycaffe_io" / "inference_pinned.npz")


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_outputs_are_the_pinned_ones(group, tmp_path):
    got = GROUPS[group](tmp_path)
    want = {k: PINNED[k] for k in PINNED.files if k.startswith(group + "/")}
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].shape == value.shape, key
        if value.dtype.kind in "iu":  # shapes, windows, file indices
            np.testing.assert_array_equal(got[key], value, err_msg=key)
        else:
            assert got[key].dtype == value.dtype, key
            assert_close_f32(got[key], value, what=key)
