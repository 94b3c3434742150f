"""Inference: deploy bundles (``bundle``, ``preprocess``) and pycaffe's ``Classifier`` and
``Detector`` (``pycaffe``).

The two classes are imported when first asked for, so that importing this package (the
``brewnet deploy``/``classify`` commands read ``bundle``) does not import torch.
"""
from __future__ import annotations

import importlib

__all__ = ["Classifier", "Detector"]

_LAZY = {"Classifier": ".pycaffe", "Detector": ".pycaffe"}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
