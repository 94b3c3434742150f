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

The package, one module per part of the machinery (the pycaffe names come from here unchanged):

- ``core``: ``Solver``, built from a solver file (train and test nets, histories, update groups)
- ``loop``: the training loop (``step``, ``solve``, smoothed loss, display, callbacks)
- ``testing``: test phases and precise BatchNorm (``test_all``, ``test``, ``recalibrate_batchnorm``)
- ``update``: ``apply_update`` (lr, clipping, normalisation, weight decay)
- ``rules``: the update rules ``SGDSolver`` ... ``AdamSolver``, ``get_solver``
- ``lr_policies``: ``learning_rate`` (every Caffe lr policy)
- ``snapshots``: ``snapshot`` and ``restore``
- ``distributed``: data-parallel training over torch.distributed (gradient all-reduce, shared
  requested actions, rank 0's snapshots and metrics)
"""
from __future__ import annotations

from .core import Solver, resolve_path
from .lr_policies import LR_POLICIES, f32, learning_rate
from .rules import (SOLVERS, AdaDeltaSolver, AdaGradSolver, AdamSolver, NesterovSolver, RMSPropSolver,
                    SGDSolver, get_solver, solver_class)

__all__ = ["Solver", "SGDSolver", "NesterovSolver", "AdaGradSolver", "RMSPropSolver", "AdaDeltaSolver",
           "AdamSolver", "SOLVERS", "solver_class", "get_solver", "learning_rate", "LR_POLICIES", "f32",
           "resolve_path"]
