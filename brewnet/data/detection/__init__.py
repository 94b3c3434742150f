"""KITTI-format object-detection datasets (contract C3): ``brewnet dataset create --kind detection``.

- :func:`create_detection_dataset` — KITTI image and label folders into LMDBs of image Datums and
  of label records laid out as DetectNet's transformation layer reads them (:mod:`.build`);
- :func:`read_kitti_labels`, :func:`class_ids` — label files and the class table (:mod:`.kitti`);
- :func:`read_detection_labels` — one label record back as its (n, 16) rows;
- :mod:`.synthetic` — ``make_kitti_dataset``, a generated KITTI-format set.
"""
from __future__ import annotations

from .build import create_detection_dataset
from .kitti import (DEFAULT_CLASSES, LABEL_WIDTH, KittiObject, class_ids, class_names, label_array,
                    read_detection_labels, read_kitti_labels)

__all__ = ["DEFAULT_CLASSES", "LABEL_WIDTH", "KittiObject", "class_ids", "class_names", "create_detection_dataset",
           "label_array", "read_detection_labels", "read_kitti_labels"]
