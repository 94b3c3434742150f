"""Spatial coordinate mappings between the tops of a NetSpec, as pycaffe's ``caffe.coord_map``.

Every spatial layer relates the coordinates of its input to those of its output by an affine
map per spatial axis: ``output = scale * input + shift``.  A map is the triple
``(axis, scale, shift)``:

- ``axis``: the last non-spatial axis (1 for N x C x H x W blobs, whose spatial axes start at
  2), or ``None`` for a pointwise layer whose map holds on any axis;
- ``scale`` and ``shift``: numbers, or numpy arrays with one entry per spatial axis.

Maps compose along the graph (:func:`compose`) and invert (:func:`inverse`), so that
:func:`coord_map_from_to` relates any two tops that share an ancestor through spatial layers,
and :func:`crop` writes the ``Crop`` layer that aligns one top to another (the usual use:
cropping an upsampled score map of a fully convolutional net to its input)::

    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 100, 100]))
    n.conv = L.Convolution(n.data, num_output=8, kernel_size=3, pad=0)
    coord_map_from_to(n.conv, n.data)     # (1, array([1.]), array([1.])): x_data = x_conv + 1
    n.crop = crop(n.data, n.conv)         # Crop layer: axis 2, offset 1
"""
from __future__ import annotations

from collections import deque
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np

from .net_spec import Function, Top
from .net_spec import layers as L

__all__ = ["PASS_THROUGH_LAYERS", "conv_params", "crop_params", "UndefinedMapException",
           "AxisMismatchException", "coord_map", "compose", "inverse", "coord_map_from_to",
           "crop"]

Number = Union[int, float, np.ndarray]
CoordMap = Tuple[Optional[int], Number, Number]
"""``(axis, scale, shift)``; see the module documentation."""

IDENTITY: CoordMap = (None, 1, 0)

# Pointwise layers: an output element sits where its input element does.
PASS_THROUGH_LAYERS = ["AbsVal", "BatchNorm", "Bias", "BNLL", "Dropout", "Eltwise", "ELU",
                       "Log", "LRN", "Exp", "MVN", "Power", "ReLU", "PReLU", "Scale", "Sigmoid",
                       "Split", "TanH", "Threshold", "Clip", "Swish"]

# layer type -> the LayerParameter field that holds its window parameters
_WINDOW_FIELD = {"Convolution": "convolution_param", "Deconvolution": "convolution_param",
                 "Im2col": "convolution_param", "Pooling": "pooling_param"}


class UndefinedMapException(Exception):
    """The layer has no coordinate mapping (it is not spatial, e.g. InnerProduct)."""


class AxisMismatchException(Exception):
    """Two maps along a path concern different axes, so they cannot be composed."""


def _layer_params(fn: Function, field: str) -> Mapping[str, Any]:
    """The keyword arguments of ``fn`` that belong to its ``field`` (e.g. ``crop_param``).

    NetSpec accepts them either flat (``L.Crop(a, b, axis=2)``) or nested
    (``L.Crop(a, b, crop_param=dict(axis=2))``); a nested protobuf message works too.
    """
    nested = fn.params.get(field)
    if nested is None:
        return fn.params
    if isinstance(nested, Mapping):
        return nested
    # a protobuf message: only the fields it sets, as a dict of Python values
    return {f.name: (list(v) if f.is_repeated else v) for f, v in nested.ListFields()}


def _as_axes(value: Any) -> np.ndarray:
    """A scalar or a per-axis list as a 1-d numpy array."""
    return np.array(value, ndmin=1)


def _legacy_pair(params: Mapping[str, Any], name: str) -> Optional[np.ndarray]:
    """``[<name>_h, <name>_w]`` when the 2-d legacy fields are given, else None."""
    h, w = params.get(f"{name}_h"), params.get(f"{name}_w")
    if h is None and w is None:
        return None
    if h is None or w is None:
        raise ValueError(f"{name}_h and {name}_w must be given together")
    return np.array([h, w])


