"""DIGITS' epochs -> iterations arithmetic and its solver values (docs/digits-rest.md §4),
so that a job's snapshots fall on the epochs DIGITS would name:

- iterations per epoch ``ceil(train_entries / (batch * iter_size))``; ``max_iter`` that times
  ``train_epochs``.  The batch is the form's, else the TRAIN Data layer's, else 16.
- ``snapshot``: ``snapshot_interval * it/epoch`` iterations (truncated), 1 when that is in (0, 1],
  0 (the end only) when it is 0 or reaches ``max_iter``; the solver always snapshots at the end.
- ``test_interval`` the same way from ``val_interval`` (reaching ``max_iter``: the end only);
  ``test_iter = ceil(val_entries / val_batch)``; no testing without a val set or with
  ``val_interval`` 0.
- the policy values are percentages of ``max_iter``; with ``s = max_iter / 100.0``:
  ``stepsize = ceil(v * s)`` (step, multistep's values, sigmoid; in that float order, so 50 % of
  112 is 57), exp ``gamma ** (1 / s)``, inv ``gamma / s``, sigmoid ``-gamma / s``.
- momentum 0.9 (not AdaGrad or RMSProp), ``weight_decay = base_lr / 100``, RMSProp's
  ``rms_decay`` 0.99, display 8 times per epoch or every 5000 images, whichever is more often.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ...data.labels import read_labels
from ...proto import caffe_pb2
from ..errors import FormErrors
from ..jobs.epochs import epoch_of_iteration
from ..jobs.specs import JsonRecord
from .fields import Fields, format_number

#: DIGITS' batch size when neither the form nor the network gives one
DEFAULT_BATCH_SIZE = 16

#: DIGITS' solver_type choices -> brewnet's (Caffe's) solver type names
SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad", "RMSPROP": "RMSProp",
                "ADADELTA": "AdaDelta", "ADAM": "Adam"}
NO_MOMENTUM = ("ADAGRAD", "RMSPROP")

#: the form's policy fields and their defaults (percentages of the run where they are steps)
LR_DEFAULTS: dict[str, Any] = {
    "lr_step_size": 33.0, "lr_step_gamma": 0.1,
    "lr_multistep_values": "50,85", "lr_multistep_gamma": 0.5,
    "lr_exp_gamma": 0.95,
    "lr_inv_gamma": 0.1, "lr_inv_power": 0.5,
    "lr_poly_power": 3.0,
    "lr_sigmoid_step": 50.0, "lr_sigmoid_gamma": 0.1,
}


# How a form value becomes a solver value, given ``per_percent = max_iter / 100.0`` (the
# iterations in one percent of the run).  DIGITS multiplies (or divides) by that quotient; the
# order of the float operations is kept, since it decides the ceilings (50 % of 112 iterations
# is 50 * 1.12 = 56.00000000000001, so 57).
def _same(value, per_percent: float) -> float:
    return float(value)


def _iteration_of(percent, per_percent: float) -> int:
    return math.ceil(float(percent) * per_percent)


def _iterations_of(percents, per_percent: float) -> list[int]:
    return [_iteration_of(p, per_percent) for p in str(percents).split(",")]


def _root_per_iteration(factor, per_percent: float) -> float:
    """exp: the form's factor is per percent of the run; the solver's per iteration."""
    return math.pow(float(factor), 1.0 / per_percent)


def _rate_per_iteration(rate, per_percent: float) -> float:
    """inv: the form's rate is per percent of the run; the solver's per iteration."""
    return float(rate) / per_percent


def _falling_rate_per_iteration(rate, per_percent: float) -> float:
    """sigmoid: DIGITS' curve falls, so Caffe's gamma is the negated rate per iteration."""
    return -1.0 * float(rate) / per_percent


#: policy -> (form field, SolverParameter field, conversion) for each value it takes
_POLICY_VALUES: dict[str, tuple] = {
    "fixed": (),
    "step": (("lr_step_size", "stepsize", _iteration_of), ("lr_step_gamma", "gamma", _same)),
    "multistep": (("lr_multistep_values", "stepvalue", _iterations_of),
                  ("lr_multistep_gamma", "gamma", _same)),
    "exp": (("lr_exp_gamma", "gamma", _root_per_iteration),),
    "inv": (("lr_inv_gamma", "gamma", _rate_per_iteration), ("lr_inv_power", "power", _same)),
    "poly": (("lr_poly_power", "power", _same),),
    "sigmoid": (("lr_sigmoid_step", "stepsize", _iteration_of),
                ("lr_sigmoid_gamma", "gamma", _falling_rate_per_iteration)),
}

LR_POLICIES = tuple(_POLICY_VALUES)
#: the fields each policy reads
LR_FIELDS = {policy: tuple(row[0] for row in rows) for policy, rows in _POLICY_VALUES.items()}


# ----- the form's learning-rate fields --------------------------------------------------------

def parse_lr_fields(form: Mapping[str, Any]) -> tuple[list[float], str, dict]:
    """The learning rates (a sweep may give several), the policy and its fields, validated
    (FormErrors); what :func:`lr_curves` and the model form share."""
    f = Fields(form)
    rates, policy, params = lr_fields(f)
    if f.errors:
        raise FormErrors(f.errors)
    return rates, policy, params


def lr_fields(f: Fields) -> tuple[list[float], str, dict]:
    """The learning-rate fields read from ``f`` (errors recorded on it): rates, policy, values."""
    rates = f.numbers("learning_rate", float, 0.01, lo=0)
    policy = f.choice("lr_policy", LR_POLICIES, "step")
    params: dict[str, Any] = {}
    for name in LR_FIELDS.get(policy, ()):
        if name == "lr_multistep_values":
            text = f.text(name, LR_DEFAULTS[name])
            try:
                values = [float(v) for v in text.split(",") if v.strip()]
                if not values or any(not 0 <= v <= 100 for v in values) or values != sorted(values):
                    raise ValueError(text)
                params[name] = ",".join(format_number(v) for v in values)
            except ValueError:
                f.error(name, "Give ascending percentages between 0 and 100, separated by commas")
        else:
            pct = name in ("lr_step_size", "lr_sigmoid_step")
            v = f.number(name, float, LR_DEFAULTS[name], lo=0, hi=100 if pct else None)
            if pct and v == 0 and policy == "step":
                f.error(name, "Number must be greater than 0.")
            params[name] = v if v is not None else LR_DEFAULTS[name]
    return [r for r in rates if r is not None] or [0.01], policy or "step", params



@dataclass
class Plan(JsonRecord):
    """A model job's iterations, as DIGITS computes them (written to plan.json)."""
    iters_per_epoch: int
    max_iter: int
    snapshot: int            # 0: only the final snapshot
    test_interval: int       # 0: no testing
    test_iter: int           # 0: no testing
    train_entries: int
    val_entries: int
    batch: int
    iter_size: int
    val_batch: int = 0
    train_epochs: int = 0
    display: int = 1
    weights: list[str] = field(default_factory=list)   # caffemodels for -weights

    def snapshot_iterations(self) -> list[int]:
        """The iterations that get a snapshot: every ``snapshot`` and always the last."""
        its = list(range(self.snapshot, self.max_iter, self.snapshot)) if self.snapshot > 0 else []
        return its + [self.max_iter]

    def snapshot_epochs(self) -> list[int | float]:
        """DIGITS' epochs of :meth:`snapshot_iterations`."""
        return [epoch_of_iteration(it, self, self.train_epochs) for it in self.snapshot_iterations()]


