"""Small data fixtures for the data-layer tests, made under a temporary folder on first use."""
from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile

import numpy as np
from PIL import Image


@functools.lru_cache(maxsize=None)
def fixtures() -> dict[str, str]:
    from brewnet import formats
    from brewnet.data.image import encode_image
    from brewnet.data.lmdb_io import DatumWriter
    from brewnet.pycaffe.io import array_to_datum
    from brewnet.proto import caffe_pb2

    root = tempfile.mkdtemp(prefix="brewnet-data-fixtures-")
    atexit.register(shutil.rmtree, root, True)
    rng = np.random.default_rng(1234)
    out = {"root": root}

    # raw colour LMDB: 6 Datums 3x6x7, labels i % 3
    raw = rng.integers(0, 256, size=(6, 3, 6, 7), dtype=np.uint8)
    out["raw_images"] = raw
    out["lmdb_raw"] = os.path.join(root, "lmdb_raw")
    with DatumWriter(out["lmdb_raw"]) as w:
        for i, a in enumerate(raw):
            w.put(array_to_datum(a, i % 3))
    mean = raw.astype(np.float32).mean(axis=0)
    out["mean"] = os.path.join(root, "mean.binaryproto")
    formats.write_binaryproto(mean[None], out["mean"])

    # encoded PNG LMDB: 4 colour images (RGB in the file, BGR after decoding)
    rgb = rng.integers(0, 256, size=(4, 6, 7, 3), dtype=np.uint8)
    out["png_rgb"] = rgb
    out["lmdb_png"] = os.path.join(root, "lmdb_png")
    with DatumWriter(out["lmdb_png"]) as w:
        for i, a in enumerate(rgb):
            d = caffe_pb2.Datum(encoded=True, label=i, data=encode_image(a, "png"))
            w.put(d)

    # images + list file (one grey image among colour ones)
    imdir = os.path.join(root, "images")
    os.makedirs(imdir)
    lines = []
    imgs = []
    for i in range(5):
        a = rng.integers(0, 256, size=(8, 9, 3), dtype=np.uint8)
        name = f"im{i}.png"
        if i == 3:
            Image.fromarray(a[:, :, 0]).save(os.path.join(imdir, name))
            a = np.repeat(a[:, :, :1], 3, axis=2)
        else:
            Image.fromarray(a).save(os.path.join(imdir, name))
        imgs.append(a)
        lines.append(f"{name} {i % 2}")
    out["list_images"] = np.stack(imgs)
    out["list"] = os.path.join(root, "list.txt")
    with open(out["list"], "w") as f:
        f.write("\n".join(lines) + "\n")
    out["imdir"] = imdir

    # HDF5: two files, data (N, 2, 3) and label (N,)
    import h5py
    h5s = []
    for k, n in enumerate((4, 2)):
        p = os.path.join(root, f"part{k}.h5")
        with h5py.File(p, "w") as f:
            f["data"] = (np.arange(n * 6, dtype=np.float64).reshape(n, 2, 3) + 100 * k)
            f["label"] = np.arange(n, dtype=np.float64) + 10 * k
        h5s.append(p)
    out["h5list"] = os.path.join(root, "h5list.txt")
    with open(out["h5list"], "w") as f:
        f.write("\n".join(h5s) + "\n")
    return out