def conv_params(fn: Function) -> Tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """The window geometry of a Convolution, Deconvolution, Im2col or Pooling layer.

    Returns:
        ``(axis, stride, extent, pad)``: ``axis`` is the last non-spatial axis (Caffe's
        ``axis``, 1 by default), ``extent`` is the span of the dilated kernel,
        ``(kernel_size - 1) * dilation + 1``; the three arrays have one entry per spatial axis
        (or a single entry that holds for all of them).
    Raises:
        UndefinedMapException: a global pooling (its output has no position in the input).
        ValueError: no kernel size is given.
    """
    params = _layer_params(fn, _WINDOW_FIELD.get(fn.type_name, "convolution_param"))
    if params.get("global_pooling"):
        raise UndefinedMapException(f"{fn.type_name} with global_pooling has no coordinate map")
    axis = int(params.get("axis", 1))
    kernel = _legacy_pair(params, "kernel")
    if kernel is None:
        if "kernel_size" not in params:
            raise ValueError(f"{fn.type_name} layer has no kernel_size")
        kernel = _as_axes(params["kernel_size"])
    stride = _legacy_pair(params, "stride")
    stride = _as_axes(params.get("stride", 1)) if stride is None else stride
    pad = _legacy_pair(params, "pad")
    pad = _as_axes(params.get("pad", 0)) if pad is None else pad
    dilation = _as_axes(params.get("dilation", 1))
    return axis, stride, (kernel - 1) * dilation + 1, pad


def crop_params(fn: Function) -> Tuple[int, np.ndarray]:
    """``(axis, offset)`` of a Crop layer, with Caffe's defaults (axis 2, offset 0).

    ``offset`` is an array: one entry per cropped axis, or a single one for all of them.
    """
    params = _layer_params(fn, "crop_param")
    return int(params.get("axis", 2)), _as_axes(params.get("offset", 0))


def _window_map(fn: Function) -> CoordMap:
    """A sliding window (Convolution, Pooling, Im2col): output ``o`` is centred on input
    ``o * stride - pad + (extent - 1) / 2``, so ``o = x / stride + (pad - (extent - 1) / 2) / stride``."""
    axis, stride, extent, pad = conv_params(fn)
    return axis, 1 / stride, (pad - (extent - 1) / 2) / stride


def _deconvolution_map(fn: Function) -> CoordMap:
    """The window map's inverse, written out (an exact shift for integer geometry)."""
    axis, stride, extent, pad = conv_params(fn)
    return axis, stride, (extent - 1) / 2 - pad


def _crop_map(fn: Function) -> CoordMap:
    """Output ``o`` is input ``o + offset``.  Crop's ``axis`` is its first cropped axis; a map
    names the last axis before the spatial ones."""
    axis, offset = crop_params(fn)
    return axis - 1, 1, -offset


_SPATIAL_MAPS = {"Convolution": _window_map, "Pooling": _window_map, "Im2col": _window_map,
                 "Deconvolution": _deconvolution_map, "Crop": _crop_map}


def coord_map(fn: Function) -> CoordMap:
    """The map from the input coordinates of the layer ``fn`` to its output coordinates.

    Convolution-like layers (Convolution, Pooling, Im2col) shrink by their stride and shift by
    the padding that overhangs the kernel's centre; a Deconvolution does the inverse; pointwise
    layers (:data:`PASS_THROUGH_LAYERS`) are the identity ``(None, 1, 0)``; a Crop shifts by
    minus its offset.

    Raises:
        UndefinedMapException: any other layer type (InnerProduct, Reshape, ...).
    """
    if fn.type_name in PASS_THROUGH_LAYERS:    # read at each call: callers may extend the list
        return IDENTITY
    spatial = _SPATIAL_MAPS.get(fn.type_name)
    if spatial is None:
        raise UndefinedMapException(f"no coordinate map for a {fn.type_name} layer")
    return spatial(fn)


