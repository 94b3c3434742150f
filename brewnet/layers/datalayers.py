"""Data layers that read datasets: Data (LMDB), ImageData (list file), HDF5Data, MemoryData.

All four take no bottoms and return CPU float32 tensors (the net moves them to its device).
Data and ImageData apply ``transform_param`` (Caffe's DataTransformer, see
:mod:`brewnet.data.transformer`) and, like Caffe's BasePrefetchingDataLayer, prepare the next
``data_param.prefetch`` (default 4) batches on a background thread (:mod:`brewnet.data.prefetch`);
HDF5Data uses the same prefetcher.  The thread starts at the first forward, so building a net
reads only the first record (to infer the top shapes).

Paths (``source``, ``mean_file``) are resolved as Caffe does, relative to the working directory,
and, when they do not exist there, relative to the prototxt's directory (``layer.model_dir``,
set by the net).

In the TRAIN phase, Data and ImageData also apply brewnet's augmentation when one is set
(``brewnet train -augment FILE``, :mod:`brewnet.data.augment`), before transform_param.

Randomness (crop offsets, mirroring, shuffling, rand_skip) comes from a numpy Generator seeded
from ``brewnet.set_random_seed`` (the solver's ``random_seed``), the layer name and the phase,
or from ``transform_param.random_seed`` when that is set; unseeded runs draw fresh entropy.
The Data layer's crops and mirrors are instead a function of (that seed, the phase, the record's
ordinal) without the layer name (:func:`record_draws`): two Data layers of one net and phase
that read the same record at the same step with the same crop_size and mirror crop and mirror
alike, so an image and its label image (features and labels LMDBs) stay aligned.
"""
from __future__ import annotations

import logging
import secrets
import zlib
from typing import NoReturn

import numpy as np
import torch

from .. import runtime
from ..distributed import solver_count, solver_rank
from ..data import DataError, resolve_path
from ..data.prefetch import attach
from ..data.sources import DatumSource, HDF5Source, ImageListSource
from ..data.augment import AugmentedTransformer, train_augmentation
from ..data.transformer import DataTransformer, RecordDraws
from .base import DataLayer, Layer, register

log = logging.getLogger("brewnet")

#: unseeded runs: one random key for the process, so paired layers still draw alike
_UNSEEDED_KEY = secrets.randbits(63)


def record_draws(layer: Layer, explicit_seed: int = -1) -> RecordDraws:
    """The Data layer's crop/mirror draws: a function of the seed (``transform_param.random_seed``,
    else the global seed, else one random key per process), the phase and the record ordinal;
    not of the layer's name, so layers reading the same records draw alike."""
    if explicit_seed is not None and explicit_seed >= 0:
        base = [int(explicit_seed), 1]
    elif runtime._state.get("seed") is not None:
        base = [int(runtime._state["seed"]) & 0xFFFFFFFFFFFFFFFF, 2]
    else:
        base = [_UNSEEDED_KEY, 3]
    key = np.random.SeedSequence(base + [int(layer.phase)]).generate_state(1, np.uint64)[0]
    return RecordDraws(int(key))


def layer_rng(layer: Layer, explicit_seed: int = -1, per_rank: bool = False,
              stream: int = 0) -> np.random.Generator:
    """The layer's numpy Generator: reproducible under a global seed, distinct per layer/phase.
    ``per_rank``: distinct per data-parallel rank too (augmentation: ranks must not crop and
    mirror their slices alike); record order (shuffles, rand_skip) is the same on every rank.
    ``stream`` > 0: another, independent generator of the same layer (brewnet's -augment draws)."""
    if explicit_seed is not None and explicit_seed >= 0:
        entropy = [int(explicit_seed), zlib.crc32(layer.name.encode()), int(layer.phase)]
    elif runtime._state.get("seed") is not None:
        entropy = [int(runtime._state["seed"]) & 0xFFFFFFFFFFFFFFFF, zlib.crc32(layer.name.encode()),
                   int(layer.phase)]
    else:
        entropy = None
    shard = data_shard(layer)
    if entropy is not None and per_rank and shard is not None:
        entropy.append(shard[0])
    spawn_key = (int(stream),) if stream else ()
    return np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=spawn_key))


def _augmented(layer: Layer, transformer: DataTransformer, tp) -> DataTransformer | AugmentedTransformer:
    """The TRAIN-phase transformer wrapped in brewnet's -augment step when one is set."""
    aug = train_augmentation()
    if aug is None or not layer.training_phase:
        return transformer
    log.info("layer '%s' (TRAIN) augments images: %s", layer.name, aug.describe())
    return AugmentedTransformer(transformer, aug, layer_rng(layer, tp.random_seed, per_rank=True, stream=1),
                                where=f"layer '{layer.name}' augmentation")


def data_shard(layer: Layer) -> tuple[int, int] | None:
    """(rank, count) when this data layer reads a slice of each global batch: TRAIN-phase layers
    under data-parallel training (test phases run on rank 0 alone and read everything)."""
    count = solver_count()
    if count <= 1 or not layer.training_phase:
        return None
    return solver_rank(), count


