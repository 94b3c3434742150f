"""Solvers (pycaffe's ``caffe.SGDSolver`` ... ``caffe.AdamSolver``) with Caffe's exact semantics.

One ``step`` is Caffe's ``Solver::Step`` iteration: clear the parameter diffs, test when due,
forward/backward ``iter_size`` times (gradients accumulate; the displayed loss is their mean,
smoothed over ``average_loss`` iterations), then ``apply_update`` (Caffe's
``SGDSolver::ApplyUpdate``):

1. ``rate = lr_policy(iter)``
2. clip: if the global L2 norm of all parameter diffs exceeds ``clip_gradients``, scale them all
   by ``clip_gradients / norm``
3. normalise: diffs ÷ ``iter_size``
4. regularise: L2 ``g += weight_decay·decay_mult·w``; L1 ``g += weight_decay·decay_mult·sign(w)``
5. the solver's update value (the learning rate ``rate·lr_mult`` enters where Caffe puts it:
   inside SGD's momentum history, outside the other solvers' ratios)
6. ``w -= update``; then ``iter += 1`` (in ``step``, not in ``apply_update``, as in Caffe).

Histories are float32 tensors (the parameters' dtype) in Caffe's ``learnable_params_`` order
(``net.caffe_params``: BatchNorm statistics included, with lr 0 and Caffe's default decay_mult 1,
so ``.solverstate`` files are interchangeable with Caffe's); AdaDelta and Adam keep a second set
after the first, as Caffe does.  Updates run as vectorised ``torch._foreach_*`` operations over
groups of parameters sharing (lr_mult, decay_mult), in Caffe's order of floating-point operations.

Paths inside a solver file (``net``, ``train_net``, ``test_net``, ``weights``) are relative to the
working directory, as in Caffe; when such a file does not exist there but exists beside the
solver file, that one is used (and the log says so).  ``snapshot_prefix`` is relative to the
working directory, as in Caffe; when it is not given it is the solver file's path without its
extension, and when it names a directory the solver file's stem is appended (Caffe's
``UpgradeSnapshotPrefixProperty``).
"""
from __future__ import annotations

import logging
import math
import os
import time
from collections import OrderedDict

import numpy as np
import torch

from . import fileio, runtime
from .blob import push_host_writes
from .errors import SolverError
from .layers.loss import raise_deferred_label_errors
from .net import TEST, TRAIN, Net
from .proto import caffe_pb2

log = logging.getLogger("brewnet")

_f32 = np.float32


def f32(x) -> float:
    """Round to float32, as Caffe's ``Dtype`` arithmetic does, returned as a Python float."""
    return float(_f32(x))


# ------------------------------------------------------------------------------------------------
# Learning-rate policies (Caffe's SGDSolver::GetLearningRate, same float/double mix)
# ------------------------------------------------------------------------------------------------

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def learning_rate(param: caffe_pb2.SolverParameter, it: int, current_step: int = 0) -> tuple[float, int]:
    """(rate, current_step) at iteration ``it``.  ``current_step`` is the multistep state
    carried between calls (Caffe advances it by at most one step per call)."""
    policy = param.lr_policy
    base = float(param.base_lr)
    gamma = float(param.gamma)
    power = float(param.power)
    if policy == "fixed":
        rate = base
    elif policy == "step":
        if param.stepsize <= 0:
            raise SolverError("lr_policy 'step' needs a stepsize > 0")
        current_step = it // param.stepsize
        rate = f32(base * math.pow(gamma, current_step))
    elif policy == "exp":
        rate = f32(base * math.pow(gamma, it))
    elif policy == "inv":
        x = _f32(1) + _f32(gamma) * _f32(it)
        rate = float(_f32(base) * np.power(x, _f32(-power)))
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
            current_step += 1
        rate = f32(base * math.pow(gamma, current_step))
    elif policy == "poly":
        if param.max_iter <= 0:
            raise SolverError("lr_policy 'poly' needs max_iter > 0")
        x = _f32(1) - _f32(it) / _f32(param.max_iter)
        rate = float(_f32(base) * np.power(x, _f32(power)))
    elif policy == "sigmoid":
        x = -_f32(gamma) * (_f32(it) - _f32(param.stepsize))
        with np.errstate(over="ignore"):
            rate = float(_f32(base) * (_f32(1) / (_f32(1) + np.exp(x))))
    else:
        raise SolverError(f"unknown lr_policy '{policy}' (one of: {', '.join(LR_POLICIES)})"
                          if policy else "the solver gives no lr_policy "
                          f"(one of: {', '.join(LR_POLICIES)})")
    return rate, current_step


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------

