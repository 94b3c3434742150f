"""Generic model jobs (DIGITS' "Other" models, digits-other-jobs.md §1.5): created from DIGITS'
generic model form as classification models are (one job per sweep point, clones, files written
once the dataset is Done; creation.py), with the generic form's parser and
digits/generic_model_files.py's files; and what the form and pages offer of them."""
from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path

from ..digits.forms import parse_generic_model_form
from ..digits.generic_model_files import dataset_kind, standard_networks
from ..jobs import states
from ..jobs.specs import EXTENSION_KINDS, GENERIC_KINDS
from ..store.models import Job
from .creation import JobCreation


class GenericModels(JobCreation):
    """Generic model jobs (see the module docstring)."""

    def create_generic_models(self, form: Mapping[str, str], uploads: Mapping[str, Path], user,
                              extension_id: str | None = None) -> list[Job]:
        """Model jobs of kind ``generic`` from DIGITS' generic model form (``extension_id``: the
        data extension of the URL, which the dataset must be of)."""
        parse = functools.partial(parse_generic_model_form, extension_id=extension_id)
        return self.create_models(form, uploads, user, parse=parse)

    def generic_datasets(self, extension_id: str | None = None) -> list[dict]:
        """The datasets the generic model form lists (DIGITS: generic and extension datasets
        running or Done; of the extension's kind when given): ``{id, name, status, kind,
        networks}`` with the standard networks fitting each kind."""
        kinds = (EXTENSION_KINDS[extension_id],) if extension_id in EXTENSION_KINDS else GENERIC_KINDS
        out = []
        for job in self.list_jobs(states.DATASET):
            kind = dataset_kind({"spec": job.spec})
            if kind in kinds and job.status in ("Initialized", "Waiting", "Running", "Done"):
                out.append({"id": job.id, "name": job.name, "status": job.status, "kind": kind,
                            "networks": standard_networks(kind)})
        return out

    def generic_models(self) -> list[dict]:
        """Generic model jobs with their snapshots (the form's "previous network" choices)."""
        return [{"id": j.id, "name": j.name, "status": j.status,
                 "snapshots": [{"epoch": s["epoch"], "iteration": s["iteration"]} for s in self.snapshot_list(j)]}
                for j in self.list_jobs(states.MODEL) if (j.spec or {}).get("kind") == "generic"]
