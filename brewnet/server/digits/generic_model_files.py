"""A generic model job's files (DIGITS' "Other" models, digits-other-jobs.md §1.5–§1.6), the
counterpart of model_files.py for datasets of the kinds ``generic``, ``gradients``,
``processing`` and ``segmentation`` (a C1 dataset directory with its summary.json):

- the network is split by DIGITS' NetStates (train = TRAIN + stage ``train``, val = TEST + stage
  ``val``, deploy = TEST + stage ``deploy``); in ``train_val.prototxt`` every other layer keeps
  only a plain phase rule; ``Input`` layers are deleted (the job writes the deploy input);
- the user's ``Data`` layers are matched by phase and first top: a top containing ``data`` is the
  features layer, one containing ``label`` the labels layer; a Data layer in both phases matches
  neither and is replaced.  For each of train/val features/labels that the dataset has, a Data
  layer is written (the user's, name/tops/transform kept, else ``data``/``label``) with the
  dataset's LMDB (absolute path), the form's batch size (else the user's, else 16), on the
  features layer the mean (image or pixel) and the crop;
- deploy: ``input: "data"`` with ``input_shape`` (1, C, crop|H, crop|W) from the dataset's
  feature dims (the first record's shape when they vary), then the deploy layers;
- the solver as for classification, its test_iter from the val entries (only with a val set);
- checks (NetworkError, the form's 400 or the job's error): only ``Data`` data layers, every
  InnerProduct sets ``num_output`` (DIGITS' message), every bottom is produced in its phase
  (DIGITS' message, for TRAIN, TEST and, brewnet's addition, the deploy net).

brewnet's improvements over DIGITS, each because training would otherwise go wrong quietly:

- segmentation: the features layer's ``crop_size`` and ``mirror`` go to the labels layer too, so
  the engine draws the same crop and flip for an image and its label image (C3's pairing);
- a labels layer without its own batch size takes the features layer's (two Data layers of one
  net must step together);
- a standard network gets the dataset's class count on its score layers (the Convolution and
  Deconvolution feeding its SoftmaxWithLoss), and for regression the label size on the
  InnerProduct feeding its EuclideanLoss;
- the deploy input takes the features layer's top name when the user named it otherwise.

plan.json adds ``dataset_kind`` and ``dataset_dir`` (C4), for inference.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping


from ...models.generic import GENERIC_NETWORKS, generic_network_path
from ...proto import caffe_pb2
from ..errors import FormErrors
from ..jobs.specs import ModelSpec
from .model_files import (STATES, NetworkError, included_in, job_files, lint_findings, lint_split, mean_pixel,
                          network_text, parse_network, place_layer, previous_weights, spec_augmentation,
                          without_rules, write_job_files)
from .solver_form import DEFAULT_BATCH_SIZE, Plan

log = logging.getLogger("brewnet.server")

TRAIN, TEST = caffe_pb2.TRAIN, caffe_pb2.TEST
GENERIC = "generic"
SANITY = ("Layer '{layer}' references bottom '{bottom}' at the {stage} stage however this blob is not "
          "included at that stage. Please consider using an include directive to limit the scope of "
          "this layer.")
IP_UNSET = "Don't leave inner_product_param.num_output unset for generic networks (layer {layer})"
ROLES = ("features", "labels")


# ----- the dataset ----------------------------------------------------------------------------

@dataclass
class Stage:
    """One stage of a C1 dataset."""
    entries: int
    features: Path
    labels: Path | None
    mean: Path | None
    feature_shape: list[int] | None
    label_shape: list[int] | None


@dataclass
class GenericFacts:
    """What a generic model needs of its dataset (summary.json of a C1 directory)."""
    dir: Path
    kind: str
    stages: dict[str, Stage]
    feature_dims: list[int] | None          # [H, W, C]; None when they vary
    mean_file: Path | None
    num_classes: int | None
    class_labels: list[str] | None
    summary: dict = field(default_factory=dict)

    def input_dims(self) -> list[int]:
        """[H, W, C] of the features: the summary's, else the first train record's."""
        if self.feature_dims:
            return [int(x) for x in self.feature_dims]
        from ...data.image import datum_to_chw
        from ...data.lmdb_io import read_datums
        for _, datum in read_datums(str(self.stages["train"].features), limit=1):
            c, h, w = datum_to_chw(datum).shape
            return [int(h), int(w), int(c)]
        raise FormErrors({"dataset": [f"Dataset {self.dir.name}: its training features LMDB is empty"]})


def _path(outdir: Path, value) -> Path | None:
    """A summary.json path: absolute, or relative to the dataset's folder (C1)."""
    if not value:
        return None
    p = Path(str(value))
    return p if p.is_absolute() else outdir / p


