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
import os
import re
from pathlib import Path
from typing import Any, Callable, Mapping

from ..config import ServerConfig
from ..errors import FormErrors
from ..jobs.specs import EXTENSION_KINDS, GENERIC_KINDS, METHODS, PYTHON_LAYER_MODULE, DatasetSpec, ModelSpec
from .fields import NOT_CHOICE, REQUIRED, Fields, augmentation_fields, format_number
from .generic_model_files import analyze_generic_network, build_generic_files, dataset_kind, generic_lint
from .generic_model_files import standard_networks as generic_standard_networks
from .model_files import NetworkError, analyze_network
from .networks import STANDARD_NETWORKS
from .solver_form import SOLVER_TYPES, lr_fields

OUTSIDE = "Path is outside the server's data roots"
HDF5 = "brewnet builds LMDB datasets; hdf5 is not supported"
PY_REFUSED = "Python layers are refused: the server was not started with --allow-python-layers"


def confine_field(f: Fields, name: str, value: str, roots: list[Path], kind: str,
                  missing: str | None = None) -> Path | None:
    """A server path of field ``name``: absolute, resolving (symlinks followed) under one of
    ``roots``, and existing as a ``kind`` ("dir" or "file"); else an error on the field
    (``missing``: the message when it does not exist, else DIGITS' "Folder/File does not exist")."""
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
        f.error(name, missing or "Folder does not exist")
        return None
    if kind == "file" and not real.is_file():
        f.error(name, missing or "File does not exist")
        return None
    return real


_confine = confine_field


def data_roots(config: ServerConfig) -> list[Path]:
    """The server's ``--data-root`` folders, resolved."""
    return [Path(r).resolve() for r in (config.data_roots or [])]


_roots = data_roots


# ----- datasets -----------------------------------------------------------------------------------

def parse_dataset_form(form: Mapping[str, Any], uploads: Mapping[str, str], config: ServerConfig) -> DatasetSpec:
    """DIGITS' dataset form -> DatasetSpec.  ``uploads``: field -> the saved file's path (already
    in the job's folder).  Raises FormErrors naming DIGITS' fields."""
    f = Fields(form)
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


def _folder_fields(f: Fields, spec: DatasetSpec, roots: list[Path]) -> None:
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


def _textfile_fields(f: Fields, spec: DatasetSpec, uploads: Mapping[str, str], roots: list[Path]) -> None:
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

def parse_model_form(form: Mapping[str, Any], uploads: Mapping[str, str], config: ServerConfig,
                     lookup_job: Callable[[str], dict | None]) -> list[ModelSpec]:
    """DIGITS' model form -> one ModelSpec per learning rate x batch size (a sweep; names then
    suffixed `` learning_rate:X`` / `` batch_size:N``).  ``lookup_job(id)`` gives a job's dict
    (``kind``, ``status``, ``directory``; a model's ``snapshots``; a dataset's ``image``) or None.
    Raises FormErrors naming DIGITS' fields."""
    return _model_specs(form, uploads, config, lookup_job, None)


def parse_generic_model_form(form: Mapping[str, Any], uploads: Mapping[str, str], config: ServerConfig,
                             lookup_job: Callable[[str], dict | None],
                             extension_id: str | None = None) -> list[ModelSpec]:
    """DIGITS' generic image model form (digits-other-jobs.md §1.5) -> ModelSpecs of kind
    ``generic``: the classification form's fields; ``dataset`` a generic dataset (of the kind of
    ``extension_id`` when given: ``image-gradients``, ``image-processing``, ``image-segmentation``);
    ``standard_networks`` the generic networks fitting its kind; a custom network split and
    checked by DIGITS' generic rules, and, once the dataset is complete, its files built (errors
    here, 400, rather than a failed job).  ``previous`` must be a generic model."""
    if extension_id is not None and extension_id not in EXTENSION_KINDS:
        raise FormErrors({"extension_id": [f"Unknown data extension {extension_id!r} (one of "
                                           f"{', '.join(EXTENSION_KINDS)})"]})
    kinds = (EXTENSION_KINDS[extension_id],) if extension_id else GENERIC_KINDS
    return _model_specs(form, uploads, config, lookup_job, kinds)


