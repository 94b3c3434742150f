"""``labels.txt``: a dataset's (and a deploy bundle's) class names, one per line, line i+1 naming
class i — the one reader and writer of the file (``brewnet dataset create`` writes it, ``brewnet
deploy`` copies it into the bundle, the bundle, the server's forms and pages read it).
"""
from __future__ import annotations

import os
from typing import Iterable


def read_labels(path: str | os.PathLike) -> list[str]:
    """The class names in ``path``, in class-index order, as DIGITS reads them: each line
    stripped of surrounding whitespace, blank lines skipped. Raises OSError when the file
    cannot be read (FileNotFoundError when it is not there)."""
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def write_labels(names: Iterable[str], path: str | os.PathLike) -> None:
    """``names`` into ``path``, one per line (each line ends in a newline)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join(f"{n}\n" for n in names))
