"""Per-layer visualisation data (issue 11, item 4): brewnet.inference.visualize.

A small net with known weights and BatchNorm statistics stored as Caffe stores them (running sums
with a factor s = 2.5, so a reader that forgets to divide, or divides twice, is caught) goes
through visualize_net; the JSON, the statistics and the PNGs are checked against numpy on the
net's own blobs.  top_images_per_class is checked against a full sort of the same stream.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

import brewnet
from brewnet.formats import net_from_text
from brewnet.inference.visualize import (SEPARATOR_RGB, THUMB_GAP, THUMB_PX, VisualizeError,
                                         array_stats, class_grid_path, safe_name,
                                         top_images_per_class, visualize_net)
from numeric import assert_close_f32

S = 2.5  # BVLC BatchNorm's factor s (blob 2): the stored sums are statistics * s
CONV = "conv1/3x3 reduce"  # a GoogLeNet-style name: a slash and a space

NET = f"""
name: "vis"
layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 2 dim: 3 dim: 8 dim: 8 }} }} }}
layer {{ name: "{CONV}" type: "Convolution" bottom: "data" top: "{CONV}"
         convolution_param {{ num_output: 4 kernel_size: 3 }} }}
layer {{ name: "bn" type: "BatchNorm" bottom: "{CONV}" top: "bn" }}
layer {{ name: "scale" type: "Scale" bottom: "bn" top: "bn" scale_param {{ bias_term: true }} }}
layer {{ name: "relu" type: "ReLU" bottom: "bn" top: "bn" }}
layer {{ name: "pool" type: "Pooling" bottom: "bn" top: "pool"
         pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "pool" top: "ip" inner_product_param {{ num_output: 5 }} }}
