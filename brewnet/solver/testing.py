"""Test phases and precise BatchNorm: ``test_all``/``test`` (Caffe's TestAll/Test, with
``test_moving_bn`` scores when BatchNorm statistics are re-estimated) and
``recalibrate_batchnorm``."""
from __future__ import annotations

import logging
from collections import OrderedDict

import torch

from ..blob import push_host_writes
from ..layers.loss import raise_deferred_label_errors
from ..reporting.caffe_log import caffe_float
from .lr_policies import learning_rate
from .task_metrics import trackers_for

log = logging.getLogger("brewnet")


def _bn_statistics(bn) -> tuple:
    """A copy of a BatchNorm layer's statistics (running mean and variance, BVLC's factor,
    NVCaffe's average weight), for Solver.test_all's run with the moving averages."""
    factor = getattr(bn, "factor", None)
    return (bn.running_mean.detach().clone(), bn.running_var.detach().clone(),
            None if factor is None else factor.detach().clone(), getattr(bn, "weight_sum", None))


def _set_bn_statistics(bns, stats) -> None:
    """Copy statistics from :func:`_bn_statistics` back in place (test nets share the tensors)."""
    with torch.no_grad():
        for bn, (mean, var, factor, weight_sum) in zip(bns, stats):
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            if factor is not None:
                bn.factor.copy_(factor)
            if weight_sum is not None:
                bn.weight_sum = weight_sum