def dataset_kind(dataset: Mapping) -> str:
    """A dataset job's kind (its spec's ``kind``; none: classification)."""
    return str((dataset.get("spec") or {}).get("kind") or "classification")


def generic_dataset_facts(dataset: Mapping) -> GenericFacts:
    """A generic dataset job's facts from its folder's summary.json (``dataset``: the job's dict
    with ``directory`` or ``dir``).  FormErrors on ``dataset`` when it is missing or damaged."""
    d = Path(dataset.get("dir") or dataset.get("directory") or ".")
    try:
        with open(d / "summary.json", encoding="utf-8") as f:
            s = json.load(f)
        if not isinstance(s, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        raise FormErrors({"dataset": [f"Dataset {d.name} is not complete: it has no summary.json"]}) from None
    except (OSError, ValueError) as e:
        raise FormErrors({"dataset": [f"Dataset {d.name}: its summary.json cannot be read ({e})"]}) from None
    stages = {}
    for name, st in (s.get("stages") or {}).items():
        if not isinstance(st, Mapping) or not int(st.get("entries") or 0) or not st.get("features"):
            continue
        stages[name] = Stage(entries=int(st["entries"]), features=_path(d, st["features"]),
                             labels=_path(d, st.get("labels")), mean=_path(d, st.get("mean")),
                             feature_shape=st.get("feature_shape"), label_shape=st.get("label_shape"))
    if "train" not in stages:
        raise FormErrors({"dataset": [f"Dataset {d.name} has no training entries"]})
    mean = _path(d, s.get("mean_file")) or stages["train"].mean
    return GenericFacts(dir=d, kind=str(s.get("kind") or dataset_kind(dataset)), stages=stages,
                        feature_dims=s.get("feature_dims") or None,
                        mean_file=mean if mean is not None and mean.is_file() else None,
                        num_classes=s.get("num_classes"), class_labels=s.get("class_labels"), summary=s)


def standard_networks(kind: str | None = None) -> dict[str, str]:
    """The standard generic networks (name -> title) fitting a dataset ``kind`` (None: all):
    brewnet.models.generic's, each with the kinds it suits."""
    return {name: title for name, (title, kinds) in GENERIC_NETWORKS.items() if kind is None or kind in kinds}


def network_kinds() -> dict[str, list[str]]:
    """Each standard generic network's dataset kinds."""
    return {name: list(kinds) for name, (_title, kinds) in GENERIC_NETWORKS.items()}


def standard_network_text(name: str) -> str:
    """The prototxt of a standard generic network (KeyError for an unknown name)."""
    return Path(generic_network_path(name)).read_text(encoding="utf-8")


# ----- the network ----------------------------------------------------------------------------

@dataclass
class GenericSplit:
    """A generic network split by DIGITS' NetStates."""
    data: dict[tuple[str, str], caffe_pb2.LayerParameter | None]      # (train|val, role) -> user's layer
    train_val: list[caffe_pb2.LayerParameter] = field(default_factory=list)
    deploy: list[caffe_pb2.LayerParameter] = field(default_factory=list)


def _is_data(lp: caffe_pb2.LayerParameter) -> bool:
    from ...layers import is_data_layer  # the layers import torch, which the server's forms need not
    return lp.type != "Input" and is_data_layer(lp.type)


def _role(lp: caffe_pb2.LayerParameter) -> str:
    top = lp.top[0] if lp.top else ""
    if "data" in top:
        return "features"
    if "label" in top:
        return "labels"
    raise NetworkError(f"Data layer '{lp.name}': its top '{top}' names neither data (features) nor label "
                       "(labels)")


def split_generic_network(net: caffe_pb2.NetParameter) -> GenericSplit:
    """Split ``net`` (see the module docstring); NetworkError for a data layer that is not
    ``Data``, two layers of one phase and role, or an InnerProduct without ``num_output``."""
    split = GenericSplit(data={(p, r): None for p in ("train", "val") for r in ROLES})
    for lp in net.layer:
        if lp.type == "InnerProduct" and not lp.inner_product_param.HasField("num_output"):
            raise NetworkError(IP_UNSET.format(layer=lp.name))
        if lp.type == "Input":
            continue
        t, v, d = (included_in(lp, STATES[k]) for k in ("train", "val", "deploy"))
        if _is_data(lp):
            if lp.type != "Data" and (t or v):
                raise NetworkError(f"Layer '{lp.name}': generic networks read LMDBs through Data layers only, "
                                   f"not {lp.type}")
            if t == v:          # in both phases (or neither): DIGITS replaces it
                continue
            phase = "train" if t else "val"
            key = (phase, _role(lp))
            if split.data[key] is not None:
                raise NetworkError(f"Cannot specify two {phase} {key[1]} data layers "
                                   f"('{split.data[key].name}' and '{lp.name}')")
            split.data[key] = without_rules(lp)
            continue
        place_layer(lp, t, v, d, split.train_val, split.deploy)
    return split


def analyze_generic_network(text: str) -> tuple[caffe_pb2.NetParameter, list[dict]]:
    """Parse and split a custom generic network as the form does before its dataset is known:
    the parsed net and ``brewnet lint``'s findings on its train/val and deploy layers.
    NetworkError when unusable."""
    net = parse_network(text)
    split = split_generic_network(net)
    data = [(lp, TRAIN if stage == "train" else TEST) for (stage, _), lp in split.data.items()]
    return net, lint_split(net, text, data, split.train_val, split.deploy)


def _producers(net: caffe_pb2.NetParameter, blob: str) -> list[caffe_pb2.LayerParameter]:
    """The layers that make ``blob`` (in-place layers, which also read it, left out)."""
    return [lp for lp in net.layer if blob in lp.top and blob not in lp.bottom]


def fit_outputs(net: caffe_pb2.NetParameter, num_classes: int | None, label_size: int | None) -> list[str]:
    """A standard network's outputs fitted to the dataset, in place: the Convolution and
    Deconvolution layers that feed a SoftmaxWithLoss (through Crop and Deconvolution layers) get
    ``num_output`` = ``num_classes`` (a Deconvolution grouped per class: ``group`` too); the
    InnerProduct feeding a EuclideanLoss gets ``num_output`` = ``label_size``.  Returns the names
    of the layers changed."""
    changed = []
    for loss in [lp for lp in net.layer if lp.type in ("SoftmaxWithLoss", "EuclideanLoss") and lp.bottom]:
        blob, seen = loss.bottom[0], set()
        while blob not in seen:
            seen.add(blob)
            makers = _producers(net, blob)
            if not makers:
                break
            nxt = None
            for lp in makers:
                if loss.type == "EuclideanLoss":
                    if lp.type == "InnerProduct" and label_size:
                        lp.inner_product_param.num_output = int(label_size)
                        changed.append(lp.name)
                    continue
                if lp.type == "Crop" and lp.bottom:
                    nxt = lp.bottom[0]
                elif lp.type in ("Deconvolution", "Convolution") and num_classes:
                    cp = lp.convolution_param
                    if lp.type == "Deconvolution" and cp.group > 1 and cp.group == cp.num_output:
                        cp.group = int(num_classes)
                    cp.num_output = int(num_classes)
                    changed.append(lp.name)
                    nxt = lp.bottom[0] if lp.type == "Deconvolution" and lp.bottom else None
            if nxt is None:
                break
            blob = nxt
    return list(dict.fromkeys(changed))


def check_bottoms(layers, stage: str, inputs=()) -> None:
    """DIGITS' sanity check: every bottom of ``layers`` (in order) is made before it in ``stage``
    (TRAIN, TEST or DEPLOY); NetworkError with DIGITS' message otherwise."""
    made = set(inputs)
    for lp in layers:
        for b in lp.bottom:
            if b not in made:
                raise NetworkError(SANITY.format(layer=lp.name, bottom=b, stage=stage))
        made.update(lp.top)


# ----- the files ------------------------------------------------------------------------------

def _data_layer(user: caffe_pb2.LayerParameter | None, phase: int, role: str, source: Path, batch: int,
                mean: tuple[str, object] | None, crop: int | None, mirror: bool | None) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter()
    if user is not None:
        layer.CopyFrom(user)
        if user.data_param.HasField("source"):
            log.warning("layer %s: data_param.source %r is replaced by the dataset's %s", user.name,
                        user.data_param.source, source)
    else:
        name = "data" if role == "features" else "label"
        layer.name, layer.type = name, "Data"
        layer.top.append(name)
    layer.include.add(phase=phase)
    dp = layer.data_param
    dp.source = str(source)
    dp.backend = caffe_pb2.DataParameter.LMDB
    dp.batch_size = int(batch)
    tp = layer.transform_param
    if crop:
        tp.crop_size = int(crop)
    if mirror is not None:
        tp.mirror = bool(mirror)
    if mean is not None:
        tp.ClearField("mean_file")
        tp.ClearField("mean_value")
        if mean[0] == "image":
            tp.mean_file = str(mean[1])
        else:
            tp.mean_value.extend(mean[1])
    return layer


def _field_of(spec: ModelSpec) -> str:
    return "custom_network" if spec.method == "custom" else ("standard_networks" if spec.method == "standard"
                                                            else "method")


@dataclass
class GenericFiles:
    """What a generic model job writes: the texts, the plan and plan.json's dict."""
    texts: dict[str, str]
    plan: Plan
    info: dict
    train_val: caffe_pb2.NetParameter
    deploy: caffe_pb2.NetParameter


def build_generic_files(spec: ModelSpec, dataset: Mapping, previous: Mapping | None) -> GenericFiles:
    """The files of a generic model job (nothing written); FormErrors naming the field."""
    if isinstance(spec, Mapping):
        spec = ModelSpec.from_json(spec)
    facts = generic_dataset_facts(dataset)
    try:
        text = standard_network_text(spec.standard_network or "") if spec.method == "standard" \
            else network_text(spec, previous)
    except KeyError:
        raise FormErrors({"standard_networks": ["Not a valid choice"]}) from None
    try:
        net = parse_network(text)
        if spec.method == "standard":
            label = facts.stages["train"].label_shape
            fit_outputs(net, facts.num_classes if facts.kind == "segmentation" else None,
                        math.prod(label) if label and facts.kind in ("gradients", "generic") else None)
        split = split_generic_network(net)
    except NetworkError as e:
        raise FormErrors({_field_of(spec): [str(e)]}) from None
    weights = previous_weights(previous, spec.previous_epoch) if spec.method == "previous" else \
        list(spec.custom_weights) if spec.method == "custom" else []

    H, W, C = facts.input_dims()
    train_features = split.data[("train", "features")]
    crop = spec.crop_size or (train_features.transform_param.crop_size
                              if train_features is not None and train_features.transform_param.HasField("crop_size")
                              else None)
    if crop and facts.feature_dims and crop > min(H, W):
        raise FormErrors({"crop_size": ["crop_size is larger than the image size"]})
    mean = None
    if spec.use_mean in ("image", "pixel") and facts.mean_file is not None:
        mean = ("image", facts.mean_file) if spec.use_mean == "image" else ("pixel", mean_pixel(facts.mean_file))
    paired = facts.kind == "segmentation"

    train_val = caffe_pb2.NetParameter(name=net.name)
    layers: dict[tuple[str, str], caffe_pb2.LayerParameter] = {}
    for stage, phase in (("train", TRAIN), ("val", TEST)):
        st = facts.stages.get(stage)
        if st is None:
            continue
        user_f = split.data[(stage, "features")]
        batch = spec.batch_size or (user_f.data_param.batch_size if user_f is not None
                                    and user_f.data_param.HasField("batch_size") else DEFAULT_BATCH_SIZE)
        mirror = user_f.transform_param.mirror if user_f is not None and user_f.transform_param.HasField("mirror") \
            else None
        layers[(stage, "features")] = _data_layer(user_f, phase, "features", st.features, batch, mean, crop, mirror)
        if st.labels is not None:
            user_l = split.data[(stage, "labels")]
            lbatch = spec.batch_size or (user_l.data_param.batch_size if user_l is not None
                                         and user_l.data_param.HasField("batch_size") else batch)
            layers[(stage, "labels")] = _data_layer(user_l, phase, "labels", st.labels, lbatch, None,
                                                    crop if paired else None, mirror if paired else None)
    for key in (("train", "features"), ("train", "labels"), ("val", "features"), ("val", "labels")):
        if key in layers:
            train_val.layer.add().CopyFrom(layers[key])
    train_val.layer.extend(split.train_val)
    has_val = ("val", "features") in layers

    input_name = train_features.top[0] if train_features is not None and train_features.top else "data"
    deploy = caffe_pb2.NetParameter(name=net.name)
    deploy.input.append(input_name)
    deploy.input_shape.add().dim.extend([1, C, crop or H, crop or W])
    deploy.layer.extend(split.deploy)

    try:
        for stage, phase in (("TRAIN", TRAIN), ("TEST", TEST)):
            if phase == TEST and not has_val:
                continue
            check_bottoms([lp for lp in train_val.layer if not lp.include or lp.include[0].phase == phase], stage)
        check_bottoms(deploy.layer, "DEPLOY", [input_name])
    except NetworkError as e:
        raise FormErrors({_field_of(spec): [str(e)]}) from None

    train_layer = layers[("train", "features")]
    val_layer = layers.get(("val", "features"))
    try:
        job = job_files(spec, text, train_val, deploy, facts.stages["train"].entries,
                        facts.stages["val"].entries if has_val else 0, train_layer, val_layer, weights)
    except ValueError as e:
        raise FormErrors({"dataset": [str(e)]}) from None
    info = {**job.info, "kind": GENERIC, "dataset_kind": facts.kind, "dataset_dir": str(facts.dir),
            "num_classes": facts.num_classes, "class_labels": facts.class_labels, "crop_size": crop,
            "image_dims": [H, W, C], "mean": mean[0] if mean else None}
    return GenericFiles(texts=job.texts, plan=job.plan, info=info, train_val=train_val, deploy=deploy)


def generic_lint(files: GenericFiles) -> list[dict]:
    """``brewnet lint``'s findings on the train_val and deploy nets a generic job writes."""
    return lint_findings(files.train_val, files.texts["original.prototxt"], files.deploy)


def write_generic_model_files(jobdir: Path, spec: ModelSpec, dataset: Mapping, previous: Mapping | None) -> Plan:
    """Write a generic model job's original/train_val/deploy/solver prototxt and plan.json into
    ``jobdir`` (see the module docstring) and return the Plan.  FormErrors (nothing written)."""
    if isinstance(spec, Mapping):
        spec = ModelSpec.from_json(spec)
    files = build_generic_files(spec, dataset, previous)
    write_job_files(Path(jobdir), spec, files.texts, spec_augmentation(spec), files.info)
    return files.plan


def generic_model_json(d: dict, dataset: Mapping | None) -> dict:
    """DIGITS' model JSON of a generic model (§1.5) from the classification one ``d``: ``image
    dimensions`` the dataset's feature dims, ``mean file`` the basename of its mean (``''``
    without), ``image resize mode`` null for a ``generic`` dataset and absent for an extension
    dataset, no ``labels file``; brewnet adds ``dataset kind``."""
    out = dict(d)
    out.pop("labels file", None)
    facts = None
    if dataset is not None:
        try:
            facts = generic_dataset_facts(dataset)
        except FormErrors:
            facts = None
    kind = facts.kind if facts is not None else (dataset_kind(dataset) if dataset is not None else None)
    out["image dimensions"] = list(facts.feature_dims) if facts is not None and facts.feature_dims else None
    out["mean file"] = facts.mean_file.name if facts is not None and facts.mean_file is not None else ""
    if kind == GENERIC:
        out["image resize mode"] = None
    else:
        out.pop("image resize mode", None)
    out["dataset kind"] = kind
    return out
