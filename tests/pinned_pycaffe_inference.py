"""Cases that pin what ``caffe.io.Transformer`` (preprocess and deprocess), ``caffe.Classifier``
(``predict`` with and without oversampling) and ``caffe.Detector`` (``crop`` with and without
context padding, ``detect_windows``) compute, on seeded inputs and nets.

``tests/test_pycaffe_pinned.py`` runs every case and compares it with
``tests/pycaffe_io/inference_pinned.npz``, which holds what brewnet computed for them before
these classes were rewritten (recorded by running this file: ``PYTHONPATH=. python3
tests/pinned_pycaffe_inference.py tests/pycaffe_io/inference_pinned.npz``; the resize inside is
pycaffe's, itself pinned on recorded pycaffe outputs by tests/test_pycaffe_resize.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from brewnet.pycaffe import io as caffe_io
from brewnet.pycaffe.classifier import Classifier
from brewnet.pycaffe.detector import Detector
from brewnet.net import TEST, Net

INPUT = """layer {{ name: "data" type: "Input" top: "data"
        input_param {{ shape {{ dim: {n} dim: {c} dim: {h} dim: {w} }} }} }}
"""
IDENTITY = 'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }\n'
CONV = """layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "conv" top: "ip"
        inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""
BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _net_files(tmp: Path, text: str, name: str, seed: int, **dims) -> tuple[str, str]:
    """NAME.prototxt (an Input of ``dims``, then the layers in ``text``) and NAME.caffemodel
    with seeded weights (std 0.3)."""
    proto = tmp / f"{name}.prototxt"
    proto.write_text(INPUT.format(**dims) + text)
    net = Net(str(proto), TEST)
    rng = _rng(seed)
    for blobs in net.params.values():
        for blob in blobs:
            blob.data[...] = rng.normal(0.0, 0.3, blob.data.shape)
    weights = tmp / f"{name}.caffemodel"
    net.save(str(weights))
    return str(proto), str(weights)


