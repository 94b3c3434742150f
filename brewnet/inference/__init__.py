"""Inference: deploy bundles (``bundle``, ``preprocess``), the deploy and bake steps, the
classify run and its visualizations.  pycaffe's ``Classifier`` and ``Detector`` live in
:mod:`brewnet.pycaffe` (``classifier``, ``detector``).
"""
