"""``brewnet deploy``: from a train_val prototxt and a snapshot to a deploy bundle whose scores are
the scores validation saw (:func:`write_bundle`; the bundle's layout is defined in
:mod:`brewnet.inference.bundle`).

The bundle holds the deploy net (:mod:`brewnet.inference.deploy_net`), the trained weights of
its layers only (an NVCaffe BatchNorm becomes BVLC BatchNorm + Scale), the preprocessing
(:mod:`brewnet.inference.preprocess_spec`), labels and ``info.json``, written atomically, in the
forms DIGITS writes (:mod:`brewnet.inference.digits_files`); ``bake=True`` folds the mean and
scale into the net (:mod:`brewnet.inference.bake`).
"""
from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import tarfile
import uuid
from typing import Sequence

from .. import __version__, formats
from ..data.labels import read_labels, write_labels
from ..reporting.metrics import read_metrics
from .bake import bake_bundle
from .bundle import FILES, Bundle, DeployError
from .deploy_net import build_deploy, deploy_caffemodel, to_bvlc_batchnorm, trained_net
from .digits_files import input_layer_as_loaded, net_level_inputs, write_legacy_mean
from .preprocess_spec import spec_from_analysis
from .validation import Analysis, analyse, load_model, validation_net

log = logging.getLogger("brewnet")

#: Caffe's snapshot names: <snapshot_prefix>_iter_<N>.caffemodel (.caffemodel.h5 in HDF5 format)
_SNAPSHOT = re.compile(r"^(?P<prefix>.*)_iter_(?P<iter>\d+)\.(caffemodel|caffemodel\.h5|h5)$")
_BUNDLE_ENTRIES = set(FILES) | {"mean.binaryproto"}


# ----- labels and info ---------------------------------------------------------------------------------
def _read_labels(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise DeployError(f"labels file not found: {path}")
    return read_labels(path)


def _labels(labels, a: Analysis, classes: int | None, notes: list[str]) -> list[str]:
    if labels is not None:
        names = _read_labels(os.fspath(labels)) if isinstance(labels, (str, os.PathLike)) \
            else [str(n) for n in labels]
        where = "the labels given"
    elif a.dataset_dir and os.path.isfile(os.path.join(a.dataset_dir, "labels.txt")):
        names = _read_labels(os.path.join(a.dataset_dir, "labels.txt"))
        where = os.path.join(a.dataset_dir, "labels.txt")
    else:
        if classes is None:
            raise DeployError("no labels given, none beside the dataset, and the net's output "
                              "does not say how many classes there are: give labels")
        msg = (f"no labels given and no labels.txt beside the dataset: classes named 0..{classes - 1}")
        log.warning("deploy: %s", msg)
        notes.append(msg)
        return [str(i) for i in range(classes)]
    if classes is not None and len(names) != classes:
        msg = f"{where} has {len(names)} labels but the net outputs {classes} classes"
        log.warning("deploy: %s", msg)
        notes.append(msg)
    return names


def _accuracy_tops(train_val) -> list[str]:
    """Tops of the validation net's top-1 Accuracy layers, in net order."""
    return [lp.top[0] for lp in validation_net(train_val).layer
            if lp.type == "Accuracy" and lp.top and lp.accuracy_param.top_k == 1]


def _logged(weights_path: str, iteration: int | None, accuracy_tops: list[str],
            metrics: str | os.PathLike | None = None) -> dict:
    """The test outputs logged at ``iteration`` (test net 0) in ``metrics``, by default
    ``<snapshot_prefix>_metrics.jsonl``."""
    if iteration is None:
        return {}
    if metrics is not None:
        path = os.path.abspath(os.fspath(metrics))
    else:
        m = _SNAPSHOT.match(os.path.abspath(weights_path))
        if m is None:
            return {}
        path = m.group("prefix") + "_metrics.jsonl"
    if not os.path.isfile(path):
        return {}
    try:
        records = read_metrics(path)
    except (OSError, ValueError) as e:
        log.warning("deploy: cannot read %s: %s", path, e)
        return {}
    outputs: dict[str, float | None] = {}
    for r in records:  # a resumed run appends: the last value of a key wins
        if r.get("phase") == "test" and r.get("iter") == iteration and not r.get("test_net"):
            outputs[r.get("name")] = r.get("value")
    acc_name = next((t for t in accuracy_tops if t in outputs), None)
    return {"metrics_file": path, "test_outputs": outputs, "accuracy_output": acc_name,
            "accuracy": outputs.get(acc_name) if acc_name else None}


# ----- generic nets (regression, segmentation, image-to-image) -------------------------------------
#: the facts of a dataset's summary.json (contract C1) a generic bundle keeps in info.json "dataset"
DATASET_FACTS = ("kind", "feature_dims", "class_labels", "color_palette", "num_classes", "label_range",
                 "mean_file", "feature_encoding", "label_encoding", "force_same_shape")
#: loss layers whose prediction is a regression (rmse/mae) or class scores (segmentation IoU)
REGRESSION_LOSSES = ("EuclideanLoss", "L1Loss")
SCORE_LAYERS = ("SoftmaxWithLoss", "Accuracy", "SigmoidCrossEntropyLoss", "InfogainLoss", "MultinomialLogisticLoss")


def read_dataset_summary(dataset_dir: str) -> dict:
    """A generic dataset directory's ``summary.json`` (``brewnet dataset create --kind ...``);
    DeployError when there is none or it is not one."""
    path = os.path.join(dataset_dir, "summary.json")
    if not os.path.isfile(path):
        raise DeployError(f"{dataset_dir}: not a dataset directory (no summary.json; brewnet dataset create "
                          "writes it last, so the dataset may be incomplete)")
    try:
        with open(path, encoding="utf-8") as f:
            summary = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DeployError(f"{path}: cannot read it: {e}") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("kind", "classification"), str):
        raise DeployError(f"{path}: not a dataset summary (a JSON object with a \"kind\")")
    return summary