def _png(tmp: Path, name: str, seed: int, h: int, w: int) -> str:
    path = tmp / name
    Image.fromarray(_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").save(path)
    return str(path)


def _float_images(seed: int, *shapes) -> list[np.ndarray]:
    rng = _rng(seed)
    return [rng.random(s, dtype=np.float32) for s in shapes]


# ----- Transformer ------------------------------------------------------------------------------
def transformer_cases(tmp: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    rng = _rng(30)
    settings = {
        # every setting, a channel swap that is not its own inverse
        "all": ((1, 3, 4, 5), {"transpose": (2, 0, 1), "channel_swap": (2, 0, 1),
                               "raw_scale": 255.0, "mean": BGR_MEAN, "input_scale": 0.5}),
        "mean_image": ((1, 3, 4, 5), {"transpose": (2, 0, 1), "channel_swap": (1, 2, 0),
                                      "mean": rng.random((3, 4, 5), dtype=np.float32)}),
        "grey_no_transpose": ((1, 1, 6, 6), {"raw_scale": 2.0, "mean": np.array([0.25]),
                                             "input_scale": 3.0}),
        "none": ((1, 3, 6, 7), {}),
    }
    for name, (shape, kw) in settings.items():
        t = caffe_io.Transformer({"data": shape})
        for key, value in kw.items():
            getattr(t, f"set_{key}")("data", value)
        k, h, w = shape[1:]
        for label, im in (("same", rng.random((h, w, k))),  # float64: converted
                          ("resized", rng.random((h * 2 + 1, w + 3, k), dtype=np.float32)),
                          ("uint8", rng.integers(0, 256, (h - 1, w + 2, k), dtype=np.uint8))):
            x = t.preprocess("data", im)
            out[f"transformer/{name}/preprocess_{label}"] = x
            if name != "none":
                out[f"transformer/{name}/deprocess_{label}"] = t.deprocess("data", x)
        if name != "none":
            blob = rng.normal(0.0, 50.0, (1,) + tuple(shape[1:])).astype(np.float32)
            out[f"transformer/{name}/deprocess_blob"] = t.deprocess("data", blob)
    return out


# ----- Classifier -------------------------------------------------------------------------------
def classifier_cases(tmp: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    conv = _net_files(tmp, CONV, "conv", 31, n=4, c=3, h=5, w=6)
    clf = Classifier(*conv, image_dims=(8, 9), mean=BGR_MEAN * 0.8, raw_scale=255.0,
                     channel_swap=(2, 1, 0), input_scale=0.02)
    images = _float_images(32, (8, 9, 3), (13, 7, 3), (20, 24, 3))
    out["classifier/conv/oversample"] = clf.predict(images)
    out["classifier/conv/centre"] = clf.predict(images, oversample=False)
    ident = _net_files(tmp, IDENTITY, "ident", 0, n=3, c=3, h=4, w=5)
    mean = _rng(33).random((3, 4, 5), dtype=np.float32)
    clf = Classifier(*ident, image_dims=(7, 8), mean=mean, raw_scale=2.0, channel_swap=(1, 2, 0))
    images = _float_images(34, (7, 8, 3), (11, 6, 3))
    out["classifier/identity/oversample"] = clf.predict(images, oversample=True)
    out["classifier/identity/centre"] = clf.predict(images, oversample=False)
    clf = Classifier(*ident)  # image_dims: the net's input; a uint8 image
    image = _rng(35).integers(0, 256, (9, 10, 3), dtype=np.uint8)
    out["classifier/default_dims/oversample"] = clf.predict([image])
    out["classifier/default_dims/centre"] = clf.predict([image], oversample=False)
    return out


# ----- Detector ---------------------------------------------------------------------------------
#: (ymin, xmin, ymax, xmax) windows in a 16×24 image: inside, at each border, larger than the
#: image, not square, reaching past the top left
WINDOWS = [(4, 4, 7, 7), (0, 0, 3, 3), (12, 20, 15, 23), (0, 0, 9, 9), (3, 5, 12, 9),
           (2, 2, 14, 21), (-2, -1, 4, 5), (5, 1, 10, 22)]


def detector_cases(tmp: Path) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    ident = _net_files(tmp, IDENTITY, "ident8", 0, n=2, c=3, h=8, w=8)
    image = caffe_io.load_image(_png(tmp, "crop.png", 40, 16, 24))
    mean_image = _rng(41).uniform(90, 130, (3, 8, 8)).astype(np.float32)
    detectors = {
        "warp": Detector(*ident, mean=BGR_MEAN, raw_scale=255.0, channel_swap=(2, 1, 0)),
        "pad2": Detector(*ident, mean=BGR_MEAN, raw_scale=255.0, channel_swap=(2, 1, 0),
                         context_pad=2),
        "pad3_mean_image": Detector(*ident, mean=mean_image, raw_scale=255.0,
                                    channel_swap=(2, 0, 1), context_pad=3),
        "pad1_no_mean": Detector(*ident, context_pad=1),
    }
    for name, det in detectors.items():
        out[f"detector/{name}/crop_dims"] = np.asarray(det.crop_dims)
        if det.context_pad:
            out[f"detector/{name}/crop_mean"] = np.asarray(det.crop_mean, np.float32)
        for i, window in enumerate(WINDOWS):
            if name == "warp" and min(window) < 0:
                continue  # a negative index slices from the end: no window to pin
            out[f"detector/{name}/crop_{i}"] = det.crop(image, np.array(window))
    conv = _net_files(tmp, CONV, "conv7", 42, n=2, c=3, h=7, w=7)
    files = [_png(tmp, "a.png", 43, 16, 24), _png(tmp, "b.png", 44, 12, 10)]
    per_file = [[np.array(w) for w in WINDOWS[:5]],
                [np.array((1, 2, 9, 6)), np.array((0, 0, 11, 9))]]
    for name, pad in (("conv_warp", None), ("conv_pad2", 2)):
        det = Detector(*conv, mean=BGR_MEAN, raw_scale=255.0, channel_swap=(2, 1, 0),
                       input_scale=0.05, context_pad=pad)
        found = det.detect_windows(zip(files, per_file))
        out[f"detector/{name}/predictions"] = np.stack([d["prediction"] for d in found])
        out[f"detector/{name}/windows"] = np.stack([d["window"] for d in found])
        out[f"detector/{name}/files"] = np.array([files.index(d["filename"]) for d in found])
    return out


GROUPS: dict[str, Callable[[Path], dict[str, np.ndarray]]] = {
    "transformer": transformer_cases, "classifier": classifier_cases, "detector": detector_cases}


if __name__ == "__main__":
    import sys
    import tempfile

    recorded: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for group, run in GROUPS.items():
            (Path(scratch) / group).mkdir()
            recorded.update(run(Path(scratch) / group))
    np.savez_compressed(sys.argv[1], **recorded)
    print(f"{len(recorded)} arrays -> {sys.argv[1]}")
