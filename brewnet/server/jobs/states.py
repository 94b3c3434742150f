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


#: the spec kinds of generic jobs (issue 22) -> DIGITS' type strings
GENERIC_TYPE_NAMES = {(DATASET, "generic"): "Generic Image Dataset", (DATASET, "gradients"): "Generic Dataset",
                      (DATASET, "processing"): "Generic Dataset", (DATASET, "segmentation"): "Generic Dataset",
                      (MODEL, "generic"): "Generic Image Model"}


def job_type_name(job) -> str:
    """DIGITS' type string of a job (status JSON ``type``): its kind's, or a generic job's by
    its spec's ``kind``."""
    spec = getattr(job, "spec", None)
    sub = spec.get("kind") if isinstance(spec, dict) else None
    return GENERIC_TYPE_NAMES.get((job.kind, sub)) or TYPE_NAMES.get(job.kind, job.kind)
