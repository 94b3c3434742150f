"""Harness cases for DetectNet's layer: DetectNetTransformation (no backward; TEST deterministic,
TRAIN draws its augmentations)."""
from __future__ import annotations

import numpy as np

from layer_harness import Case, uniform


def detectnet_labels(rng, shape):
    """(N, 1, R, 16) DetectNet labels: row 0 [n, 16, ...], n <= R - 1 boxes of class 1 or 2 inside
    a 32×16 image."""
    n_img, _, rows, width = shape
    out = np.zeros(shape)
    for i in range(n_img):
        n = int(rng.integers(0, rows))
        out[i, 0, 0, :2] = [n, width]
        for r in range(1, n + 1):
            w, h = rng.uniform(4, 14), rng.uniform(4, 10)
            out[i, 0, r, :4] = [rng.uniform(-2, 32 - w), rng.uniform(-2, 16 - h), w, h]
            out[i, 0, r, 5] = rng.integers(1, 3)
    return out


GT = ('detectnet_groundtruth_param { stride: 4 image_size_x: 32 image_size_y: 16 '
      'object_class { src: 1 dst: 0 } object_class { src: 2 dst: 1 } }')
BOTTOMS = {"data": (2, 3, 16, 24), "label": (2, 1, 4, 16)}
INPUTS = {"data": uniform(0, 255), "label": detectnet_labels}

CASES = {
    "DetectNetTransformation": [
        Case(f'type: "DetectNetTransformation" {GT} transform_param {{ mean_value: 127 }}', BOTTOMS,
             tops=("image", "target"), inputs=INPUTS, no_grad=("data", "label"), grad=False, id="test-resize"),
        Case(f'type: "DetectNetTransformation" {GT} detectnet_augmentation_param {{ shift_x: 4 shift_y: 2 '
             f'rotation_prob: 0.5 max_rotate_degree: 5 }}', BOTTOMS, phase="TRAIN", tops=("image", "target"),
             inputs=INPUTS, no_grad=("data", "label"), grad=False, deterministic=False, id="train-augment"),
    ],
}