layer {{ name: "prob" type: "Softmax" bottom: "ip" top: "prob" }}
"""

MEAN = np.array([0.5, -1.0, 2.0, 0.25], dtype=np.float32)
VAR = np.array([1.5, 0.5, 4.0, 2.0], dtype=np.float32)
GAMMA = np.array([1.0, 2.0, 0.5, -1.0], dtype=np.float32)
BETA = np.array([0.1, 0.2, -0.3, 0.4], dtype=np.float32)


def make_net():
    net = brewnet.Net(net_from_text(NET), brewnet.TEST)
    rng = np.random.default_rng(11)
    p = net.params
    p[CONV][0].data[...] = rng.standard_normal((4, 3, 3, 3))
    p[CONV][1].data[...] = rng.standard_normal(4)
    p["bn"][0].data[...] = MEAN * S  # Caffe's running sums ...
    p["bn"][1].data[...] = VAR * S
    p["bn"][2].data[...] = S         # ... and their weight s
    p["scale"][0].data[...] = GAMMA
    p["scale"][1].data[...] = BETA
    p["ip"][0].data[...] = rng.standard_normal((5, 36))
    p["ip"][1].data[...] = rng.standard_normal(5)
    x = rng.standard_normal((3, 8, 8)).astype(np.float32)
    return net, x


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    net, x = make_net()
    out = tmp_path_factory.mktemp("vis")
    res = visualize_net(net, x, str(out))
    return net, x, str(out), res


def layer_entry(res, name):
    return next(e for e in res["layers"] if e["name"] == name)


def weight(entry, name):
    return next(w for w in entry["weights"] if w["name"] == name)


def png(outdir, image):
    return np.asarray(Image.open(os.path.join(outdir, image["path"])).convert("RGB"))


def grey(values, lo, hi):
    return np.rint((np.asarray(values, np.float64) - lo) * (255.0 / (hi - lo)))


# ----- the JSON ----------------------------------------------------------------------------------
def test_json_lists_every_blob_and_parametrised_layer(result):
    net, _, outdir, res = result
    with open(os.path.join(outdir, "visualization.json")) as f:
        on_disk = json.load(f)
    assert on_disk == json.loads(json.dumps(res))  # the file is the returned dict
    assert [b["name"] for b in res["blobs"]] == list(net.blobs)
    assert [e["name"] for e in res["layers"]] == [CONV, "bn", "scale", "ip"]
    assert res["input"] == {"blob": "data", "shape": [3, 8, 8]}
    bn_blob = next(b for b in res["blobs"] if b["name"] == "bn")
    assert bn_blob["in_place"] and bn_blob["produced_by"] == ["bn", "scale", "relu"]
    # the net's input blob gets its batch of 2 back after the one-image pass
    assert net.blobs["data"].shape == (2, 3, 8, 8)


def test_blob_statistics_match_numpy(result):
    net, x, _, res = result
    prob = res["outputs"]["prob"]
    # one image went through: the reported output is a distribution, and the image is the input
    assert_close_f32(sum(prob), 1.0, what="softmax sum")
    by_name = {b["name"]: b for b in res["blobs"]}
    # the blobs now hold batch 2 again; recompute the one-image pass to compare
    net.blobs["data"].reshape(1, 3, 8, 8)
    net.forward(data=x[None])
    for name, blob in net.blobs.items():
        data = np.asarray(blob.data, dtype=np.float64)
        st = by_name[name]["stats"]
        assert st["shape"] == list(data.shape) and st["count"] == data.size
        assert_close_f32(st["mean"], data.mean(), atol=1e-6, scale=np.abs(data).max(), what=f"{name} mean")
        assert_close_f32(st["std"], data.std(), what=f"{name} std")
        assert st["min"] == data.min() and st["max"] == data.max()  # float32 values, not computed
        edges, counts = np.asarray(st["histogram"]["edges"]), st["histogram"]["counts"]
        assert len(edges) == 21 and len(counts) == 20 and sum(counts) == data.size
        if data.min() < data.max():  # the bins span the values exactly
            assert edges[0] == data.min() and edges[-1] == data.max()
        # each count is the number of values in its bin (the last bin closed), by the edges given
        flat = data.reshape(-1)
        for i, c in enumerate(counts):
            inside = (flat >= edges[i]) & ((flat < edges[i + 1]) if i < 19 else (flat <= edges[i + 1]))
            assert c == int(inside.sum()), f"{name} bin {i}"
    assert_close_f32(by_name["prob"]["stats"]["mean"], 1 / 5, what="mean of 5 probabilities")
    net.blobs["data"].reshape(2, 3, 8, 8)


def test_array_stats_edge_cases():
    const = array_stats(np.full((2, 3), 4.0, np.float32))
    assert const["std"] == 0.0 and const["min"] == const["max"] == 4.0
    assert sum(const["histogram"]["counts"]) == 6
    bad = array_stats(np.array([1.0, np.nan, np.inf, 3.0]))
    assert bad["nonfinite"] == 2 and bad["mean"] == 2.0 and sum(bad["histogram"]["counts"]) == 2
    json.dumps(bad, allow_nan=False)  # no NaN leaks into the JSON
    assert array_stats(np.array([np.nan]))["mean"] is None


# ----- parameters and BatchNorm ------------------------------------------------------------------
def test_batchnorm_shows_statistics_after_the_factor(result):
    net, _, _, res = result
    bn = layer_entry(res, "bn")
    assert [w["name"] for w in bn["weights"]] == ["running_mean", "running_var"]  # no raw blobs
    mean, var = weight(bn, "running_mean"), weight(bn, "running_var")
    assert mean["role"] == var["role"] == "statistics"
    # blob0 / s and blob1 / s, from the blobs as stored
    stored = [np.asarray(b.data, np.float64) for b in net.params["bn"]]
    assert stored[2][0] == S
    assert_close_f32(mean["values"], stored[0] / stored[2][0], what="running mean")
    assert_close_f32(var["values"], stored[1] / stored[2][0], what="running variance")
    assert_close_f32(mean["values"], MEAN, what="running mean")
    assert_close_f32(mean["stats"]["mean"], MEAN.mean(), what="running mean's mean")
    assert bn["batchnorm"]["dialect"] == "bvlc" and bn["batchnorm"]["scale_factor"] == S
    assert bn["batchnorm"]["normalizes_with"] == "running statistics"
    assert [s["role"] for s in bn["stored"]] == ["statistics"] * 3
    assert bn["params"] == {"learnable": 0, "statistics": 4 + 4 + 1, "total": 9}


def test_scale_gamma_beta_are_learnable(result):
    _, _, _, res = result
    sc = layer_entry(res, "scale")
    g, b = weight(sc, "gamma"), weight(sc, "beta")
    assert g["role"] == b["role"] == "learnable"
    assert_close_f32(g["values"], GAMMA, what="gamma")
    assert_close_f32(b["values"], BETA, what="beta")


def test_parameter_counts(result):
    _, _, _, res = result
    conv, ip, sc = layer_entry(res, CONV), layer_entry(res, "ip"), layer_entry(res, "scale")
    assert conv["params"] == {"learnable": 4 * 3 * 3 * 3 + 4, "statistics": 0, "total": 112}
    assert sc["params"] == {"learnable": 8, "statistics": 0, "total": 8}
    assert ip["params"] == {"learnable": 5 * 36 + 5, "statistics": 0, "total": 185}
    assert res["totals"] == {"learnable": 112 + 8 + 185, "statistics": 9, "total": 314}


# ----- PNGs --------------------------------------------------------------------------------------
def test_activation_png_grid(result):
    net, x, outdir, res = result
    entry = next(b for b in res["blobs"] if b["name"] == CONV)
    im = entry["image"]
    # 4 channels of 6x6: a 2x2 grid, zoom 3 (tiles >= 16 px), 1-px separators
    assert (im["rows"], im["cols"], im["tiles"], im["tile_height"], im["zoom"]) == (2, 2, 4, 6, 3)
    img = png(outdir, im)
    assert img.shape == (2 * 18 + 1, 2 * 18 + 1, 3) == (im["height"], im["width"], 3)
    assert (img[18, :] == SEPARATOR_RGB).all() and (img[:, 18] == SEPARATOR_RGB).all()
    # tile 3 (row 1, col 1), value (0, 0): grey of the blob's min-max range
    net.blobs["data"].reshape(1, 3, 8, 8)
    net.forward(data=x[None])
    act = np.asarray(net.blobs[CONV].data[0], np.float64)  # (4, 6, 6)
    net.blobs["data"].reshape(2, 3, 8, 8)
    lo, hi = act.min(), act.max()
    assert im["range"] == [lo, hi]
    want = grey(act, lo, hi)
    for c in range(4):
        r, k = divmod(c, 2)
        tile = img[r * 19:r * 19 + 18:3, k * 19:k * 19 + 18:3]  # (6, 6, 3), one pixel per value
        assert (tile[..., 0] == tile[..., 1]).all()  # grey
        assert np.abs(tile[..., 0] - want[c]).max() <= 1, f"channel {c}"


def test_colour_filters_are_rgb(result):
    net, _, outdir, res = result
    w = weight(layer_entry(res, CONV), "weights")
    im = w["image"]
    assert im["layout"] == "filters_rgb" and (im["rows"], im["cols"], im["tiles"]) == (2, 2, 4)
    img = png(outdir, im)
    filt = np.asarray(net.params[CONV][0].data, np.float64)  # (4 out, 3 in BGR, 3, 3)
    want = grey(filt, filt.min(), filt.max())
    z = im["zoom"]
    tile = img[0:3 * z:z, 0:3 * z:z]  # filter 0, (3, 3, RGB)
    # R is Caffe's channel 2, B its channel 0
    assert np.abs(tile[..., 0] - want[0, 2]).max() <= 1
    assert np.abs(tile[..., 2] - want[0, 0]).max() <= 1
    assert not np.array_equal(want[0, 0], want[0, 2])  # the test can tell the orders apart


def test_inner_product_rows_drawn_over_the_bottom_shape(result):
    _, _, outdir, res = result
    im = weight(layer_entry(res, "ip"), "weights")["image"]
    # W (5, 36) over pool's (4, 3, 3): a row per output, a column per input channel
    assert im["layout"] == "filter_grid" and (im["rows"], im["cols"]) == (5, 4)
    assert png(outdir, im).shape[:2] == (5 * 18 + 4, 4 * 18 + 3)


def test_tile_cap_is_reported(tmp_path):
    text = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 4 dim: 4 } } }
layer { name: "c" type: "Convolution" bottom: "data" top: "c"
        convolution_param { num_output: 20 kernel_size: 1 weight_filler { type: "gaussian" std: 1 } } }
"""
    net = brewnet.Net(net_from_text(text), brewnet.TEST)
    res = visualize_net(net, np.ones((1, 4, 4), np.float32), str(tmp_path), max_tiles=9)
    im = res["blobs"][1]["image"]
    assert (im["tiles"], im["tiles_total"], im["truncated"], im["rows"], im["cols"]) == (9, 20, True, 3, 3)
    assert res["max_tiles"] == 9


