"""DIGITS' dataset and model forms (docs/digits-rest.md §3–§4): field names, defaults and
validation as DIGITS' WTForms had them, into :class:`DatasetSpec` / :class:`ModelSpec`.

- A missing select, number or radio field keeps its default; a missing BooleanField is False;
  ``false`` and the empty string are False, anything else True (WTForms' rule).
- Errors are collected per field and raised together: ``FormErrors({field: [message, ...]})``
  (400 ``{"errors": ...}``) with DIGITS' field names and WTForms' messages.
- Server paths (``folder_*``, ``textfile_local_*``, ``textfile_*_folder``, weight files, a Python
  layer file) must resolve, symlinks followed, under one of the server's ``--data-root``
  folders; without any, every server path is refused.
- ``learning_rate`` and ``batch_size`` may be lists (several form values, or ``[0.01, 0.001]``
  text as DIGITS' tests send): one ModelSpec per combination, named with DIGITS' suffixes.
- A custom network is parsed (``Bad network: <line>: <message>``), split as the job will split
  it (a deploy net without Softmax is refused), and linted (``brewnet lint``'s rules): the
  findings go to ``spec.lint_findings``.
- ``aug_*`` (DIGITS' augmentations) become ``spec.augmentation``, the dict of the job's
  ``augment.json`` (brewnet.data.augment; empty: off).  A Python layer file is accepted only when
  the server runs with ``--allow-python-layers`` (else 400 naming the field).
"""
from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import ServerConfig
from ..errors import FormErrors
from .networks import STANDARD_NETWORKS
from .solver_form import LR_DEFAULTS, LR_FIELDS, LR_POLICIES, SOLVER_TYPES

REQUIRED = "This field is required."
NOT_CHOICE = "Not a valid choice"
NOT_INT = "Not a valid integer value"
NOT_FLOAT = "Not a valid float value"
OUTSIDE = "Path is outside the server's data roots"
HDF5 = "brewnet builds LMDB datasets; hdf5 is not supported"


# ----- reading fields ---------------------------------------------------------------------------

class _Fields:
    """WTForms' reading of a submitted form, collecting errors per field."""

    def __init__(self, form: Mapping[str, Any]):
        self.form = form
        self.errors: dict[str, list[str]] = {}

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def raw_values(self, name: str) -> list[str]:
        """Every value sent for ``name`` (a multi-valued form, or a list value)."""
        getlist = getattr(self.form, "getlist", None)
        if callable(getlist):
            vals = list(getlist(name))
        else:
            v = self.form.get(name)
            vals = [] if v is None else (list(v) if isinstance(v, (list, tuple)) else [v])
        return [str(v) for v in vals]

    def raw(self, name: str) -> str | None:
        vals = self.raw_values(name)
        return vals[-1] if vals else None

    def present(self, name: str) -> bool:
        return self.raw(name) is not None

    def text(self, name: str, default: str = "", required: bool = False) -> str:
        v = self.raw(name)
        v = default if v is None else v.strip()
        if required and not v:
            self.error(name, REQUIRED)
        return v

    def boolean(self, name: str) -> bool:
        v = self.raw(name)
        return v is not None and v not in ("false", "")

    def choice(self, name: str, choices, default: str | None = None, required: bool = False) -> str | None:
        v = self.raw(name)
        if v is None or (v == "" and default is None):
            if required:
                self.error(name, REQUIRED)
            return default
        if v not in choices:
            self.error(name, NOT_CHOICE)
            return default
        return v

    def _number(self, name: str, text: str, kind: type, lo, hi):
        try:
            if kind is int:
                value = int(text.strip())
            else:
                value = float(text.strip())
                if not math.isfinite(value):
                    raise ValueError(text)
        except ValueError:
            self.error(name, NOT_INT if kind is int else NOT_FLOAT)
            return None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if lo is not None and hi is not None:
                self.error(name, f"Number must be between {_num(lo)} and {_num(hi)}.")
            elif lo is not None:
                self.error(name, f"Number must be at least {_num(lo)}.")
            else:
                self.error(name, f"Number must be at most {_num(hi)}.")
            return None
        return value

    def number(self, name: str, kind: type = int, default=None, lo=None, hi=None,
               optional: bool = False, required: bool = False):
        """An IntegerField/FloatField: missing keeps ``default``; ``optional``: '' is None too."""
        v = self.raw(name)
        if v is None or (optional and not v.strip()):
            if required:
                self.error(name, REQUIRED)
            return default
        return self._number(name, v, kind, lo, hi)

    def numbers(self, name: str, kind: type, default, lo=None) -> list:
        """A field that may hold several values (a sweep): repeated fields, or ``[a, b]`` /
        ``a,b`` text.  Missing or blank: ``[default]``."""
        out = []
        for v in self.raw_values(name):
            for part in re.split(r"[,\s]+", v.strip().strip("[]").strip()):
                if part:
                    out.append(self._number(name, part, kind, lo, None))
        if not out:
            return [default]
        return list(dict.fromkeys(out))   # repeated values make one job


