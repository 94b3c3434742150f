"""Caffe layer types, one class per type, registered under the exact Caffe type string.

Families: ``data`` (Input, DummyData, data readers), ``neuron`` (element-wise), ``vision``
(Convolution, Pooling, LRN, ...), ``common`` (InnerProduct, Eltwise, shape ops, Scale, ...),
``norm`` (BatchNorm in every dialect, MVN), ``loss`` (losses and Accuracy), ``python``.
"""
from .base import LAYER_REGISTRY, Layer, layer_class, register  # noqa: F401
from . import data, graph, neuron, vision, common, norm, loss, python  # noqa: F401,E402  (registration)

__all__ = ["LAYER_REGISTRY", "Layer", "layer_class", "register"]
