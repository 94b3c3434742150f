"""brewnet: Caffe networks (prototxt + caffemodel) trained and run on PyTorch.

The pycaffe API: scripts written for pycaffe run with ``import brewnet as caffe``; BVLC's
``python/caffe/`` modules are in :mod:`brewnet.pycaffe`, importable by their pycaffe names too.
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
    "io": ("brewnet.pycaffe.io", None),
    "net_spec": ("brewnet.pycaffe.net_spec", None),
    "NetSpec": ("brewnet.pycaffe.net_spec", "NetSpec"),
    "params": ("brewnet.pycaffe.net_spec", "params"),
    "to_proto": ("brewnet.pycaffe.net_spec", "to_proto"),
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
    "NCCL": ("brewnet.pycaffe.multiprocess", "NCCL"),
    "has_nccl": ("brewnet.pycaffe.multiprocess", "has_nccl"),
    "solver_count": ("brewnet.pycaffe.multiprocess", "solver_count"),
    "set_solver_count": ("brewnet.pycaffe.multiprocess", "set_solver_count"),
    "solver_rank": ("brewnet.pycaffe.multiprocess", "solver_rank"),
    "set_solver_rank": ("brewnet.pycaffe.multiprocess", "set_solver_rank"),
    "set_multiprocess": ("brewnet.pycaffe.multiprocess", "set_multiprocess"),
    "Classifier": ("brewnet.pycaffe.classifier", "Classifier"),
    "Detector": ("brewnet.pycaffe.detector", "Detector"),
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


# pycaffe's modules (BVLC's python/caffe/*.py) live in brewnet.pycaffe; each also imports as
# brewnet.<name> (brewnet.io, brewnet.draw, ...) and, after alias_as_caffe(), as caffe.<name>
_PYCAFFE_MODULES = frozenset({"io", "net_spec", "coord_map", "draw", "multiprocess",
                              "classifier", "detector"})


class _ModuleAliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a module under a second name, as the module itself (one copy, one state):
    ``brewnet.<m>`` for each pycaffe module ``m`` is ``brewnet.pycaffe.<m>``, and once
    :func:`alias_as_caffe` has been called ``caffe.<sub>`` is ``brewnet.<sub>`` (so every
    pycaffe submodule name works without a list of brewnet's own)."""

    def __init__(self):
        self.caffe = False  # alias_as_caffe() turns the caffe.* names on

    def _target(self, fullname: str) -> str | None:
        head, _, rest = fullname.partition(".")
        if head == "brewnet" and rest in _PYCAFFE_MODULES:
            return "brewnet.pycaffe." + rest
        if head == "caffe" and rest and self.caffe:
            return "brewnet." + rest
        return None

    def find_spec(self, fullname, path=None, target=None):
        name = self._target(fullname)
        if name is None:
            return None
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, loader_state=module.__spec__)

    def create_module(self, spec):
        return sys.modules[spec.loader_state.name]

    def exec_module(self, module):
        # already executed under its own name; give it back its own spec, which the import
        # system replaced with the alias's
        module.__spec__ = module.__spec__.loader_state


_ALIASES = _ModuleAliasFinder()
sys.meta_path.insert(0, _ALIASES)  # before PathFinder, which would load a second copy of
# brewnet's files under caffe.* names (caffe.__path__ is brewnet's), and before any finder of
# another brewnet install


def alias_as_caffe() -> None:
    """Make ``import caffe`` / ``from caffe.proto import caffe_pb2`` / ``import caffe.draw``
    resolve to brewnet, for unchanged pycaffe scripts that import modules by Caffe's names."""
    sys.modules.setdefault("caffe", sys.modules[__name__])
    _ALIASES.caffe = True
