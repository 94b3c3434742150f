"""NetState: which layers of a prototxt a net has (Caffe's Net::StateMeetsRule / FilterNet).

A layer's ``include`` and ``exclude`` rules (NetStateRule: phase, min/max level, stages) are
judged against the net's NetState (phase, level, stages):

- :func:`net_state` and :func:`state_for` — a NetState from its parts, or a net's own state
  with a phase, level and stages laid over it (``caffe.Net(model, phase, level=, stages=)``).
- :func:`state_meets_rule` — Caffe's full rule; :func:`phase_meets_rule` — phases only (a rule
  without a phase is met), as pycaffe's ``draw_net --phase`` judges.
- :func:`layer_included` — Caffe's keep/drop of one layer by its rules, however they are judged;
  :func:`filter_net` — the NetParameter with the layers a NetState includes.
- :func:`layer_phases` — the phases a layer may be in, judging phase rules only (stage- and
  level-only rules are not taken to exclude), for tools that look at every phase at once.

The proto and errors only: no torch, so the server, lint and draw use it cheaply.
"""
from __future__ import annotations

from typing import Callable, Iterable

from .errors import NetError
from .proto import caffe_pb2

PHASES = (caffe_pb2.TRAIN, caffe_pb2.TEST)


def net_state(phase: int, stages: Iterable[str] = (), level: int = 0) -> caffe_pb2.NetState:
    """A NetState of ``phase`` (caffe_pb2.TRAIN/TEST), ``stages`` and ``level``."""
    state = caffe_pb2.NetState(phase=phase, stage=list(stages))
    if level:
        state.level = level
    return state


def state_for(net_param: caffe_pb2.NetParameter, phase: int | None = None, level: int = 0,
              stages: Iterable[str] = ()) -> caffe_pb2.NetState:
    """The NetState a net of ``net_param`` runs in: the prototxt's own ``state`` with ``phase``
    (required when the prototxt sets none), a non-zero ``level`` and the ``stages`` it lacks."""
    state = caffe_pb2.NetState()
    state.CopyFrom(net_param.state)
    if phase is not None:
        state.phase = phase
    elif not net_param.state.HasField("phase"):
        raise TypeError("Net(): give a phase (brewnet.TRAIN or brewnet.TEST)")
    if level:
        state.level = level
    state.stage.extend(s for s in stages if s not in state.stage)
    return state


def state_meets_rule(state, rule) -> bool:
    """Caffe's Net::StateMeetsRule: phase, min/max level, stages all required, no not_stage."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(s not in state.stage for s in rule.stage):
        return False
    if any(s in state.stage for s in rule.not_stage):
        return False
    return True


def phase_meets_rule(phase: int, rule) -> bool:
    """A rule judged by its phase alone: met when it names none or names ``phase``."""
    return not rule.HasField("phase") or rule.phase == phase


def has_include_and_exclude(lp) -> bool:
    """A layer with both kinds of rules, which Caffe refuses (each caller says so its own way)."""
    return bool(lp.include) and bool(lp.exclude)


def layer_included(lp, meets: Callable[[caffe_pb2.NetStateRule], bool]) -> bool:
    """Caffe's FilterNet for one layer: kept when one of its include rules is met, or, without
    include rules, when none of its exclude rules is.  ``meets(rule)`` judges a rule (e.g.
    ``lambda r: state_meets_rule(state, r)``); check :func:`has_include_and_exclude` first."""
    if lp.include:
        return any(meets(r) for r in lp.include)
    return not any(meets(r) for r in lp.exclude)


def filter_net(net_param, state):
    """The layers of ``net_param`` that the NetState includes (a new NetParameter)."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    for lp in net_param.layer:
        if has_include_and_exclude(lp):
            raise NetError(f"layer '{lp.name}': specify either include or exclude rules, not both")
        if layer_included(lp, lambda r: state_meets_rule(state, r)):
            out.layer.add().CopyFrom(lp)
    return out


def layer_phases(lp) -> set[int]:
    """The phases a layer is in, judging by phase rules only (stages and levels ignored)."""
    out = set()
    for ph in PHASES:
        if lp.include:
            if any(phase_meets_rule(ph, r) for r in lp.include):
                out.add(ph)
        elif not any(r.HasField("phase") and r.phase == ph for r in lp.exclude):
            out.add(ph)
    return out