def test_safe_file_names(result):
    _, _, outdir, res = result
    paths = [b["image"]["path"] for b in res["blobs"]]
    paths += [w["image"]["path"] for e in res["layers"] for w in e["weights"]]
    for p in paths:
        head, name = p.split("/")
        assert head in ("blobs", "params") and " " not in name and os.path.isfile(os.path.join(outdir, p))
    assert "blobs/001_conv1_3x3_reduce.png" in paths
    assert len(set(paths)) == len(paths)
    # names that sanitise alike stay distinct through the index
    assert safe_name(1, "a/b") != safe_name(2, "a b")
    assert safe_name(0, "../..") == "000_unnamed" and "/" not in safe_name(3, "x/../../y")


# ----- NVCaffe BatchNorm, errors -----------------------------------------------------------------
def test_nvcaffe_batchnorm_scale_bias(tmp_path):
    text = """
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 3 } } }
layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" batch_norm_param { scale_bias: true } }
"""
    net = brewnet.Net(net_from_text(text), brewnet.TEST)
    p = net.params["bn"]
    assert len(p) == 5  # [mean, var, correction, scale, bias]
    p[0].data[...] = [0.5, -2.0]
    p[1].data[...] = [3.0, 0.25]
    p[3].data[...] = [1.5, -0.5]
    p[4].data[...] = [0.2, 0.7]
    x = np.random.default_rng(2).standard_normal((2, 3, 3)).astype(np.float32)
    res = visualize_net(net, x, str(tmp_path))
    bn = layer_entry(res, "bn")
    roles = {w["name"]: w["role"] for w in bn["weights"]}
    assert roles == {"running_mean": "statistics", "running_var": "statistics",
                     "gamma": "learnable", "beta": "learnable"}
    assert_close_f32(weight(bn, "running_mean")["values"], [0.5, -2.0], what="mean")
    assert_close_f32(weight(bn, "running_var")["values"], [3.0, 0.25], what="var")
    assert_close_f32(weight(bn, "gamma")["values"], [1.5, -0.5], what="gamma")
    assert_close_f32(weight(bn, "beta")["values"], [0.2, 0.7], what="beta")
    assert bn["batchnorm"]["dialect"] == "nvcaffe" and bn["batchnorm"]["has_scale_bias"]
    assert bn["params"] == {"learnable": 4, "statistics": 5, "total": 9}
    # the normalised output agrees with the statistics reported
    y = (x - np.array([0.5, -2.0])[:, None, None]) / np.sqrt(np.array([3.0, 0.25])[:, None, None] + 1e-5)
    y = y * np.array([1.5, -0.5])[:, None, None] + np.array([0.2, 0.7])[:, None, None]
    assert_close_f32(net.blobs["bn"].data[0], y, what="NVCaffe BatchNorm output")


