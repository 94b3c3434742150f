"""WTForms' reading of a submitted DIGITS form (docs/digits-rest.md §3–§4), shared by the forms
(forms.py), the learning-rate fields (solver_form.py) and a model job's files (model_files.py):

- :class:`Fields`: a form's values read as WTForms' fields (text, boolean, select, numbers, a
  sweep's several values), its errors collected per field in WTForms' messages;
- :func:`format_number`: a number as the messages name it (``2``, not ``2.0``);
- :func:`augmentation_fields`: DIGITS' ``aug_*`` fields -> the job's augmentation dict.
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

from ...data.augment import FLIPS, QUAD_TURNS, Augmentation

REQUIRED = "This field is required."
NOT_CHOICE = "Not a valid choice"
NOT_INT = "Not a valid integer value"
NOT_FLOAT = "Not a valid float value"


class Fields:
    """WTForms' reading of a submitted form, collecting errors per field."""

    def __init__(self, form: Mapping[str, Any]):
        self.form = form
        self.errors: dict[str, list[str]] = {}

    def error(self, name: str, message: str) -> None:
        self.errors.setdefault(name, []).append(message)

    def raw_values(self, name: str) -> list[str]:
        """Every value sent for ``name`` (a multi-valued form, or a list value)."""
        getlist = getattr(self.form, "getlist", None)
        if callable(getlist):
            vals = list(getlist(name))
        else:
            v = self.form.get(name)
            vals = [] if v is None else (list(v) if isinstance(v, (list, tuple)) else [v])
        return [str(v) for v in vals]

    def raw(self, name: str) -> str | None:
        vals = self.raw_values(name)
        return vals[-1] if vals else None

    def present(self, name: str) -> bool:
        return self.raw(name) is not None

    def text(self, name: str, default: str = "", required: bool = False) -> str:
        v = self.raw(name)
        v = default if v is None else v.strip()
        if required and not v:
            self.error(name, REQUIRED)
        return v

    def boolean(self, name: str) -> bool:
        v = self.raw(name)
        return v is not None and v not in ("false", "")

    def choice(self, name: str, choices, default: str | None = None, required: bool = False) -> str | None:
        v = self.raw(name)
        if v is None or (v == "" and default is None):
            if required:
                self.error(name, REQUIRED)
            return default
        if v not in choices:
            self.error(name, NOT_CHOICE)
            return default
        return v

    def _number(self, name: str, text: str, kind: type, lo, hi):
        try:
            if kind is int:
                value = int(text.strip())
            else:
                value = float(text.strip())
                if not math.isfinite(value):
                    raise ValueError(text)
        except ValueError:
            self.error(name, NOT_INT if kind is int else NOT_FLOAT)
            return None
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            if lo is not None and hi is not None:
                self.error(name, f"Number must be between {format_number(lo)} and {format_number(hi)}.")
            elif lo is not None:
                self.error(name, f"Number must be at least {format_number(lo)}.")
            else:
                self.error(name, f"Number must be at most {format_number(hi)}.")
            return None
        return value

    def number(self, name: str, kind: type = int, default=None, lo=None, hi=None,
               optional: bool = False, required: bool = False):
        """An IntegerField/FloatField: missing keeps ``default``; ``optional``: '' is None too."""
        v = self.raw(name)
        if v is None or (optional and not v.strip()):
            if required:
                self.error(name, REQUIRED)
            return default
        return self._number(name, v, kind, lo, hi)

    def numbers(self, name: str, kind: type, default, lo=None) -> list:
        """A field that may hold several values (a sweep): repeated fields, or ``[a, b]`` /
        ``a,b`` text.  Missing or blank: ``[default]``."""
        out = []
        for v in self.raw_values(name):
            for part in re.split(r"[,\s]+", v.strip().strip("[]").strip()):
                if part:
                    out.append(self._number(name, part, kind, lo, None))
        if not out:
            return [default]
        return list(dict.fromkeys(out))   # repeated values make one job


def format_number(v) -> str:
    return str(int(v)) if float(v).is_integer() else str(v)


def augmentation_fields(f: Fields) -> dict:
    """DIGITS' ``aug_*`` fields (its form's choices, ranges and defaults) -> the augmentation
    file's dict (brewnet.data.augment; empty when all are off).  HSV shifts count only with
    ``aug_hsv_use``.  ``aug_whitening`` (DIGITS' TensorFlow only) is refused when set."""
    values: dict[str, Any] = {
        "flip": f.choice("aug_flip", FLIPS, "none"),
        "quad_rot": f.choice("aug_quad_rot", tuple(QUAD_TURNS), "none"),
        "rotation": f.number("aug_rot", int, 0, lo=0, hi=180),
        "scale": f.number("aug_scale", float, 0.0, lo=0, hi=1),
        "noise": f.number("aug_noise", float, 0.0, lo=0, hi=1),
        "contrast": f.number("aug_contrast", float, 0.0, lo=0, hi=5),
    }
    if f.boolean("aug_hsv_use"):
        for key, default in (("h", 0.02), ("s", 0.04), ("v", 0.06)):
            values[f"hsv_{key}"] = f.number(f"aug_hsv_{key}", float, default, lo=0, hi=0.5)
    if f.boolean("aug_whitening"):
        f.error("aug_whitening", "Whitening is not applied to Caffe networks by brewnet (per-image "
                                 "standardisation would undo transform_param's mean subtraction); "
                                 "leave it off")
    if any(v is None for v in values.values()):
        return {}   # a field's error is recorded; the form is refused
    return Augmentation.from_json({k: (float(v) if k == "rotation" else v) for k, v in values.items()}).to_json()
