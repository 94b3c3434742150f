"""The suite's float comparison (tests/numeric.py) passes what it should and fails what it should."""
import numpy as np
import pytest
import torch

from numeric import assert_close_f32


def test_bound_is_relative_to_each_element_and_to_the_largest():
    ref = np.array([1000.0, 1.0, 0.0])
    # 1e-5 * |ref| + 1e-5 * 1000: 0.02 at the large element, 0.01 near zero
    assert_close_f32(ref + [0.019, 0.0099, -0.0099], ref, rtol=1e-5)
    with pytest.raises(AssertionError, match=r"1 of 3 elements.*worst at \(1,\)"):
        assert_close_f32(ref + [0.0, 0.0102, 0.0], ref, rtol=1e-5)


def test_scale_does_not_shrink_or_grow_with_units():
    ref = np.random.default_rng(0).standard_normal(50)
    noisy = ref * (1 + 3e-6)
    for unit in (1e-20, 1.0, 1e20):  # the same relative error passes at every magnitude
        assert_close_f32(noisy * unit, ref * unit, rtol=1e-5)
        with pytest.raises(AssertionError):
            assert_close_f32(ref * (1 + 3e-5) * unit, ref * unit, rtol=1e-5)


def test_atol_and_scale_arguments():
    ref = np.array([1.0, 0.0])
    assert_close_f32([1.0, 1e-3], ref, rtol=1e-6, atol=2e-3)  # floor 2e-3 * max|ref|
    assert_close_f32([1.0, 1e-3], ref, rtol=1e-6, scale=2000.0)  # floor 1e-6 * 2000
    with pytest.raises(AssertionError):
        assert_close_f32([1.0, 1e-3], ref, rtol=1e-6)
    assert_close_f32(np.zeros(3), np.zeros(3))  # an all-zero reference asks for exact zeros
    with pytest.raises(AssertionError):
        assert_close_f32([0.0, 1e-30, 0.0], np.zeros(3))


def test_tensors_scalars_shapes_and_nans():
    assert_close_f32(torch.tensor([1.0, 2.0], dtype=torch.float32), np.array([1.0, 2.0]))
    assert_close_f32(torch.full((2, 2), 3.0, dtype=torch.bfloat16), 3.0)  # a scalar broadcasts
    assert_close_f32(1.0 + 1e-7, 1.0)
    assert_close_f32([np.nan, 1.0], [np.nan, 1.0])
    with pytest.raises(AssertionError, match="NaN"):
        assert_close_f32([np.nan, 1.0], [1.0, 1.0])
    with pytest.raises(AssertionError, match="shape"):
        assert_close_f32(np.zeros((2, 3)), np.zeros((3, 2)), what="blob")