def _generic_dataset(dataset, a: Analysis) -> tuple[dict | None, str | None]:
    """(summary, dataset dir): ``dataset`` when given, else the generic dataset whose
    ``<stage>_db/features`` LMDB the TEST features layer reads (DIGITS' layout), if there is one."""
    if dataset is not None:
        d = os.path.abspath(os.fspath(dataset))
        return read_dataset_summary(d), d
    if a.dataset_dir is None:
        return None, None
    d = os.path.dirname(a.dataset_dir.rstrip("/" + os.sep))
    if not os.path.isfile(os.path.join(d, "summary.json")):
        return None, None
    try:
        summary = read_dataset_summary(d)
    except DeployError as e:
        log.warning("deploy: ignoring it: %s", e)
        return None, None
    return (summary, d) if isinstance(summary.get("stages"), dict) else (None, None)


def _generic_info(a: Analysis, meta: dict, net, summary: dict | None, dataset_dir: str | None,
                  labels, notes: list[str]) -> tuple[dict, list[str]]:
    """info.json's generic facts and the bundle's labels (the dataset's class labels, or none)."""
    shapes = {o: list(net.blobs[o].shape) for o in meta["outputs"]}
    main = meta["output"]
    losses = [lp for lp in meta["losses"] if lp.bottom[0] == main]
    evaluate = None
    ignore_label = None
    if any(lp.type in REGRESSION_LOSSES for lp in losses):
        evaluate = "regression"
    elif any(lp.type in SCORE_LAYERS for lp in losses) and len(shapes[main]) == 4 \
            and shapes[main][2] * shapes[main][3] > 1:
        evaluate = "segmentation"
        for lp in losses:
            if lp.HasField("loss_param") and lp.loss_param.HasField("ignore_label"):
                ignore_label = int(lp.loss_param.ignore_label)
            elif lp.type == "Accuracy" and lp.accuracy_param.HasField("ignore_label"):
                ignore_label = int(lp.accuracy_param.ignore_label)
    facts = {k: summary.get(k) for k in DATASET_FACTS} if summary is not None else None
    if facts is not None:
        facts["dir"] = dataset_dir
    if labels is not None:
        names = _read_labels(os.fspath(labels)) if isinstance(labels, (str, os.PathLike)) else [str(n) for n in labels]
    else:
        names = list((facts or {}).get("class_labels") or [])
    classes = (facts or {}).get("num_classes")
    if classes is None and evaluate == "segmentation":
        classes = int(shapes[main][1])
    if names and classes is not None and len(names) != classes:
        notes.append(f"{len(names)} class labels but {classes} classes")
    info = {"task": "generic", "outputs": list(meta["outputs"]), "output": main, "output_shapes": shapes,
            "classes": classes, "evaluate": evaluate, "ignore_label": ignore_label,
            "labels_layer": a.labels.name if a.labels is not None else None, "dataset": facts}
    return info, names


