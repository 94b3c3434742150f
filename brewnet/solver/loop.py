"""The training loop: Caffe's ``Solver::Step`` and ``Solver::Solve`` (tests when due, forward and
backward ``iter_size`` times, callbacks, the update, snapshots and requested actions), the
smoothed loss and the display."""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ..layers.loss import raise_deferred_label_errors
from ..reporting.caffe_log import caffe_float
from .lr_policies import learning_rate
from .update import ScaledUpdate

log = logging.getLogger("brewnet")


class TrainingLoop:
    """The loop of :class:`brewnet.solver.Solver` (a mixin)."""

    def set_action_function(self, fn) -> None:
        """``fn() -> 'none' | 'stop' | 'snapshot'`` polled after every iteration (Caffe's
        GetRequestedAction; `brewnet train` binds it to signals)."""
        self._action_fn = fn

    def _requested_action(self) -> str:
        return self._action_fn() if self._action_fn is not None else "none"

    def _display_due(self) -> bool:
        d = self.param.display
        return bool(d) and self.iter % d == 0

    def step(self, iters: int) -> None:
        """Run ``iters`` iterations (Caffe's Solver::Step)."""
        p = self.param
        start_iter = self.iter
        stop_iter = self.iter + int(iters)
        average_loss = p.average_loss
        self._losses = []
        self.smoothed_loss = 0.0
        self._start_iter = start_iter
        timer = time.perf_counter()
        iters_last = self.iter
        net = self.net
        iter_size = p.iter_size
        outputs = net.outputs
        while self.iter < stop_iter:
            self.net.clear_param_diffs()
            if p.test_interval and self.iter % p.test_interval == 0 and \
                    (self.iter > 0 or p.test_initialization):
                self._run_tests()
                if self.requested_early_exit:
                    break
            display = self._display_due()
            loss = None
            scaler = self._grad_scaler()
            for cb in self._callbacks:
                cb[0]()
            for _ in range(iter_size):
                step_loss, _ = net.forward_loss()
                if step_loss is not None:
                    if step_loss.requires_grad:
                        layers = range(len(net.layers) - 1, -1, -1)
                        net._run_callbacks("before_backward", layers)
                        (step_loss if scaler is None else scaler.scale(step_loss)).backward()
                        net._run_callbacks("after_backward", layers)
                    step_loss = step_loss.detach()
                    loss = step_loss if loss is None else loss + step_loss
            if loss is None:
                loss_t = torch.zeros(())
            else:
                loss_t = loss / iter_size if iter_size > 1 else loss
            parallel = self.parallel
            if parallel is not None:  # loss and requested action travel with the gradients
                parallel.stage(loss_t, self._requested_action())
                if parallel.reduce_in_step:
                    parallel.average_gradients()
                    loss_t = parallel.reduced_loss
            self._update_smoothed_loss(loss_t, start_iter, average_loss)
            if display:
                raise_deferred_label_errors()
                lapse = time.perf_counter() - timer
                per_s = (self.iter - iters_last) / (lapse or 1)
                self._display(outputs, per_s, lapse)
                timer = time.perf_counter()
                iters_last = self.iter
            for cb in self._callbacks:
                cb[1]()
            if parallel is not None:
                request = parallel.finish_iteration()
            if scaler is None:
                self.apply_update()
            else:  # float16 autocast: unscale, skip the update if a gradient overflowed
                scaler.step(self._scaled_update)
                scaler.update()
            self.iter += 1
            if self.progress is not None:
                self.progress(self.iter, start_iter, stop_iter)
            if parallel is None:
                request = self._requested_action()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == "snapshot":
                self._write_snapshot()
            if request == "stop":
                self.requested_early_exit = True
                break
        raise_deferred_label_errors()

    def _on_root(self, work) -> bool:
        """Run ``work`` (a test phase, a snapshot); under data-parallel training precise BN's
        re-estimation runs on every rank together first, then ``work`` on rank 0 alone.
        Returns whether it ran in this process."""
        if self.parallel is not None:
            self.recalibrate_batchnorm()
            if not self.parallel.is_root:
                return False
        work()
        return True

    def _run_tests(self) -> None:
        """The test phases when due (rank 0's; then every rank learns whether a stop was asked
        during them)."""
        self._on_root(self.test_all)
        if self.parallel is not None:
            self.requested_early_exit = self.parallel.agree(self.requested_early_exit)

    def _write_snapshot(self) -> None:
        """A snapshot (rank 0 writes it under data-parallel training)."""
        if not self._on_root(self.snapshot):
            self._snapshotted_iter = self.iter

    def _update_smoothed_loss(self, loss, start_iter, average_loss) -> None:
        # Caffe's UpdateSmoothedLoss; values stay tensors until displayed (no device sync)
        if len(self._losses) < average_loss:
            self._losses.append(loss)
            self._smooth_pending = True
        else:
            idx = (self.iter - start_iter) % average_loss
            self._losses[idx] = loss
            self._smooth_pending = True

    def _smoothed(self) -> float:
        if self._losses:
            vals = torch.stack([recorded.reshape(()).float().cpu() for recorded in self._losses]).tolist()
            self.smoothed_loss = float(np.mean(np.asarray(vals, dtype=np.float64)))
        return self.smoothed_loss

    @property
    def loss(self) -> float:
        """The smoothed training loss (what the log displays)."""
        return self._smoothed()

    def _display(self, outputs, per_s, lapse) -> None:
        loss = self._smoothed()
        log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, caffe_float(per_s),
                 caffe_float(lapse), self.param.display, caffe_float(loss))
        lr, _ = learning_rate(self.param, self.iter, self.current_step)
        if self.metrics is not None:
            self.metrics.write(self.iter, "train", "smoothed_loss", loss, lr=lr)
        score_index = 0
        for name in outputs:
            w = self.net.blob_loss_weights.get(name, 0.0)
            value = self.net.blobs[name]._tensor.detach().reshape(-1).float()
            if self.parallel is not None and self.parallel.reduce_in_step:
                value = self.parallel.mean(value)  # the global batch's, as one process shows
            vals = value.cpu().tolist()
            for k, v in enumerate(vals):
                extra = f" (* {caffe_float(w)} = {caffe_float(w * v)} loss)" if w else ""
                log.info("    Train net output #%d: %s = %s%s", score_index, name, caffe_float(v), extra)
                score_index += 1
                if self.metrics is not None:
                    self.metrics.write(self.iter, "train", name if len(vals) == 1 else
                                       f"{name}[{k}]", v, lr=lr)

    def solve(self, resume_file: str | None = None) -> None:
        """Train to ``max_iter`` (Caffe's Solver::Solve), optionally resuming a .solverstate."""
        p = self.param
        log.info("Solving %s", self.net.name)
        log.info("Learning Rate Policy: %s", p.lr_policy)
        self.requested_early_exit = False
        if resume_file:
            log.info("Restoring previous solver status from %s", resume_file)
            self.restore(resume_file)
        start_iter = self.iter
        self.step(p.max_iter - self.iter)
        if self.requested_early_exit:
            # brewnet always snapshots on a stop request unless this iteration's snapshot exists
            # (Caffe, when snapshot_after_train, skips every multiple of `snapshot`, assuming one
            # was just written: not so at iteration 0, where a stop during the first test lands)
            if getattr(self, "_snapshotted_iter", None) != self.iter:
                self._write_snapshot()
            log.info("Optimization stopped early.")
            return
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self._write_snapshot()
        if self._display_due():
            # Caffe's extra TRAIN forward "to display the loss" also moves BatchNorm's running
            # statistics, after the snapshot and before the final test: that test then measures
            # statistics no file holds.  brewnet keeps them (a deliberate difference), so the
            # last logged test and the last snapshot describe the same net.
            with torch.no_grad(), self.net.frozen_statistics():
                loss, _ = self.net.forward_loss()
            loss = torch.zeros(()) if loss is None else loss.detach()
            if self.parallel is not None:
                loss = self.parallel.mean(loss)
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            sl = self._smoothed()
            log.info("Iteration %d, loss = %s", self.iter, caffe_float(sl))
            if self.metrics is not None:
                self.metrics.write(self.iter, "train", "smoothed_loss", sl,
                                   lr=learning_rate(p, self.iter, self.current_step)[0])
        if p.test_interval and self.iter % p.test_interval == 0:
            self._run_tests()
        log.info("Optimization Done.")

    # ----- mixed precision ---------------------------------------------------------------------
    def _grad_scaler(self):
        """PyTorch's GradScaler when the train net autocasts to float16 (gradients would
        underflow unscaled), else None.  Caffe's update runs on the unscaled gradients, through
        an adapter that gives GradScaler the optimizer interface it drives."""
        if self.net.autocast != torch.float16:
            return None
        if getattr(self, "_scaler", None) is None:
            self._scaler = torch.amp.GradScaler(self.net.device.type)
            self._scaled_update = ScaledUpdate(self)
        return self._scaler