def _num(v) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def _confine(f: _Fields, name: str, value: str, roots: list[Path], kind: str) -> Path | None:
    """A server path of field ``name``: absolute, resolving (symlinks followed) under one of
    ``roots``, and existing as a ``kind`` ("dir" or "file"); else an error on the field."""
    if not value:
        return None
    if re.match(r"^[a-z][a-z0-9+.-]*://", value, re.I):
        f.error(name, "URLs are not supported by brewnet serve: give a folder under the server's data roots")
        return None
    p = Path(value)
    if not p.is_absolute():
        f.error(name, "Must be an absolute path")
        return None
    try:
        real = p.resolve(strict=False)
    except (OSError, RuntimeError):
        f.error(name, OUTSIDE)
        return None
    if not any(real == r or r in real.parents for r in roots):
        f.error(name, OUTSIDE)
        return None
    if kind == "dir" and not real.is_dir():
        f.error(name, "Folder does not exist")
        return None
    if kind == "file" and not real.is_file():
        f.error(name, "File does not exist")
        return None
    return real


def _roots(config: ServerConfig) -> list[Path]:
    return [Path(r).resolve() for r in (config.data_roots or [])]


# ----- datasets -----------------------------------------------------------------------------------

@dataclass
class DatasetSpec:
    """A dataset job's settings (DIGITS' image classification dataset form)."""
    name: str
    group: str = ""
    method: str = "folder"                 # folder | textfile
    # folder
    folder_train: str | None = None
    folder_val: str | None = None          # has_val_folder
    folder_test: str | None = None         # has_test_folder
    pct_val: int = 25
    pct_test: int = 0
    min_per_class: int = 2
    max_per_class: int | None = None
    val_min_per_class: int = 2
    val_max_per_class: int | None = None
    test_min_per_class: int = 2
    test_max_per_class: int | None = None
    # textfile (list files: uploads saved in the job dir, or server paths)
    textfile_train: str | None = None
    textfile_val: str | None = None
    textfile_test: str | None = None
    textfile_labels: str | None = None
    textfile_train_folder: str | None = None
    textfile_val_folder: str | None = None
    textfile_test_folder: str | None = None
    shuffle: bool = True
    # images and database
    encoding: str = "png"
    channels: int = 3
    width: int = 256
    height: int = 256
    resize_mode: str = "squash"
    backend: str = "lmdb"
    compression: str = "none"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> "DatasetSpec":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def cli_args(self, outdir: str) -> list[str]:
        """The arguments of ``brewnet dataset create`` that build this dataset into ``outdir``."""
        if self.method == "folder":
            args = [str(self.folder_train), str(outdir),
                    "-val-percent", str(0 if self.folder_val else self.pct_val),
                    "-test-percent", str(0 if self.folder_test else self.pct_test),
                    "-min-per-class", str(self.min_per_class), "-digits-labels"]
            if self.max_per_class:
                args += ["-max-per-class", str(self.max_per_class)]
            for split in ("val", "test"):
                folder = getattr(self, f"folder_{split}")
                if folder:
                    args += [f"-{split}-folder", str(folder),
                             f"-{split}-min-per-class", str(getattr(self, f"{split}_min_per_class"))]
                    mx = getattr(self, f"{split}_max_per_class")
                    if mx:
                        args += [f"-{split}-max-per-class", str(mx)]
        else:
            args = [str(self.textfile_train), str(outdir), "-labels", str(self.textfile_labels),
                    "-val-percent", "0", "-test-percent", "0", "-min-per-class", "1"]
            if self.textfile_train_folder:
                args += ["-list-root", str(self.textfile_train_folder)]
            for split in ("val", "test"):
                lst = getattr(self, f"textfile_{split}")
                if lst:
                    args += [f"-{split}-list", str(lst)]
                    root = getattr(self, f"textfile_{split}_folder")
                    if root:
                        args += [f"-{split}-list-root", str(root)]
        args += ["-resize", f"{self.width}x{self.height}", "-resize-mode", self.resize_mode,
                 "-color" if self.channels == 3 else "-grayscale", "-encoding", self.encoding,
                 "-shuffle" if self.shuffle else "-no-shuffle",
                 # the job's folder is ours: a re-run replaces what an interrupted run left
                 "--overwrite"]
        return args


