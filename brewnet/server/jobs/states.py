"""Job states: DIGITS' status strings, plus brewnet's ``Interrupted``.

``Interrupted``: the job was running when the server stopped (killed or shut down); a training
job can be resumed from its last solverstate.  DIGITS turned such jobs into ``Aborted``.
"""
from __future__ import annotations

INITIALIZED = "Initialized"
WAITING = "Waiting"
RUNNING = "Running"
DONE = "Done"
ABORTED = "Aborted"
ERROR = "Error"
INTERRUPTED = "Interrupted"

ALL = (INITIALIZED, WAITING, RUNNING, DONE, ABORTED, ERROR, INTERRUPTED)
ACTIVE = (INITIALIZED, WAITING, RUNNING)          # DIGITS' "running" group
FINISHED = (DONE, ABORTED, ERROR, INTERRUPTED)
RESUMABLE = (ABORTED, INTERRUPTED, ERROR)          # model jobs with a solverstate

# Bootstrap-like classes for the pages (DIGITS' status_css)
CSS = {INITIALIZED: "warning", WAITING: "warning", RUNNING: "info", DONE: "success",
       ABORTED: "danger", ERROR: "danger", INTERRUPTED: "warning"}

# job kinds and DIGITS' type strings
DATASET = "dataset"
MODEL = "model"
INFERENCE = "inference"
KINDS = (DATASET, MODEL, INFERENCE)
TYPE_NAMES = {DATASET: "Image Classification Dataset", MODEL: "Image Classification Model",
              INFERENCE: "Inference"}
#: DIGITS' type strings of the generic jobs (docs: digits-other-jobs.md §1.1)
GENERIC_DATASET_TYPE = "Generic Image Dataset"      # pre-built LMDBs ("Other")
EXTENSION_DATASET_TYPE = "Generic Dataset"          # a data extension's dataset
GENERIC_MODEL_TYPE = "Generic Image Model"


def job_type_name(job) -> str:
    """DIGITS' type string of ``job`` (a Job row or a job dict): its kind's, or a generic
    dataset's or model's by the ``kind`` its spec holds (missing: classification)."""
    if isinstance(job, dict):
        kind, spec = job.get("kind"), job.get("spec")
    else:
        kind, spec = getattr(job, "kind", None), getattr(job, "spec", None)
    sub = (spec or {}).get("kind") or "classification"
    if kind == DATASET and sub != "classification":
        return GENERIC_DATASET_TYPE if sub == "generic" else EXTENSION_DATASET_TYPE
    if kind == MODEL and sub == "generic":
        return GENERIC_MODEL_TYPE
    return TYPE_NAMES.get(kind, kind)
