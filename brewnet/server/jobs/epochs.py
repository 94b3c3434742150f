"""DIGITS' epochs of a model job (docs/digits-rest.md §4): the one place the server turns
iterations into epochs and reads an epoch a form or query names.

- :func:`epoch_of_iteration`: ``round(N * train_epochs / max_iter, 3)``, an int when whole (the
  epochs a plan's snapshots, a download's name and the solver form name);
- :func:`snapshot_epoch`: that rule on plan.json's dict, ``N / iters_per_epoch`` when the plan
  has no ``max_iter``; None when it says neither;
- :func:`epoch_label`: an epoch as DIGITS shows it (``2``, not ``2.0``);
- :func:`parse_epoch`: a snapshot epoch from a form or query value (None or -1: the newest).
"""
from __future__ import annotations

from typing import Any, Mapping

from ..errors import FormErrors


def epoch_label(e: int | float) -> int | float:
    """``e`` as an int when whole, else as it is."""
    return int(e) if float(e).is_integer() else e


def epoch_of_iteration(iteration: int, plan: Any, train_epochs: int | float) -> int | float:
    """DIGITS' epoch of iteration N: ``round(N * train_epochs / max_iter, 3)``, an int when whole.
    ``plan``: a :class:`~brewnet.server.digits.solver_form.Plan` or plan.json's dict."""
    max_iter = plan["max_iter"] if isinstance(plan, Mapping) else plan.max_iter
    return epoch_label(round(float(iteration) * float(train_epochs) / float(max_iter), 3))


def snapshot_epoch(iteration: int, plan: Mapping, train_epochs: int | float | None = None) -> int | float | None:
    """DIGITS' epoch of snapshot N from plan.json's dict: :func:`epoch_of_iteration` with
    ``train_epochs`` (else the plan's); ``N / iters_per_epoch`` when the plan has no
    ``max_iter``; None when it says neither."""
    epochs = train_epochs or plan.get("train_epochs")
    if plan.get("max_iter") and epochs:
        return epoch_of_iteration(iteration, plan, epochs)
    if plan.get("iters_per_epoch"):
        return epoch_label(round(iteration / float(plan["iters_per_epoch"]), 3))
    return None


def parse_epoch(text: Any, field: str = "snapshot_epoch") -> float | None:
    """A snapshot epoch from a form/query value; None (or -1) means the latest.  FormErrors on
    ``field`` when it is not a number."""
    if text is None or str(text).strip() == "":
        return None
    try:
        e = float(text)
    except ValueError:
        raise FormErrors({field: [f"Not a valid number: {text!r}"]}) from None
    return None if e < 0 else e