def _fmt(v: float) -> str:
    """Caffe's ostream float formatting (6 significant digits)."""
    return f"{v:.6g}"


def resolve_path(path: str, base_dir: str | None, what: str) -> str:
    """``path`` relative to the working directory (Caffe); else beside the solver file."""
    if os.path.exists(path) or os.path.isabs(path) or not base_dir:
        return path
    alt = os.path.join(base_dir, path)
    if os.path.exists(alt):
        log.info("%s '%s' is not in the working directory; using %s (beside the solver file)",
                 what, path, alt)
        return alt
    return path


def _read_net_file(path: str, base_dir: str | None, what: str) -> caffe_pb2.NetParameter:
    p = resolve_path(path, base_dir, what)
    if not os.path.exists(p):
        where = f" (nor beside the solver file in {base_dir})" if base_dir else ""
        raise SolverError(f"{what} '{path}' not found in the working directory {os.getcwd()}{where}")
    return fileio.read_net(p)


def _device_of(device) -> torch.device:
    return torch.device(device if device is not None else runtime.default_device())


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


class _Group:
    """Parameters sharing (lr_mult, decay_mult): updated by one run of foreach operations."""

    __slots__ = ("entries", "params", "hist", "hist2", "lr_mult", "decay_mult", "active", "zero_grads")

    def __init__(self, lr_mult, decay_mult, active):
        self.lr_mult, self.decay_mult, self.active = lr_mult, decay_mult, active
        self.entries, self.params, self.hist, self.hist2 = [], [], [], []
        self.zero_grads: list[torch.Tensor] | None = None


# ------------------------------------------------------------------------------------------------
# Solver
# ------------------------------------------------------------------------------------------------

