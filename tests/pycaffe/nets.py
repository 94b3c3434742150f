"""The nets of tests/pycaffe, and writing the prototxt files they open by path, as pycaffe users do."""
from __future__ import annotations

from pathlib import Path


def write(folder: Path, text: str, name: str = "net.prototxt") -> str:
    """``folder/name`` holding ``text``; returns its path as the str pycaffe takes."""
    path = Path(folder) / name
    path.write_text(text)
    return str(path)


# a DummyData net with a loss (legacy num/channels/height/width shapes); made-up numbers
N, CLASSES = 3, 7
# conv: 4x4 input, pad 2, kernel 3 -> 6x6, so ip sees 5 * 6 * 6 = 180 values per item
NET = f"""name: "calls" force_backward: true
layer {{ name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param {{ num: {N} channels: 2 height: 4 width: 4  num: {N} channels: 1 height: 1 width: 1
    data_filler {{ type: "uniform" min: -1 max: 1 }} data_filler {{ type: "constant" value: 2 }} }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  param {{ decay_mult: 1 }} param {{ decay_mult: 0 }}
  convolution_param {{ num_output: 5 kernel_size: 3 pad: 2
    weight_filler {{ type: "gaussian" std: 0.5 }} bias_filler {{ type: "constant" value: 1 }} }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "conv" top: "ip_out"
  inner_product_param {{ num_output: {CLASSES}
    weight_filler {{ type: "gaussian" std: 0.1 }} bias_filler {{ type: "constant" value: -0.5 }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip_out" bottom: "label" top: "loss" }}
"""
