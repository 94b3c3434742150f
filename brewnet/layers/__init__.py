"""Caffe layer types, one class per type, registered under the exact Caffe type string.

Families: ``data`` (Input, DummyData, data readers), ``neuron`` (element-wise), ``vision``
(Convolution, Pooling, LRN, ...), ``common`` (InnerProduct, Eltwise, shape ops, Scale, ...),
``norm`` (BatchNorm in every dialect, MVN), ``loss`` (losses and Accuracy), ``python``.

:func:`is_data_layer` is the one answer to "does this type bring data into a net": the registry's
``is_data`` class attribute, plus Caffe's data types brewnet does not run.
"""
from .base import LAYER_REGISTRY, Layer, layer_class, register  # noqa: F401
from . import data, graph, neuron, vision, common, norm, loss, python, datalayers  # noqa: F401,E402  (registration)
from .detectnet import transform  # noqa: F401,E402  (registration)

__all__ = ["FOREIGN_DATA_TYPES", "LAYER_REGISTRY", "Layer", "is_data_layer", "layer_class", "register"]

#: data layer types of BVLC Caffe, NVCaffe and SSD that brewnet does not run (no class registers
#: them), which prototxts still name: the tools that read a prototxt count them as data layers
FOREIGN_DATA_TYPES = frozenset({"WindowData", "AnnotatedData", "VideoData"})


def is_data_layer(type_name: str) -> bool:
    """Does a layer of Caffe type ``type_name`` bring data into a net (Input, DummyData, the
    readers, MemoryData, and the FOREIGN_DATA_TYPES)?  A pycaffe ``Python`` layer is not judged
    by its type (those reading no bottoms are data layers: the caller looks at the bottoms)."""
    cls = LAYER_REGISTRY.get(type_name)
    return bool(cls.is_data) if cls is not None else type_name in FOREIGN_DATA_TYPES


def __getattr__(name: str):
    """``brewnet.layers.<Type>(...)`` is pycaffe's ``caffe.layers``: a NetSpec layer function.

    (Implementation modules here are lower-case; Caffe type names are CamelCase, so the two never
    collide.)
    """
    if name[:1].isupper():
        from ..pycaffe.net_spec import layers as _netspec_layers  # caffe.layers: pycaffe is above
        return getattr(_netspec_layers, name)
    raise AttributeError(f"module 'brewnet.layers' has no attribute {name!r}")