def test_refuses_wrong_input_and_train_nets(tmp_path):
    net, x = make_net()
    with pytest.raises(VisualizeError, match=r"shape \(3, 8, 7\).*\(3, 8, 8\)"):
        visualize_net(net, x[:, :, :7], str(tmp_path))
    train = brewnet.Net(net_from_text(NET), brewnet.TRAIN)
    with pytest.raises(VisualizeError, match="TEST-phase"):
        visualize_net(train, x, str(tmp_path))


# ----- top images per class ----------------------------------------------------------------------
def fake_image(source: str) -> Image.Image:
    i = int(source.split("_")[1])
    if i % 97 == 0:
        raise OSError("cannot identify image file")
    size = (20 + i % 50, 30 + i % 20)
    mode = "L" if i % 2 else "RGB"
    return Image.new(mode, size, i % 256 if mode == "L" else (i % 256, 0, 255 - i % 256))


def test_top_images_per_class_matches_a_sort(tmp_path):
    labels = ["t-shirt", "trouser", "pull/over", "dress", "coat", "sandal", "shirt"]
    k, n = 5, 1000
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(len(labels)), size=n).astype(np.float32)
    probs = np.round(probs, 2)  # many ties: the earlier image must win them
    loaded = []

    def load(source):
        loaded.append(source)
        return fake_image(source)

    stream = ((f"img_{i}", probs[i]) for i in range(n))  # a generator: read once
    res = top_images_per_class(stream, labels, k, str(tmp_path), load)
    with open(tmp_path / "top_images.json") as f:
        assert json.load(f) == json.loads(json.dumps(res))
    assert list(res) == labels
    for j, label in enumerate(labels):
        order = np.argsort(-probs[:, j].astype(np.float64), kind="stable")[:k]  # ties: earlier first
        assert [e["source"] for e in res[label]] == [f"img_{i}" for i in order], label
        assert [e["prob"] for e in res[label]] == [float(probs[i, j]) for i in order]
        grid = Image.open(tmp_path / class_grid_path(j, label))
        rows, cols = 2, 3  # 5 thumbnails, near-square
        assert grid.size == (cols * (THUMB_PX + THUMB_GAP) - THUMB_GAP, rows * (THUMB_PX + THUMB_GAP) - THUMB_GAP)
    assert len(loaded) == k * len(labels)  # only the kept images were loaded
    assert sorted(os.listdir(tmp_path / "top_images")) == sorted(
        class_grid_path(j, lb).split("/")[1] for j, lb in enumerate(labels))


