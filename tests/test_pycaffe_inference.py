"""pycaffe's inference helpers (``caffe.Classifier``, ``caffe.Detector``), the bundle classifier
(``Classifier.from_bundle``) and the ``brewnet draw`` command.

The preprocessing is checked on a net whose output is its input, flattened (``IDENTITY``): the
prediction is then the preprocessed crop itself, compared with the same steps written out in
numpy.  A resize in those steps is ``caffe.io.resize_image`` itself (pycaffe's scikit-image
resize, whose numbers test_pycaffe_resize.py pins on recorded pycaffe outputs), and a resize to
the same size is the identity.
"""
from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import brewnet
from brewnet.commands import main as cli
from brewnet.pycaffe import io as caffe_io
from brewnet.errors import BrewnetError, NetError
from brewnet.pycaffe.classifier import Classifier
from brewnet.pycaffe.detector import Detector
from brewnet.net import TEST, Net
from numeric import assert_close_f32

IDENTITY = """name: "identity"
layer {{ name: "data" type: "Input" top: "data"
        input_param {{ shape {{ dim: {n} dim: 3 dim: {h} dim: {w} }} }} }}
layer {{ name: "flat" type: "Flatten" bottom: "data" top: "flat" }}
"""

# global average of each channel, an InnerProduct with weights set below, Softmax
SOFTMAX = """name: "pooled_softmax"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 4 dim: 3 dim: 4 dim: 4 } } }
layer { name: "pool" type: "Pooling" bottom: "data" top: "pool"
        pooling_param { pool: AVE global_pooling: true } }
layer { name: "ip" type: "InnerProduct" bottom: "pool" top: "ip"
        inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }
"""
IP_W = np.array([[0.9, -0.4, 0.2], [-0.3, 0.8, -0.6], [0.1, 0.05, 0.7]], np.float32)  # (3, 3)
IP_B = np.array([0.1, -0.2, 0.05], np.float32)


def _model(tmp_path: Path, text: str, name: str, params: dict | None = None) -> tuple[str, str]:
    """Write ``text`` as NAME.prototxt and its weights (``params``: layer -> arrays) as
    NAME.caffemodel; returns both paths."""
    proto = tmp_path / f"{name}.prototxt"
    proto.write_text(text)
    net = Net(str(proto), TEST)
    for layer, arrays in (params or {}).items():
        for blob, value in zip(net.params[layer], arrays):
            blob.data[...] = value
    weights = tmp_path / f"{name}.caffemodel"
    net.save(str(weights))
    return str(proto), str(weights)


def _identity(tmp_path, n=2, h=4, w=4) -> tuple[str, str]:
    return _model(tmp_path, IDENTITY.format(n=n, h=h, w=w), f"identity_{n}_{h}x{w}")


def _images(seed: int, *shapes) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random(s, dtype=np.float32) for s in shapes]