def parse_dataset_form(form: Mapping[str, Any], uploads: Mapping[str, str], config: ServerConfig) -> DatasetSpec:
    """DIGITS' dataset form -> DatasetSpec.  ``uploads``: field -> the saved file's path (already
    in the job's folder).  Raises FormErrors naming DIGITS' fields."""
    f = _Fields(form)
    roots = _roots(config)
    spec = DatasetSpec(name=f.text("dataset_name", required=True), group=f.text("group_name"))
    spec.method = f.choice("method", ("folder", "textfile"), "folder")
    spec.encoding = f.choice("encoding", ("none", "png", "jpg"), "png")
    spec.channels = int(f.choice("resize_channels", ("1", "3"), "3"))
    spec.width = f.number("resize_width", int, 256, lo=1, required=False)
    spec.height = f.number("resize_height", int, 256, lo=1, required=False)
    spec.resize_mode = f.choice("resize_mode", ("crop", "squash", "fill", "half_crop"), "squash")
    spec.backend = f.choice("backend", ("lmdb", "hdf5"), "lmdb")
    if spec.backend == "hdf5":
        f.error("backend", HDF5)
    compression = f.choice("compression", ("none", "gzip"), "none")
    # LMDB stores no compression (DIGITS forces "none")
    spec.compression = "none" if spec.backend == "lmdb" else compression

    if spec.method == "folder":
        _folder_fields(f, spec, roots)
    elif spec.method == "textfile":
        _textfile_fields(f, spec, uploads, roots)
    if f.errors:
        raise FormErrors(f.errors)
    return spec


def _folder_fields(f: _Fields, spec: DatasetSpec, roots: list[Path]) -> None:
    raw = f.text("folder_train", required=True)
    folder = _confine(f, "folder_train", raw, roots, "dir")
    if folder is not None:
        classes = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(classes) < 2:
            f.error("folder_train", "Folder must contain at least 2 sub-folders (one per class)")
        spec.folder_train = str(folder)
    pv = f.number("folder_pct_val", int, 25, lo=0, hi=100)
    pt = f.number("folder_pct_test", int, 0, lo=0, hi=100)
    if pv is not None and pt is not None and pv + pt > 100:
        f.error("folder_pct_val", "The sum of validation and test percentages must not exceed 100")
    spec.pct_val, spec.pct_test = pv if pv is not None else 25, pt if pt is not None else 0
    for split, prefix in (("train", ""), ("val", "val_"), ("test", "test_")):
        mn = f.number(f"folder_{split}_min_per_class", int, 2, lo=1)
        mx = f.number(f"folder_{split}_max_per_class", int, None, lo=1, optional=True)
        if mn is not None and mx is not None and mx < mn:
            f.error(f"folder_{split}_max_per_class", "must be greater than or equal to the minimum")
        setattr(spec, f"{prefix}min_per_class", mn if mn is not None else 2)
        setattr(spec, f"{prefix}max_per_class", mx)
    for split in ("val", "test"):
        if f.boolean(f"has_{split}_folder"):
            raw = f.text(f"folder_{split}", required=True)
            p = _confine(f, f"folder_{split}", raw, roots, "dir")
            if p is not None:
                setattr(spec, f"folder_{split}", str(p))