class Testing:
    """Test phases of :class:`brewnet.solver.Solver` (a mixin)."""

    def recalibrate_batchnorm(self) -> None:
        """Precise BatchNorm (off unless ``bn_recalibrate`` > 0): before testing and snapshotting,
        replace the running statistics by the average over ``bn_recalibrate`` training batches
        under the current weights.  Caffe's moving average (maf .999 spans about 1000
        iterations) lags weights that change fast, e.g. at a high learning rate; TRAIN passes do
        not read the statistics, so training itself is unchanged, but the train net's data
        layers supply those batches."""
        if self.bn_recalibrate <= 0 or self._recalibrated_at == self.iter:
            return
        push_host_writes()
        bns = self._recalibrated_layers()
        if not bns:
            return
        if self.bn_compare:  # a test at this iteration still reports the moving averages
            self._moving_bn_stats = (self.iter, [_bn_statistics(bn) for bn in bns])
        for bn in bns:
            bn.begin_recalibration()
        try:
            with torch.no_grad():
                for _ in range(self.bn_recalibrate):
                    self.net.forward_loss()
        finally:
            for bn in bns:
                bn.end_recalibration()
        self._recalibrated_at = self.iter
        log.info("Iteration %d, BatchNorm statistics re-estimated over %d batches (%d layers)",
                 self.iter, self.bn_recalibrate, len(bns))

    def _recalibrated_layers(self) -> list:
        """The train net's BatchNorm layers whose statistics precise BN re-estimates."""
        return [layer for layer in self.net.layers if layer.type == "BatchNorm" and not layer.use_global_stats]

    def test_all(self) -> list[OrderedDict]:
        """Run every test net; returns (and keeps in ``last_test_scores``) their scores.

        With ``bn_recalibrate`` > 0 the BatchNorm statistics are re-estimated first; with
        ``bn_compare`` (the default) the test nets also run, before that, with the statistics
        as they stood (Caffe's moving averages), written to the metrics as phase
        ``"test_moving_bn"`` and kept in ``last_moving_bn_scores``: both numbers, so the
        effect of precise BN is visible at every test.  A snapshot at this iteration may have
        re-estimated them already; the moving averages it replaced are then put back for that
        run and restored afterwards."""
        self.last_moving_bn_scores = []
        bns = self._recalibrated_layers() if self.bn_recalibrate > 0 and self.bn_compare else []
        if bns:
            if self._recalibrated_at != self.iter:
                self.last_moving_bn_scores = self._test_nets("test_moving_bn")
            elif self._moving_bn_stats is not None and self._moving_bn_stats[0] == self.iter:
                now = [_bn_statistics(bn) for bn in bns]
                _set_bn_statistics(bns, self._moving_bn_stats[1])
                try:
                    self.last_moving_bn_scores = self._test_nets("test_moving_bn")
                finally:
                    _set_bn_statistics(bns, now)
        self.recalibrate_batchnorm()
        self.last_test_scores = self._test_nets("test")
        return self.last_test_scores

    def _test_nets(self, phase: str) -> list[OrderedDict]:
        scores = []
        for i in range(len(self.test_nets)):
            if self.requested_early_exit:
                break
            scores.append(self.test(i, phase=phase))
        return scores

    def test(self, test_net_id: int = 0, phase: str = "test") -> OrderedDict:
        """Run test net ``test_net_id`` for its test_iter batches; return {output: mean}.
        ``phase``: the metrics records' phase ("test", or "test_moving_bn" for test_all's run
        with BatchNorm's moving averages before precise BN re-estimates them)."""
        p = self.param
        if phase == "test_moving_bn":
            log.info("Iteration %d, Testing net (#%d) with BatchNorm's moving averages "
                     "(before re-estimating them)", self.iter, test_net_id)
        elif self.bn_recalibrate > 0 and self._recalibrated_at == self.iter:
            log.info("Iteration %d, Testing net (#%d) with re-estimated BatchNorm statistics",
                     self.iter, test_net_id)
        else:
            log.info("Iteration %d, Testing net (#%d)", self.iter, test_net_id)
        net = self.test_nets[test_net_id]
        net.share_with(self.net)
        n_iter = p.test_iter[test_net_id] if test_net_id < len(p.test_iter) else 0
        sums: list[torch.Tensor] | None = None
        loss_sum = None
        # segmentation / regression metrics over all batches (off with -task_metrics none)
        trackers = trackers_for(net) if self.task_metrics != "none" else []
        wanted = list(dict.fromkeys(list(net.outputs) + [b for t in trackers for b in t.bottoms]))
        with torch.no_grad():
            for i in range(n_iter):
                request = self._requested_action()
                while request != "none":
                    if request == "snapshot":
                        self.snapshot()
                    elif request == "stop":
                        self.requested_early_exit = True
                    request = self._requested_action()
                if self.requested_early_exit:
                    break
                loss, outs = net.forward_loss(outputs=wanted)
                vals = [outs[n].detach().reshape(-1).float() for n in net.outputs]
                for t in trackers:
                    t.update(outs[t.bottoms[0]], outs[t.bottoms[1]])
                if p.test_compute_loss and loss is not None:
                    loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
                if sums is None:
                    sums = [v.clone() for v in vals]
                else:
                    for s, v in zip(sums, vals):
                        s.add_(v)
        raise_deferred_label_errors()
        if self.requested_early_exit:
            log.info("Test interrupted.")
            return OrderedDict()
        lr = learning_rate(p, self.iter, self.current_step)[0]
        extra = {"test_net": test_net_id} if test_net_id else {}
        if p.test_compute_loss:
            tl = float(loss_sum) / n_iter if loss_sum is not None and n_iter else 0.0
            log.info("Test loss: %s", caffe_float(tl))
            if self.metrics is not None:
                self.metrics.write(self.iter, phase, "test_loss", tl, lr=lr, **extra)
        scores: OrderedDict = OrderedDict()
        idx = 0
        if sums is not None:
            for name, s in zip(net.outputs, sums):
                w = net.blob_loss_weights.get(name, 0.0)
                vals = (s.cpu().double() / n_iter).tolist()
                for k, mean in enumerate(vals):
                    key = name if len(vals) == 1 else f"{name}[{k}]"
                    scores[key] = mean
                    ex = f" (* {caffe_float(w)} = {caffe_float(w * mean)} loss)" if w else ""
                    log.info("    Test net output #%d: %s = %s%s", idx, name, caffe_float(mean), ex)
                    idx += 1
                    if self.metrics is not None:
                        self.metrics.write(self.iter, phase, key, mean, lr=lr, **extra)
        task: dict[str, float] = {}
        for t in trackers:
            task.update(t.result())
        for name, value in task.items():
            log.info("    Test net metric: %s = %s", name, caffe_float(value))
            if self.metrics is not None:
                self.metrics.write(self.iter, phase, name, value, lr=lr, **extra)
        self.last_task_metrics = task
        return scores

