"""Comparing float results that reach the same value by different computations.

The suite runs on whatever CPU CI has. PyTorch and its math libraries choose kernels by CPU
(ATEN_CPU_CAPABILITY default/avx2/avx512, oneDNN and MKL by vendor and generation, AMX), and those
kernels sum in other orders and fuse multiply-adds differently. So a float32 result that
another computation also produces (an export against the original net, fused against unfused,
channels-last against NCHW, brewnet against values recorded from Caffe, against a float64 closed
form) agrees only to a few units of float32 rounding times the size of the terms summed, and the
terms are as large as the result's largest elements, not as the element at hand. The bound is

    |actual - expected| <= rtol * |expected| + atol * max|expected|

with ``atol`` (default: ``rtol``) relative to the reference's largest magnitude: it scales with
the data, so it is neither meaningless for large values nor too loose for small ones, and
elements near zero (where a relative bound alone would ask for exactness) get the round-off their
neighbours' magnitude brings. float32 rounds to 6e-8 relative; rtol 1e-5 leaves room for
accumulations over hundreds of terms through a few layers, 1e-4 for deep nets, backward passes
and several training steps. Exact comparisons (``assert_array_equal``, ``torch.equal``) stay
where exactness is a promise: bytes written then read, the same computation twice in one
process, integer and label semantics, deliberately exact cases.
"""
from __future__ import annotations

import numpy as np

# float32 machine epsilon, for comments and bounds derived from it
F32_EPS = float(np.finfo(np.float32).eps)


def _as_float64(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (any dtype, any device)
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def assert_close_f32(actual, expected, rtol: float = 1e-5, atol: float | None = None,
                     what: str = "", scale: float | None = None) -> None:
    """Assert ``|actual - expected| <= rtol*|expected| + atol*scale`` elementwise.

    ``scale`` defaults to max|expected| (the magnitude of the reference as a whole), ``atol`` to
    ``rtol``. ``expected`` may broadcast to ``actual``'s shape (a scalar, say). NaNs must be in
    the same places. On failure the message names the worst element (by its share of the bound).
    """
    a = _as_float64(actual)
    e = _as_float64(expected)
    if e.shape != a.shape:
        try:
            e = np.broadcast_to(e, a.shape)
        except ValueError:
            raise AssertionError(f"{what}: shape {a.shape} != expected {e.shape}") from None
    label = f"{what}: " if what else ""
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    assert np.array_equal(nan_a, nan_e), f"{label}NaN in different places"
    ok = ~nan_e
    if not ok.any():
        return
    a, e = a[ok], e[ok]
    if scale is None:
        scale = float(np.max(np.abs(e)))
    atol = rtol if atol is None else atol
    err = np.abs(a - e)
    bound = rtol * np.abs(e) + atol * scale
    bad = err > bound
    if bad.any():
        share = np.where(bound > 0, err / np.where(bound > 0, bound, 1.0), np.inf)
        k = int(np.argmax(share))
        idx = tuple(int(i) for i in np.unravel_index(np.flatnonzero(ok)[k], ok.shape))
        raise AssertionError(
            f"{label}{int(bad.sum())} of {bad.size} elements differ by more than "
            f"{rtol:g}*|expected| + {atol:g}*{scale:.3g}; worst at {idx}: {float(a[k])!r} vs {float(e[k])!r} "
            f"(|diff| {err[k]:.3g}, {share[k]:.3g}x the bound; largest |diff| {err.max():.3g})")
