"""Caffe layer types, one class per type, registered under the exact Caffe type string.

Families: ``data`` (Input, DummyData, data readers), ``neuron`` (element-wise), ``vision``
(Convolution, Pooling, LRN, ...), ``common`` (InnerProduct, Eltwise, shape ops, Scale, ...),
``norm`` (BatchNorm in every dialect, MVN), ``loss`` (losses and Accuracy), ``python``.
"""
from .base import LAYER_REGISTRY, Layer, layer_class, register  # noqa: F401
from . import data, graph, neuron, vision, common, norm, loss, python, datalayers  # noqa: F401,E402  (registration)

__all__ = ["LAYER_REGISTRY", "Layer", "layer_class", "register"]


def __getattr__(name: str):
    """``brewnet.layers.<Type>(...)`` is pycaffe's ``caffe.layers``: a NetSpec layer function.

    (Implementation modules here are lower-case; Caffe type names are CamelCase, so the two never
    collide.)
    """
    if name[:1].isupper():
        from ..pycaffe.net_spec import layers as _netspec_layers  # caffe.layers: pycaffe is above
        return getattr(_netspec_layers, name)
    raise AttributeError(f"module 'brewnet.layers' has no attribute {name!r}")
