"""Folders of paired images (image processing, segmentation): finding, pairing, splitting.

The rules are DIGITS' (doc §2.1): images are found by a recursive walk (symlinks followed) with the
extensions below, in any case; both lists are sorted and paired by position, and each pair's
basenames (without extension) must match.  The validation set is a separate pair of folders, or
the first ``floor(n·pct/100)`` pairs of one seeded shuffle (the rest is the train set).
"""
from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass

from ...errors import DataError

PAIR_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm")


@dataclass(frozen=True)
class Pair:
    """One sample: a feature image and its label (target) image."""
    feature: str
    label: str


def find_images(folder: str, flag: str = "folder") -> list[str]:
    """Every image under ``folder`` (recursively, symlinks followed), sorted by path."""
    if not os.path.isdir(folder):
        raise DataError(f"{flag} {folder}: Folder does not exist or is not reachable")
    found = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        found += [os.path.join(root, f) for f in files if f.lower().endswith(PAIR_EXTENSIONS)]
    return sorted(found)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def pair_folders(feature_folder: str, label_folder: str, flags: tuple[str, str] = ("images", "labels")) -> list[Pair]:
    """The pairs of two folders: sorted, paired by position, basenames matching."""
    features = find_images(feature_folder, flags[0])
    labels = find_images(label_folder, flags[1])
    if not features:
        raise DataError(f"{flags[0]} {feature_folder}: no images found ({', '.join(PAIR_EXTENSIONS)})")
    if len(features) != len(labels):
        raise DataError(f"{len(features)} images in {feature_folder} but {len(labels)} in {label_folder}: "
                        "every image needs one label image with the same basename")
    for f, lab in zip(features, labels):
        if _stem(f) != _stem(lab):
            raise DataError(f"No corresponding feature/label pair found for ({f},{lab})")
    return [Pair(f, lab) for f, lab in zip(features, labels)]


def split_pairs(pairs: list[Pair], val_percent: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, val): one shuffle seeded with ``seed``; val is the first ``floor(n·pct/100)``."""
    if not 0 <= val_percent <= 100:
        raise DataError(f"-val-percent {val_percent} must be between 0 and 100")
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    n_val = math.floor(len(shuffled) * val_percent / 100)
    return shuffled[n_val:], shuffled[:n_val]


def stage_pairs(feature_folder: str, label_folder: str, val_feature_folder: str | None,
                val_label_folder: str | None, val_percent: float, seed: int,
                flags: tuple[str, str, str, str]) -> dict[str, list[Pair]]:
    """The train and val pairs: separate val folders (both or neither) or a percentage split.

    The train set is shuffled (seeded) either way: Caffe's Data layer reads an LMDB in key order
    and never shuffles, so the order written is the order trained."""
    if bool(val_feature_folder) != bool(val_label_folder):
        given, missing = (flags[2], flags[3]) if val_feature_folder else (flags[3], flags[2])
        raise DataError(f"{given} needs {missing} (a separate validation set is a pair of folders)")
    pairs = pair_folders(feature_folder, label_folder, flags[:2])
    if not val_feature_folder:
        train, val = split_pairs(pairs, val_percent, seed)
        return {"train": train, "val": val}
    val = pair_folders(val_feature_folder, val_label_folder, flags[2:])
    train = list(pairs)
    random.Random(seed).shuffle(train)
    return {"train": train, "val": val}