def _interval(epochs_interval: float, iters_per_epoch: int, max_iter: int) -> int | None:
    """DIGITS' rule for an interval given in epochs: 1 in (0, 1], truncated below max_iter,
    None (the end only) for 0 or at/after max_iter."""
    its = epochs_interval * iters_per_epoch
    if 0 < its <= 1:
        return 1
    if 1 < its < max_iter:
        return int(its)
    return None


def compute_plan(*, train_entries: int, val_entries: int, train_epochs: int, batch: int,
                 val_batch: int | None = None, iter_size: int = 1, snapshot_interval: float = 1.0,
                 val_interval: float = 1.0) -> Plan:
    """The plan from plain numbers (see the module's docstring for the rules)."""
    if batch < 1 or iter_size < 1 or train_epochs < 1:
        raise ValueError("batch, iter_size and train_epochs must be at least 1")
    if train_entries < 1:
        raise ValueError("the dataset has no training images")
    val_batch = val_batch or batch
    per_epoch = int(math.ceil(float(train_entries) / (batch * iter_size)))
    max_iter = per_epoch * int(train_epochs)
    snapshot = _interval(float(snapshot_interval), per_epoch, max_iter) or 0
    test_interval = test_iter = 0
    if val_entries > 0 and val_interval:
        test_iter = int(math.ceil(float(val_entries) / val_batch))
        test_interval = _interval(float(val_interval), per_epoch, max_iter) or max_iter
    display = max(1, min(int(math.floor(float(max_iter) / (train_epochs * 8))),
                         int(math.ceil(5000.0 / (batch * iter_size)))))
    return Plan(iters_per_epoch=per_epoch, max_iter=max_iter, snapshot=snapshot,
                test_interval=test_interval, test_iter=test_iter, train_entries=int(train_entries),
                val_entries=int(val_entries), batch=int(batch), iter_size=int(iter_size),
                val_batch=int(val_batch), train_epochs=int(train_epochs), display=display)