def compose(base_map: CoordMap, next_map: CoordMap) -> CoordMap:
    """``base_map`` after ``next_map``: ``x -> a1 * (a2 * x + b2) + b1``.

    Raises:
        AxisMismatchException: both maps name an axis and they differ.
    """
    named = [m[0] for m in (base_map, next_map) if m[0] is not None]
    if len(set(named)) > 1:
        raise AxisMismatchException(f"cannot compose maps on axis {named[0]} and axis {named[1]}")
    _, outer_scale, outer_shift = base_map
    _, inner_scale, inner_shift = next_map
    return (named[0] if named else None), outer_scale * inner_scale, outer_scale * inner_shift + outer_shift


def inverse(coord_map: CoordMap) -> CoordMap:
    """The map that undoes ``coord_map``: ``y -> (y - b) / a``."""
    axis, scale, shift = coord_map
    return axis, 1 / scale, -shift / scale


def _mappable_bottoms(top: Top) -> list:
    """The inputs of ``top``'s layer that its coordinate map applies to.

    All of them for most layers (e.g. the several bottoms of a Convolution with ntop=2, or of
    an Eltwise); a Crop only maps its first bottom, the second one only gives the output size.
    """
    inputs = top.fn.inputs
    return inputs[:1] if top.fn.type_name == "Crop" else inputs


def _ancestor_maps(top: Top):
    """Breadth-first over the ancestors of ``top`` reachable through layers with a coordinate
    map; yields ``(ancestor, map from ancestor coordinates to top coordinates)``, ``top`` first
    (with the identity)."""
    maps = {top: IDENTITY}
    queue = deque([top])
    while queue:
        current = queue.popleft()
        yield current, maps[current]
        try:
            step = coord_map(current.fn)
        except UndefinedMapException:
            continue
        for bottom in _mappable_bottoms(current):
            if bottom not in maps:
                maps[bottom] = compose(maps[current], step)
                queue.append(bottom)


def coord_map_from_to(top_from: Top, top_to: Top) -> CoordMap:
    """The map from coordinates in ``top_from`` to coordinates in ``top_to``.

    Both tops are walked back through the net until they meet at a common ancestor; the map
    goes from ``top_from`` down to that ancestor (the inverse of its forward map) and up to
    ``top_to``.  Paths through different ancestors are assumed to agree.

    Raises:
        RuntimeError: the tops share no ancestor through layers with a coordinate map.
        AxisMismatchException: the layers along the path map different axes.
    """
    from_maps = dict(_ancestor_maps(top_from))  # ancestor coords -> top_from coords
    for ancestor, to_map in _ancestor_maps(top_to):  # ancestor coords -> top_to coords
        if ancestor in from_maps:
            return compose(to_map, inverse(from_maps[ancestor]))
    raise RuntimeError("Could not compute map between tops; are they connected by spatial "
                       "layers?")


def crop(top_from: Top, top_to: Top) -> Top:
    """A Crop layer that crops ``top_from`` to the size and position of ``top_to``.

    The crop's axis and offsets come from :func:`coord_map_from_to`; tops related only by
    pointwise layers are cropped from axis 2 with offset 0.

    Raises:
        AssertionError: the tops differ in scale, or ``top_to`` is not inside ``top_from``
            (negative offset), or the offset is fractional (as pycaffe; raised also under
            ``python -O``).
        RuntimeError, AxisMismatchException: as :func:`coord_map_from_to`.
    """
    axis, a, b = coord_map_from_to(top_from, top_to)
    a, b = np.atleast_1d(a), np.atleast_1d(b)
    if not (a == 1).all():
        raise AssertionError(f"scale mismatch on crop (a = {a})")
    if not (b <= 0).all():
        raise AssertionError(f"cannot crop negative offset (b = {b})")
    if not (np.round(b) == b).all():
        raise AssertionError(f"cannot crop noninteger offset (b = {b})")
    first_cropped = 2 if axis is None else axis + 1
    offset = [int(v) for v in -np.round(b)]
    return L.Crop(top_from, top_to, crop_param=dict(axis=first_cropped, offset=offset))
