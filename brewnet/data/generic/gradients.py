"""Kind ``gradients`` (DIGITS' ``image-gradients`` extension): synthetic regression data.

Each sample is a label (gx, gy) drawn uniformly from [-0.5, 0.5) and the grey image of that
gradient (:func:`brewnet.data.generic.synthetic.gradient_image`); the feature is 1×H×W uint8 and
the label a 1×1×2 float array, stored as ``float_data`` in the labels LMDB.  Unlike DIGITS' the
labels are drawn from a seeded generator (recorded), so the dataset can be made again.
"""
from __future__ import annotations

import numpy as np

from ...errors import DataError
from .build import Stage, base_summary, new_seed, prepare_outdir, write_stages
from .summary import write_summary
from .synthetic import gradient_image
from .writer import WriteOptions, check_encoding


def create_gradients(outdir: str, train_count: int = 1000, val_count: int = 250, test_count: int = 0,
                     width: int = 32, height: int = 32, seed: int | None = None, feature_encoding: str = "png",
                     label_encoding: str = "none", force_same_shape: bool = True, workers: int = 0,
                     overwrite: bool = False, stream=None) -> dict:
    given = dict(locals())
    del given["outdir"]
    if train_count < 1:
        raise DataError(f"-train-count {train_count}: at least 1")
    for flag, n in (("-val-count", val_count), ("-test-count", test_count)):
        if n < 0:
            raise DataError(f"{flag} {n}: 0 or more")
    if width < 1 or height < 1:
        raise DataError(f"-width {width} -height {height}: both at least 1")
    check_encoding(feature_encoding, "-feature-encoding")
    if check_encoding(label_encoding, "-label-encoding") != "none":
        raise DataError(f"-label-encoding {label_encoding}: gradient labels are floats, which require "
                        "-label-encoding none")
    seed = new_seed(seed)
    rng = np.random.default_rng(seed)
    counts = {"train": train_count, "val": val_count, "test": test_count}
    labels = {s: (rng.random((n, 2)) - 0.5).astype(np.float32) for s, n in counts.items()}
    prepare_outdir(outdir, overwrite)

    def stage(s: str) -> Stage:
        def load(i: int):
            gx, gy = labels[s][i]
            return gradient_image(gx, gy, width, height)[None], labels[s][i].reshape(1, 1, 2)
        return Stage(counts[s], load, lambda i: f"gradient ({labels[s][i][0]:.4f}, {labels[s][i][1]:.4f})")

    options = WriteOptions(feature_encoding, label_encoding, force_same_shape, workers, stream)
    results = write_stages(outdir, {s: stage(s) for s in counts}, options)
    summary = base_summary("gradients", results, force_same_shape, (feature_encoding, label_encoding), seed, given)
    summary["label_range"] = [results["train"].label_min, results["train"].label_max]
    write_summary(outdir, summary)
    return summary