# ----- datasets --------------------------------------------------------------------------------

@dataclass
class DatasetFacts:
    """What a model needs of its dataset job."""
    dir: Path
    labels: list[str]
    train_entries: int
    val_entries: int
    image_dims: list[int]          # [H, W, C]
    resize_mode: str | None
    mean_file: Path | None
    train_db: Path
    val_db: Path | None


def dataset_facts(dataset: Mapping) -> DatasetFacts:
    """Normalise a dataset dict: the short form (``dir, labels, train_entries, val_entries,
    image_dims, resize_mode, mean_file``) or the service's (job.json's dict with ``directory``,
    ``counts``, ``image``, ``dbs``, ``mean_file``)."""
    d = Path(dataset.get("dir") or dataset.get("directory") or ".")
    counts = dataset.get("counts") or {}
    train = dataset.get("train_entries", counts.get("train", 0)) or 0
    val = dataset.get("val_entries", counts.get("val", 0)) or 0
    dims = dataset.get("image_dims")
    if not dims:
        image = dataset.get("image") or {}
        dims = [image.get("height"), image.get("width"), image.get("channels")]
    if any(not isinstance(x, int) or x < 1 for x in dims):
        raise ValueError(f"dataset {d.name}: image dimensions unknown ({dims})")
    dbs = dataset.get("dbs") or {}
    train_db = Path(dbs.get("train") or d / "train_db")
    val_db = Path(dbs["val"]) if dbs.get("val") else d / "val_db"
    if int(val) <= 0 or not val_db.exists():
        val_db, val = None, 0
    mean = dataset.get("mean_file")
    if mean is None and (d / "mean.binaryproto").is_file():
        mean = d / "mean.binaryproto"
    labels = list(dataset.get("labels") or [])
    if not labels and (d / "labels.txt").is_file():
        labels = read_labels(d / "labels.txt")
    return DatasetFacts(dir=d, labels=labels, train_entries=int(train), val_entries=int(val),
                        image_dims=[int(x) for x in dims], resize_mode=dataset.get("resize_mode"),
                        mean_file=Path(mean) if mean else None, train_db=train_db, val_db=val_db)


