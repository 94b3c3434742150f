"""Kind ``processing`` (DIGITS' ``image-processing`` extension): image → image pairs.

An input folder and a target folder of images, paired by sorted position with matching basenames
(:mod:`.folders`); the channel conversion applies to both.  The feature is the input image and the
label the target image (C×H×W uint8), in the labels LMDB, PNG-encoded by default.
"""
from __future__ import annotations

from .build import Stage, base_summary, new_seed, prepare_outdir, write_stages
from .folders import stage_pairs
from .summary import write_summary
from .writer import WriteOptions, check_conversion, check_encoding, read_image


def create_processing(outdir: str, input_dir: str, target_dir: str, val_input_folder: str | None = None,
                      val_target_folder: str | None = None, val_percent: float = 10.0,
                      channel_conversion: str = "none", seed: int | None = None, feature_encoding: str = "png",
                      label_encoding: str = "png", force_same_shape: bool = True, workers: int = 0,
                      overwrite: bool = False, stream=None) -> dict:
    given = dict(locals())
    del given["outdir"]
    check_encoding(feature_encoding, "-feature-encoding")
    check_encoding(label_encoding, "-label-encoding")
    check_conversion(channel_conversion)
    seed = new_seed(seed)
    pairs = stage_pairs(input_dir, target_dir, val_input_folder, val_target_folder, val_percent, seed,
                        ("INPUT_DIR", "TARGET_DIR", "-val-input-folder", "-val-target-folder"))
    prepare_outdir(outdir, overwrite)

    def stage(items) -> Stage:
        return Stage(len(items),
                     lambda i: (read_image(items[i].feature, channel_conversion),
                                read_image(items[i].label, channel_conversion)),
                     lambda i: items[i].feature)

    options = WriteOptions(feature_encoding, label_encoding, force_same_shape, workers, stream)
    results = write_stages(outdir, {s: stage(p) for s, p in pairs.items()}, options)
    summary = base_summary("processing", results, force_same_shape, (feature_encoding, label_encoding), seed, given)
    write_summary(outdir, summary)
    return summary
