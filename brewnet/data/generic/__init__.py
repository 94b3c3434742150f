"""Datasets of DIGITS' generic jobs (contract C1): ``brewnet dataset create --kind KIND``.

Kinds: ``generic`` (DIGITS' "Other": existing LMDBs, validated), ``gradients`` (the image-gradients
extension: synthetic regression data), ``processing`` (image-processing: input/target image
pairs), ``segmentation`` (image-segmentation: images and label images with a colour map) and
``detection`` (image-object-detection: KITTI folders; :mod:`brewnet.data.detection` builds it).

Each builder writes OUTDIR/<stage>_db/features (and labels, mean.binaryproto) for the non-empty
stages, summary.txt and, last and atomically, summary.json (:mod:`.summary`); kind ``generic``
writes only the summaries, naming the given LMDBs.

- :func:`create_generic_dataset` — build one; returns the summary.
- :func:`read_summary` — a dataset's summary (DataError when missing or incomplete).
- :mod:`.synthetic` — ``make_shapes_dataset`` and ``gradient_image``.
"""
from __future__ import annotations

import inspect

from ...errors import DataError
from .summary import KINDS, read_summary


def create_generic_dataset(kind: str, outdir: str, **options) -> dict:
    """Build a dataset of ``kind`` in ``outdir``; ``options`` are the builder's keyword arguments:

    - generic: ``train_images``, ``train_labels``, ``val_images``, ``val_labels``, ``mean``,
      ``force_same_shape``;
    - gradients: ``train_count``, ``val_count``, ``test_count``, ``width``, ``height``, ``seed``;
    - processing: ``input_dir``, ``target_dir``, ``val_input_folder``, ``val_target_folder``,
      ``val_percent``, ``channel_conversion``, ``seed``;
    - segmentation: ``image_dir``, ``label_dir``, ``val_image_folder``, ``val_label_folder``,
      ``val_percent``, ``class_labels`` (a file), ``colormap`` (label, textfile, none),
      ``colormap_file``, ``channel_conversion``, ``seed``;
    - detection: :func:`brewnet.data.detection.create_detection_dataset`'s keywords
      (``train_image_folder``, ``train_label_folder``, ``val_image_folder``, ``val_label_folder``,
      ``padding_image_width``/``height``, ``resize_image_width``/``height``, ``channel_conversion``,
      ``val_min_box_size``, ``custom_classes``, ``seed``);
    - all but generic: ``feature_encoding``, ``workers``; gradients, processing, segmentation also
      ``label_encoding``, ``force_same_shape``;
    - all: ``overwrite``, ``stream`` (progress and log lines, default stderr).
    """
    from ..detection.build import create_detection_dataset
    from .gradients import create_gradients
    from .prebuilt import create_prebuilt
    from .processing import create_processing
    from .segmentation import create_segmentation

    builders = {"generic": create_prebuilt, "gradients": create_gradients, "processing": create_processing,
                "segmentation": create_segmentation, "detection": create_detection_dataset}
    if kind not in builders:
        raise DataError(f"unknown dataset kind {kind!r}: one of {', '.join(KINDS)}")
    try:
        inspect.signature(builders[kind]).bind(outdir, **options)
    except TypeError as e:
        raise DataError(f"--kind {kind}: {e}") from None
    return builders[kind](outdir, **options)


__all__ = ["KINDS", "create_generic_dataset", "read_summary"]
