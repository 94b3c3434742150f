"""brewnet: Caffe networks (prototxt + caffemodel) trained and run on PyTorch.

The pycaffe API: scripts written for pycaffe run with ``import brewnet as caffe``.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

__version__ = "0.1.0"

# Caffe's Phase enum (caffe_pb2.TRAIN / TEST; a test checks they agree)
TRAIN = 0
TEST = 1

__all__ = ["Net", "Blob", "TRAIN", "TEST", "set_mode_cpu", "set_mode_gpu", "set_device",
           "set_random_seed", "BrewnetError", "NetError", "proto", "io", "layers", "params",
           "NetSpec", "to_proto", "layer_type_list", "Timer", "init_log", "log", "NCCL",
           "has_nccl", "solver_count", "set_solver_count", "solver_rank", "set_solver_rank",
           "set_multiprocess", "Classifier", "Detector", "get_solver", "Layer"]

# Every name is loaded on first use (pycaffe names on the left): `import brewnet` does not
# import torch, so `brewnet --help` and argument errors answer at once.
_LAZY = {
    "Net": ("brewnet.net", "Net"),
    "Blob": ("brewnet.blob", "Blob"),
    "BrewnetError": ("brewnet.errors", "BrewnetError"),
    "NetError": ("brewnet.errors", "NetError"),
    "proto": ("brewnet.proto", None),
    "caffe_pb2": ("brewnet.proto.caffe_pb2", None),
    "layers": ("brewnet.layers", None),
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
    "layer_type_list": ("brewnet.layers.base", "layer_type_list"),
    "set_mode_cpu": ("brewnet.runtime", "set_mode_cpu"),
    "set_mode_gpu": ("brewnet.runtime", "set_mode_gpu"),
    "set_device": ("brewnet.runtime", "set_device"),
    "set_random_seed": ("brewnet.runtime", "set_random_seed"),
    "init_log": ("brewnet.runtime", "init_log"),
    "log": ("brewnet.runtime", "log"),
    "Timer": ("brewnet.runtime", "Timer"),
    "NCCL": ("brewnet.multiprocess", "NCCL"),
    "has_nccl": ("brewnet.multiprocess", "has_nccl"),
    "solver_count": ("brewnet.multiprocess", "solver_count"),
    "set_solver_count": ("brewnet.multiprocess", "set_solver_count"),
    "solver_rank": ("brewnet.multiprocess", "solver_rank"),
    "set_solver_rank": ("brewnet.multiprocess", "set_solver_rank"),
    "set_multiprocess": ("brewnet.multiprocess", "set_multiprocess"),
    "Classifier": ("brewnet.inference", "Classifier"),
    "Detector": ("brewnet.inference", "Detector"),
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


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


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
