"""Inference: pycaffe's ``Classifier`` and ``Detector``.

Not available yet: deploy bundles, ``brewnet classify`` and these two classes come together with
one preprocessing definition shared with validation (the inference work).  Until then the names
exist, so that ``caffe.Classifier`` is found, and say clearly that they are not supported.
"""
from __future__ import annotations

from ..errors import BrewnetError

_NOT_YET = ("is not supported by brewnet yet; run the deploy net with caffe.Net and "
            "caffe.io.Transformer meanwhile")


class Classifier:
    """pycaffe's ``caffe.Classifier``: not available yet (see the module's note)."""

    def __init__(self, *args, **kwargs):
        raise BrewnetError(f"caffe.Classifier {_NOT_YET}")


class Detector:
    """pycaffe's ``caffe.Detector``: not available yet (see the module's note)."""

    def __init__(self, *args, **kwargs):
        raise BrewnetError(f"caffe.Detector {_NOT_YET}")