class _ReaderLayer(DataLayer):
    """Shared machinery: a batch source built once in setup, a prefetcher started on forward."""

    num_tops = (1, 1)

    def __init__(self, param, phase):
        super().__init__(param, phase)
        self._source = None
        self._prefetcher = None
        self._top_shapes = None
        self.register_buffer("_device_probe", torch.zeros(0), persistent=False)

    @property
    def model_dir(self) -> str | None:
        return getattr(self, "_model_dir", None)

    @model_dir.setter
    def model_dir(self, value) -> None:
        self._model_dir = value

    @property
    def source(self):
        """The batch source setup built (None before setup)."""
        return self._source

    def _fail_data(self, err: Exception) -> NoReturn:
        raise DataError(f"layer '{self.name}' ({self.type}): {err}") from None

    def setup(self, bottom_shapes):
        if self._source is None:
            try:
                self._source, self._top_shapes = self.make_source()
            except DataError as e:
                self._fail_data(e)
            shard = data_shard(self)
            if shard is not None:
                from ..data.sharding import ShardedSource
                self._source = ShardedSource(self._source, *shard)
                log.info("layer '%s' reads slice %d of %d of each global batch", self.name,
                         shard[0] + 1, shard[1])
        return list(self._top_shapes)

    def make_source(self):
        raise NotImplementedError

    def prefetch_depth(self) -> int:
        return 4

    def forward(self):
        if self._prefetcher is None:
            self._prefetcher = attach(self, self._source, self.prefetch_depth(),
                                      name=f"brewnet-prefetch-{self.name}")
        try:
            tensors = self._prefetcher.get()
        except DataError as e:
            self._fail_data(e)
        dev = self._device_probe.device
        if dev.type != "cpu":
            tensors = tuple(t.to(dev, non_blocking=True) for t in tensors)
        return tensors[:len(self.param.top)]

    def close(self) -> None:
        """Stop the prefetch thread and release the database."""
        if self._prefetcher is not None:
            self._prefetcher.stop()
            self._prefetcher = None
        elif self._source is not None:
            self._source.close()

    @property
    def prefetch_waits(self) -> int:
        """How many forwards found no batch ready (the step waited for data)."""
        return 0 if self._prefetcher is None else self._prefetcher.waits


@register("Data")
class Data(_ReaderLayer):
    """Caffe's DataLayer: Datum records from an LMDB (raw or encoded), wrapping around at the end.

    ``data_param``: source, batch_size, rand_skip (skip up to that many records at the start),
    backend (LMDB; LEVELDB is refused), prefetch.  Tops: data (N, C, H, W) and optional label (N,).
    Encoded PNG/JPEG records are decoded to Caffe's BGR order (``force_color``/``force_gray``);
    ``float_data`` records give their floats (label LMDBs: N×1×1×2 gradients, N×1×H×W maps).
    Records may differ in size from batch to batch: the top takes each batch's shape (the first
    record's at setup), e.g. an FCN at batch 1 over images of different sizes.
    """

    num_tops = (1, 2)

    def prefetch_depth(self) -> int:
        return int(self.param.data_param.prefetch) or 4

    def make_source(self):
        from ..proto import caffe_pb2
        p = self.param.data_param
        if not p.source:
            raise DataError("data_param.source is not set")
        if p.batch_size <= 0:
            raise DataError("data_param.batch_size must be positive")
        path = resolve_path(p.source, self.model_dir)
        from ..data.lmdb_io import is_leveldb, is_lmdb
        explicit_leveldb = p.HasField("backend") and p.backend == caffe_pb2.DataParameter.LEVELDB
        if explicit_leveldb or is_leveldb(path):
            looks = " (the source is an LMDB: set `backend: LMDB`)" if is_lmdb(path) else \
                " (convert it to LMDB, e.g. with `brewnet dataset create`)"
            raise DataError(f"backend LEVELDB is not supported, only LMDB{looks}: {path}")
        tp = self.param.transform_param
        transformer = DataTransformer(tp, self.phase, layer_rng(self, tp.random_seed, per_rank=True), self.model_dir,
                                      where=f"layer '{self.name}' transform_param",
                                      draws=record_draws(self, tp.random_seed))
        transformer = _augmented(self, transformer, tp)
        src = DatumSource(path, int(p.batch_size), transformer, int(p.rand_skip),
                          layer_rng(self, tp.random_seed), output_labels=len(self.param.top) > 1,
                          where=f"layer '{self.name}'")
        shapes = [src.data_shape] + ([(int(p.batch_size),)] if len(self.param.top) > 1 else [])
        return src, shapes


