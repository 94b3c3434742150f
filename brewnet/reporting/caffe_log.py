"""Numbers in brewnet's log lines as Caffe's log prints them (the solver's, ``brewnet test``'s)."""
from __future__ import annotations


def caffe_float(v: float) -> str:
    """Caffe's ostream float formatting (6 significant digits)."""
    return f"{v:.6g}"
