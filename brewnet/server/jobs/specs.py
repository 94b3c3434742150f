"""What a dataset or model job is given (docs/digits-rest.md §3–§4): :class:`DatasetSpec` (with the
``brewnet dataset create`` arguments that build it) and :class:`ModelSpec`, as DIGITS' forms
(server/digits/forms.py) make them, and the module name of a job's Python layer file.  It imports
nothing of the server: the forms, a model job's files and the job steps (tasks.py) all read it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Mapping


class JsonRecord:
    """A dataclass kept as JSON in the database and the job's files: ``to_json`` gives its
    fields; ``from_json`` ignores keys it does not know (rows written by other versions)."""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping):
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class DatasetSpec(JsonRecord):
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


#: the dataset kinds besides classification (C-names: ``brewnet dataset create --kind``)
GENERIC_KINDS = ("generic", "gradients", "processing", "segmentation")
#: DIGITS' data extension ids and brewnet's kind names
EXTENSION_KINDS = {"image-gradients": "gradients", "image-processing": "processing",
                   "image-segmentation": "segmentation"}
KIND_EXTENSIONS = {v: k for k, v in EXTENSION_KINDS.items()}


@dataclass
class GenericDatasetSpec(JsonRecord):
    """A generic dataset job's settings: DIGITS' "Other" form (``kind`` generic: pre-built LMDBs)
    or one of its data extensions (gradients, processing, segmentation).  Paths are absolute
    server paths (confined by the form) or the job's own uploads."""
    kind: str
    name: str
    group: str = ""
    # generic: pre-built LMDBs
    train_images: str | None = None
    train_labels: str | None = None
    val_images: str | None = None
    val_labels: str | None = None
    mean_file: str | None = None
    force_same_shape: bool = True
    # extensions' common options (dsopts_*)
    feature_encoding: str = "png"
    label_encoding: str = "none"
    batch_size: int = 32           # DIGITS' encoder batch: kept for clones, the builder needs none
    num_threads: int = 4
    backend: str = "lmdb"
    seed: int | None = None
    # gradients
    train_count: int = 1000
    val_count: int = 250
    test_count: int = 0
    width: int = 32
    height: int = 32
    # processing and segmentation
    feature_folder: str | None = None
    label_folder: str | None = None
    val_feature_folder: str | None = None
    val_label_folder: str | None = None
    pct_val: int = 10
    channel_conversion: str = "none"
    # segmentation
    class_labels_file: str | None = None
    colormap_method: str = "label"       # label | textfile | none
    colormap_file: str | None = None

    def cli_args(self, outdir: str) -> list[str]:
        """The arguments of ``brewnet dataset create --kind KIND`` that build this dataset into
        ``outdir`` (the job's folder)."""
        if self.kind not in GENERIC_KINDS:
            raise ValueError(f"unknown generic dataset kind {self.kind!r}")
        same = "-force-same-shape" if self.force_same_shape else "-no-force-same-shape"
        if self.kind == "generic":
            args = ["--kind", "generic", str(outdir), "-train-images", str(self.train_images)]
            for flag, value in (("-train-labels", self.train_labels), ("-val-images", self.val_images),
                                ("-val-labels", self.val_labels if self.val_images else None),
                                ("-mean", self.mean_file)):
                if value:
                    args += [flag, str(value)]
            return args + [same]
        if self.kind == "gradients":
            args = ["--kind", "gradients", str(outdir), "-train-count", str(self.train_count),
                    "-val-count", str(self.val_count), "-test-count", str(self.test_count),
                    "-width", str(self.width), "-height", str(self.height)]
        else:
            args = ["--kind", self.kind, str(self.feature_folder), str(self.label_folder), str(outdir)]
            val_flags = ("-val-input-folder", "-val-target-folder") if self.kind == "processing" \
                else ("-val-image-folder", "-val-label-folder")
            if self.val_feature_folder and self.val_label_folder:
                args += [val_flags[0], str(self.val_feature_folder), val_flags[1], str(self.val_label_folder)]
            else:
                args += ["-val-percent", str(self.pct_val)]
            if self.kind == "segmentation":
                if self.class_labels_file:
                    args += ["-class-labels", str(self.class_labels_file)]
                args += ["-colormap", self.colormap_method]
                if self.colormap_method == "textfile" and self.colormap_file:
                    args += ["-colormap-file", str(self.colormap_file)]
            args += ["-channel-conversion", self.channel_conversion]
        if self.seed is not None:
            args += ["-seed", str(self.seed)]
        return args + ["-feature-encoding", self.feature_encoding, "-label-encoding", self.label_encoding,
                       same, "-workers", str(self.num_threads),
                       # the job's folder is ours: a re-run replaces what an interrupted run left
                       "--overwrite"]


def dataset_spec_from_json(d: Mapping | None) -> DatasetSpec | GenericDatasetSpec:
    """A dataset job's spec: :class:`GenericDatasetSpec` when its ``kind`` is one of
    :data:`GENERIC_KINDS`, else (``kind`` missing or classification) :class:`DatasetSpec`."""
    d = d or {}
    if d.get("kind") in GENERIC_KINDS:
        return GenericDatasetSpec.from_json(d)
    return DatasetSpec.from_json(d)


METHODS = ("standard", "previous", "pretrained", "custom")


@dataclass
class ModelSpec(JsonRecord):
    """A model job's settings (DIGITS' image classification model form, one sweep point;
    ``kind`` "generic": DIGITS' generic image model form, digits/generic_model_files.py)."""
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
    kind: str = "classification"            # or "generic"



#: the module name of a job's uploaded Python layer file (DIGITS' name for it)
PYTHON_LAYER_MODULE = "digits_python_layers"