@register("ImageData")
class ImageData(_ReaderLayer):
    """Caffe's ImageDataLayer: a list file of "path label" lines, images read with Pillow.

    ``image_data_param``: source, root_folder (prefixed to each path), batch_size (default 1),
    new_height/new_width (bilinear resize like cv::resize), is_color (default true), shuffle
    (at start and at every epoch), rand_skip.  Unreadable images are logged and skipped; the count
    is ``layer.skipped``.  Tops: data and label.
    """

    num_tops = (2, 2)

    def make_source(self):
        p = self.param.image_data_param
        if not p.source:
            raise DataError("image_data_param.source is not set")
        if p.batch_size <= 0:
            raise DataError("image_data_param.batch_size must be positive")
        tp = self.param.transform_param
        transformer = DataTransformer(tp, self.phase, layer_rng(self, tp.random_seed, per_rank=True), self.model_dir,
                                      where=f"layer '{self.name}' transform_param")
        transformer = _augmented(self, transformer, tp)
        root = resolve_path(p.root_folder, self.model_dir) if p.root_folder else ""
        src = ImageListSource(resolve_path(p.source, self.model_dir), int(p.batch_size), transformer,
                              root_folder=root, new_height=int(p.new_height), new_width=int(p.new_width),
                              is_color=bool(p.is_color), shuffle=bool(p.shuffle), rand_skip=int(p.rand_skip),
                              rng=layer_rng(self, tp.random_seed), where=f"layer '{self.name}'")
        return src, [src.data_shape, (int(p.batch_size),)]

    @property
    def skipped(self) -> int:
        return 0 if self._source is None else self._source.skipped


@register("HDF5Data")
class HDF5Data(_ReaderLayer):
    """Caffe's HDF5DataLayer: ``source`` lists .h5 files; each top reads the dataset of its name.

    Rows are read in order, file after file (``shuffle`` shuffles the files and the rows of each
    file).  Values are read as float32; top shapes are (batch_size, *dataset.shape[1:]).
    No transform_param (Caffe refuses one).
    """

    num_tops = (1, None)

    def make_source(self):
        if self.param.HasField("transform_param"):
            raise DataError("HDF5Data does not transform data; remove transform_param")
        p = self.param.hdf5_data_param
        if not p.source:
            raise DataError("hdf5_data_param.source is not set")
        if p.batch_size <= 0:
            raise DataError("hdf5_data_param.batch_size must be positive")
        src = HDF5Source(resolve_path(p.source, self.model_dir), list(self.param.top), int(p.batch_size),
                         shuffle=bool(p.shuffle), rng=layer_rng(self), model_dir=self.model_dir,
                         where=f"layer '{self.name}'")
        return src, src.shapes


@register("MemoryData")
class MemoryData(DataLayer):
    """Caffe's MemoryDataLayer: batches cut from arrays given by the script.

    ``memory_data_param``: batch_size, channels, height, width.  Feed it with
    ``layer.set_input_arrays(data, labels)`` (pycaffe's ``net.set_input_arrays``; also
    ``brewnet.data.set_input_arrays(net, data, labels)``): data (N, C, H, W), labels (N,) or
    (N, 1, 1, 1), N a multiple of batch_size.  Each forward returns the next batch_size rows,
    wrapping around.  Before any arrays are set, forward gives zeros (Caffe aborts) and logs a
    warning once.
    """

    num_tops = (2, 2)

    def setup(self, bottom_shapes):
        p = self.param.memory_data_param
        dims = (int(p.batch_size), int(p.channels), int(p.height), int(p.width))
        if min(dims) <= 0:
            self.fail(f"memory_data_param batch_size, channels, height and width must be positive, got {dims}")
        self._dims = dims
        if not hasattr(self, "_data"):
            self._data = self._labels = None
            self._pos = 0
            self._warned = False
        return [dims, (dims[0],)]

    def set_input_arrays(self, data, labels) -> None:
        """Use ``data`` (N, C, H, W) and ``labels`` (N rows, one value each) as the layer's dataset."""
        n_b, c, h, w = self._dims
        data = np.ascontiguousarray(data, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.float32)
        if data.ndim != 4 or data.shape[1:] != (c, h, w):
            raise DataError(f"layer '{self.name}' (MemoryData): data must have shape (N, {c}, {h}, {w}), "
                            f"got {data.shape}")
        if labels.shape[:1] != data.shape[:1] or labels.size != data.shape[0]:
            raise DataError(f"layer '{self.name}' (MemoryData): labels must have one value per row of data "
                            f"({data.shape[0]}), got shape {labels.shape}")
        if data.shape[0] == 0 or data.shape[0] % n_b:
            raise DataError(f"layer '{self.name}' (MemoryData): the number of rows ({data.shape[0]}) must be "
                            f"a positive multiple of batch_size ({n_b})")
        self._data = torch.from_numpy(data)
        self._labels = torch.from_numpy(labels.reshape(-1))
        self._pos = 0

    reset = set_input_arrays

    def forward(self):
        n_b = self._dims[0]
        if self._data is None:
            if not self._warned:
                log.warning("layer '%s' (MemoryData): no arrays set yet (call set_input_arrays); "
                            "forwarding zeros", self.name)
                self._warned = True
            return torch.zeros(self._dims), torch.zeros(n_b)
        s = self._pos
        self._pos = (self._pos + n_b) % self._data.shape[0]
        return self._data[s:s + n_b], self._labels[s:s + n_b]
