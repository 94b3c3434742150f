"""What the server does, shared by DIGITS' routes and ``/api/v1``: list, create, abort, resume,
clone, delete and edit jobs, their DIGITS JSON, metrics and logs, classify and download.

Every method raises :class:`~brewnet.server.errors.ApiError` / ``FormErrors`` for a bad request;
routes only translate HTTP to these calls and back.  :class:`Server` is the one object routes
use; its parts:

    lookups.py      JobLookups: jobs (through the job store), datasets' facts, snapshots, metrics, logs, files
    creation.py     JobCreation: dataset, model and inference jobs from DIGITS' forms, clones, model files
    control.py      JobControl: abort, resume, clone, delete, edit, bulk; the scheduler's listener
    presenters.py   DigitsPresenters: DIGITS' JSON of jobs (model, dataset, status, index, tables)
    snapshots.py    SnapshotServices: classify-one and download archives of a model's snapshot
    generic_inference.py  GenericInferenceServices: infer_one / infer_many / infer_db of generic models
    generic_models.py  GenericModels: generic model jobs from DIGITS' generic model form
    generic_datasets.py  GenericDatasets: DIGITS' "Other" and data-extension datasets (create, clone, JSON)
"""
from __future__ import annotations

from .control import JobControl
from .generic_datasets import GenericDatasets
from .generic_inference import GenericInferenceServices
from .generic_models import GenericModels
from .snapshots import SnapshotServices


class Server(GenericDatasets, JobControl, SnapshotServices, GenericModels, GenericInferenceServices):
    """The server's services over its config, database (through its job store), scheduler and
    inference pool."""