def _half(im: np.ndarray) -> np.ndarray:
    """A 2× downsample of H×W×K as pycaffe makes it (``caffe.io.resize_image``: anti-aliased,
    the border blended with zero padding)."""
    h, w, _ = im.shape
    return caffe_io.resize_image(im, (h // 2, w // 2))


def _pycaffe_preprocess(crop, mean=None, raw_scale=None, input_scale=None, channel_swap=None):
    """pycaffe's Transformer steps written out: H×W×K -> K×H×W, swap, raw scale, mean, scale."""
    x = crop.transpose(2, 0, 1)  # (K, H, W)
    if channel_swap is not None:
        x = x[list(channel_swap)]
    if raw_scale is not None:
        x = x * raw_scale
    if mean is not None:
        mean = np.asarray(mean, np.float32)
        x = x - (mean[:, None, None] if mean.ndim == 1 else mean)
    if input_scale is not None:
        x = x * input_scale
    return x


def _ten_crops(im: np.ndarray, h: int, w: int) -> list[np.ndarray]:
    """The corners (top-left, top-right... in pycaffe's row-major order), the centre, then the
    five mirrored left to right."""
    H, W = im.shape[:2]
    cy, cx = int(H / 2 - h / 2), int(W / 2 - w / 2)
    crops = [im[y:y + h, x:x + w] for y in (0, H - h) for x in (0, W - w)]
    crops.append(im[cy:cy + h, cx:cx + w])
    return crops + [c[:, ::-1] for c in crops]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ----- Classifier: preprocessing --------------------------------------------------------------
BGR_MEAN = np.array([104.0, 117.0, 123.0], np.float32)  # per channel, in the swapped (BGR) order


def test_classifier_is_a_test_phase_net_reachable_as_caffe_classifier(tmp_path):
    proto, weights = _identity(tmp_path)
    clf = brewnet.Classifier(proto, weights)
    assert brewnet.Classifier is Classifier and brewnet.Detector is Detector
    assert isinstance(clf, Net) and clf.phase == TEST
    np.testing.assert_array_equal(clf.crop_dims, [4, 4])
    np.testing.assert_array_equal(clf.image_dims, [4, 4])  # default: the net's input size
    assert clf.transformer.transpose["data"] == (2, 0, 1)


def test_centre_crop_applies_resize_swap_raw_scale_mean_and_input_scale_in_order(tmp_path):
    proto, weights = _identity(tmp_path, n=2)
    clf = Classifier(proto, weights, image_dims=(6, 6), mean=BGR_MEAN, input_scale=0.0125,
                     raw_scale=255.0, channel_swap=(2, 1, 0))
    # three images (the net's batch of 2 is padded for the third): 12×12 halved to 6×6, a 6×6
    # taken as it is, a 12×12 again
    images = _images(0, (12, 12, 3), (6, 6, 3), (12, 12, 3))
    got = clf.predict(images, oversample=False)  # (3, 3*4*4)
    assert got.shape == (3, 48)
    for i, (im, resized) in enumerate(zip(images, (_half(images[0]), images[1], _half(images[2])))):
        want = _pycaffe_preprocess(resized[1:5, 1:5], BGR_MEAN, 255.0, 0.0125, (2, 1, 0))
        assert_close_f32(got[i], want.reshape(-1), what=f"image {i}")
    # the order matters: the mean before raw_scale, or RGB kept, give other values
    crop = _half(images[0])[1:5, 1:5].transpose(2, 0, 1)
    mean_first = ((crop[::-1] - BGR_MEAN[:, None, None]) * 255.0) * 0.0125
    no_swap = (crop * 255.0 - BGR_MEAN[:, None, None]) * 0.0125
    assert np.abs(got[0] - mean_first.reshape(-1)).max() > 10
    assert np.abs(got[0] - no_swap.reshape(-1)).max() > 0.5


def test_channel_swap_2_1_0_turns_rgb_into_bgr(tmp_path):
    proto, weights = _identity(tmp_path)
    clf = Classifier(proto, weights, channel_swap=(2, 1, 0), raw_scale=255.0)
    rgb = np.zeros((4, 4, 3), np.float32)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1.0, 0.5, 0.0  # R, G, B
    out = clf.predict([rgb], oversample=False).reshape(3, 4, 4)
    np.testing.assert_array_equal(out[:, 0, 0], [0.0, 127.5, 255.0])  # B, G, R: exact in float32


def test_mean_image_is_subtracted_in_the_transposed_chw_space(tmp_path):
    proto, weights = _identity(tmp_path, h=4, w=6)
    mean = np.arange(3 * 4 * 6, dtype=np.float32).reshape(3, 4, 6) / 7.0  # (C, H, W), no symmetry
    clf = Classifier(proto, weights, mean=mean, raw_scale=2.0, channel_swap=(1, 2, 0))
    (im,) = _images(1, (4, 6, 3))
    got = clf.predict([im], oversample=False)[0]
    want = _pycaffe_preprocess(im, mean, 2.0, None, (1, 2, 0))
    assert_close_f32(got, want.reshape(-1))


def test_oversample_averages_exactly_the_ten_crops(tmp_path):
    proto, weights = _identity(tmp_path, n=4, h=4, w=4)
    clf = Classifier(proto, weights, image_dims=(6, 8), mean=BGR_MEAN, raw_scale=255.0,
                     channel_swap=(2, 1, 0))
    images = _images(2, (12, 16, 3), (6, 8, 3))
    got = clf.predict(images)  # oversample=True is pycaffe's default
    assert got.shape == (2, 48)
    for i, resized in enumerate((_half(images[0]), images[1])):
        crops = [_pycaffe_preprocess(c, BGR_MEAN, 255.0, None, (2, 1, 0)).reshape(-1)
                 for c in _ten_crops(resized, 4, 4)]
        assert_close_f32(got[i], np.mean(crops, axis=0), what=f"image {i}")
    centre = clf.predict(images, oversample=False)
    assert np.abs(got - centre).max() > 1  # the average is not the centre crop


def test_oversampled_probabilities_are_the_mean_of_each_crops_softmax(tmp_path):
    proto, weights = _model(tmp_path, SOFTMAX, "softmax", {"ip": (IP_W, IP_B)})
    clf = Classifier(proto, weights, image_dims=(8, 8), raw_scale=4.0, channel_swap=(2, 1, 0))
    images = _images(3, (8, 8, 3), (16, 16, 3), (8, 8, 3))
    images[0][:4, :4] += 2.0  # crops that differ a lot, so that averaging order shows
    got = clf.predict(images)
    assert got.shape == (3, 3)
    for i, resized in enumerate((images[0], _half(images[1]), images[2])):
        crops = [_pycaffe_preprocess(c, None, 4.0, None, (2, 1, 0)) for c in _ten_crops(resized, 4, 4)]
        # the net by hand: channel means -> W x + b -> softmax, per crop, then the average
        probs = _softmax(np.stack([IP_W @ c.mean(axis=(1, 2)) + IP_B for c in crops]))  # (10, 3)
        assert_close_f32(got[i], probs.mean(axis=0), what=f"image {i}")
        # and through the net itself, the ten crops fed by hand
        ran = clf.forward_all(data=np.stack(crops).astype(np.float32))["prob"]  # (10, 3)
        assert_close_f32(got[i], ran.mean(axis=0), what=f"image {i} via forward_all")
    mean_logits = _softmax(np.mean([IP_W @ c.mean(axis=(1, 2)) + IP_B for c in (
        _pycaffe_preprocess(c, None, 4.0, None, (2, 1, 0)) for c in _ten_crops(images[0], 4, 4))],
        axis=0))
    assert np.abs(got[0] - mean_logits).max() > 1e-3  # probabilities averaged, not logits


def test_caffe_io_oversample_gives_pycaffes_ten_crops():
    (im,) = _images(10, (6, 8, 3))
    crops = caffe_io.oversample(im[None], (4, 4))
    np.testing.assert_array_equal(crops, np.stack(_ten_crops(im, 4, 4)))


def test_centre_crop_of_odd_and_unequal_image_dims(tmp_path):
    proto, weights = _identity(tmp_path)
    clf = Classifier(proto, weights, image_dims=(7, 9))
    (im,) = _images(4, (7, 9, 3))  # already image_dims: no resize
    got = clf.predict([im], oversample=False)[0]
    # pycaffe: centre (3.5, 4.5) ± 2, truncated: rows 1..4, columns 2..5
    assert_close_f32(got, im[1:5, 2:6].transpose(2, 0, 1).reshape(-1))


def test_classifier_errors_are_clear(tmp_path):
    proto, weights = _identity(tmp_path)
    with pytest.raises(NetError, match="network definition not found: .*nowhere.prototxt"):
        Classifier(str(tmp_path / "nowhere.prototxt"), weights)
    with pytest.raises(NetError, match="pretrained weights not found: .*nowhere.caffemodel"):
        Classifier(proto, str(tmp_path / "nowhere.caffemodel"))
    clf = Classifier(proto, weights, image_dims=(3, 8))
    with pytest.raises(BrewnetError, match=r"image_dims \(3, 8\) is smaller than the net's input"):
        clf.predict(_images(5, (3, 8, 3)))
    with pytest.raises(BrewnetError, match="H×W×K images"):
        Classifier(proto, weights).predict([np.zeros((4, 4), np.float32)])
    assert Classifier(proto, weights).predict([]).shape == (0, 48)


# ----- Classifier.from_bundle -----------------------------------------------------------------
BUNDLE_NET = """name: "bundled"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 2 dim: 3 dim: 6 dim: 6 } } }
layer { name: "score" type: "InnerProduct" bottom: "data" top: "score"
        inner_product_param { num_output: 4 } }
layer { name: "prob" type: "Softmax" bottom: "score" top: "prob" }
"""


def _bundle(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray, np.ndarray]:
    """A deploy bundle written by hand: colour images stored at 8×8 (squashed), validation's
    centre crop 6, a mean image, scale 0.5; returns its directory, the mean and the weights."""
    import json

    from brewnet import formats

    rng = np.random.default_rng(11)
    w = (rng.standard_normal((4, 3 * 6 * 6)) * 0.05).astype(np.float32)  # (classes, C*h*w)
    b = np.array([0.2, -0.1, 0.0, 0.3], np.float32)
    mean = rng.uniform(60, 180, (3, 8, 8)).astype(np.float32)  # (C, H, W), BGR
    d = tmp_path / "bundle"
    d.mkdir()
    proto, weights = _model(d, BUNDLE_NET, "deploy", {"score": (w, b)})
    Path(weights).rename(d / "weights.caffemodel")
    formats.write_binaryproto(mean[None], d / "mean.binaryproto")
    (d / "labels.txt").write_text("coat\nbag\nshirt\nboot\n")
    (d / "info.json").write_text(json.dumps({"name": "hand-made"}))
    (d / "preprocess.json").write_text(json.dumps({
        "version": 1, "input": "data", "input_shape": [3, 6, 6], "channels": 3,
        "channel_order": "BGR", "stored_size": [8, 8],
        "resize": {"width": 8, "height": 8, "mode": "squash"},
        "transform_param": 'crop_size: 6\nmean_file: "mean.binaryproto"\nscale: 0.5\n',
        "crop": {"height": 6, "width": 6}, "mean": {"image": "mean.binaryproto"}, "scale": 0.5,
        "input_range": [0, 255], "source": "written by hand", "baked": False}))
    return d, mean, w, b


def test_bundle_classifier_applies_preprocess_json(tmp_path):
    d, mean, w, b = _bundle(tmp_path)
    clf = brewnet.Classifier.from_bundle(d)
    assert isinstance(clf, Classifier) and clf.labels == ["coat", "bag", "shirt", "boot"]
    rng = np.random.default_rng(12)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)    # stored size: no resize
    large = rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)  # squashed to 8×8
    Image.fromarray(small, "RGB").save(tmp_path / "small.png")
    Image.fromarray(large, "RGB").save(tmp_path / "large.png")
    inputs = [str(tmp_path / "small.png"), tmp_path / "large.png", Image.fromarray(small, "RGB")]
    got = clf.predict(inputs, oversample=False)  # oversample=False is what happens anyway
    assert got.shape == (3, 4)
    # by hand for the stored-size image: RGB -> BGR C×H×W, minus the mean image, centre crop
    # (offset 1), times 0.5, then the net: W x + b, softmax
    x = (small[:, :, ::-1].transpose(2, 0, 1).astype(np.float32) - mean)[:, 1:7, 1:7] * 0.5
    assert_close_f32(got[0], _softmax(w @ x.reshape(-1) + b))
    np.testing.assert_array_equal(got[2], got[0])  # a PIL image: the same computation
    # all of them: the bundle's deploy net on the Preprocessor's output
    from brewnet.inference.bundle import Bundle
    from brewnet.inference.preprocess import Preprocessor

    bundle = Bundle.load(d)
    pre = Preprocessor.from_bundle(bundle)
    batch = pre.transform(np.stack([pre.load_file(str(tmp_path / n))
                                    for n in ("small.png", "large.png", "small.png")]))
    want = bundle.net().forward_all(data=batch)["prob"]
    assert_close_f32(got, want)
    assert not np.allclose(got[0], got[1])  # two different images, two different answers


