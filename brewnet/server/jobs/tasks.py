"""The steps of each job kind: argv lists of the brewnet CLI, run in the job's directory.

- dataset: ``brewnet dataset create`` with the DatasetSpec's arguments (the job dir is OUTDIR).
- model: ``brewnet train -solver solver.prototxt -metrics metrics.jsonl -sigint_effect stop``
  with plan.json's weights (fine-tuning), ``-augment augment.json`` when the job has that file
  (the form's aug_* fields), the spec's ``-bn_recalibrate`` and ``-gpu 0`` when a
  GPU is assigned (CUDA_VISIBLE_DEVICES then holds only the assigned GPUs, so the first visible
  one is the job's); a resume passes ``-snapshot <newest solverstate>`` instead of weights, and
  the trainer appends to the same metrics file.
- inference: ``brewnet deploy`` of the model's snapshot when its bundle is missing, then
  ``brewnet classify -bundle B (-list images.txt | -lmdb DB) -json result.json``; a generic
  model's ``infer_many`` / ``infer_db`` (spec kinds :data:`GENERIC_INFER_KINDS`) runs ``brewnet
  infer -bundle B (-list images.txt | -lmdb DB) -output outputs`` instead, with
  ``-dont_resize`` and ``-evaluate KIND -label_lmdb DB`` as the spec says (its deploy gets the
  dataset: ``-dataset DIR``).

An inference job's ``spec``: ``model_id``, ``iteration`` (the snapshot), optional ``bundle_dir``
(default ``<model dir>/bundles/iter_N``), ``source``: ``{"list": path}`` or ``{"lmdb": path}``
(relative paths are the inference job's files), optional ``top`` (labels per image).

:func:`python_path` gives the folders a job's steps import from besides brewnet: the server's
``--allow-python-layers`` folder, and a model's own Python layer folder (for its inference jobs
too); another job's folder is never among them.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from ...errors import BrewnetError
from . import states
from .jobdir import job_dir, read_job_json
from .progress import METRICS_FILE, read_plan
from .specs import dataset_spec_from_json

AUGMENT_FILE = "augment.json"              # digits.model_files writes it
#: generic inference jobs (brewnet infer): their spec kinds and what they write in the job's folder
GENERIC_INFER_KINDS = ("infer_many", "infer_db")
INFER_OUTPUT_DIR = "outputs"               # one .npy per item and output blob
INFER_INDEX = f"{INFER_OUTPUT_DIR}/index.json"  # key -> its blobs' files, and the evaluation
PYTHON_LAYER_DIR = "python_layers"         # the job's own Python layer file lives here
SNAPSHOT_RE = re.compile(r"^snapshot_iter_(\d+)\.(caffemodel|solverstate)$")


def brewnet_argv(*args: str) -> list[str]:
    """``[python, -m, brewnet, *args]`` with this interpreter, so the job runs the same brewnet."""
    return [sys.executable, "-m", "brewnet", *[str(a) for a in args]]


def _snapshot_files(jobdir: Path, ext: str) -> list[tuple[int, Path]]:
    out = []
    try:
        entries = list(Path(jobdir).iterdir())
    except FileNotFoundError:
        return []
    for p in entries:
        m = SNAPSHOT_RE.match(p.name)
        if m and m.group(2) == ext and p.is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def snapshots(jobdir: str | Path) -> list[tuple[int, Path]]:
    """``[(iteration, snapshot_iter_N.caffemodel), ...]``, ascending."""
    return _snapshot_files(Path(jobdir), "caffemodel")


def newest_solverstate(jobdir: str | Path) -> Path | None:
    """The solverstate of the highest iteration in ``jobdir``, or None."""
    states_ = _snapshot_files(Path(jobdir), "solverstate")
    return states_[-1][1] if states_ else None


def _gpu_flag(job, several: bool = False) -> list[str]:
    """CUDA_VISIBLE_DEVICES holds the assigned GPUs only: they are visible as 0..n-1.  Training
    (``several``) takes them all, data-parallel, one process each (brewnet.distributed); other
    steps run on the first."""
    gpus = (job.assigned or {}).get("gpus") or []
    if not gpus:
        return []
    n = len(gpus) if several else 1
    return ["-gpu", ",".join(str(i) for i in range(n))]


def dataset_steps(job, config) -> list[list[str]]:
    spec = dataset_spec_from_json(job.spec)
    outdir = job_dir(config, job.id)
    return [brewnet_argv("dataset", "create", *spec.cli_args(str(outdir)))]


def model_steps(job, config, *, resume: bool) -> list[list[str]]:
    jobdir = job_dir(config, job.id)
    argv = brewnet_argv("train", "-solver", "solver.prototxt", "-metrics", METRICS_FILE,
                        "-sigint_effect", "stop")
    if resume:
        state = newest_solverstate(jobdir)
        if state is None:
            raise BrewnetError(f"job {job.id}: no solverstate to resume from")
        argv += ["-snapshot", state.name]
    else:
        weights = read_plan(jobdir).get("weights") or []
        if isinstance(weights, str):
            weights = [weights]
        if weights:
            argv += ["-weights", ",".join(str(w) for w in weights)]
    if (jobdir / AUGMENT_FILE).is_file():
        argv += ["-augment", AUGMENT_FILE]
    n = int((job.spec or {}).get("bn_recalibrate") or 0)
    if n > 0:
        argv += ["-bn_recalibrate", str(n)]
    return [argv + _gpu_flag(job, several=True)]


def _resolve(base: Path, path: str) -> str:
    p = Path(path)
    return str(p if p.is_absolute() else base / p)


def inference_steps(job, config) -> list[list[str]]:
    spec = job.spec or {}
    jobdir = job_dir(config, job.id)
    model_id = spec.get("model_id") or job.parent_id
    if not model_id:
        raise BrewnetError(f"job {job.id}: no model_id in its spec")
    model_dir = job_dir(config, model_id)
    iteration = spec.get("iteration")
    if iteration is None:
        snaps = snapshots(model_dir)
        if not snaps:
            raise BrewnetError(f"model {model_id} has no snapshot")
        iteration = snaps[-1][0]
    iteration = int(iteration)
    bundle = Path(spec.get("bundle_dir") or model_dir / "bundles" / f"iter_{iteration}")
    if not bundle.is_absolute():
        bundle = model_dir / bundle
    steps = []
    # write_bundle builds in a temporary sibling and renames: a bundle with info.json is whole
    if not (bundle / "info.json").is_file():
        weights = model_dir / f"snapshot_iter_{iteration}.caffemodel"
        if not weights.is_file():
            raise BrewnetError(f"model {model_id} has no snapshot at iteration {iteration}")
        dataset_id = job.dataset_id or read_job_json(model_dir).get("dataset_id")
        deploy = ["deploy", "-model", str(model_dir / "train_val.prototxt"), "-weights", str(weights),
                  "-output", str(bundle), "-metrics", str(model_dir / METRICS_FILE)]
        if dataset_id:
            labels = job_dir(config, dataset_id) / "labels.txt"
            if labels.is_file():
                deploy += ["-labels", str(labels)]
        if spec.get("dataset_dir"):
            deploy += ["-dataset", str(spec["dataset_dir"])]
        steps.append(brewnet_argv(*deploy))
    if spec.get("kind") in GENERIC_INFER_KINDS:
        return steps + [brewnet_argv(*_infer_args(job, jobdir, bundle)) + _gpu_flag(job)]
    source = spec.get("source") or {"list": "images.txt"}
    classify = ["classify", "-bundle", str(bundle), *_source_args(job, jobdir, source)]
    classify += ["-json", "result.json", "-top", str(int(spec.get("top") or 5))]
    steps.append(brewnet_argv(*classify) + _gpu_flag(job))
    return steps


def _source_args(job, jobdir: Path, source: dict) -> list[str]:
    if "lmdb" in source:
        return ["-lmdb", _resolve(jobdir, source["lmdb"])]
    if "list" in source:
        return ["-list", _resolve(jobdir, source["list"])]
    raise BrewnetError(f"job {job.id}: its source names neither a list nor an LMDB")


def _infer_args(job, jobdir: Path, bundle: Path) -> list[str]:
    """``brewnet infer``'s arguments of a generic inference job (see the module docstring)."""
    spec = job.spec or {}
    args = ["infer", "-bundle", str(bundle), *_source_args(job, jobdir, spec.get("source") or {}),
            "-output", INFER_OUTPUT_DIR]
    if spec.get("dont_resize"):
        args.append("-dont_resize")
    evaluate = spec.get("evaluate") or {}
    if evaluate.get("kind") and evaluate.get("labels"):
        args += ["-evaluate", str(evaluate["kind"]), "-label_lmdb", str(evaluate["labels"])]
    return args


def steps_for(job, config, *, resume: bool) -> list[list[str]]:
    """The argv list of each step of ``job``, in order (see the module docstring).
    Raises BrewnetError when the job cannot run (a resume without solverstate, no snapshot)."""
    if job.kind == states.DATASET:
        return dataset_steps(job, config)
    if job.kind == states.MODEL:
        return model_steps(job, config, resume=resume)
    if job.kind == states.INFERENCE:
        return inference_steps(job, config)
    raise BrewnetError(f"job {job.id}: unknown kind {job.kind!r}")


def python_path(job, config) -> list[str]:
    """The module folders of ``job``'s steps: the server's Python layer folder, if any, and, when
    the server allows Python layers, the model's own ``python_layers/`` (an inference job uses
    its model's)."""
    out = []
    folder = getattr(config, "python_layer_folder", None)
    if folder:
        out.append(str(folder))
    if not getattr(config, "python_layers_allowed", False):
        return out
    model_id = job.id if job.kind == states.MODEL else \
        ((job.spec or {}).get("model_id") or job.parent_id if job.kind == states.INFERENCE else None)
    if model_id:
        own = job_dir(config, model_id) / PYTHON_LAYER_DIR
        if own.is_dir():
            out.append(str(own))
    return out