def plan_training(spec, dataset: Mapping, net_batch: int | None = None,
                  net_val_batch: int | None = None) -> Plan:
    """DIGITS' plan for ``spec`` (a ModelSpec) on ``dataset``: the form's batch size, else the
    network's TRAIN (and val) Data layer's, else 16."""
    facts = dataset_facts(dataset)
    batch = getattr(spec, "batch_size", None) or net_batch or DEFAULT_BATCH_SIZE
    val_batch = getattr(spec, "batch_size", None) or net_val_batch or DEFAULT_BATCH_SIZE
    return compute_plan(train_entries=facts.train_entries, val_entries=facts.val_entries,
                        train_epochs=int(spec.train_epochs), batch=int(batch), val_batch=int(val_batch),
                        iter_size=int(getattr(spec, "batch_accumulation", None) or 1),
                        snapshot_interval=float(spec.snapshot_interval), val_interval=float(spec.val_interval))


# ----- the solver -------------------------------------------------------------------------------

def apply_lr_policy(solver: caffe_pb2.SolverParameter, policy: str, params: Mapping[str, Any]) -> None:
    """Set ``solver``'s lr_policy and its values from the form's percentages (``solver.max_iter``
    must be set); fields missing or None in ``params`` take :data:`LR_DEFAULTS`."""
    rows = _POLICY_VALUES.get(policy)
    if rows is None:
        raise ValueError(f"unknown lr_policy {policy!r} (one of {', '.join(LR_POLICIES)})")
    per_percent = float(solver.max_iter) / 100.0
    solver.lr_policy = policy
    for form_field, solver_field, convert in rows:
        given = params.get(form_field)
        value = convert(LR_DEFAULTS[form_field] if given is None else given, per_percent)
        if isinstance(value, list):
            getattr(solver, solver_field).extend(value)
        else:
            setattr(solver, solver_field, value)


def solver_parameter(spec, plan: Plan, net: str = "train_val.prototxt") -> caffe_pb2.SolverParameter:
    """The SolverParameter DIGITS would write for ``spec`` and ``plan``."""
    s = caffe_pb2.SolverParameter()
    kind = str(getattr(spec, "solver_type", "SGD") or "SGD").upper()
    s.net = net
    s.type = SOLVER_TYPES[kind]
    s.snapshot_prefix = "snapshot"
    if plan.iter_size > 1:
        s.iter_size = plan.iter_size
    s.max_iter = plan.max_iter
    s.snapshot = plan.snapshot
    s.snapshot_after_train = True
    if plan.test_iter > 0:
        s.test_iter.append(plan.test_iter)
        s.test_interval = plan.test_interval
    s.base_lr = float(spec.learning_rate)
    apply_lr_policy(s, getattr(spec, "lr_policy", "step") or "step", getattr(spec, "lr_params", {}) or {})
    if kind not in NO_MOMENTUM:
        s.momentum = 0.9
    s.weight_decay = s.base_lr / 100.0
    if kind == "RMSPROP":
        s.rms_decay = float(getattr(spec, "rms_decay", None) or 0.99)
    s.display = plan.display
    seed = getattr(spec, "random_seed", None)
    if seed is not None:
        s.random_seed = int(seed)
    return s


# ----- the learning-rate graph ------------------------------------------------------------------

def lr_curves(form: Mapping[str, str]) -> list[list[float]]:
    """``/models/visualize-lr``: for each learning rate of the form (a sweep gives several), 101
    values over the run (at 0 %, 1 %, ... 100 % of it), computed by brewnet.solver's Caffe
    policies on a 100-iteration run.  Raises FormErrors for bad fields."""
    from ...solver import learning_rate   # brewnet.solver imports torch: the server starts without it

    rates, policy, params = parse_lr_fields(form)
    out = []
    for base in rates:
        s = caffe_pb2.SolverParameter(max_iter=100, base_lr=float(base))
        apply_lr_policy(s, policy, params)
        step, values = 0, []
        for it in range(101):   # in order: multistep advances one step per call, as in Caffe
            rate, step = learning_rate(s, it, step)
            values.append(float(rate))
        out.append(values)
    return out


def lr_curve(form: Mapping[str, str]) -> list[float]:
    """The first learning rate's curve of :func:`lr_curves` (101 values)."""
    return lr_curves(form)[0]