def test_bundle_classifier_streams_in_chunks_and_refuses_oversampling(tmp_path, monkeypatch):
    d, *_ = _bundle(tmp_path)
    clf = Classifier.from_bundle(d)
    rng = np.random.default_rng(13)
    images = [Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "RGB")
              for _ in range(5)]
    whole = clf.predict(images, oversample=False)
    monkeypatch.setattr(Classifier, "BUNDLE_CHUNK", 2)
    np.testing.assert_array_equal(clf.predict(iter(images)), whole)  # same batches of 2, padded
    with pytest.raises(BrewnetError, match="oversample=True would not give validation's numbers"):
        clf.predict(images, oversample=True)
    with pytest.raises(BrewnetError, match="file paths or PIL images, got ndarray"):
        clf.predict([np.zeros((8, 8, 3), np.float32)])
    assert clf.predict([]).shape == (0, 4)
    (d / "labels.txt").unlink()
    with pytest.raises(BrewnetError, match="missing labels.txt"):
        Classifier.from_bundle(d)
    with pytest.raises(BrewnetError, match="not a deploy bundle directory"):
        Classifier.from_bundle(tmp_path / "nowhere")


# ----- Detector -------------------------------------------------------------------------------
def _png(tmp_path: Path, name: str, seed: int, h: int, w: int) -> tuple[str, np.ndarray]:
    """A random RGB PNG; returns its path and the H×W×3 floats load_image gives."""
    pixels = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    path = tmp_path / name
    Image.fromarray(pixels, "RGB").save(path)
    return str(path), pixels.astype(np.float32) / 255.0