def _textfile_fields(f: _Fields, spec: DatasetSpec, uploads: Mapping[str, str], roots: list[Path]) -> None:
    local = f.boolean("textfile_use_local_files")
    wanted = [("train", True), ("val", f.boolean("textfile_use_val")), ("test", f.boolean("textfile_use_test"))]
    for split, use in wanted:
        if not use:
            continue
        if local:
            name = f"textfile_local_{split}_images"
            p = _confine(f, name, f.text(name, required=True), roots, "file")
            value = str(p) if p is not None else None
        else:
            name = f"textfile_{split}_images"
            value = uploads.get(name)
            if not value:
                f.error(name, REQUIRED)
        setattr(spec, f"textfile_{split}", value)
        prefix = f"textfile_{split}_folder"
        p = _confine(f, prefix, f.text(prefix), roots, "dir")
        setattr(spec, prefix, str(p) if p is not None else None)
    if local:
        name = "textfile_local_labels_file"
        p = _confine(f, name, f.text(name, required=True), roots, "file")
        spec.textfile_labels = str(p) if p is not None else None
    else:
        spec.textfile_labels = uploads.get("textfile_labels_file")
        if not spec.textfile_labels:
            f.error("textfile_labels_file", REQUIRED)
    spec.shuffle = f.choice("textfile_shuffle", ("1", "0"), "1") == "1"


# ----- models -------------------------------------------------------------------------------------

METHODS = ("standard", "previous", "pretrained", "custom")


@dataclass
class ModelSpec:
    """A model job's settings (DIGITS' image classification model form, one sweep point)."""
    name: str
    group: str = ""
    dataset_id: str = ""
    method: str = "standard"
    standard_network: str | None = None
    previous_job_id: str | None = None
    previous_epoch: float | None = None     # 0: no weights, -1: the job's own pretrained weights
    pretrained_job_id: str | None = None
    custom_network: str | None = None
    custom_weights: list[str] = field(default_factory=list)
    framework: str = "caffe"
    train_epochs: int = 30
    snapshot_interval: float = 1.0
    val_interval: float = 1.0
    random_seed: int | None = None
    batch_size: int | None = None
    batch_accumulation: int | None = None
    solver_type: str = "SGD"
    rms_decay: float = 0.99
    learning_rate: float = 0.01
    lr_policy: str = "step"
    lr_params: dict = field(default_factory=dict)
    use_mean: str = "image"
    crop_size: int | None = None
    shuffle: bool = False
    bn_recalibrate: int = 100
    select_gpu: str | None = None
    select_gpus: list[int] = field(default_factory=list)
    select_gpu_count: int = 1
    python_layer_file: str | None = None    # a module in the server's --allow-python-layers DIR
    python_layer_upload: str | None = None  # the job's own Python layer file (digits_python_layers)
    augmentation: dict = field(default_factory=dict)
    lint_findings: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> "ModelSpec":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def parse_lr_fields(form: Mapping[str, Any]) -> tuple[list[float], str, dict]:
    """The learning rates (a sweep may give several), the policy and its fields, validated
    (FormErrors); what :func:`~.solver_form.lr_curves` and the model form share."""
    f = _Fields(form)
    rates, policy, params = _lr_fields(f)
    if f.errors:
        raise FormErrors(f.errors)
    return rates, policy, params


def _lr_fields(f: _Fields) -> tuple[list[float], str, dict]:
    rates = f.numbers("learning_rate", float, 0.01, lo=0)
    policy = f.choice("lr_policy", LR_POLICIES, "step")
    params: dict[str, Any] = {}
    for name in LR_FIELDS.get(policy, ()):
        if name == "lr_multistep_values":
            text = f.text(name, LR_DEFAULTS[name])
            try:
                values = [float(v) for v in text.split(",") if v.strip()]
                if not values or any(not 0 <= v <= 100 for v in values) or values != sorted(values):
                    raise ValueError(text)
                params[name] = ",".join(_num(v) for v in values)
            except ValueError:
                f.error(name, "Give ascending percentages between 0 and 100, separated by commas")
        else:
            pct = name in ("lr_step_size", "lr_sigmoid_step")
            v = f.number(name, float, LR_DEFAULTS[name], lo=0, hi=100 if pct else None)
            if pct and v == 0 and policy == "step":
                f.error(name, "Number must be greater than 0.")
            params[name] = v if v is not None else LR_DEFAULTS[name]
    return [r for r in rates if r is not None] or [0.01], policy or "step", params


