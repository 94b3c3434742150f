"""Models converted to other forms (``brewnet convert``).

- :mod:`brewnet.convert.dialects` — whole models BVLC <-> NVCaffe 0.17 BatchNorm (prototxt and
  caffemodel together).
- :mod:`brewnet.convert.pytorch_onnx` — a Net as a standalone PyTorch module (state_dict +
  prototxt) and as ONNX; loading them back and comparing outputs.

May import the engine (net), formats/ (the BatchNorm layouts included) and layers/; torch and
onnx are imported where they are used, so ``import brewnet.convert.dialects`` costs no torch.
"""
