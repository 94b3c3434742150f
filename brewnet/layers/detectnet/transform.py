"""NVCaffe's ``DetectNetTransformation``: a batch of images and their DetectNet labels in, the
network's input image and ground-truth tensor out.

Bottoms: ``data`` N×3×H×W (0..255, BGR) and ``label`` N×1×R×16 (row 0 ``[n_boxes, 16, ...]``,
rows 1..n the boxes; DIGITS' KITTI label LMDB).  Tops: N×3×image_size_y×image_size_x (pixel -
mean) and N×(8+K)×(image_size_y/stride)×(image_size_x/stride) (:mod:`brewnet.detection.coverage`).
No backward: the bottoms get no gradient.

TRAIN applies ``detectnet_augmentation_param`` (:mod:`brewnet.detection.augment`), each image
drawing anew from the layer's numpy Generator: reproducible under the solver's ``random_seed``
(or ``transform_param.random_seed``), distinct per layer, phase and data-parallel rank.  TEST
resizes to the output size.  ``transform_param``'s ``mean_value`` (1 or 3 values) or
``mean_file`` (resized bicubic to the input) is subtracted on the 0..255 scale.  The work is done
on the host (as NVCaffe computes labels on the CPU); the tops go to the device of ``data``.
"""
from __future__ import annotations

import numpy as np
import torch

from ...data import resolve_path
from ...data.transformer import load_mean
from ...detection import augment, coverage
from ...errors import DataError
from ..base import Layer, register
from ..datalayers import layer_rng


@register("DetectNetTransformation")
class DetectNetTransformation(Layer):
    """(data N×3×H×W, label N×1×R×16) -> (image N×3×Y×X, ground truth N×(8+K)×Y/s×X/s); no backward."""

    num_bottoms = (2, 2)
    num_tops = (2, 2)
    has_backward = False

    def __init__(self, param, phase: int):
        super().__init__(param, phase)
        try:
            self.groundtruth = coverage.GroundTruthParams.from_proto(param.detectnet_groundtruth_param)
            self.augmentation = augment.AugmentationParams.from_proto(param.detectnet_augmentation_param)
        except DataError as e:
            self.fail(str(e))
        tp = param.transform_param
        if tp.mean_file and len(tp.mean_value):
            self.fail("transform_param: cannot specify mean_file and mean_value at the same time")
        if len(tp.mean_value) not in (0, 1, 3):
            self.fail(f"transform_param: {len(tp.mean_value)} mean_value entries for 3 channels (give 1 or 3)")
        self.rng: np.random.Generator | None = None
        self._mean_file: np.ndarray | None = None          # (3, h, w) as read
        self._mean_cache: tuple[tuple, np.ndarray] | None = None  # (input (H, W), mean at that size)

    # ----- shapes -------------------------------------------------------------------------
    def setup(self, bottom_shapes):
        data, label = (tuple(s) for s in bottom_shapes)
        if len(data) != 4 or data[1] != 3:
            self.fail(f"bottom 0 (image) must be N×3×H×W (3 channels), got {data}")
        if len(label) != 4 or label[1] != 1 or label[3] != coverage.LABEL_WIDTH or label[2] < 1:
            self.fail(f"bottom 1 (label) must be N×1×R×{coverage.LABEL_WIDTH} with R >= 1 (row 0 "
                      f"[n_boxes, 16, ...], then one row per box), got {label}")
        if data[0] != label[0]:
            self.fail(f"the image and label bottoms hold different batch sizes: image {data}, label {label}")
        if self.rng is None:
            self.rng = layer_rng(self, self.param.transform_param.random_seed, per_rank=True)
        gt = self.groundtruth
        gy, gx = gt.grid
        return [(data[0], 3, gt.image_size_y, gt.image_size_x), (data[0], gt.channels, gy, gx)]

    def allow_force_backward(self, bottom_index: int) -> bool:
        return False

    # ----- the mean -----------------------------------------------------------------------
    def mean_for(self, height: int, width: int) -> np.ndarray | None:
        """What is subtracted from an input of ``height`` × ``width``: (3, 1, 1) values, or the
        mean file's image resized bicubic to the input, or None."""
        tp = self.param.transform_param
        if len(tp.mean_value):
            values = np.asarray(list(tp.mean_value), dtype=np.float32)
            return np.broadcast_to(values, (3,)).reshape(3, 1, 1)
        if not tp.mean_file:
            return None
        if self._mean_file is None:
            try:
                mean = load_mean(resolve_path(tp.mean_file, getattr(self, "model_dir", None)),
                                 f"layer '{self.name}' transform_param")
            except DataError as e:
                self.fail(str(e))
            if mean.shape[0] != 3:
                self.fail(f"transform_param: mean file {tp.mean_file} has {mean.shape[0]} channels, the "
                          f"images have 3")
            self._mean_file = mean
        if self._mean_cache is None or self._mean_cache[0] != (height, width):
            self._mean_cache = ((height, width), augment.resize_bicubic(self._mean_file, width, height))
        return self._mean_cache[1]

    # ----- forward ------------------------------------------------------------------------
    def transform_one(self, image: np.ndarray, label: np.ndarray, index: int) -> tuple[np.ndarray, np.ndarray]:
        """One image (3, H, W) and its label (1, R, 16) -> (3, Y, X) and (8 + K, Y/s, X/s)."""
        gt = self.groundtruth
        _, h, w = image.shape
        try:
            rows = coverage.label_rows(label)
        except DataError as e:
            self.fail(f"image {index} of the batch: {e}")
        if self.training_phase:
            draw = augment.draw_augmentation(self.rng, self.augmentation, w, h, gt.image_size_x, gt.image_size_y)
        else:
            draw = augment.plain_draw(gt.image_size_x, gt.image_size_y)
        out = augment.transform_image(image, draw, gt.image_size_x, gt.image_size_y, self.mean_for(h, w))
        target = coverage.coverage_targets(augment.transform_boxes(rows, draw, w, h), gt)
        return out, target

    def forward(self, data, label):
        images = data.detach().to("cpu", torch.float32).numpy()   # (N, 3, H, W)
        labels = label.detach().to("cpu", torch.float64).numpy()  # (N, 1, R, 16)
        pairs = [self.transform_one(images[i], labels[i], i) for i in range(images.shape[0])]
        gt = self.groundtruth
        gy, gx = gt.grid
        out = np.stack([p[0] for p in pairs]) if pairs else \
            np.zeros((0, 3, gt.image_size_y, gt.image_size_x), np.float32)
        targets = np.stack([p[1] for p in pairs]) if pairs else np.zeros((0, gt.channels, gy, gx), np.float32)
        return (torch.from_numpy(out).to(device=data.device, dtype=data.dtype),
                torch.from_numpy(targets).to(device=data.device, dtype=data.dtype))
