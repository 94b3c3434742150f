"""What is done with a model's snapshot for a request: classify one image in the inference
worker (with per-layer visualisations) and DIGITS' download archive (deploy bundles built by
:mod:`brewnet.server.inference`)."""
from __future__ import annotations

import secrets
import shutil
import time
from pathlib import Path

from ..errors import ApiError
from ..inference import ARCHIVE_FORMATS, bundle_archive
from ..jobs import states
from ..jobs.tasks import python_path
from ..threads import in_thread
from .presenters import DigitsPresenters

VIS_KEEP = 5                      # classify-one visualisation folders kept per model


class SnapshotServices(DigitsPresenters):
    """Classify-one and downloads of a model's snapshots."""

    async def classify_one(self, model_id: str, image_path: str | Path, snapshot_epoch: float | None = None,
                           visualize: bool = False) -> dict:
        """DIGITS' classify_one of one image file: ``{"predictions": [[label, conf %], ...]}``
        (top 5); with ``visualize``, the per-layer visualisations (PNGs under the model's
        ``classify_one/`` folder, served by /files)."""
        model = await in_thread(self.get_job, model_id, states.MODEL)
        snap = await in_thread(self.snapshot_for_epoch, model, snapshot_epoch)
        ds = await in_thread(self.find_job, model.dataset_id or "")
        ds_dir = self.job_dir(ds.id) if ds is not None else None
        modules = python_path(model, self.config)  # the model's own Python layer file, if any
        bundle = await self.pool.ensure_bundle(self.job_dir(model.id), int(snap["iteration"]), ds_dir, modules)
        vis_dir = None
        if visualize:
            vis_root = self.job_dir(model.id) / "classify_one"
            vis_root.mkdir(exist_ok=True)
            vis_dir = vis_root / f"{int(time.time() * 1000)}-{secrets.token_hex(2)}"
            vis_dir.mkdir()
            old = sorted(p for p in vis_root.iterdir() if p.is_dir())[:-VIS_KEEP]
            for p in old:
                shutil.rmtree(p, ignore_errors=True)
        result = await self.pool.classify_one(bundle, image_path, top=5, visualize=visualize, vis_dir=vis_dir,
                                              python_path=modules)
        if vis_dir is not None:
            result["visualization_dir"] = str(vis_dir.relative_to(self.config.jobs_dir))
        result["snapshot_epoch"] = snap["epoch"]
        return result

    def download(self, model_id: str, epoch: float | None, ext: str) -> Path:
        """DIGITS' download archive of a model's snapshot (``epoch`` None: the newest): the flat
        archive with info.json (the model's JSON for that epoch).  Builds the deploy bundle
        in this process when it is missing (:meth:`download_async` builds it in the worker)."""
        if ext not in ARCHIVE_FORMATS:
            raise ApiError(400, f"Unsupported archive extension '{ext}': use one of {', '.join(ARCHIVE_FORMATS)}")
        model = self.get_job(model_id, states.MODEL)
        snap = self.snapshot_for_epoch(model, epoch)
        ds = self.find_job(model.dataset_id or "")
        info = self.model_json(model, snap["epoch"])
        return bundle_archive(self.job_dir(model.id), int(snap["iteration"]), self.job_dir(ds.id) if ds else None,
                              ext, info, epoch=snap["epoch"])

    async def download_async(self, model_id: str, epoch: float | None, ext: str) -> Path:
        """:meth:`download` with the bundle built in the inference worker (the event loop and the
        server process never load the net)."""
        if ext not in ARCHIVE_FORMATS:
            raise ApiError(400, f"Unsupported archive extension '{ext}': use one of {', '.join(ARCHIVE_FORMATS)}")
        model = await in_thread(self.get_job, model_id, states.MODEL)
        snap = await in_thread(self.snapshot_for_epoch, model, epoch)
        ds = await in_thread(self.find_job, model.dataset_id or "")
        await self.pool.ensure_bundle(self.job_dir(model.id), int(snap["iteration"]),
                                      self.job_dir(ds.id) if ds is not None else None,
                                      python_path(model, self.config))
        return await in_thread(self.download, model_id, epoch, ext)