def test_detect_windows_crops_and_warps_each_window(tmp_path):
    proto, weights = _identity(tmp_path, n=2)
    det = Detector(proto, weights, mean=BGR_MEAN, raw_scale=255.0, channel_swap=(2, 1, 0))
    assert det.crop_mode == "warp"
    np.testing.assert_array_equal(det.crop_dims, [4, 4, 3])  # H, W, K
    a, im_a = _png(tmp_path, "a.png", 6, 16, 20)
    b, im_b = _png(tmp_path, "b.png", 7, 10, 10)
    windows_a = [np.array([2, 3, 10, 11]), np.array([0, 16, 4, 20])]
    windows_b = [np.array([1, 2, 9, 6])]
    # a one-shot iterator, as pycaffe's detect_selective_search passes
    detections = det.detect_windows(iter([(a, windows_a), (b, windows_b)]))
    assert [d["filename"] for d in detections] == [a, a, b]
    for d, w in zip(detections, windows_a + windows_b):
        np.testing.assert_array_equal(d["window"], w)
    hand = [_half(im_a[2:10, 3:11]),                       # 8×8 -> 4×4
            im_a[0:4, 16:20],                              # 4×4 as it is
            caffe_io.resize_image(im_b[1:9, 2:6], (4, 4))]  # 8×4 -> 4×4: rows halved
    for d, crop in zip(detections, hand):
        want = _pycaffe_preprocess(crop, BGR_MEAN, 255.0, None, (2, 1, 0))
        assert_close_f32(d["prediction"], want.reshape(-1))
    assert det.detect_windows([(a, [])]) == []


