"""The Solver: construction from a solver file (train and test nets, histories, update groups),
composed of the loop, testing, update and snapshot mixins, and pycaffe's Solver surface."""
from __future__ import annotations

import logging
import os
from collections import OrderedDict

import torch

from .. import formats, runtime
from ..errors import SolverError
from ..net import TEST, TRAIN, Net
from ..proto import caffe_pb2
from .loop import TrainingLoop
from .lr_policies import learning_rate
from .snapshots import Snapshots, upgrade_snapshot_prefix
from .testing import Testing
from .update import ParameterUpdate, ParamGroup

log = logging.getLogger("brewnet")


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
    return formats.read_net(p)


def _device_of(device) -> torch.device:
    return torch.device(device if device is not None else runtime.default_device())



class Solver(TrainingLoop, Testing, ParameterUpdate, Snapshots):
    """Caffe's Solver + SGDSolver machinery; subclasses give the update value."""

    type_name = "SGD"
    num_history = 1  # history blobs per parameter

    def __init__(self, solver, device=None, weights=None, param: caffe_pb2.SolverParameter | None = None):
        """``solver``: a solver prototxt path or a SolverParameter.  ``param`` (with a path)
        replaces the file's contents (e.g. edited by command-line flags) while paths stay
        relative to the file.  ``weights``: caffemodel path(s) to fine-tune from."""
        if param is not None:
            param = formats.upgrade_solver(param)
            self.solver_file = os.fspath(solver)
            base_dir = os.path.dirname(os.path.abspath(self.solver_file))
        elif isinstance(solver, caffe_pb2.SolverParameter):
            param = formats.upgrade_solver(solver)
            self.solver_file = None
            base_dir = None
        else:
            path = os.fspath(solver)
            if not os.path.exists(path):
                raise SolverError(f"solver file not found: {path}")
            param = formats.read_solver(path)
            self.solver_file = path
            base_dir = os.path.dirname(os.path.abspath(path))
        self.base_dir = base_dir
        if param.type and param.type != self.type_name and type(self) is not Solver:
            log.info("solver file says type '%s'; using %s as asked", param.type, self.type_name)
        self.param = param
        upgrade_snapshot_prefix(param, self.solver_file)
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
        #: "auto": Solver.test computes segmentation/regression metrics (solver/task_metrics.py),
        #: "none": not; the last test's are in last_task_metrics (name -> value)
        self.task_metrics = "auto"
        self.last_task_metrics: dict[str, float] = {}
        #: precise BatchNorm before tests and snapshots (see recalibrate_batchnorm); 0 = Caffe's
        self.bn_recalibrate = 0
        #: with bn_recalibrate: also test with the moving averages first (phase "test_moving_bn")
        self.bn_compare = True
        self._recalibrated_at = -1
        self._moving_bn_stats = None  # (iteration, statistics) replaced by the last re-estimation
        self.last_moving_bn_scores: list[OrderedDict] = []
        self._callbacks: list[tuple] = []  # pycaffe's add_callback: (on_start, on_gradients_ready)
        #: data-parallel training across processes (brewnet.solver.distributed), or None
        self.parallel = None
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
            net_param = formats.upgrade_net(getattr(p, field))
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
            params.append(formats.upgrade_net(tp))
        for tn in p.test_net:
            sources.append(f"test_net file: {tn}")
            params.append(_read_net_file(tn, self.base_dir, "test_net file"))
        remaining = len(p.test_iter) - len(params)
        if p.HasField("net_param"):
            for _ in range(remaining):
                sources.append("net_param")
                params.append(formats.upgrade_net(p.net_param))
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
        groups: dict[tuple, ParamGroup] = {}
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
                g = groups[key] = ParamGroup(lr_mult, decay_mult, active)
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

    def add_callback(self, on_start, on_gradients_ready=None) -> None:
        """pycaffe's Solver.add_callback: ``on_start()`` at the start of every iteration (after
        any test), ``on_gradients_ready()`` once its gradients are computed, before the update.
        One argument: an object with both methods (``caffe.NCCL``, as Caffe's C++ overload)."""
        if on_gradients_ready is None and hasattr(on_start, "on_gradients_ready"):
            on_start, on_gradients_ready = on_start.on_start, on_start.on_gradients_ready
        if not (callable(on_start) and callable(on_gradients_ready)):
            raise TypeError("add_callback(on_start, on_gradients_ready): both must be callable "
                            "(or one object with on_start and on_gradients_ready, e.g. caffe.NCCL)")
        self._callbacks.append((on_start, on_gradients_ready))

    def __repr__(self) -> str:
        return f"<brewnet.{type(self).__name__} net='{self.net.name}' iter={self.iter}>"

