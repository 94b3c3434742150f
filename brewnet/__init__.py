"""brewnet: Caffe networks (prototxt + caffemodel) trained and run on PyTorch.

The pycaffe API: scripts written for pycaffe run with ``import brewnet as caffe``.
"""
from __future__ import annotations

import importlib
import sys

from .blob import Blob
from .errors import BrewnetError, NetError
from .net import TEST, TRAIN, Net
from .proto import caffe_pb2  # noqa: F401
from .runtime import set_device, set_mode_cpu, set_mode_gpu, set_random_seed
from . import proto  # noqa: F401
from . import layers  # noqa: F401  (also pycaffe's caffe.layers: see brewnet/layers/__init__.py)

__version__ = "0.1.0"

__all__ = ["Net", "Blob", "TRAIN", "TEST", "set_mode_cpu", "set_mode_gpu", "set_device",
           "set_random_seed", "BrewnetError", "NetError", "proto", "io", "layers", "params",
           "NetSpec", "to_proto"]

# Submodules loaded on first use keep `import brewnet` fast (pycaffe names on the left).
_LAZY = {
    "io": ("brewnet.io", None),
    "net_spec": ("brewnet.net_spec", None),
    "NetSpec": ("brewnet.net_spec", "NetSpec"),
    "params": ("brewnet.net_spec", "params"),
    "to_proto": ("brewnet.net_spec", "to_proto"),
    "SGDSolver": ("brewnet.solver", "SGDSolver"),
    "NesterovSolver": ("brewnet.solver", "NesterovSolver"),
    "AdaGradSolver": ("brewnet.solver", "AdaGradSolver"),
    "RMSPropSolver": ("brewnet.solver", "RMSPropSolver"),
    "AdaDeltaSolver": ("brewnet.solver", "AdaDeltaSolver"),
    "AdamSolver": ("brewnet.solver", "AdamSolver"),
    "get_solver": ("brewnet.solver", "get_solver"),
    "Layer": ("brewnet.layers.python", "Layer"),
}


def __getattr__(name: str):
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'brewnet' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def alias_as_caffe() -> None:
    """Make ``import caffe`` / ``from caffe.proto import caffe_pb2`` resolve to brewnet.

    For unchanged pycaffe scripts that import submodules by their dotted names.
    """
    this = sys.modules[__name__]
    sys.modules.setdefault("caffe", this)
    for sub in ("proto", "proto.caffe_pb2", "io", "net_spec"):
        sys.modules.setdefault(f"caffe.{sub}", importlib.import_module(f"brewnet.{sub}"))