def test_context_pad_grows_the_window_and_pads_with_the_mean(tmp_path):
    proto, weights = _identity(tmp_path, n=1, h=8, w=8)
    det = Detector(proto, weights, mean=BGR_MEAN, raw_scale=255.0, channel_swap=(2, 1, 0),
                   context_pad=2)
    assert det.crop_mode == "context"
    # the mean in the image's own space: RGB order, [0, 1]
    assert_close_f32(det.crop_mean.reshape(-1), BGR_MEAN[::-1] / 255.0)
    path, im = _png(tmp_path, "c.png", 8, 16, 24)
    # input 8, pad 2: the window is scaled by 8 / (8 - 4) = 2 about its centre.
    # [4, 4, 7, 7] (inclusive, 4×4, centre 6) becomes [2, 2, 10, 10]: im[2:10, 2:10] fills the
    # input, the window in its middle with 2 pixels of context around it
    np.testing.assert_array_equal(det.crop(im, np.array([4, 4, 7, 7])), im[2:10, 2:10])
    # [0, 0, 3, 3] becomes [-2, -2, 6, 6]: 2 rows/columns (× 8/9, rounded: 2) lie outside and
    # stay mean; the rest, clipped to [0, 0, 6, 6], is 7 pixels × 8/9 -> 6: im[0:6, 0:6] as is
    top_left = det.crop(im, np.array([0, 0, 3, 3]))
    np.testing.assert_array_equal(top_left[2:8, 2:8], im[0:6, 0:6])
    np.testing.assert_array_equal(top_left[:2], np.broadcast_to(det.crop_mean, (2, 8, 3)))
    np.testing.assert_array_equal(top_left[:, :2], np.broadcast_to(det.crop_mean, (8, 2, 3)))
    # [12, 20, 15, 23] becomes [10, 18, 18, 26], clipped to the 16×24 image: im[10:16, 18:24]
    # (7 pixels counted inclusively, × 8/9 -> 6) at the top left, mean beyond
    bottom_right = det.crop(im, np.array([12, 20, 15, 23]))
    np.testing.assert_array_equal(bottom_right[:6, :6], im[10:16, 18:24])
    np.testing.assert_array_equal(bottom_right[6:], np.broadcast_to(det.crop_mean, (2, 8, 3)))
    np.testing.assert_array_equal(bottom_right[:, 6:], np.broadcast_to(det.crop_mean, (8, 2, 3)))
    # [0, 0, 9, 9] (10×10) becomes [-5, -5, 15, 15]: 21 pixels into 8, so the 5 outside make
    # round(5 × 8/21 = 1.90) = 2 rows of mean, and the 16 inside (clipped to [0, 0, 15, 15])
    # round(16 × 8/21 = 6.10) = 6 rows: im[0:15, 0:15] resized to 6×6
    big = det.crop(im, np.array([0, 0, 9, 9]))
    np.testing.assert_array_equal(big[:2], np.broadcast_to(det.crop_mean, (2, 8, 3)))
    np.testing.assert_array_equal(big[:, :2], np.broadcast_to(det.crop_mean, (8, 2, 3)))
    np.testing.assert_array_equal(big[2:, 2:], caffe_io.resize_image(im[0:15, 0:15], (6, 6)))
    # end to end, the mean padding becomes zero input, the image part is preprocessed
    (d,) = det.detect_windows([(path, [np.array([0, 0, 3, 3])])])
    x = d["prediction"].reshape(3, 8, 8)
    assert np.abs(x[:, :2]).max() < 1e-4 and np.abs(x[:, :, :2]).max() < 1e-4
    want = _pycaffe_preprocess(im[0:6, 0:6], BGR_MEAN, 255.0, None, (2, 1, 0))
    assert_close_f32(x[:, 2:, 2:], want)