def test_top_images_bad_image_and_errors(tmp_path):
    labels = ["a", "b"]
    stream = [("img_97", np.array([0.9, 0.1])), ("img_3", np.array([0.2, 0.8]))]
    res = top_images_per_class(iter(stream), labels, 3, str(tmp_path), fake_image)
    assert [e["source"] for e in res["a"]] == ["img_97", "img_3"]
    assert "cannot identify" in res["a"][0]["error"] and "error" not in res["a"][1]
    # the failed cell is left empty (separator colour), the next one drawn
    grid = np.asarray(Image.open(tmp_path / class_grid_path(0, "a")))
    assert (grid[THUMB_PX // 2, THUMB_PX // 2] == SEPARATOR_RGB).all()
    assert not (grid[THUMB_PX // 2, THUMB_PX + THUMB_GAP + THUMB_PX // 2] == SEPARATOR_RGB).all()
    with pytest.raises(VisualizeError, match="3 scores for 2 labels"):
        top_images_per_class(iter([("x", np.ones(3))]), labels, 1, str(tmp_path), fake_image)
    with pytest.raises(VisualizeError, match="unique"):
        top_images_per_class(iter([]), ["a", "a"], 1, str(tmp_path), fake_image)


def test_module_does_not_import_torch():
    import subprocess
    import sys
    code = "import sys, brewnet.inference.visualize; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
