"""Per-rank data sharding: rank r of R with batch B reads the r-th slice of each global batch of
R·B records, so the ranks' slices put together are what one process with batch R·B reads, in
the same order, for LMDB, ImageData (shuffled every epoch), HDF5 (shuffled) and Python data
layers; test phases read everything on rank 0."""
from __future__ import annotations

import numpy as np
import pytest
from google.protobuf import text_format
from PIL import Image

import brewnet
from brewnet.pycaffe import multiprocess
from brewnet.proto import caffe_pb2

N = 12          # records; batches wrap around (several epochs)
BATCHES = 7


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from brewnet.data.lmdb_io import DatumWriter
    from brewnet.pycaffe.io import array_to_datum

    root = tmp_path_factory.mktemp("shard")
    rng = np.random.default_rng(3)
    with DatumWriter(str(root / "db")) as w:
        for i in range(N):
            w.put(array_to_datum(rng.integers(0, 256, size=(1, 4, 4), dtype=np.uint8), i))
    lines = []
    for i in range(N):
        Image.fromarray(rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)).save(root / f"im{i}.png")
        lines.append(f"im{i}.png {i}")
    (root / "list.txt").write_text("\n".join(lines) + "\n")
    import h5py
    files = []
    for k, n in enumerate((5, 7)):
        with h5py.File(root / f"part{k}.h5", "w") as f:
            f["data"] = np.zeros((n, 2))
            f["label"] = np.arange(n, dtype=np.float64) + 5 * k
        files.append(str(root / f"part{k}.h5"))
    (root / "h5.txt").write_text("\n".join(files) + "\n")
    return root


def layer_text(kind: str, root, batch: int) -> str:
    if kind == "lmdb":
        return (f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
                f'data_param {{ source: "{root}/db" batch_size: {batch} backend: LMDB }} }}')
    if kind == "imagedata":
        return (f'layer {{ name: "d" type: "ImageData" top: "data" top: "label" '
                f'image_data_param {{ source: "{root}/list.txt" root_folder: "{root}/" batch_size: {batch} '
                f'shuffle: true }} }}')
    if kind == "hdf5":
        return (f'layer {{ name: "d" type: "HDF5Data" top: "data" top: "label" '
                f'hdf5_data_param {{ source: "{root}/h5.txt" batch_size: {batch} shuffle: true }} }}')
    return (f'layer {{ name: "d" type: "Python" top: "label" python_param {{ '
            f'module: "tests.distributed.counting_layer" layer: "CountingData" param_str: "{batch}" }} }}')


def labels_read(kind: str, root, batch: int, count: int, rank: int, phase=caffe_pb2.TRAIN) -> list:
    multiprocess.set_solver_count(count)
    multiprocess.set_solver_rank(rank)
    try:
        brewnet.set_random_seed(11)  # shuffles alike on every rank
        param = caffe_pb2.NetParameter()
        text_format.Merge('name: "shard"\n' + layer_text(kind, root, batch), param)
        net = brewnet.Net(param, phase)
        out = []
        for _ in range(BATCHES):
            net.forward()
            out.append(net.blobs["label"].data.copy().astype(int).tolist())
        for layer in net.layers:
            if hasattr(layer, "close"):
                layer.close()
        return out
    finally:
        multiprocess.set_solver_count(1)
        multiprocess.set_solver_rank(0)


@pytest.mark.parametrize("kind", ["lmdb", "imagedata", "hdf5", "python"])
@pytest.mark.parametrize("count,batch", [(2, 3), (3, 2)])
def test_rank_slices_make_the_global_batch(sources, kind, count, batch):
    whole = labels_read(kind, sources, batch * count, 1, 0)
    ranks = [labels_read(kind, sources, batch, count, r) for r in range(count)]
    for i in range(BATCHES):
        joined = [x for r in range(count) for x in ranks[r][i]]
        assert joined == whole[i], f"{kind}: batch {i}"
    if kind != "python":  # over the run every record is read, none twice within an epoch
        first_epoch = [x for i in range(BATCHES) for x in whole[i]][:N]
        assert sorted(first_epoch) == list(range(N))


@pytest.mark.parametrize("kind", ["lmdb", "imagedata"])
def test_test_phase_reads_everything(sources, kind):
    full = labels_read(kind, sources, 4, 1, 0, phase=caffe_pb2.TEST)
    assert labels_read(kind, sources, 4, 2, 1, phase=caffe_pb2.TEST) == full


def test_augmentation_differs_per_rank_but_not_the_records(sources):
    """Random mirroring is drawn per rank (ranks must not mirror alike); the records are the
    global batch's slices."""
    def read(rank):
        multiprocess.set_solver_count(2)
        multiprocess.set_solver_rank(rank)
        try:
            brewnet.set_random_seed(5)
            param = caffe_pb2.NetParameter()
            text_format.Merge(f'''name: "aug"
layer {{ name: "d" type: "Data" top: "data" top: "label" transform_param {{ mirror: true }}
        data_param {{ source: "{sources}/db" batch_size: 6 backend: LMDB }} }}''', param)
            net = brewnet.Net(param, caffe_pb2.TRAIN)
            flips, labels = [], []
            for _ in range(4):
                net.forward()
                labels += net.blobs["label"].data.astype(int).tolist()
                flips.append(net.blobs["data"].data.copy())
            net.layers[0].close()
            return labels, flips
        finally:
            multiprocess.set_solver_count(1)
            multiprocess.set_solver_rank(0)
    l0, _ = read(0)
    l1, _ = read(1)
    assert l0[:6] == list(range(6)) and l1[:6] == list(range(6, 12))
    # the mirror draws: rank 1 mirrors differently from how rank 0 mirrors its own records
    from brewnet.layers.datalayers import layer_rng

    class FakeLayer:
        name, phase, training_phase = "d", caffe_pb2.TRAIN, True
    draws = []
    for rank in (0, 1):
        multiprocess.set_solver_count(2)
        multiprocess.set_solver_rank(rank)
        try:
            draws.append(layer_rng(FakeLayer, -1, per_rank=True).integers(0, 2, size=32).tolist())
            order = layer_rng(FakeLayer, -1).integers(0, 2, size=32).tolist()
        finally:
            multiprocess.set_solver_count(1)
            multiprocess.set_solver_rank(0)
        draws.append(order)
    assert draws[0] != draws[2]     # augmentation: per rank
    assert draws[1] == draws[3]     # record order: the same on every rank