class Solver:
    """Caffe's Solver + SGDSolver machinery; subclasses give the update value."""

    type_name = "SGD"
    num_history = 1  # history blobs per parameter

    def __init__(self, solver, device=None, weights=None, param: caffe_pb2.SolverParameter | None = None):
        """``solver``: a solver prototxt path or a SolverParameter.  ``param`` (with a path)
        replaces the file's contents (e.g. edited by command-line flags) while paths stay
        relative to the file.  ``weights``: caffemodel path(s) to fine-tune from."""
        if param is not None:
            param = fileio.upgrade_solver(param)
            self.solver_file = os.fspath(solver)
            base_dir = os.path.dirname(os.path.abspath(self.solver_file))
        elif isinstance(solver, caffe_pb2.SolverParameter):
            param = fileio.upgrade_solver(solver)
            self.solver_file = None
            base_dir = None
        else:
            path = os.fspath(solver)
            if not os.path.exists(path):
                raise SolverError(f"solver file not found: {path}")
            param = fileio.read_solver(path)
            self.solver_file = path
            base_dir = os.path.dirname(os.path.abspath(path))
        self.base_dir = base_dir
        if param.type and param.type != self.type_name and type(self) is not Solver:
            log.info("solver file says type '%s'; using %s as asked", param.type, self.type_name)
        self.param = param
        _upgrade_snapshot_prefix(param, self.solver_file)
        self._check_param()
        self.device = _device_of(device)
        if param.random_seed >= 0:
            runtime.set_random_seed(int(param.random_seed))
        self.iter = 0
        self.current_step = 0
        self.requested_early_exit = False
        self._action_fn = None
        self.metrics = None        # a MetricsWriter, set by `brewnet train`
        self.progress = None       # callable(iter, start, stop), set by `brewnet train`
        self._losses: list = []
        self.smoothed_loss = 0.0
        self._last_lr = None
        self.last_test_scores: list[OrderedDict] = []
        #: precise BatchNorm before tests and snapshots (see recalibrate_batchnorm); 0 = Caffe's
        self.bn_recalibrate = 0
        #: with bn_recalibrate: also test with the moving averages first (phase "test_moving_bn")
        self.bn_compare = True
        self._recalibrated_at = -1
        self._moving_bn_stats = None  # (iteration, statistics) replaced by the last re-estimation
        self.last_moving_bn_scores: list[OrderedDict] = []
        self._callbacks: list[tuple] = []  # pycaffe's add_callback: (on_start, on_gradients_ready)
        self._init_train_net()
        self._init_test_nets()
        for w in param.weights:
            self.copy_weights(resolve_path(w, base_dir, "weights"))
        if weights:
            for w in ([weights] if isinstance(weights, str) else weights):
                self.copy_weights(w)
        self._init_history()

    # ----- construction --------------------------------------------------------------------
    def _check_param(self) -> None:
        p = self.param
        if p.iter_size < 1:
            raise SolverError(f"iter_size must be at least 1, got {p.iter_size}")
        if p.average_loss < 1:
            raise SolverError(f"average_loss must be at least 1, got {p.average_loss}")
        if p.regularization_type not in ("L1", "L2"):
            raise SolverError(f"unknown regularization_type '{p.regularization_type}' (L1 or L2)")
        learning_rate(p, 0)  # policy problems now, not at the first update

    def _init_train_net(self) -> None:
        p = self.param
        given = [f for f in ("train_net_param", "train_net", "net_param", "net") if p.HasField(f)]
        if len(given) != 1:
            raise SolverError("a solver needs exactly one training net: give one of net, net_param, "
                              "train_net or train_net_param" + (f" (got {', '.join(given)})" if given else ""))
        field = given[0]
        if field.endswith("_param"):
            net_param = fileio.upgrade_net(getattr(p, field))
            log.info("Creating training net specified in %s.", field)
        else:
            net_param = _read_net_file(getattr(p, field), self.base_dir, f"{field} file")
            log.info("Creating training net from %s file: %s", field, getattr(p, field))
        state = caffe_pb2.NetState()
        state.phase = TRAIN
        state.MergeFrom(net_param.state)
        state.MergeFrom(p.train_state)
        net_param.state.CopyFrom(state)
        self.net = Net(net_param, device=self.device)

    def _init_test_nets(self) -> None:
        p = self.param
        generic = int(p.HasField("net_param")) + int(p.HasField("net"))
        n_specific = len(p.test_net_param) + len(p.test_net)
        if generic:
            if len(p.test_iter) < n_specific:
                raise SolverError("test_iter must be specified for each test network")
        elif len(p.test_iter) != n_specific:
            raise SolverError(f"test_iter must be specified for each test network "
                              f"({len(p.test_iter)} test_iter for {n_specific} test nets)")
        n_instances = len(p.test_iter) if generic else n_specific
        if p.test_state and len(p.test_state) != n_instances:
            raise SolverError("test_state must be unspecified or specified once per test net")
        if n_instances and p.test_interval <= 0:
            log.warning("test nets are defined but test_interval is 0: they run only when asked "
                        "(Caffe requires test_interval > 0)")
        sources, params = [], []
        for tp in p.test_net_param:
            sources.append("test_net_param")
            params.append(fileio.upgrade_net(tp))
        for tn in p.test_net:
            sources.append(f"test_net file: {tn}")
            params.append(_read_net_file(tn, self.base_dir, "test_net file"))
        remaining = len(p.test_iter) - len(params)
        if p.HasField("net_param"):
            for _ in range(remaining):
                sources.append("net_param")
                params.append(fileio.upgrade_net(p.net_param))
        if p.HasField("net"):
            for _ in range(remaining):
                sources.append(f"net file: {p.net}")
                params.append(self.net_param_copy())
        self.test_nets: list[Net] = []
        for i, np_ in enumerate(params):
            state = caffe_pb2.NetState()
            state.phase = TEST
            state.MergeFrom(np_.state)
            if p.test_state:
                state.MergeFrom(p.test_state[i])
            np_.state.CopyFrom(state)
            log.info("Creating test net (#%d) specified by %s", i, sources[i])
            net = Net(np_, device=self.device)
            net.share_with(self.net)
            self.test_nets.append(net)

    def net_param_copy(self) -> caffe_pb2.NetParameter:
        if not hasattr(self, "_generic_net_param"):
            self._generic_net_param = _read_net_file(self.param.net, self.base_dir, "net file")
        out = caffe_pb2.NetParameter()
        out.CopyFrom(self._generic_net_param)
        return out

    def _init_history(self) -> None:
        """History tensors per caffe_params entry, and update groups."""
        entries = self.net.caffe_params
        self._entries = entries
        self.history: list[torch.Tensor] = [torch.zeros_like(e.tensor, memory_format=torch.contiguous_format)
                                            for _ in range(self.num_history) for e in entries]
        n = len(entries)
        groups: dict[tuple, _Group] = {}
        for i, e in enumerate(entries):
            active = e.learnable and e.lr_mult != 0 and e.tensor.requires_grad
            if e.learnable:
                lr_mult, decay_mult = e.lr_mult, e.decay_mult
            else:  # statistics: Caffe gives them lr 0 and (unless the prototxt's param block
                # says otherwise) the default decay_mult 1, which feeds adaptive histories
                specs = e.layer.param.param
                lr_mult = 0.0
                decay_mult = float(specs[e.index].decay_mult) if e.index < len(specs) else 1.0
            key = (active, lr_mult, decay_mult)
            g = groups.get(key)
            if g is None:
                g = groups[key] = _Group(lr_mult, decay_mult, active)
            g.entries.append(e)
            g.hist.append(self.history[i])
            if self.num_history > 1:
                g.hist2.append(self.history[n + i])
        self._groups = list(groups.values())
        self._active = [g for g in self._groups if g.active]
        self._passive = [g for g in self._groups if not g.active]
        self._refresh_params()

    def _refresh_params(self) -> None:
        """Re-read parameter tensors (after sharing or device moves replaced them)."""
        for g in self._groups:
            g.params = [e.tensor for e in g.entries]

    def _passive_needed(self) -> bool:
        """Whether lr-0 entries (statistics, frozen blobs) change anything this update.

        With zero history and zero diffs their update is exactly zero and, unless weight decay
        feeds an adaptive history, their history stays zero: skipping them is then exact.
        """
        if not self._passive:
            return False
        if any(p.grad is not None for g in self._passive for p in g.params):
            return True
        wd = self.param.weight_decay
        if wd and self.adaptive and any(g.decay_mult for g in self._passive):
            return True
        if not hasattr(self, "_passive_dirty"):
            self._passive_dirty = False
        return self._passive_dirty

    adaptive = False

    def copy_weights(self, path: str) -> None:
        """Fine-tune from a caffemodel (train and test nets), like ``caffe train -weights``."""
        if not os.path.exists(path):
            raise SolverError(f"weights file not found: {path}")
        log.info("Finetuning from %s", path)
        self.net.copy_from(path)
        for t in self.test_nets:
            t.copy_from(path)
            t.share_with(self.net)

    # ----- the training loop ---------------------------------------------------------------
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
                self.test_all()
                if self.requested_early_exit:
                    break
            display = self._display_due()
            loss = None
            scaler = self._grad_scaler()
            for cb in self._callbacks:
                cb[0]()
            for _ in range(iter_size):
                l, _ = net.forward_loss()
                if l is not None:
                    if l.requires_grad:
                        layers = range(len(net.layers) - 1, -1, -1)
                        net._run_callbacks("before_backward", layers)
                        (l if scaler is None else scaler.scale(l)).backward()
                        net._run_callbacks("after_backward", layers)
                    l = l.detach()
                    loss = l if loss is None else loss + l
            if loss is None:
                loss_t = torch.zeros(())
            else:
                loss_t = loss / iter_size if iter_size > 1 else loss
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
            if scaler is None:
                self.apply_update()
            else:  # float16 autocast: unscale, skip the update if a gradient overflowed
                scaler.step(self._scaled_update)
                scaler.update()
            self.iter += 1
            if self.progress is not None:
                self.progress(self.iter, start_iter, stop_iter)
            request = self._requested_action()
            if (p.snapshot and self.iter % p.snapshot == 0) or request == "snapshot":
                self.snapshot()
            if request == "stop":
                self.requested_early_exit = True
                break
        raise_deferred_label_errors()

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
            vals = torch.stack([l.reshape(()).float().cpu() for l in self._losses]).tolist()
            self.smoothed_loss = float(np.mean(np.asarray(vals, dtype=np.float64)))
        return self.smoothed_loss

    @property
    def loss(self) -> float:
        """The smoothed training loss (what the log displays)."""
        return self._smoothed()

    def _display(self, outputs, per_s, lapse) -> None:
        loss = self._smoothed()
        log.info("Iteration %d (%s iter/s, %ss/%d iters), loss = %s", self.iter, _fmt(per_s),
                 _fmt(lapse), self.param.display, _fmt(loss))
        lr, _ = learning_rate(self.param, self.iter, self.current_step)
        if self.metrics is not None:
            self.metrics.write(self.iter, "train", "smoothed_loss", loss, lr=lr)
        score_index = 0
        for name in outputs:
            w = self.net.blob_loss_weights.get(name, 0.0)
            vals = self.net.blobs[name]._tensor.detach().reshape(-1).float().cpu().tolist()
            for k, v in enumerate(vals):
                extra = f" (* {_fmt(w)} = {_fmt(w * v)} loss)" if w else ""
                log.info("    Train net output #%d: %s = %s%s", score_index, name, _fmt(v), extra)
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
                self.snapshot()
            log.info("Optimization stopped early.")
            return
        if p.snapshot_after_train and (not p.snapshot or self.iter % p.snapshot != 0):
            self.snapshot()
        if self._display_due():
            with torch.no_grad():
                loss, _ = self.net.forward_loss()
            loss = torch.zeros(()) if loss is None else loss.detach()
            self._update_smoothed_loss(loss, start_iter, p.average_loss)
            sl = self._smoothed()
            log.info("Iteration %d, loss = %s", self.iter, _fmt(sl))
            if self.metrics is not None:
                self.metrics.write(self.iter, "train", "smoothed_loss", sl,
                                   lr=learning_rate(p, self.iter, self.current_step)[0])
        if p.test_interval and self.iter % p.test_interval == 0:
            self.test_all()
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
            self._scaled_update = _ScaledUpdate(self)
        return self._scaler

    # ----- testing ---------------------------------------------------------------------------
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
                loss, outs = net.forward_loss(outputs=net.outputs)
                vals = [outs[n].detach().reshape(-1).float() for n in net.outputs]
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
            log.info("Test loss: %s", _fmt(tl))
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
                    ex = f" (* {_fmt(w)} = {_fmt(w * mean)} loss)" if w else ""
                    log.info("    Test net output #%d: %s = %s%s", idx, name, _fmt(mean), ex)
                    idx += 1
                    if self.metrics is not None:
                        self.metrics.write(self.iter, phase, key, mean, lr=lr, **extra)
        return scores

    # ----- the update --------------------------------------------------------------------------
    def get_learning_rate(self) -> float:
        """The rate for this iteration; advances the multistep state as Caffe does."""
        rate, step = learning_rate(self.param, self.iter, self.current_step)
        if self.param.lr_policy == "multistep" and step != self.current_step:
            log.info("MultiStep Status: Iteration %d, step = %d", self.iter, step)
        self.current_step = step
        return rate

    def apply_update(self) -> None:
        """Caffe's SGDSolver::ApplyUpdate on the current parameter diffs (does not advance iter)."""
        push_host_writes()
        with torch.no_grad():
            self._apply_update()

    def _apply_update(self) -> None:
        rate = self.get_learning_rate()
        self._last_lr = rate
        if self._display_due():
            log.info("Iteration %d, lr = %s", self.iter, _fmt(rate))
            if self.metrics is not None:
                self.metrics.write(self.iter, "train", "lr", rate, lr=rate)
        groups = list(self._active)
        if self._passive_needed():
            for g in self._passive:
                if g.zero_grads is None:
                    g.zero_grads = [torch.zeros_like(p) for p in g.params]
                else:
                    torch._foreach_zero_(g.zero_grads)
            groups += self._passive
        grads_per_group = []
        for g in groups:
            gs = []
            for j, p in enumerate(g.params):
                gr = p.grad
                if gr is None:
                    if g.active:
                        gr = p.grad = torch.zeros_like(p)
                    else:
                        gr = g.zero_grads[j]
                gs.append(gr)
            grads_per_group.append(gs)
        all_grads = [t for gs in grads_per_group for t in gs]
        # clip
        clip = self.param.clip_gradients
        if clip >= 0 and all_grads:
            norms = torch._foreach_norm(all_grads)
            sumsq = torch.stack([n.float() for n in norms]).square().sum()
            scale = torch.clamp(torch.tensor(clip, dtype=sumsq.dtype, device=sumsq.device) / sumsq.sqrt(), max=1.0)
            torch._foreach_mul_(all_grads, scale.to(all_grads[0].dtype))
        # normalise
        iter_size = self.param.iter_size
        if iter_size > 1 and all_grads:
            torch._foreach_mul_(all_grads, f32(1.0 / iter_size))
        wd = float(self.param.weight_decay)
        l1 = self.param.regularization_type == "L1"
        for g, gs in zip(groups, grads_per_group):
            if not gs:
                continue
            local_decay = f32(wd * g.decay_mult)
            if local_decay:
                if l1:
                    torch._foreach_add_(gs, torch._foreach_sign(g.params), alpha=local_decay)
                else:
                    torch._foreach_add_(gs, g.params, alpha=local_decay)
            local_rate = f32(rate * g.lr_mult)
            update = self.compute_update_value(g, gs, local_rate)
            torch._foreach_sub_(g.params, update)

    def compute_update_value(self, g: _Group, grads, local_rate: float):
        """Return the update tensors (``w -= update``); may update ``grads`` in place."""
        raise NotImplementedError

    # ----- snapshots ---------------------------------------------------------------------------
    def snapshot_filename(self, ext: str) -> str:
        return f"{self.param.snapshot_prefix}_iter_{self.iter}{ext}"

    def snapshot(self) -> tuple[str, str]:
        """Write ``<prefix>_iter_<N>.caffemodel`` and ``.solverstate`` (atomically)."""
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
        fileio.write_caffemodel(self.net.to_proto(write_diff=p.snapshot_diff), model)
        state_file = self.snapshot_filename(".solverstate")
        log.info("Snapshotting solver state to binary proto file %s", state_file)
        state = caffe_pb2.SolverState()
        state.iter = self.iter
        state.learned_net = model
        state.current_step = self.current_step
        for h in self.history:
            fileio.array_to_blob(h.detach().to("cpu", torch.float32).numpy(), state.history.add())
        fileio.write_binary(state, state_file)
        self._snapshotted_iter = self.iter
        return model, state_file

    def restore(self, path: str) -> None:
        """Resume from a ``.solverstate`` written by Caffe or brewnet (weights from learned_net)."""
        path = os.fspath(path)
        if path.endswith(".h5"):
            raise SolverError(f"{path}: HDF5 solver states are not supported (use .solverstate)")
        if not os.path.exists(path):
            raise SolverError(f"solver state not found: {path}")
        state = fileio.read_binary(path, caffe_pb2.SolverState)
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
            a = fileio.blob_to_array(b)
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

    # ----- misc pycaffe surface ------------------------------------------------------------------
    @property
    def type(self) -> str:
        return self.type_name

    def share_weights(self, net: Net) -> None:
        net.share_with(self.net)

    @property
    def lr(self) -> float:
        """The learning rate at the current iteration (pycaffe's SGDSolver.lr)."""
        return learning_rate(self.param, self.iter, self.current_step)[0]

    def add_callback(self, on_start, on_gradients_ready) -> None:
        """pycaffe's Solver.add_callback: ``on_start()`` at the start of every iteration (after
        any test), ``on_gradients_ready()`` once its gradients are computed, before the update."""
        if not (callable(on_start) and callable(on_gradients_ready)):
            raise TypeError("add_callback(on_start, on_gradients_ready): both must be callable")
        self._callbacks.append((on_start, on_gradients_ready))

    def __repr__(self) -> str:
        return f"<brewnet.{type(self).__name__} net='{self.net.name}' iter={self.iter}>"


