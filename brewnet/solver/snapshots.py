"""Snapshots and resume: ``<prefix>_iter_<N>.caffemodel`` and ``.solverstate`` written atomically
(Caffe's format, interchangeable with Caffe's), and ``restore`` from either."""
from __future__ import annotations

import logging
import os

import torch

from .. import formats
from ..errors import SolverError
from ..proto import caffe_pb2

log = logging.getLogger("brewnet")


class Snapshots:
    """Snapshot and restore for :class:`brewnet.solver.Solver` (a mixin)."""

    def snapshot_filename(self, ext: str) -> str:
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{ext}"

    def snapshot(self) -> tuple[str, str]:
        """Write ``<prefix>_iter_<N>.caffemodel`` and ``.solverstate`` (atomically)."""
        if self.parallel is None:  # data-parallel: re-estimated on every rank before (loop)
            self.recalibrate_batchnorm()
        p = self.param
        if p.snapshot_format == caffe_pb2.SolverParameter.HDF5:
            if not getattr(self, "_warned_hdf5", False):
                log.warning("snapshot_format HDF5 is not supported; writing BINARYPROTO snapshots")
                self._warned_hdf5 = True
        parent = os.path.dirname(p.snapshot_prefix)
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
        model = self.snapshot_filename(".caffemodel")
        log.info("Snapshotting to binary proto file %s", model)
        formats.write_caffemodel(self.net.to_proto(write_diff=p.snapshot_diff), model)
        state_file = self.snapshot_filename(".solverstate")
        log.info("Snapshotting solver state to binary proto file %s", state_file)
        state = caffe_pb2.SolverState()
        state.iter = self.iter
        state.learned_net = model
        state.current_step = self.current_step
        for h in self.history:
            formats.array_to_blob(h.detach().to("cpu", torch.float32).numpy(), state.history.add())
        formats.write_binary(state, state_file)
        self._snapshotted_iter = self.iter
        return model, state_file

    def restore(self, path: str) -> None:
        """Resume from a ``.solverstate`` written by Caffe or brewnet (weights from learned_net)."""
        path = os.fspath(path)
        if path.endswith(".h5"):
            raise SolverError(f"{path}: HDF5 solver states are not supported (use .solverstate)")
        if not os.path.exists(path):
            raise SolverError(f"solver state not found: {path}")
        state = formats.read_binary(path, caffe_pb2.SolverState)
        model = self._learned_net(state, path)
        if model is not None:  # weights first: their layout may give layers more blobs
            had = len(self.net.caffe_params)
            self.net.copy_from(model)
            for t in self.test_nets:
                t.copy_from(model)
                t.share_with(self.net)
            if len(self.net.caffe_params) != had:
                self._init_history()
        if len(state.history) != len(self.history):
            raise SolverError(
                f"{path}: {len(state.history)} history blobs, but a {self.type_name} solver for this "
                f"net needs {len(self.history)} ({self.num_history} per parameter blob, "
                f"{len(self._entries)} blobs); is it the right net and solver type?")
        arrays = []
        for i, (b, h) in enumerate(zip(state.history, self.history)):
            a = formats.blob_to_array(b)
            if a.size != h.numel():
                e = self._entries[i % len(self._entries)]
                raise SolverError(f"{path}: history blob {i} ({e.name}) has {a.size} values, the "
                                  f"parameter has {h.numel()} (shape {tuple(h.shape)})")
            arrays.append(a)
        with torch.no_grad():
            for a, h in zip(arrays, self.history):
                h.copy_(torch.as_tensor(a.reshape(tuple(h.shape)), dtype=h.dtype))
        self.iter = int(state.iter)
        self._snapshotted_iter = self.iter  # this iteration's snapshot is the one restored
        self.current_step = int(state.current_step)
        for layer in self.net.layers:  # NVCaffe-dialect averages go on with the weight they had
            if layer.type == "BatchNorm" and layer.nvcaffe:
                layer.resume_average(self.iter * max(1, self.param.iter_size))
        n = len(self._entries)
        passive_idx = {id(e) for g in self._passive for e in g.entries}
        self._passive_dirty = any(bool(self.history[k * n + i].any())
                                  for k in range(self.num_history)
                                  for i, e in enumerate(self._entries) if id(e) in passive_idx)

    @staticmethod
    def _learned_net(state, path: str) -> str | None:
        """The weights file a solver state names (relative to the working directory, else beside
        the state), or None when it names none."""
        if not (state.HasField("learned_net") and state.learned_net):
            return None
        model = state.learned_net
        if os.path.exists(model):
            return model
        base = os.path.dirname(os.path.abspath(path))
        for alt in (os.path.join(base, model), os.path.join(base, os.path.basename(model))):
            if os.path.exists(alt):
                log.info("learned_net '%s' is not in the working directory; using %s "
                         "(beside the solver state)", model, alt)
                return alt
        raise SolverError(f"{path}: its weights file '{state.learned_net}' was not found "
                          "(relative to the working directory or the solver state)")



def upgrade_snapshot_prefix(param, solver_file: str | None) -> None:
    """Caffe's UpgradeSnapshotPrefixProperty."""
    if not param.HasField("snapshot_prefix") or not param.snapshot_prefix:
        if solver_file:
            param.snapshot_prefix = os.path.splitext(solver_file)[0]
            log.info("snapshot_prefix was not specified and is set to %s", param.snapshot_prefix)
        else:
            param.snapshot_prefix = "brewnet"
    elif os.path.isdir(param.snapshot_prefix) and solver_file:
        stem = os.path.splitext(os.path.basename(solver_file))[0]
        param.snapshot_prefix = os.path.join(param.snapshot_prefix, stem)
        log.info("snapshot_prefix is a directory and is set to %s", param.snapshot_prefix)