def test_context_pad_window_outside_the_image_is_a_clear_error(tmp_path):
    proto, weights = _identity(tmp_path, n=1, h=8, w=8)
    det = Detector(proto, weights, context_pad=2)
    assert np.all(det.crop_mean == 0)  # no mean: zero padding
    with pytest.raises(BrewnetError, match="outside the 16×16 image"):
        det.crop(np.zeros((16, 16, 3), np.float32), np.array([40, 40, 44, 44]))
    warp = Detector(proto, weights)
    with pytest.raises(BrewnetError, match="empty in a 16×16 image"):
        warp.crop(np.zeros((16, 16, 3), np.float32), np.array([5, 5, 5, 9]))


def test_selective_search_needs_its_module(tmp_path, monkeypatch):
    proto, weights = _identity(tmp_path)
    det = Detector(proto, weights)
    monkeypatch.setitem(sys.modules, "selective_search_ijcv_with_python", None)  # not importable
    with pytest.raises(BrewnetError, match="selective_search_ijcv_with_python"):
        det.detect_selective_search(["x.png"])
    # with the module (a stand-in): absolute paths in, its windows detected
    path, _ = _png(tmp_path, "s.png", 9, 12, 12)
    calls = []

    def get_windows(fnames, cmd):
        calls.append((fnames, cmd))
        return [np.array([[0, 0, 8, 8], [4, 4, 12, 12]])]

    fake = types.ModuleType("selective_search_ijcv_with_python")
    fake.get_windows = get_windows
    monkeypatch.setitem(sys.modules, "selective_search_ijcv_with_python", fake)
    monkeypatch.chdir(tmp_path)
    found = det.detect_selective_search(["s.png"])
    assert calls == [([path], "selective_search_rcnn")]
    direct = det.detect_windows([(path, [np.array([0, 0, 8, 8]), np.array([4, 4, 12, 12])])])
    assert len(found) == 2
    for f, d in zip(found, direct):
        assert f["filename"] == path
        np.testing.assert_array_equal(f["prediction"], d["prediction"])  # the same computation


# ----- brewnet draw ---------------------------------------------------------------------------
needs_dot = pytest.mark.skipif(__import__("shutil").which("dot") is None,
                               reason="Graphviz's dot is not installed (apt-get install graphviz)")