def _upgrade_snapshot_prefix(param, solver_file: str | None) -> None:
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


# ------------------------------------------------------------------------------------------------
# Update rules
# ------------------------------------------------------------------------------------------------

class _ScaledUpdate:
    """What torch.amp.GradScaler needs of an optimizer: ``param_groups`` (the learnable blobs,
    whose gradients it unscales and checks) and ``step`` (Caffe's ApplyUpdate, which it skips
    when a gradient is inf or NaN)."""

    def __init__(self, solver: "Solver"):
        self.solver = solver
        self.param_groups = [{"params": [e.tensor for e in solver.net.learnable]}]

    def step(self, *args, **kwargs) -> None:
        self.solver.apply_update()


class SGDSolver(Solver):
    """``v = momentum·v + lr·lr_mult·g``; ``w -= v`` (the learning rate lives in the history)."""

    type_name = "SGD"

    def compute_update_value(self, g, grads, local_rate):
        m = float(self.param.momentum)
        torch._foreach_mul_(g.hist, m)
        torch._foreach_add_(g.hist, grads, alpha=local_rate)
        return g.hist


class NesterovSolver(Solver):
    """``v_new = m·v + lr·g``; ``update = (1+m)·v_new − m·v_old``."""

    type_name = "Nesterov"

    def compute_update_value(self, g, grads, local_rate):
        m = float(self.param.momentum)
        update = torch._foreach_mul(g.hist, -m)      # −m·v_old
        torch._foreach_mul_(g.hist, m)
        torch._foreach_add_(g.hist, grads, alpha=local_rate)
        torch._foreach_add_(update, g.hist, alpha=f32(1.0 + m))
        return update


