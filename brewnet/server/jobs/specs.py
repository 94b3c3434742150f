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
