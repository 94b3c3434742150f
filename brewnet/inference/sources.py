"""What ``brewnet classify`` reads: each a re-iterable stream of :class:`Item` (an image to
classify, never its pixels) with its length — :func:`sources_from_images` (paths),
:func:`sources_from_list` (Caffe's ``path [label]`` lines), :func:`sources_from_folder` (class
sub-folders named as the bundle's labels) and :func:`sources_from_lmdb` (Datum records with
their labels, as the Data layer reads them); :func:`load_source_image` opens one for a thumbnail.

brewnet.data.builder and brewnet.data.image import torch: they are imported where used, so that
importing this module does not.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image

from ..data.lmdb_io import count_records, iter_records, parse_datum, read_datums, read_record
from ..errors import DataError

#: LMDB bytes read through one opening of the environment (see sources_from_lmdb)
MAP_WINDOW = 8 << 20


@dataclass
class Item:
    """One image to classify: where it comes from and, when known, its class index."""

    source: str                # a file path, or "LMDB:key"
    label: int | None = None   # index into the bundle's labels
    data: bytes | None = None  # a serialized Datum (LMDB sources); None: read the file at source


class Sources:
    """A re-iterable stream of :class:`Item` with its length (for the progress bar).

    ``items(labels)`` yields the items with label indices resolved against the bundle's label
    names; a source that cannot fit those labels raises a DataError naming the place.
    ``decodes``: its images need decoding (files, encoded Datums), not just a copy (raw Datums).
    """

    def __init__(self, kind: str, name: str, count: int,
                 factory: Callable[[list[str]], Iterator[Item]], labelled: bool,
                 check: Callable[[list[str]], None] | None = None, decodes: bool = True):
        self.kind, self.name, self.count, self.labelled = kind, name, count, labelled
        self.decodes = decodes
        self._factory = factory
        self._check = check

    def __len__(self) -> int:
        return self.count

    def check(self, labels: list[str]) -> None:
        """Raise DataError when the labels of this source do not fit ``labels`` (before a run)."""
        if self._check is not None:
            self._check(labels)

    def items(self, labels: list[str] | None) -> Iterator[Item]:
        """The items, their labels checked against ``labels`` first; ``None``: labels do not
        matter (``brewnet infer``), nothing is checked and folder items carry no label."""
        if labels is not None:
            self.check(labels)
        return self._factory(labels)

    def __repr__(self) -> str:
        return f"<Sources {self.kind} {self.name!r}: {self.count} image(s)>"


def sources_from_images(paths: Iterable[str]) -> Sources:
    """Image files given by path (no labels)."""
    paths = [os.fspath(p) for p in paths]
    for p in paths:
        if os.path.isdir(p):
            raise DataError(f"{p} is a folder: classify a folder of class sub-folders with -folder "
                            "(sources_from_folder)")
    return Sources("images", f"{len(paths)} image(s)", len(paths),
                   lambda labels: (Item(p) for p in paths), labelled=False)


def _parse_list_line(line: str) -> tuple[str, int | None]:
    """Caffe's ``path label`` (the label after the last space); a line whose last word is not an
    integer is a path alone (paths may hold spaces)."""
    name, sep, last = line.rpartition(" ")
    if sep:
        try:
            return name.strip(), int(last)
        except ValueError:
            pass
    return line, None


def sources_from_list(path: str) -> Sources:
    """A list file of ``path [label]`` lines (Caffe's ImageData list); relative paths are taken
    from the list file's folder.  Labels are class indices into the bundle's labels.txt."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"list file not found: {path}")
    base = os.path.dirname(os.path.abspath(path))
    count, max_label, max_line, neg_line, labelled = 0, -1, 0, 0, False
    with open(path, encoding="utf-8") as f:  # one pass to count and find the largest label
        for lineno, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            count += 1
            _, label = _parse_list_line(line)
            if label is not None:
                labelled = True
                if label > max_label:
                    max_label, max_line = label, lineno
                if label < 0 and not neg_line:
                    neg_line = lineno
    if not count:
        raise DataError(f"list file is empty: {path}")

    def check(labels: list[str]) -> None:
        if neg_line:
            raise DataError(f"{path}:{neg_line}: a negative label; labels are class indices 0..{len(labels) - 1}")
        if max_label >= len(labels):
            raise DataError(f"{path}:{max_line}: label {max_label}, but the bundle has {len(labels)} labels "
                            f"(0..{len(labels) - 1} in labels.txt): mismatched label file")

    def items(labels: list[str]) -> Iterator[Item]:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line:
                    name, label = _parse_list_line(line)
                    yield Item(name if os.path.isabs(name) else os.path.join(base, name), label)

    return Sources("list", path, count, items, labelled, check)


def _class_folders(folder: str) -> list[str]:
    # the builder's rule (brewnet dataset create): sorted sub-folders, hidden ones skipped
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))