def _rms_scaled(grads, hist, delta: float, local_rate: float):
    """AdaGrad's and RMSProp's update: lr · g / (sqrt(h) + delta), in Caffe's order."""
    upd = torch._foreach_sqrt(hist)
    torch._foreach_add_(upd, delta)
    upd = torch._foreach_div(grads, upd)
    torch._foreach_mul_(upd, local_rate)
    return upd


class AdaGradSolver(Solver):
    """``h += g²``; ``update = lr·g/(sqrt(h)+delta)``."""

    type_name = "AdaGrad"
    adaptive = True

    def _check_param(self):
        super()._check_param()
        if self.param.momentum != 0:
            raise SolverError("momentum cannot be used with AdaGrad (set momentum: 0)")

    def compute_update_value(self, g, grads, local_rate):
        torch._foreach_add_(g.hist, torch._foreach_mul(grads, grads))
        return _rms_scaled(grads, g.hist, float(self.param.delta), local_rate)


class RMSPropSolver(Solver):
    """``h = d·h + (1−d)·g²``; ``update = lr·g/(sqrt(h)+delta)``."""

    type_name = "RMSProp"
    adaptive = True

    def _check_param(self):
        super()._check_param()
        if self.param.momentum != 0:
            raise SolverError("momentum cannot be used with RMSProp (set momentum: 0)")
        if not 0 <= self.param.rms_decay < 1:
            raise SolverError(f"rms_decay must be in [0, 1), got {self.param.rms_decay}")

    def compute_update_value(self, g, grads, local_rate):
        d = float(self.param.rms_decay)
        sq = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(g.hist, d)
        torch._foreach_add_(g.hist, sq, alpha=f32(1.0 - d))
        return _rms_scaled(grads, g.hist, float(self.param.delta), local_rate)