def parse_model_form(form: Mapping[str, Any], uploads: Mapping[str, str], config: ServerConfig,
                     lookup_job: Callable[[str], dict | None]) -> list[ModelSpec]:
    """DIGITS' model form -> one ModelSpec per learning rate x batch size (a sweep; names then
    suffixed `` learning_rate:X`` / `` batch_size:N``).  ``lookup_job(id)`` gives a job's dict
    (``kind``, ``status``, ``directory``; a model's ``snapshots``; a dataset's ``image``) or None.
    Raises FormErrors naming DIGITS' fields."""
    f = _Fields(form)
    roots = _roots(config)
    base = ModelSpec(name=f.text("model_name", required=True), group=f.text("group_name"))

    ds_id = f.text("dataset", required=True)
    dataset = lookup_job(ds_id) if ds_id else None
    if ds_id and (dataset is None or dataset.get("kind") != "dataset"
                  or dataset.get("status") not in ("Initialized", "Waiting", "Running", "Done")):
        f.error("dataset", NOT_CHOICE)
        dataset = None
    base.dataset_id = ds_id

    base.framework = f.choice("framework", ("caffe",), "caffe")
    base.method = f.choice("method", METHODS, "standard")
    base.train_epochs = f.number("train_epochs", int, 30, lo=1)
    base.snapshot_interval = f.number("snapshot_interval", float, 1.0, lo=0)
    base.val_interval = f.number("val_interval", float, 1.0, lo=0)
    base.random_seed = f.number("random_seed", int, None, lo=0, optional=True)
    batch_sizes = f.numbers("batch_size", int, None, lo=1)
    base.batch_accumulation = f.number("batch_accumulation", int, None, lo=1, optional=True)
    base.solver_type = f.choice("solver_type", tuple(SOLVER_TYPES), "SGD")
    base.rms_decay = f.number("rms_decay", float, 0.99, lo=0, hi=1)
    rates, base.lr_policy, base.lr_params = _lr_fields(f)
    base.use_mean = f.choice("use_mean", ("none", "image", "pixel"), "image")
    base.crop_size = f.number("crop_size", int, None, lo=1, optional=True)
    base.shuffle = f.boolean("shuffle")
    base.bn_recalibrate = f.number("bn_recalibrate", int, 100, lo=0)
    _gpu_fields(f, base)
    _python_layer_file(f, base, uploads, config, roots)
    base.augmentation = _augmentation_fields(f)

    image = (dataset or {}).get("image") or {}
    if base.crop_size and image.get("height") and image.get("width") \
            and base.crop_size > min(int(image["height"]), int(image["width"])):
        f.error("crop_size", "crop_size is larger than the image size")

    if base.method == "standard":
        choices = tuple(STANDARD_NETWORKS)
        base.standard_network = f.choice("standard_networks", choices, None, required=True)
    elif base.method == "previous":
        _previous_fields(f, base, lookup_job)
    elif base.method == "pretrained":
        pid = f.text("pretrained_networks", required=True)
        if pid:
            # DIGITS' PretrainedModelJob (an uploaded caffemodel) has no brewnet counterpart yet
            f.error("pretrained_networks", NOT_CHOICE)
    elif base.method == "custom":
        _custom_fields(f, base, uploads, config, roots)
    if f.errors:
        raise FormErrors(f.errors)

    rates = [r for r in rates if r is not None]
    sweep = list(itertools.product(rates, batch_sizes))
    specs = []
    for rate, batch in sweep:
        spec = ModelSpec.from_json({**base.to_json()})
        spec.learning_rate, spec.batch_size = float(rate), batch
        if len(rates) > 1:
            spec.name += f" learning_rate:{float(rate)}"
        if len(batch_sizes) > 1:
            spec.name += f" batch_size:{batch}"
        specs.append(spec)
    return specs