def _model_specs(form: Mapping[str, Any], uploads: Mapping[str, str], config: ServerConfig,
                 lookup_job: Callable[[str], dict | None], generic: tuple[str, ...] | None) -> list[ModelSpec]:
    """The model form of either kind: ``generic`` None for classification, else the dataset
    kinds a generic model may use."""
    f = Fields(form)
    roots = _roots(config)
    base = ModelSpec(name=f.text("model_name", required=True), group=f.text("group_name"))
    base.kind = "generic" if generic else "classification"

    ds_id = f.text("dataset", required=True)
    dataset = lookup_job(ds_id) if ds_id else None
    wanted_kinds = generic or ("classification",)
    if ds_id and (dataset is None or dataset.get("kind") != "dataset"
                  or dataset.get("status") not in ("Initialized", "Waiting", "Running", "Done")
                  or dataset_kind(dataset) not in wanted_kinds):
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
    rates, base.lr_policy, base.lr_params = lr_fields(f)
    base.use_mean = f.choice("use_mean", ("none", "image", "pixel"), "image")
    base.crop_size = f.number("crop_size", int, None, lo=1, optional=True)
    base.shuffle = f.boolean("shuffle")
    base.bn_recalibrate = f.number("bn_recalibrate", int, 100, lo=0)
    _gpu_fields(f, base)
    _python_layer_file(f, base, uploads, config, roots)
    base.augmentation = augmentation_fields(f)

    image = (dataset or {}).get("image") or {} if not generic else {}
    if base.crop_size and image.get("height") and image.get("width") \
            and base.crop_size > min(int(image["height"]), int(image["width"])):
        f.error("crop_size", "crop_size is larger than the image size")

    if base.method == "standard":
        choices = tuple(generic_standard_networks(dataset_kind(dataset)) if dataset else ()) if generic \
            else tuple(STANDARD_NETWORKS)
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
    if generic and not f.errors and dataset is not None and dataset.get("status") == "Done":
        _check_generic_files(f, base, lookup_job, batch_sizes)
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


def _gpu_fields(f: Fields, spec: ModelSpec) -> None:
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


def _previous_fields(f: Fields, spec: ModelSpec, lookup_job: Callable[[str], dict | None]) -> None:
    pid = f.text("previous_networks", required=True)
    if not pid:
        return
    prev = lookup_job(pid)
    if prev is None or prev.get("kind") != "model" \
            or (prev.get("spec") or {}).get("kind", "classification") != spec.kind:
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
        f.error(field_name,
                f"For the job {pid}, selected pretrained_model for epoch {format_number(epoch)} is invalid!")


def _custom_fields(f: Fields, spec: ModelSpec, uploads: Mapping[str, str], config: ServerConfig,
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
        net, findings = analyze_generic_network(text) if spec.kind == "generic" else analyze_network(text)
    except NetworkError as e:
        f.error("custom_network", str(e))
        return
    spec.lint_findings = findings
    _python_layers(f, spec, net, config)


def _check_generic_files(f: Fields, spec: ModelSpec, lookup_job: Callable[[str], dict | None],
                         batch_sizes: list) -> None:
    """A generic model's files built (not written) on its finished dataset, as the job will:
    their errors become the form's; a custom network's lint findings are those of the nets built."""
    probe = ModelSpec.from_json(spec.to_json())
    probe.batch_size = next((b for b in batch_sizes if b), None)
    previous = lookup_job(spec.previous_job_id) if spec.previous_job_id else None
    try:
        files = build_generic_files(probe, lookup_job(spec.dataset_id) or {}, previous)
    except FormErrors as e:
        for name, messages in e.errors.items():
            for m in messages:
                f.error(name, m)
        return
    if spec.method == "custom":
        spec.lint_findings = generic_lint(files)


def _python_layer_file(f: Fields, spec: ModelSpec, uploads: Mapping[str, str], config: ServerConfig,
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


def _python_layers(f: Fields, spec: ModelSpec, net, config: ServerConfig) -> None:
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
