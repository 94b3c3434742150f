"""brewnet: Caffe networks (prototxt + caffemodel) trained and run on PyTorch.

The pycaffe API: scripts written for pycaffe run with ``import brewnet as caffe``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
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


class _CaffeAliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves ``caffe.<sub>`` to the already-imported ``brewnet.<sub>`` (installed by
    :func:`alias_as_caffe`), so every pycaffe submodule name works without a list to keep."""

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith("caffe."):
            return None
        try:
            importlib.import_module("brewnet." + fullname[len("caffe."):])
        except ModuleNotFoundError:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec):
        return sys.modules["brewnet." + spec.name[len("caffe."):]]

    def exec_module(self, module):
        pass  # already executed under its brewnet name


def alias_as_caffe() -> None:
    """Make ``import caffe`` / ``from caffe.proto import caffe_pb2`` / ``import caffe.draw``
    resolve to brewnet, for unchanged pycaffe scripts that import modules by Caffe's names."""
    sys.modules.setdefault("caffe", sys.modules[__name__])
    if not any(isinstance(f, _CaffeAliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _CaffeAliasFinder())  # before PathFinder, which would load
        # a second copy of brewnet's files under caffe.* names (caffe.__path__ is brewnet's)