def _augmentation_fields(f: _Fields) -> dict:
    """DIGITS' ``aug_*`` fields (its form's choices, ranges and defaults) -> the augmentation
    file's dict (brewnet.data.augment; empty when all are off).  HSV shifts count only with
    ``aug_hsv_use``.  ``aug_whitening`` (DIGITS' TensorFlow only) is refused when set."""
    from ...data.augment import FLIPS, QUAD_TURNS, Augmentation

    values: dict[str, Any] = {
        "flip": f.choice("aug_flip", FLIPS, "none"),
        "quad_rot": f.choice("aug_quad_rot", tuple(QUAD_TURNS), "none"),
        "rotation": f.number("aug_rot", int, 0, lo=0, hi=180),
        "scale": f.number("aug_scale", float, 0.0, lo=0, hi=1),
        "noise": f.number("aug_noise", float, 0.0, lo=0, hi=1),
        "contrast": f.number("aug_contrast", float, 0.0, lo=0, hi=5),
    }
    if f.boolean("aug_hsv_use"):
        for key, default in (("h", 0.02), ("s", 0.04), ("v", 0.06)):
            values[f"hsv_{key}"] = f.number(f"aug_hsv_{key}", float, default, lo=0, hi=0.5)
    if f.boolean("aug_whitening"):
        f.error("aug_whitening", "Whitening is not applied to Caffe networks by brewnet (per-image "
                                 "standardisation would undo transform_param's mean subtraction); "
                                 "leave it off")
    if any(v is None for v in values.values()):
        return {}   # a field's error is recorded; the form is refused
    return Augmentation.from_json({k: (float(v) if k == "rotation" else v) for k, v in values.items()}).to_json()


def _gpu_fields(f: _Fields, spec: ModelSpec) -> None:
    """DIGITS' GPU fields: ``select_gpu`` (``next`` or an index), ``select_gpus`` (several
    indices) / ``select_gpus_list`` ("0,1"), ``select_gpu_count``."""
    spec.select_gpu = f.text("select_gpu") or None
    spec.select_gpu_count = f.number("select_gpu_count", int, 1, lo=1)
    gpus: list[int] = []
    for text in f.raw_values("select_gpus") + f.raw_values("select_gpus_list"):
        for part in re.split(r"[,\s]+", text.strip().strip("[]")):
            if not part:
                continue
            if not part.isdigit():
                f.error("select_gpus", NOT_CHOICE)
                continue
            gpus.append(int(part))
    if spec.select_gpu and spec.select_gpu != "next":
        if spec.select_gpu.isdigit():
            gpus.append(int(spec.select_gpu))
        else:
            f.error("select_gpu", NOT_CHOICE)
    spec.select_gpus = list(dict.fromkeys(gpus))


def _previous_fields(f: _Fields, spec: ModelSpec, lookup_job: Callable[[str], dict | None]) -> None:
    pid = f.text("previous_networks", required=True)
    if not pid:
        return
    prev = lookup_job(pid)
    if prev is None or prev.get("kind") != "model":
        f.error("previous_networks", NOT_CHOICE)
        return
    spec.previous_job_id = pid
    field_name = f"{pid}-snapshot"
    epoch = f.number(field_name, float, None, required=True)
    if epoch is None:
        return
    spec.previous_epoch = epoch
    if epoch in (0, -1):
        return
    epochs = [float(s.get("epoch")) for s in prev.get("snapshots") or [] if s.get("epoch") is not None]
    if not any(abs(e - epoch) < 1e-9 for e in epochs):
        f.error(field_name, f"For the job {pid}, selected pretrained_model for epoch {_num(epoch)} is invalid!")


def _custom_fields(f: _Fields, spec: ModelSpec, uploads: Mapping[str, str], config: ServerConfig,
                   roots: list[Path]) -> None:
    text = f.raw("custom_network") or ""
    if not text.strip():
        f.error("custom_network", REQUIRED)
        return
    spec.custom_network = text
    weights = f.text("custom_network_snapshot")
    for part in [w for w in weights.split(os.pathsep) if w.strip()]:
        p = _confine(f, "custom_network_snapshot", part.strip(), roots, "file")
        if p is not None:
            spec.custom_weights.append(str(p))
    try:
        from .model_files import analyze_network
        net, findings = analyze_network(text)
    except NetworkError as e:
        f.error("custom_network", str(e))
        return
    spec.lint_findings = findings
    _python_layers(f, spec, net, config)