class AdaDeltaSolver(Solver):
    """``h1 = m·h1 + (1−m)·g²``; ``u = g·sqrt((h2+δ)/(h1+δ))``; ``h2 = m·h2 + (1−m)·u²``;
    ``update = lr·lr_mult·u``."""

    type_name = "AdaDelta"
    num_history = 2
    adaptive = True

    def compute_update_value(self, g, grads, local_rate):
        m = float(self.param.momentum)
        delta = float(self.param.delta)
        one_m = f32(1.0 - m)
        sq = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(g.hist, m)
        torch._foreach_add_(g.hist, sq, alpha=one_m)
        num = torch._foreach_add(g.hist2, delta)
        den = torch._foreach_add(g.hist, delta)
        torch._foreach_div_(num, den)
        torch._foreach_sqrt_(num)
        torch._foreach_mul_(grads, num)           # the diff becomes the update, as in Caffe
        sq = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(g.hist2, m)
        torch._foreach_add_(g.hist2, sq, alpha=one_m)
        torch._foreach_mul_(grads, local_rate)
        return grads


class AdamSolver(Solver):
    """``m = β1·m + (1−β1)·g``; ``v = β2·v + (1−β2)·g²``;
    ``update = lr·lr_mult·sqrt(1−β2^t)/(1−β1^t)·m/(sqrt(v)+ε)`` with t = iter + 1."""

    type_name = "Adam"
    num_history = 2
    adaptive = True

    def compute_update_value(self, g, grads, local_rate):
        b1 = float(self.param.momentum)
        b2 = float(self.param.momentum2)
        t = self.iter + 1
        correction = f32(math.sqrt(1.0 - math.pow(b2, t)) / (1.0 - math.pow(b1, t)))
        torch._foreach_mul_(g.hist, b1)
        torch._foreach_add_(g.hist, grads, alpha=f32(1.0 - b1))
        sq = torch._foreach_mul(grads, grads)
        torch._foreach_mul_(g.hist2, b2)
        torch._foreach_add_(g.hist2, sq, alpha=f32(1.0 - b2))
        upd = torch._foreach_sqrt(g.hist2)
        torch._foreach_add_(upd, float(self.param.delta))
        upd = torch._foreach_div(g.hist, upd)
        torch._foreach_mul_(upd, f32(local_rate * correction))
        return upd


SOLVERS = {c.type_name: c for c in (SGDSolver, NesterovSolver, AdaGradSolver, RMSPropSolver,
                                    AdaDeltaSolver, AdamSolver)}


def solver_class(type_name: str) -> type[Solver]:
    try:
        return SOLVERS[type_name]
    except KeyError:
        raise SolverError(f"unknown solver type '{type_name}' (one of: {', '.join(SOLVERS)})") from None


def get_solver(path, device=None, **kwargs) -> Solver:
    """A solver of the type the file names (pycaffe's ``caffe.get_solver``)."""
    if isinstance(path, caffe_pb2.SolverParameter):
        param = fileio.upgrade_solver(path)
    else:
        if not os.path.exists(os.fspath(path)):
            raise SolverError(f"solver file not found: {path}")
        param = fileio.read_solver(path)
    return solver_class(param.type or "SGD")(path, device=device, **kwargs)