DRAWN = """name: "drawn"
layer { name: "train_feed" type: "Input" top: "data" include { phase: TRAIN }
        input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "test_feed" type: "Input" top: "data" include { phase: TEST }
        input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv_a" type: "Convolution" bottom: "data" top: "conv_a"
        param { lr_mult: 3 } param { lr_mult: 5 }
        convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "score_b" type: "InnerProduct" bottom: "conv_a" top: "score_b"
        inner_product_param { num_output: 4 } }
"""


def _draw(tmp_path, capsys, *argv) -> tuple[int, str, str]:
    model = tmp_path / "drawn.prototxt"
    model.write_text(DRAWN)
    rc = cli.main(["draw", "-model", str(model), *argv])
    out, err = capsys.readouterr()
    return rc, out, err


@needs_dot
def test_draw_writes_png_and_svg(tmp_path, capsys):
    rc, out, _ = _draw(tmp_path, capsys, "-output", str(tmp_path / "net.png"))
    assert rc == 0 and "net.png" in out
    assert (tmp_path / "net.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rc, _, _ = _draw(tmp_path, capsys, "--output", str(tmp_path / "net.svg"), "-phase", "TEST",
                     "-rankdir", "TB", "-display_lrm")
    svg = (tmp_path / "net.svg").read_text()
    assert rc == 0 and svg.lstrip().startswith(("<?xml", "<svg"))
    assert "test_feed" in svg and "conv_a" in svg and "score_b" in svg
    assert "train_feed" not in svg  # -phase TEST drops the TRAIN-only layer
    assert "lr mult: 3.0, 5.0" in svg


def test_draw_options_reach_the_graph(tmp_path, capsys):
    # .raw is the DOT source (no Graphviz needed): rankdir, phase and lr multipliers show there
    rc, _, _ = _draw(tmp_path, capsys, "-output", str(tmp_path / "a.raw"), "-rankdir", "BT")
    dot = (tmp_path / "a.raw").read_text()
    assert rc == 0 and "rankdir=BT" in dot and "train_feed" in dot and "test_feed" in dot
    assert "lr mult" not in dot
    rc, _, _ = _draw(tmp_path, capsys, "-output", str(tmp_path / "b.raw"), "-phase", "train",
                     "-display_lrm")
    dot = (tmp_path / "b.raw").read_text()
    assert rc == 0 and "rankdir=LR" in dot and "train_feed" in dot and "test_feed" not in dot
    assert "lr mult: 3.0, 5.0" in dot


@pytest.mark.parametrize("argv, message", [
    (["-model", "nowhere.prototxt", "-output", "x.png"], "model file not found: nowhere.prototxt"),
    (["-output", "x.png"], "draw needs a model"),
    (["-model", "{model}"], "draw needs an output picture"),
    (["-model", "{model}", "-output", "{tmp}/noext"], "give it an extension"),
    (["-model", "{model}", "-output", "{tmp}/x.nosuchformat"], 'Format: "nosuchformat" not recognized'),
    (["-model", "{model}", "-output", "{tmp}/missing_dir/x.raw"], "cannot write"),
])
def test_draw_errors_are_one_line(tmp_path, capsys, argv, message):
    model = tmp_path / "drawn.prototxt"
    model.write_text(DRAWN)
    argv = [a.format(model=model, tmp=tmp_path) for a in argv]
    if "nosuchformat" in message and __import__("shutil").which("dot") is None:
        pytest.skip("Graphviz's dot is not installed: its own message cannot be checked")
    rc = cli.main(["draw", *argv])
    err = capsys.readouterr().err
    assert rc == 1 and message in err
    assert err.count("\n") == 1 and err.startswith("brewnet draw: error: ")


def test_draw_without_graphviz_says_so_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no dot on PATH
    rc, _, err = _draw(tmp_path, capsys, "-output", str(tmp_path / "net.png"))
    assert rc == 1 and err.count("\n") == 1 and "Graphviz's 'dot' program" in err
    assert not (tmp_path / "net.png").exists()


def test_draw_command_line_exit_status(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "brewnet.commands.main", "draw", "-model",
                           str(tmp_path / "nowhere.prototxt"), "-output", str(tmp_path / "x.png")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr == f"brewnet draw: error: model file not found: {tmp_path / 'nowhere.prototxt'}\n"