def _walk_images(folder: str) -> Iterator[str]:
    from ..data.builder import IMAGE_EXTENSIONS  # torch

    for root, dirs, files in os.walk(folder):  # the builder's order: sorted folders, sorted files
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(IMAGE_EXTENSIONS):
                yield os.path.join(root, f)


def sources_from_folder(folder: str) -> Sources:
    """A folder of class sub-folders (images found recursively in each), as ``brewnet dataset
    create`` reads one; each sub-folder's name must be one of the bundle's labels."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"folder not found: {folder}")
    classes = _class_folders(folder)
    if not classes:
        raise DataError(f"{folder}: no class sub-folders (give images by path, or use -list)")
    count = sum(1 for c in classes for _ in _walk_images(os.path.join(folder, c)))

    def check(labels: list[str]) -> None:
        unknown = [c for c in classes if c not in labels]
        if unknown:
            raise DataError(f"{folder}: sub-folder(s) {', '.join(repr(c) for c in unknown)} are not labels of the "
                            f"bundle ({', '.join(labels)})")

    def items(labels: list[str] | None) -> Iterator[Item]:
        index = {name: i for i, name in enumerate(labels)} if labels is not None else {}
        for c in classes:
            for p in _walk_images(os.path.join(folder, c)):
                yield Item(p, index.get(c))

    return Sources("folder", folder, count, items, True, check)


def sources_from_image_folder(folder: str) -> Sources:
    """Every image under ``folder`` (sub-folders too, sorted as ``brewnet dataset create`` walks
    them), no labels: what ``brewnet infer -folder`` runs."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise DataError(f"folder not found: {folder}")
    count = sum(1 for _ in _walk_images(folder))
    if not count:
        raise DataError(f"{folder}: no images in it or its sub-folders")
    return Sources("folder", folder, count, lambda labels: (Item(p) for p in _walk_images(folder)),
                   labelled=False)


def sources_from_lmdb(path: str) -> Sources:
    """The Datum records of an LMDB in key order (as Caffe's Data layer reads them), with their
    labels; each item's source is ``path:key``."""
    path = os.fspath(path)
    count = count_records(path)  # DataError when it is no LMDB
    encoded = False
    if count:  # the first record says whether the images are encoded (Caffe's Data layer too)
        encoded = bool(next(read_datums(path, limit=1))[1].encoded)

    def items(labels: list[str]) -> Iterator[Item]:
        for key, value in iter_records(path, MAP_WINDOW):  # a reopened map: RSS stays flat
            yield Item(f"{path}:{key.decode('ascii', 'replace')}", None, value)

    return Sources("lmdb", path, count, items, True, decodes=encoded)


def as_sources(sources) -> Sources:
    """``sources`` as :class:`Sources`: itself, or image paths (one path alone too)."""
    if isinstance(sources, Sources):
        return sources
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    return sources_from_images(sources)


def load_source_image(source: str):
    """A Pillow image of a classified source, for thumbnails: an image file, or an LMDB record
    named ``path:key`` (its Datum decoded; colour shown in RGB)."""
    if os.path.isfile(source):
        return Image.open(source)
    path, _, key = source.rpartition(":")
    from ..data.image import datum_to_chw  # torch

    chw = datum_to_chw(parse_datum(read_record(path, key), key), what=source)  # (C, H, W), BGR
    chw = np.asarray(chw, dtype=np.uint8)
    if chw.shape[0] == 1:
        return Image.fromarray(chw[0])
    return Image.fromarray(np.ascontiguousarray(chw[::-1].transpose(1, 2, 0)))
