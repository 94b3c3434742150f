"""A model job's files, as DIGITS' ``CaffeTrainTask.save_files_classification`` laid them out:

- ``original.prototxt``: the network as chosen or given (a retrain: the previous job's network
  with its changed layers renamed ``<name>_retrain``), before the class count is filled in;
- ``train_val.prototxt``: the network's TRAIN/val layers by phase (stage ``train`` -> phase
  TRAIN, ``val`` -> TEST), its Data layers given the dataset's LMDBs (absolute paths), batch
  size, crop and mean; every InnerProduct without ``num_output`` given the class count; no
  val Data layer when the dataset has no val set;
- ``deploy.prototxt``: the net-level input "data" (``input_shape`` 1, C, crop|H, crop|W, as
  DIGITS writes it; Caffe and brewnet load it as an Input layer) and the ``deploy`` stage's
  layers (no Data, loss or accuracy); it must hold a Softmax;
- ``solver.prototxt``: DIGITS' solver (solver_form.py), ``net: "train_val.prototxt"``;
- ``augment.json`` (only when an ``aug_*`` field is on): brewnet's augmentation file
  (brewnet.data.augment), given to ``brewnet train -augment``; the prototxts stay plain Caffe;
- ``python_layers/digits_python_layers.py`` (only with a Python layer file): the job's copy of
  it; the job's steps have that folder on their module path (nothing else of the job's is);
- ``plan.json``: the Plan (iterations per epoch, max_iter, snapshot and test intervals, the
  weights to start from), written last: its presence means the files are complete.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np
from google.protobuf import text_format

from ... import formats
from ...data.augment import Augmentation
from ...errors import BrewnetError
from ...net_state import has_include_and_exclude, layer_included, net_state, state_meets_rule
from ...proto import caffe_pb2
from ..errors import FormErrors
from ..jobs.epochs import epoch_of_iteration
from ..jobs.jobdir import write_json_atomic
from ..jobs.specs import PYTHON_LAYER_MODULE, ModelSpec
from ..jobs.tasks import AUGMENT_FILE, PYTHON_LAYER_DIR
from .fields import Fields, augmentation_fields
from .networks import network_prototxt
from .solver_form import DEFAULT_BATCH_SIZE, Plan, compute_plan, dataset_facts, solver_parameter

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
#: data layers that are not the train/val data DIGITS' forms split out: Input is the deploy net's,
#: AnnotatedData and VideoData (SSD's) are left among the other layers
NOT_SPLIT_DATA = frozenset({"Input", "AnnotatedData", "VideoData"})
PARAM_LAYERS = ("InnerProduct", "Convolution")
CHANNEL_LAYERS = ("BatchNorm", "Scale", "Bias", "PReLU")
FILES = ("original.prototxt", "train_val.prototxt", "deploy.prototxt", "solver.prototxt", "plan.json")


class NetworkError(ValueError):
    """A custom network the job could not use (the message is the form's error)."""


STATES = {"train": net_state(TRAIN, ["train"]), "val": net_state(TEST, ["val"]),
          "deploy": net_state(TEST, ["deploy"])}


def _is_split_data(lp: caffe_pb2.LayerParameter) -> bool:
    """A train/val data layer of a DIGITS network (Data, ImageData, HDF5Data, MemoryData, ...)."""
    from ...layers import is_data_layer  # the layers import torch, which the server's forms need not
    return is_data_layer(lp.type) and lp.type not in NOT_SPLIT_DATA


def included_in(lp: caffe_pb2.LayerParameter, state: caffe_pb2.NetState) -> bool:
    if has_include_and_exclude(lp):
        raise NetworkError(f"Layer '{lp.name}': specify either include or exclude rules, not both")
    return layer_included(lp, lambda r: state_meets_rule(state, r))


# ----- reading and splitting a network ----------------------------------------------------------

def parse_network(text: str) -> caffe_pb2.NetParameter:
    """Prototxt text -> NetParameter (upgraded); NetworkError ``Bad network: <line>: <message>``."""
    try:
        return formats.net_from_text(text)
    except BrewnetError as e:
        msg = str(e)
        if msg.startswith("<string>:"):
            msg = msg[len("<string>:"):]
            line, _, rest = msg.partition(":")
            if rest and line.isdigit():
                col, _, tail = rest.partition(":")
                msg = f"{line}: {tail.strip() if col.isdigit() else rest.strip()}"
        elif msg.startswith("<string>"):
            msg = msg[len("<string>"):].lstrip(": ")
        raise NetworkError(f"Bad network: {msg}") from None


def clean_network(net: caffe_pb2.NetParameter, num_classes: int) -> caffe_pb2.NetParameter:
    """DIGITS' clean-up of a classification network: Input layers dropped (the job writes the
    deploy input), Accuracy layers with ``top_k`` above the class count dropped, and every
    InnerProduct without ``num_output`` given the class count."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    del out.layer[:]
    for lp in net.layer:
        if lp.type == "Input":
            continue
        if lp.type == "Accuracy" and lp.accuracy_param.HasField("top_k") and lp.accuracy_param.top_k > num_classes:
            continue
        new = out.layer.add()
        new.CopyFrom(lp)
        if new.type == "InnerProduct" and not new.inner_product_param.HasField("num_output"):
            new.inner_product_param.num_output = int(num_classes)
    return out


@dataclass
class Split:
    """A network split by DIGITS' NetStates."""
    train_data: caffe_pb2.LayerParameter | None
    val_data: caffe_pb2.LayerParameter | None
    train_val: list[caffe_pb2.LayerParameter] = field(default_factory=list)   # phase rules
    deploy: list[caffe_pb2.LayerParameter] = field(default_factory=list)      # no rules


def split_network(net: caffe_pb2.NetParameter) -> Split:
    """Data layers of stage train / val; the other layers of train or val (a layer in only one
    of them gets that phase's rule) and of deploy.  NetworkError for two train (or val) Data
    layers, a data layer that is not an LMDB ``Data`` layer, or a deploy net without Softmax."""
    split = Split(None, None)
    for lp in net.layer:
        t, v, d = (included_in(lp, STATES[k]) for k in ("train", "val", "deploy"))
        if _is_split_data(lp):
            if lp.type != "Data" and (t or v):
                raise NetworkError(f"Layer '{lp.name}': expecting a Data layer (brewnet's datasets are "
                                   f"LMDB), not {lp.type}")
            for used, slot, what in ((t, "train_data", "train"), (v, "val_data", "val")):
                if used:
                    if getattr(split, slot) is not None:
                        raise NetworkError(f"Cannot specify two {what} data layers "
                                           f"('{getattr(split, slot).name}' and '{lp.name}')")
                    setattr(split, slot, without_rules(lp))
            continue
        place_layer(lp, t, v, d, split.train_val, split.deploy)
    if not any(lp.type == "Softmax" for lp in split.deploy):
        raise NetworkError("Your deploy network is missing a Softmax layer! Read the documentation "
                           "for custom networks and/or look at the standard networks for examples.")
    return split


def place_layer(lp: caffe_pb2.LayerParameter, train: bool, val: bool, deploy: bool,
                train_val_layers: list, deploy_layers: list) -> None:
    """A layer (not a train/val data layer) into the train_val layers when it is in train or val
    (with that phase's plain rule when in one of them only) and into the deploy layers, rules gone."""
    if train or val:
        layer = without_rules(lp)
        if train != val:
            layer.include.add(phase=TRAIN if train else TEST)
        train_val_layers.append(layer)
    if deploy:
        deploy_layers.append(without_rules(lp))


def without_rules(lp: caffe_pb2.LayerParameter) -> caffe_pb2.LayerParameter:
    out = caffe_pb2.LayerParameter()
    out.CopyFrom(lp)
    out.ClearField("include")
    out.ClearField("exclude")
    return out


def _finding_dict(f) -> dict:
    d = {"rule": f.rule, "severity": f.severity, "layer": f.layer, "message": f.message, "fix": f.fix}
    if f.line:
        d["line"] = f.line
    return d


def lint_findings(net: caffe_pb2.NetParameter, text: str,
                  deploy: caffe_pb2.NetParameter | None = None) -> list[dict]:
    """``brewnet lint``'s findings on ``net`` (``text``: its prototxt, for line numbers) as dicts
    ``{rule, severity, layer, message, fix, line?}``; the lint's own refusal of a net is one
    finding (rule ``lint``), not an error."""
    from ...batchnorm.lint import lint   # it imports torch: the server starts without it

    try:
        findings = lint(net, text, deploy=deploy)
    except BrewnetError as e:
        return [{"rule": "lint", "severity": "error", "layer": "", "message": str(e), "fix": ""}]
    return [_finding_dict(f) for f in findings]


def analyze_network(text: str, num_classes: int = 2) -> tuple[caffe_pb2.NetParameter, list[dict]]:
    """Parse, split and lint a custom network, as the form does before queueing it: returns the
    parsed net and ``brewnet lint``'s findings as dicts ``{rule, severity, layer, message, fix,
    line?}`` (on the train_val and deploy nets the job will write).  NetworkError when unusable."""
    net = parse_network(text)
    split = split_network(clean_network(net, num_classes))
    data = [(split.train_data, TRAIN), (split.val_data, TEST)]
    return net, lint_split(net, text, data, split.train_val, split.deploy)


def lint_split(net: caffe_pb2.NetParameter, text: str, data: list, train_val_layers: list,
               deploy_layers: list) -> list[dict]:
    """``brewnet lint``'s findings on a split network: ``data`` ``[(data layer or None, phase)]``
    (each given that phase's rule), then the train_val layers; the deploy layers as its deploy net."""
    train_val = caffe_pb2.NetParameter(name=net.name)
    for lp, phase in data:
        if lp is not None:
            layer = train_val.layer.add()
            layer.CopyFrom(lp)
            layer.include.add(phase=phase)
    train_val.layer.extend(train_val_layers)
    deploy = caffe_pb2.NetParameter(name=net.name)
    deploy.layer.extend(deploy_layers)
    return lint_findings(train_val, text, deploy)


# ----- retraining: layers whose weights no longer fit -------------------------------------------

def _blob_dims(blob: caffe_pb2.BlobProto) -> tuple[int, ...]:
    return tuple(int(x) for x in formats.blob_shape(blob))


def changed_layers(net: caffe_pb2.NetParameter, weights: caffe_pb2.NetParameter, channels: int) -> set[str]:
    """Names of ``net``'s layers (class count filled in) whose blobs in ``weights`` have another
    shape: InnerProduct / Convolution whose output count differs (a new class count), a
    Convolution on the input whose channels differ (grey <-> colour), and the per-channel
    layers (BatchNorm, Scale, ...) right after a changed layer."""
    stored = {lp.name: lp for lp in weights.layer if lp.blobs}
    input_blobs = {"data", "scaled"}
    for lp in net.layer:
        if _is_split_data(lp):
            input_blobs.update(lp.top[:1])
    changed: set[str] = set()
    changed_tops: set[str] = set()
    for lp in net.layer:
        old = stored.get(lp.name)
        if old is None:
            continue
        dims = _blob_dims(old.blobs[0])
        differs = False
        if lp.type == "InnerProduct" and dims:
            differs = dims[0] != lp.inner_product_param.num_output
        elif lp.type == "Convolution" and dims:
            cp = lp.convolution_param
            differs = dims[0] != cp.num_output
            if len(dims) > 1 and lp.bottom and lp.bottom[0] in input_blobs:
                differs = differs or dims[1] * max(1, cp.group) != channels
        elif lp.type in CHANNEL_LAYERS and lp.bottom and lp.bottom[0] in changed_tops:
            differs = True
        if differs:
            changed.add(lp.name)
            changed_tops.update(lp.top)
    return changed


def rename_layers(net: caffe_pb2.NetParameter, names: set[str]) -> caffe_pb2.NetParameter:
    """A copy of ``net`` with the layers named in ``names`` renamed ``<name>_retrain`` (DIGITS'
    suffix), so that their weights are not copied and they start fresh."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for lp in out.layer:
        if lp.name in names:
            lp.name = f"{lp.name}_retrain"
    return out


# ----- the previous job's weights ---------------------------------------------------------------

def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        return d if isinstance(d, dict) else {}
    except (FileNotFoundError, ValueError):
        return {}


def previous_weights(previous: Mapping, epoch: float | None) -> list[str]:
    """The caffemodel(s) of the previous model job at ``epoch``: 0 none, -1 the weights it
    started from, else its snapshot of that epoch.  FormErrors when there is none."""
    if epoch is None or float(epoch) == 0:
        return []
    pdir = Path(previous.get("directory") or previous.get("dir") or ".")
    plan = _read_json(pdir / "plan.json")
    if float(epoch) == -1:
        return [str(w) for w in plan.get("weights") or []]
    candidates = [(s.get("epoch"), s.get("path")) for s in previous.get("snapshots") or []
                  if isinstance(s, Mapping)]
    if not candidates and plan.get("max_iter"):
        epochs = plan.get("train_epochs") or (previous.get("spec") or {}).get("train_epochs")
        for p in sorted(pdir.glob("snapshot_iter_*.caffemodel")):
            it = p.stem.rsplit("_", 1)[-1]
            if it.isdigit() and epochs:
                candidates.append((epoch_of_iteration(int(it), plan, epochs), str(p)))
    for e, path in candidates:
        if e is not None and abs(float(e) - float(epoch)) < 1e-9 and path:
            p = Path(path) if Path(path).is_absolute() else pdir / path
            if p.is_file():
                return [str(p)]
    field_name = f"{previous.get('id', '')}-snapshot"
    raise FormErrors({field_name: [f"For the job {previous.get('id', '')}, selected pretrained_model "
                                   f"for epoch {epoch} is invalid!"]})


# ----- writing ----------------------------------------------------------------------------------

def mean_pixel(mean_file: Path) -> list[float]:
    """Per-channel means of a mean.binaryproto (DIGITS' ``use_mean: pixel``)."""
    arr = np.asarray(formats.read_binaryproto(mean_file), dtype=np.float64)
    arr = arr.reshape((-1,) + arr.shape[-3:])[0] if arr.ndim >= 3 else arr.reshape(1, 1, -1)
    return [float(v) for v in arr.reshape(arr.shape[0], -1).mean(axis=1)]


def _fill_data_layer(lp: caffe_pb2.LayerParameter | None, phase: int, source: Path, spec: ModelSpec,
                     mean: tuple[str, object] | None, crop: int | None) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter()
    if lp is not None:
        layer.CopyFrom(lp)
    else:   # DIGITS' default data layer for a network that has none
        layer.name, layer.type = "data", "Data"
        layer.top.extend(["data", "label"])
    layer.include.add(phase=phase)
    dp = layer.data_param
    dp.source = str(source)
    dp.backend = caffe_pb2.DataParameter.LMDB
    if spec.batch_size:
        dp.batch_size = int(spec.batch_size)
    elif not dp.HasField("batch_size"):
        dp.batch_size = DEFAULT_BATCH_SIZE
    tp = layer.transform_param
    if crop:
        tp.crop_size = int(crop)
    if mean is not None:
        tp.ClearField("mean_file")
        tp.ClearField("mean_value")
        kind, value = mean
        if kind == "image":
            tp.mean_file = str(value)
        else:
            tp.mean_value.extend(value)
    return layer


def _crop_size(spec: ModelSpec, layer: caffe_pb2.LayerParameter | None, dims: list[int]) -> int | None:
    """The form's crop (at most min(H, W), else FormErrors), else the network's, capped there."""
    max_crop = min(dims[0], dims[1])
    if spec.crop_size:
        if spec.crop_size > max_crop:
            raise FormErrors({"crop_size": ["crop_size is larger than the image size"]})
        return int(spec.crop_size)
    if layer is not None and layer.transform_param.HasField("crop_size"):
        return min(int(layer.transform_param.crop_size), max_crop)
    return None


def spec_augmentation(spec: ModelSpec):
    """The spec's Augmentation (jobs queued before brewnet applied them saved the raw aug_* fields)."""
    d = dict(spec.augmentation or {})
    if any(k.startswith("aug_") for k in d):
        f = Fields(d)
        d = augmentation_fields(f)
        if f.errors:
            raise FormErrors(f.errors)
    try:
        return Augmentation.from_json(d)
    except BrewnetError as e:
        raise FormErrors({"augmentation": [str(e)]}) from None


def copy_atomic(source: Path, target: Path) -> None:
    target.parent.mkdir(exist_ok=True)
    formats.atomic_write(target, Path(source).read_bytes())


def network_text(spec: ModelSpec, previous: Mapping | None) -> str:
    if spec.method == "standard":
        return network_prototxt(spec.standard_network or "")
    if spec.method == "custom":
        return spec.custom_network or ""
    if spec.method == "previous":
        if previous is None:
            raise FormErrors({"previous_networks": ["Not a valid choice"]})
        pdir = Path(previous.get("directory") or previous.get("dir") or ".")
        path = pdir / "original.prototxt"
        if not path.is_file():
            raise FormErrors({"previous_networks": [f"Job {previous.get('id', '')} has no original.prototxt"]})
        return path.read_text(encoding="utf-8")
    raise FormErrors({"method": ["Not a valid choice"]})


def write_model_files(jobdir: Path, spec: ModelSpec, dataset: Mapping, previous: Mapping | None) -> Plan:
    """Write the model job's original/train_val/deploy/solver prototxt and plan.json into
    ``jobdir`` (see the module's docstring) and return the Plan, whose ``weights`` are the
    caffemodels training starts from.  ``dataset``: the dataset job's dict (``dir`` or
    ``directory``, labels, counts, image dims, mean file); ``previous``: the previous model
    job's dict for ``method=previous``.  Raises FormErrors (nothing is left written)."""
    jobdir = Path(jobdir)
    if isinstance(spec, Mapping):
        spec = ModelSpec.from_json(spec)
    try:
        facts = dataset_facts(dataset)
    except ValueError as e:   # a dataset whose summary is missing or damaged
        raise FormErrors({"dataset": [str(e)]}) from None
    num_classes = int(dataset.get("num_classes") or 0) or len(facts.labels)
    if num_classes < 1:
        raise FormErrors({"dataset": [f"Dataset {facts.dir.name} has no labels"]})
    H, W, C = facts.image_dims

    text = network_text(spec, previous)
    try:
        net = parse_network(text)
    except NetworkError as e:
        raise FormErrors({"custom_network" if spec.method == "custom" else "method": [str(e)]}) from None

    # weights to start from; a retrain renames the layers whose blobs change shape
    weights: list[str] = []
    original_text = text
    if spec.method == "previous":
        weights = previous_weights(previous, spec.previous_epoch)
        if weights:
            stored = formats.read_caffemodel(weights[0])
            names = changed_layers(clean_network(net, num_classes), stored, C)
            if names:
                net = rename_layers(net, names)
                original_text = text_format.MessageToString(net)
    elif spec.method == "custom":
        weights = list(spec.custom_weights)

    try:
        split = split_network(clean_network(net, num_classes))
    except NetworkError as e:
        raise FormErrors({"custom_network" if spec.method == "custom" else "method": [str(e)]}) from None

    crop = _crop_size(spec, split.train_data, facts.image_dims)
    mean = None
    if spec.use_mean in ("image", "pixel"):
        if facts.mean_file is None or not Path(facts.mean_file).is_file():
            raise FormErrors({"use_mean": [f"Dataset {facts.dir.name} has no mean file"]})
        mean = ("image", facts.mean_file) if spec.use_mean == "image" else ("pixel", mean_pixel(facts.mean_file))

    train_val = caffe_pb2.NetParameter(name=net.name)
    train_layer = _fill_data_layer(split.train_data, TRAIN, facts.train_db, spec, mean, crop)
    train_val.layer.add().CopyFrom(train_layer)
    val_layer = None
    if facts.val_db is not None:
        val_layer = _fill_data_layer(split.val_data, TEST, facts.val_db, spec, mean, crop)
        train_val.layer.add().CopyFrom(val_layer)
    train_val.layer.extend(split.train_val)

    deploy = caffe_pb2.NetParameter(name=net.name)
    deploy.input.append("data")  # net-level, as DIGITS writes it (its example scripts read it)
    deploy.input_shape.add().dim.extend([1, C, crop or H, crop or W])
    deploy.layer.extend(split.deploy)

    job = job_files(spec, original_text, train_val, deploy, facts.train_entries,
                    facts.val_entries if val_layer else 0, train_layer, val_layer, weights)
    info = {**job.info, "num_classes": num_classes, "crop_size": crop, "image_dims": [H, W, C]}
    write_job_files(jobdir, spec, job.texts, job.augmentation, info)
    return job.plan


@dataclass
class JobFiles:
    """A model job's plan, prototxt texts (file name -> text), augmentation and plan.json's
    common entries."""
    plan: Plan
    texts: dict[str, str]
    augmentation: Augmentation
    info: dict


def job_files(spec: ModelSpec, original_text: str, train_val: caffe_pb2.NetParameter,
              deploy: caffe_pb2.NetParameter, train_entries: int, val_entries: int,
              train_layer: caffe_pb2.LayerParameter, val_layer: caffe_pb2.LayerParameter | None,
              weights: list[str]) -> JobFiles:
    """DIGITS' plan and solver for a model job's nets (the batch sizes from its TRAIN and val
    data layers), its four prototxt texts and plan.json's entries every kind of model has.
    ValueError from the plan (no training entries)."""
    plan = compute_plan(train_entries=train_entries, val_entries=val_entries,
                        train_epochs=int(spec.train_epochs), batch=int(train_layer.data_param.batch_size),
                        val_batch=int(val_layer.data_param.batch_size) if val_layer is not None else None,
                        iter_size=int(spec.batch_accumulation or 1),
                        snapshot_interval=float(spec.snapshot_interval), val_interval=float(spec.val_interval))
    plan.weights = weights
    solver = solver_parameter(spec, plan)
    augmentation = spec_augmentation(spec)
    texts = {"original.prototxt": original_text,
             "train_val.prototxt": text_format.MessageToString(train_val),
             "deploy.prototxt": text_format.MessageToString(deploy),
             "solver.prototxt": text_format.MessageToString(solver)}
    info = {**plan.to_json(), "method": spec.method, "network": spec.standard_network,
            "solver_type": spec.solver_type, "lr_policy": spec.lr_policy,
            "learning_rate": spec.learning_rate, "snapshot_epochs": plan.snapshot_epochs(),
            "augmentation": augmentation.to_json()}
    return JobFiles(plan=plan, texts=texts, augmentation=augmentation, info=info)


def write_job_files(jobdir: Path, spec: ModelSpec, texts: Mapping[str, str], augmentation: Augmentation,
                    info: Mapping) -> None:
    """Write a model job's prototxts (``texts``: file name -> text), its augment.json (when
    ``augmentation`` is on), its copy of the Python layer file and, last, plan.json (``info``),
    each atomically; on any failure the files written so far are removed again."""
    written: list[Path] = []
    try:
        for name, content in texts.items():
            written.append(jobdir / name)
            formats.atomic_write(jobdir / name, content.encode("utf-8"))
        if augmentation.active:
            written.append(jobdir / AUGMENT_FILE)
            write_json_atomic(jobdir / AUGMENT_FILE, augmentation.to_json())
        if spec.python_layer_upload:
            target = jobdir / PYTHON_LAYER_DIR / f"{PYTHON_LAYER_MODULE}.py"
            written.append(target)
            copy_atomic(Path(spec.python_layer_upload), target)
        written.append(jobdir / "plan.json")
        write_json_atomic(jobdir / "plan.json", dict(info))
    except BaseException:
        for p in written:
            try:
                p.unlink()
            except FileNotFoundError:
                pass
        raise


def customize(network: str) -> str:
    """``/models/customize``: the standard network's prototxt (KeyError for an unknown name)."""
    return network_prototxt(network)