class NetworkError(ValueError):
    """A custom network the job could not use (the message is the form's error)."""


#: the module name of a job's uploaded Python layer file (DIGITS' name for it)
PYTHON_LAYER_MODULE = "digits_python_layers"
PY_REFUSED = "Python layers are refused: the server was not started with --allow-python-layers"


def _python_layer_file(f: _Fields, spec: ModelSpec, uploads: Mapping[str, str], config: ServerConfig,
                       roots: list[Path]) -> None:
    """DIGITS' Python layer file: the upload ``python_layer_client_file`` (with
    ``python_layer_from_client``, or when it is the only one given) or the server path
    ``python_layer_server_file`` (under a data root).  Refused unless the server runs with
    ``--allow-python-layers``; it must be valid Python.  The job keeps a copy and imports it as
    ``digits_python_layers`` (``spec.python_layer_upload``: where the form found it)."""
    from_client = f.boolean("python_layer_from_client")
    client = uploads.get("python_layer_client_file")
    server = f.text("python_layer_server_file")
    if client and server and not from_client:
        f.error("python_layer_client_file", "Both a client and a server Python layer file were given: "
                                            "set python_layer_from_client to use the upload, or send one")
        return
    if from_client or (client and not server):
        name, given = "python_layer_client_file", client
        if not given:
            f.error(name, REQUIRED)
            return
    elif server:
        name, given = "python_layer_server_file", server
    else:
        return
    if not config.python_layers_allowed:
        f.error(name, PY_REFUSED)
        return
    path = Path(given) if name == "python_layer_client_file" else _confine(f, name, given, roots, "file")
    if path is None:
        return
    try:
        compile(path.read_bytes(), f"{PYTHON_LAYER_MODULE}.py", "exec")
    except SyntaxError as e:
        f.error(name, f"Not a valid Python file: line {e.lineno}: {e.msg}")
        return
    except (OSError, ValueError) as e:
        f.error(name, f"Cannot read the Python layer file: {e}")
        return
    spec.python_layer_upload = str(path)


def _python_layers(f: _Fields, spec: ModelSpec, net, config: ServerConfig) -> None:
    """The network's Python layers run code on the server: refused unless ``brewnet serve
    --allow-python-layers [DIR]`` was given; module ``digits_python_layers`` is the job's
    uploaded file, other modules must be files in DIR."""
    uses = [lp for lp in net.layer if lp.type == "Python"]
    if not uses:
        return
    if not config.python_layers_allowed:
        f.error("custom_network", PY_REFUSED)
        return
    folder = config.python_layer_folder
    for lp in uses:
        module = lp.python_param.module
        if module == PYTHON_LAYER_MODULE:
            if not spec.python_layer_upload and "python_layer_client_file" not in f.errors \
                    and "python_layer_server_file" not in f.errors:
                f.error("custom_network", f"Python layer '{lp.name}': module '{module}' is the job's "
                                          "Python layer file: send it as python_layer_client_file or "
                                          "python_layer_server_file")
                return
            continue
        if folder is None:
            f.error("custom_network", f"Python layer '{lp.name}': module '{module}' is not available: send "
                                      f"the file as python_layer_client_file and name the module "
                                      f"'{PYTHON_LAYER_MODULE}', or start the server with "
                                      "--allow-python-layers DIR holding it")
            return
        rel = module.replace(".", os.sep)
        candidates = [folder / f"{rel}.py", folder / rel / "__init__.py"]
        found = next((c for c in candidates if c.is_file() and folder in c.resolve().parents), None)
        if not module or found is None:
            f.error("custom_network", f"Python layer '{lp.name}': module '{module}' is not a file in "
                                      f"the server's Python layer folder {folder}")
            return
        spec.python_layer_file = spec.python_layer_file or str(found)
