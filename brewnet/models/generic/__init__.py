"""brewnet's standard networks for DIGITS' generic job kinds (one prototxt per network).

Each file serves every use, as DIGITS' standard networks do: the Data layers are picked by
NetState stage (``include { stage: "train" }`` / ``include { stage: "val" }``, tops ``data``
and ``label``, ``batch_size`` given, no ``source``: a model job fills the sources in from its
dataset), losses are excluded from the ``deploy`` stage and Accuracy runs in ``val`` only.
Segmentation networks keep their class count in ``score_fr``'s and ``upscore``'s
``num_output`` and ``upscore``'s ``group`` (a model job may set all three).

Detection networks (``detectnet``: NVCaffe's ``examples/kitti/detectnet_network.prototxt``,
byte for byte, see detectnet.README.md; ``detectnet_small``: ours) keep DetectNet's own layout
instead: Data layers ``train_data``/``train_label`` (phase TRAIN) and ``val_data``/``val_label``
(TEST, stage ``val``), an Input ``deploy_data`` (TEST, not stage ``val``), and DIGITS' Python
layers for clustering and mAP; the deploy output is ``bbox-list`` (N, 50, 5).  DIGITS' file
names sources, which a model job replaces.

This package is data: it imports nothing of brewnet.
"""
from __future__ import annotations

from pathlib import Path

#: id -> (title, dataset kinds the network suits); ids name the files ``<id>.prototxt``.
GENERIC_NETWORKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "regression_lenet": ("LeNet regression (2 outputs)", ("gradients", "generic")),
    "fcn_alexnet": ("FCN-AlexNet (DIGITS' semantic-segmentation example)", ("segmentation",)),
    "fcn_small": ("Small FCN (trains on a CPU)", ("segmentation",)),
    "image_to_image": ("Image to image (DIGITS' binary-segmentation example)", ("processing",)),
    "detectnet": ("DetectNet (GoogLeNet, DIGITS' KITTI example)", ("detection",)),
    "detectnet_small": ("Small DetectNet (trains on a CPU)", ("detection",)),
}

#: the layers whose num_output (and, for the Deconvolution, group) is the class count
CLASS_COUNT_LAYERS = ("score_fr", "upscore")

_HERE = Path(__file__).resolve().parent


def generic_network_path(name: str) -> Path:
    """The prototxt of standard network ``name`` (a key of GENERIC_NETWORKS)."""
    if name not in GENERIC_NETWORKS:
        raise KeyError(f"no standard generic network '{name}' (known: {', '.join(GENERIC_NETWORKS)})")
    return _HERE / f"{name}.prototxt"
