"""Writing the prototxt files the pycaffe tests open by path, as pycaffe users do."""
from __future__ import annotations

from pathlib import Path


def write(folder: Path, text: str, name: str = "net.prototxt") -> str:
    """``folder/name`` holding ``text``; returns its path as the str pycaffe takes."""
    path = Path(folder) / name
    path.write_text(text)
    return str(path)
