"""The error every unreadable Caffe file raises, and the helper that names the file in it."""
from __future__ import annotations

from typing import Callable, TypeVar

from brewnet.errors import BrewnetError

_T = TypeVar("_T")

__all__ = ["CaffeFormatError", "with_filename"]


class CaffeFormatError(BrewnetError, ValueError):
    """A Caffe file (or text) that cannot be read; the message names the file and the place."""


def with_filename(filename: str, fn: Callable[..., _T], *args) -> _T:
    """Call ``fn(*args)``, prefixing the file name to any CaffeFormatError it raises."""
    try:
        return fn(*args)
    except CaffeFormatError as err:
        raise CaffeFormatError(f"{filename}: {err}") from err
