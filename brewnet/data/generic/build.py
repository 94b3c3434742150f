"""What every generic builder shares: the output folder, the stages in order, the summary's
common keys (contract C1)."""
from __future__ import annotations

import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from typing import Callable

from ...errors import DataError
from ...reporting.progress_file import from_env
from .summary import STAGES, SUMMARY, SUMMARY_TEXT
from .writer import StageResult, WriteOptions, write_stage

#: what a builder may leave in OUTDIR: refused without --overwrite, removed with it
OUTPUTS = tuple(f"{s}_db" for s in STAGES) + ("labels.txt", SUMMARY_TEXT)


@dataclass
class Stage:
    """One stage to write: ``count`` samples, ``load(i)`` -> (feature, label), ``name(i)`` for errors."""
    count: int
    load: Callable[[int], tuple]
    name: Callable[[int], str]


def new_seed(seed: int | None) -> int:
    """The seed given, else a fresh one (recorded in summary.json, so the dataset can be rebuilt)."""
    return int(seed) if seed is not None else secrets.randbelow(2**31)


def logger(stream) -> Callable[[str], None]:
    stream = stream if stream is not None else sys.stderr

    def log(msg: str) -> None:
        stream.write(msg + "\n")
        stream.flush()
    return log


def prepare_outdir(outdir: str, overwrite: bool) -> None:
    """Make OUTDIR; an earlier dataset's outputs there are an error, or removed with ``overwrite``
    (summary.json first, so that a half-rebuilt folder never looks complete).  Other files (a
    server job's log) stay."""
    found = [n for n in (SUMMARY,) + OUTPUTS if os.path.exists(os.path.join(outdir, n))]
    if found and not overwrite:
        raise DataError(f"{outdir} already holds a dataset ({', '.join(found)}): choose a new OUTDIR "
                        "or pass --overwrite")
    for n in found:
        path = os.path.join(outdir, n)
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
    os.makedirs(outdir, exist_ok=True)


def write_stages(outdir: str, stages: dict[str, Stage], options: WriteOptions) -> dict[str, StageResult]:
    """Write each non-empty stage in order (train, val, test); the progress file learns every
    stage's total first, so a reader's done/total does not reach 1 after the train stage.  When
    a sample fails, the stages written so far are removed and the error goes on."""
    log = logger(options.stream)
    stages = {s: stages[s] for s in STAGES if s in stages and stages[s].count > 0}
    if "train" not in stages:
        raise DataError("the train stage has no entries")
    announce = from_env()
    if announce is not None:
        with announce:
            for s, st in stages.items():
                announce.update(f"{s}_db", 0, st.count, force=True)
    try:
        return {s: write_stage(outdir, s, st.count, st.load, st.name, options, log) for s, st in stages.items()}
    except BaseException:
        # a bad sample midway: remove the partial stages, so that the folder holds no half dataset
        for s in stages:
            shutil.rmtree(os.path.join(outdir, f"{s}_db"), ignore_errors=True)
        raise


def base_summary(kind: str, results: dict[str, StageResult], force_same_shape: bool,
                 encodings: tuple[str | None, str | None], seed: int | None, given: dict) -> dict:
    """The summary keys every kind writes; the kind adds its own (class labels, label range...)."""
    train = results["train"]
    dims = train.feature_shape
    return {
        "kind": kind,
        "stages": {s: r.summary_entry() for s, r in results.items()},
        "feature_dims": [dims[1], dims[2], dims[0]] if dims and len(dims) == 3 else dims,
        "mean_file": train.mean,
        "force_same_shape": force_same_shape,
        "feature_encoding": encodings[0],
        "label_encoding": encodings[1],
        "class_labels": None, "color_palette": None, "num_classes": None, "label_range": None,
        "seed": seed,
        "options": {k: v for k, v in given.items() if k != "stream"},
        "class_pixel_counts": None,
    }