def _iteration(weights_path: str) -> int | None:
    m = _SNAPSHOT.match(os.path.basename(weights_path))
    return int(m.group("iter")) if m else None


# ----- writing ----------------------------------------------------------------------------------------
def _is_bundle_dir(path: str) -> bool:
    """A directory holding a bundle and nothing else (or empty): safe to replace."""
    entries = set(os.listdir(path))
    return not entries or ("preprocess.json" in entries and "deploy.prototxt" in entries
                           and entries <= _BUNDLE_ENTRIES)


def _write_json(path: str, value: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def _write_tar(directory: str) -> str:
    """``directory.tar.gz`` with the bundle's files at the archive's root, as DIGITS' "Download
    Model" archive has them (its use_archive.py looks for them there, not in a folder)."""
    target = directory.rstrip("/" + os.sep) + ".tar.gz"
    with formats.atomic_path(target) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            for name in sorted(os.listdir(directory)):
                tar.add(os.path.join(directory, name), arcname=name, recursive=False)
    return target


def _install(tmp: str, output: str) -> None:
    """Move the finished bundle ``tmp`` to ``output``, replacing an old bundle there."""
    if not os.path.exists(output):
        os.rename(tmp, output)
        return
    old = os.path.join(os.path.dirname(output), f".{os.path.basename(output)}.old-{uuid.uuid4().hex[:8]}")
    os.rename(output, old)
    try:
        os.rename(tmp, output)
    except BaseException:
        os.rename(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _write_dir(output: str, files: dict) -> None:
    """Write {name: writer(path)} into a temporary sibling of ``output``, check that it loads as
    a bundle, then put it in place (replacing an old bundle there)."""
    parent = os.path.dirname(output)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(output)}.tmp-{uuid.uuid4().hex[:8]}")
    os.makedirs(tmp)
    try:
        for name, write in files.items():
            write(os.path.join(tmp, name))
        Bundle.load(tmp)  # the bundle reads back as the schema says
        _install(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_bundle(model, weights, output, *, labels=None, tar: bool = False, bake: bool = False,
                 name: str | None = None, input_shape: Sequence[int] | None = None,
                 metrics: str | os.PathLike | None = None, dataset: str | os.PathLike | None = None) -> str:
    """Write the deploy bundle of ``model`` (train_val prototxt path or NetParameter) with the
    trained ``weights`` (caffemodel or Caffe HDF5 path) into the directory ``output``; returns
    its path.

    Files (see :mod:`brewnet.inference.bundle`), in the forms DIGITS writes them:
    deploy.prototxt (:func:`deploy_net_param`, any NVCaffe BatchNorm converted to BVLC
    BatchNorm + Scale, its input as net-level ``input`` + ``input_shape``:
    :func:`net_level_inputs`), weights.caffemodel (the deploy
    layers only, with the trained blobs), labels.txt (``labels``: a file or a list of names;
    else the dataset's labels.txt; else "0".."N-1" with a warning), preprocess.json
    (:func:`preprocess_spec`), mean.binaryproto (the validation mean image, with legacy
    num/channels/height/width dims: :func:`legacy_mean_blob`) and
    info.json (name, snapshot iteration, creation time, brewnet version, sources, the accuracy
    logged at that iteration in ``metrics`` (default ``<snapshot_prefix>_metrics.jsonl``, what
    ``brewnet train`` writes without ``-metrics``) when there is one, notes).

    The bundle is built in a temporary sibling directory and renamed into place: ``output``
    holds either the old bundle or the complete new one. A directory that is not a bundle is
    never replaced. ``tar`` also writes ``output.tar.gz`` with the files at its root, no folder
    (as DIGITS' download archive: its use_archive.py finds them there).

    ``bake`` folds mean subtraction and scale into the net, which then takes raw 0–255 pixels at
    the crop size, still in BGR order (the bundle's channel order; no channel swap is needed as
    nothing changes it): into the first layer's weights when that is exact (an InnerProduct, or
    an unpadded Convolution with per-channel means), otherwise as a ``Bias`` layer (−mean per
    channel, or the centre-cropped mean image as a (C, H, W) blob) and a ``Power`` layer
    (scale) after the Input. preprocess.json then says ``baked``: true, with only the crop left
    in its transform and the original in ``baked_from``.

    Generic nets (a TEST labels Data layer beside the features one, DIGITS' rule: tops containing
    "data" and "label"; or a generic ``dataset``): the deploy net takes the features input only,
    its outputs are the blobs no layer reads and no Softmax is added; info.json says ``"task":
    "generic"`` with ``outputs``, ``output`` (the prediction the first loss read),
    ``output_shapes``, ``evaluate`` ("segmentation", "regression" or null), ``ignore_label``
    and ``dataset``: the facts of ``dataset``'s summary.json (a ``brewnet dataset create --kind``
    directory; by default the one whose ``<stage>_db/features`` the net reads, if any): kind,
    feature_dims, class_labels, color_palette, num_classes, label_range, mean_file, encodings.
    labels.txt holds the class labels (segmentation) or nothing.
    """
    tv, model_dir, model_path = load_model(model)
    weights = os.fspath(weights)
    if not os.path.isfile(weights):
        raise DeployError(f"weights file not found: {weights}")
    output = os.path.abspath(os.fspath(output))
    if os.path.exists(output) and not (os.path.isdir(output) and _is_bundle_dir(output)):
        what = "a directory that is not a deploy bundle" if os.path.isdir(output) else "a file"
        raise DeployError(f"{output} exists and is {what}; choose a new -output (nothing was written)")
    a = analyse(tv, model_dir, input_shape)
    summary, dataset_dir = _generic_dataset(dataset, a)
    generic = a.labels is not None or (summary is not None and summary.get("kind", "classification")
                                       != "classification")
    deploy, meta = build_deploy(a, generic=generic)
    notes = a.notes
    net = trained_net(deploy, weights, weights)
    converted, bvlc_weights = to_bvlc_batchnorm(deploy, net, weights, notes)
    if bvlc_weights is not None:
        deploy = converted
        net = trained_net(deploy, bvlc_weights, weights)
    spec, mean, mean_path = spec_from_analysis(a, meta["input"])
    caffemodel = deploy_caffemodel(net, deploy)
    if bake:
        deploy, caffemodel, net = bake_bundle(deploy, caffemodel, spec, mean, notes)
        mean_path = None
    if generic:
        extra, names = _generic_info(a, meta, net, summary, dataset_dir, labels, notes)
        classes = extra["classes"]
    else:
        out_shape = tuple(net.blobs[meta["output"]].shape)
        classes = int(out_shape[1]) if len(out_shape) > 1 else int(out_shape[0])
        names = _labels(labels, a, classes, notes)
        extra = {}
    iteration = _iteration(weights)
    info = {
        "name": name or os.path.basename(output),
        "iteration": iteration,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "brewnet_version": __version__,
        "source_prototxt": model_path,
        "source_weights": os.path.abspath(weights),
        "accuracy": None,
        "input": meta["input"],
        "input_shape": [1] + list(a.item),
        "output": meta["output"],
        "classes": classes,
        "baked": bool(bake),
        "batchnorm_converted": bvlc_weights is not None,
    }
    info.update(extra)
    info.update(_logged(weights, iteration, _accuracy_tops(tv), metrics))
    info["notes"] = list(notes)
    written = net_level_inputs(deploy)
    caffemodel = input_layer_as_loaded(caffemodel, written)
    files = {"deploy.prototxt": lambda p: formats.write_prototxt(written, p),
             "weights.caffemodel": lambda p: formats.write_caffemodel(caffemodel, p),
             "labels.txt": lambda p: write_labels(names, p),
             "preprocess.json": lambda p: _write_json(p, spec),
             "info.json": lambda p: _write_json(p, info)}
    if mean_path is not None:
        files["mean.binaryproto"] = lambda p: write_legacy_mean(mean, p)
    _write_dir(output, files)
    if tar:
        _write_tar(output)
    for note in notes:
        log.info("deploy: %s", note)
    return output
