"""brewnet's training-time augmentation (brewnet.data.augment, ``brewnet train -augment``):
each operation numerically, the draws' bounds and frequencies, the file's validation, and the
TRAIN-phase Data layer applying it (test phases untouched)."""
from __future__ import annotations

import colorsys
import json

import numpy as np
import pytest

import brewnet
from brewnet import formats
from brewnet.data import DataError
from brewnet.data.augment import (Augmentation, Draw, bgr_to_hsv, hsv_to_bgr, scale_contrast,
                                  set_train_augmentation, shift_hsv, warp)
from brewnet.data.lmdb_io import DatumWriter
from brewnet.pycaffe.io import array_to_datum

ATOL = 1e-3   # float32 arithmetic on 0..255 values


def ramp(c=3, h=6, w=6):
    """Distinct values everywhere: channel c, row y, column x -> 100 c + 10 y + x."""
    return (100 * np.arange(c)[:, None, None] + 10 * np.arange(h)[None, :, None]
            + np.arange(w)[None, None, :]).astype(np.float32)


def draws(aug: Augmentation, n: int, shape=(3, 6, 6), seed=0) -> list[Draw]:
    rng = np.random.default_rng(seed)
    return [aug.draw(rng, shape) for _ in range(n)]


# ----- flips and quarter turns ------------------------------------------------------------------
@pytest.mark.parametrize("mode, lr, ud", [("fliplr", True, False), ("flipud", False, True),
                                          ("fliplrud", True, True), ("none", False, False)])
def test_flip_modes_flip_the_right_axes_half_the_time(mode, lr, ud):
    x = ramp()
    ds = draws(Augmentation(flip=mode), 400)
    got_lr = [d.flip_lr for d in ds]
    got_ud = [d.flip_ud for d in ds]
    for flag, wanted in ((got_lr, lr), (got_ud, ud)):
        if wanted:
            assert 0.4 < np.mean(flag) < 0.6
        else:
            assert not any(flag)
    if mode == "fliplrud":   # the two coins are independent: all four combinations occur
        assert len(set(zip(got_lr, got_ud))) == 4
    np.testing.assert_array_equal(Draw(flip_lr=True).apply(x), x[:, :, ::-1])
    np.testing.assert_array_equal(Draw(flip_ud=True).apply(x), x[:, ::-1, :])


@pytest.mark.parametrize("mode, turns", [("rot90", {0, 1, 3}), ("rot180", {0, 2}), ("rotall", {0, 1, 2, 3})])
def test_quad_rotation_draws_its_quarter_turns(mode, turns):
    ds = draws(Augmentation(quad_rot=mode), 300)
    counts = {k: sum(d.quarter_turns == k for d in ds) for k in turns}
    assert {d.quarter_turns for d in ds} == turns
    assert min(counts.values()) > 300 / len(turns) * 0.7   # about uniform


def test_quarter_turns_rotate_the_image():
    x = ramp()
    # a quarter turn counter-clockwise: the top row becomes the left column, read bottom-up
    q1 = Draw(quarter_turns=1).apply(x)
    for c in range(3):
        np.testing.assert_array_equal(q1[c, :, 0], x[c, 0, ::-1])
    np.testing.assert_array_equal(Draw(quarter_turns=2).apply(x), x[:, ::-1, ::-1])
    np.testing.assert_array_equal(Draw(quarter_turns=3).apply(Draw(quarter_turns=1).apply(x)), x)


def test_quarter_turns_of_non_square_images_are_refused():
    with pytest.raises(DataError, match="square"):
        Augmentation(quad_rot="rot90").check_input(3, 4, 6)
    Augmentation(quad_rot="rot180").check_input(3, 4, 6)   # a half turn keeps the shape


# ----- rotation and scale -----------------------------------------------------------------------
def test_rotation_angles_stay_within_the_bound_and_fill_it():
    ds = draws(Augmentation(rotation=15), 2000)
    angles = np.array([d.angle for d in ds])
    assert np.all(np.abs(angles) <= 15)
    assert angles.min() < -14 and angles.max() > 14     # uniform over [-15, 15]
    assert abs(angles.mean()) < 0.6
    assert all(d.zoom == 0 for d in ds)


def test_warp_without_rotation_or_scale_is_the_identity():
    x = ramp(h=5, w=7)
    np.testing.assert_allclose(warp(x, 0.0, 0.0), x, atol=ATOL)


def test_warp_by_quarter_and_half_turns_matches_exact_turns():
    x = ramp()
    turned = warp(x, 90.0, 0.0)
    # one of the two quarter turns (the direction is a convention; angles are drawn symmetrically)
    assert any(np.allclose(turned, np.rot90(x, k, axes=(1, 2)), atol=ATOL) for k in (1, 3))
    np.testing.assert_allclose(warp(x, 180.0, 0.0), x[:, ::-1, ::-1], atol=ATOL)


def test_warp_small_angle_interpolates_bilinearly_about_the_centre():
    x = ramp(c=1, h=5, w=5)   # 10 y + x: a linear image, so bilinear sampling is exact inside
    a = 10.0
    out = warp(x, a, 0.0)
    r = np.radians(a)
    y, xx = np.mgrid[0:5, 0:5].astype(np.float64)
    dy, dx = y - 2, xx - 2
    sy, sx = 2 + np.cos(r) * dy - np.sin(r) * dx, 2 + np.sin(r) * dy + np.cos(r) * dx
    expected = 10 * np.clip(sy, 0, 4) + np.clip(sx, 0, 4)
    np.testing.assert_allclose(out[0], expected, atol=ATOL)
    assert out[0, 2, 2] == pytest.approx(x[0, 2, 2])   # the centre stays


def test_scale_zooms_about_the_centre_and_repeats_the_border():
    x = ramp(c=1, h=1, w=9)[:, :, :]   # one row 0..8, centre 4
    out = warp(x, 0.0, 1.0)            # the sampled span doubles: zoom out
    np.testing.assert_allclose(out[0, 0], np.clip(4 + 2 * (np.arange(9) - 4), 0, 8), atol=ATOL)
    out = warp(x, 0.0, -0.5)           # half the span: zoom in
    np.testing.assert_allclose(out[0, 0], 4 + 0.5 * (np.arange(9) - 4), atol=ATOL)
    out = warp(x, 0.0, 0.0, shift=(0.0, 0.5))   # moved by a quarter of the width
    np.testing.assert_allclose(out[0, 0], np.clip(np.arange(9) + 2, 0, 8), atol=ATOL)


def test_scale_draws_are_normal_with_shifts_within_the_zoom():
    ds = draws(Augmentation(scale=0.07), 4000)
    zooms = np.array([d.zoom for d in ds])
    assert zooms.std() == pytest.approx(0.07, rel=0.08)
    assert abs(zooms.mean()) < 0.005
    assert all(abs(s) <= abs(d.zoom) for d in ds for s in d.shift)
    assert all(d.angle == 0 for d in ds)


# ----- noise, contrast, HSV ---------------------------------------------------------------------
def test_noise_std_is_in_unit_pixel_range():
    x = np.full((3, 40, 40), 128, np.uint8)
    rng = np.random.default_rng(1)
    out = Augmentation(noise=0.03).apply(np.stack([x] * 20), rng)
    delta = out.astype(np.float64) - 128
    assert delta.std() == pytest.approx(0.03 * 255, rel=0.03)
    assert abs(delta.mean()) < 0.1
    # fresh noise for every image
    assert not np.allclose(out[0], out[1])


def test_contrast_scales_each_channel_about_its_mean():
    x = ramp()
    out = scale_contrast(x, 1.5)
    mean = x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(out, (x - mean) * 1.5 + mean, atol=ATOL)
    np.testing.assert_allclose(out.mean(axis=(1, 2)), mean[:, 0, 0], atol=ATOL)
    factors = np.array([d.contrast for d in draws(Augmentation(contrast=0.8), 2000)])
    assert factors.min() >= 0.2 and factors.max() <= 1.8
    assert factors.min() < 0.25 and factors.max() > 1.75


def test_hsv_conversion_matches_colorsys_in_bgr_order():
    rng = np.random.default_rng(2)
    x = rng.random((3, 4, 5))
    hsv = bgr_to_hsv(x)
    for y in range(4):
        for xx in range(5):
            b, g, r = x[:, y, xx]
            np.testing.assert_allclose(hsv[:, y, xx], colorsys.rgb_to_hsv(r, g, b), atol=1e-9)
    np.testing.assert_allclose(hsv_to_bgr(hsv), x, atol=1e-9)


def test_hsv_shift_turns_hue_and_clips_saturation_and_value():
    red = np.zeros((3, 2, 2), np.float32)
    red[2] = 200                                    # BGR: pure red
    green = shift_hsv(red, 1 / 3, 0, 0)             # a third of the circle: green
    np.testing.assert_allclose(green[:, 0, 0], [0, 200, 0], atol=ATOL)
    back = shift_hsv(red, -1 / 3, 0, 0)             # wraps around: blue
    np.testing.assert_allclose(back[:, 0, 0], [200, 0, 0], atol=ATOL)
    pale = shift_hsv(red, 0, -0.25, 0)              # saturation 1 -> 0.75
    np.testing.assert_allclose(pale[:, 0, 0], [50, 50, 200], atol=ATOL)
    bright = shift_hsv(red, 0, 0, 0.5)              # value 200/255 + 0.5 -> 1 (clipped)
    np.testing.assert_allclose(bright[:, 0, 0], [0, 0, 255], atol=ATOL)
    ds = draws(Augmentation(hsv_h=0.02, hsv_s=0.04, hsv_v=0.06), 3000)
    stds = np.array([d.hsv for d in ds]).std(axis=0)
    np.testing.assert_allclose(stds, [0.02, 0.04, 0.06], rtol=0.08)


def test_hsv_needs_colour_images():
    with pytest.raises(DataError, match="colour"):
        Augmentation(hsv_v=0.1).check_input(1, 8, 8)


# ----- the file -----------------------------------------------------------------------------
def test_file_round_trip_and_off_by_default(tmp_path):
    assert not Augmentation().active and Augmentation().to_json() == {}
    aug = Augmentation.from_json({"flip": "fliplr", "rotation": 10, "hsv_s": 0.04})
    assert aug.to_json() == {"flip": "fliplr", "rotation": 10.0, "hsv_s": 0.04}
    p = tmp_path / "augment.json"
    p.write_text(json.dumps(aug.to_json()))
    assert Augmentation.load(str(p)) == aug


@pytest.mark.parametrize("d, message", [
    ({"flip": "sideways"}, "flip must be one of"),
    ({"quad_rot": "rot45"}, "quad_rot must be one of"),
    ({"rotation": 181}, r"rotation must be a number in \[0, 180\]"),
    ({"noise": -0.1}, "noise must be"),
    ({"hsv_h": "0.1"}, "hsv_h must be"),
    ({"contrast": True}, "contrast must be"),
    ({"mirror": True}, "unknown key"),
    ([1, 2], "JSON object"),
])
def test_bad_files_name_the_key(d, message):
    with pytest.raises(DataError, match=message):
        Augmentation.from_json(d)


# ----- the data layer -----------------------------------------------------------------------
def _lmdb(path, n=8, h=6, w=6):
    images = [(ramp(3, h, w) // 2 + i).astype(np.uint8) for i in range(n)]
    with DatumWriter(str(path)) as wr:
        for i, im in enumerate(images):
            wr.put(array_to_datum(im, i))
    return images


def _net(source, phase, batch=8):
    return brewnet.Net(formats.net_from_text(
        f'layer {{ name: "d" type: "Data" top: "data" top: "label" '
        f'data_param {{ source: "{source}" backend: LMDB batch_size: {batch} }} }}'), phase)


def test_train_data_layer_applies_it_and_test_phase_does_not(tmp_path):
    images = _lmdb(tmp_path / "db")
    brewnet.set_random_seed(5)
    set_train_augmentation(Augmentation(quad_rot="rot180"))
    try:
        train = _net(tmp_path / "db", brewnet.TRAIN)
        test = _net(tmp_path / "db", brewnet.TEST)
        train.forward()
        test.forward()
        got = train.blobs["data"].data
        turned = [bool(np.array_equal(got[i], images[i][:, ::-1, ::-1])) for i in range(8)]
        same = [bool(np.array_equal(got[i], images[i])) for i in range(8)]
        assert all(t or s for t, s in zip(turned, same))
        assert any(turned) and any(same)
        np.testing.assert_array_equal(test.blobs["data"].data, np.stack(images))
    finally:
        set_train_augmentation(None)
        brewnet.set_random_seed(0)
    # off again: nets built afterwards read the images as they are
    plain = _net(tmp_path / "db", brewnet.TRAIN)
    plain.forward()
    np.testing.assert_array_equal(plain.blobs["data"].data, np.stack(images))


def test_train_data_layer_refuses_quarter_turns_of_non_square_data(tmp_path):
    _lmdb(tmp_path / "db", h=4, w=6)
    set_train_augmentation(Augmentation(quad_rot="rotall"))
    try:
        with pytest.raises(DataError, match="square"):
            _net(tmp_path / "db", brewnet.TRAIN)
    finally:
        set_train_augmentation(None)


# ----- brewnet train -augment ---------------------------------------------------------------
SPY = '''
import numpy as np
import brewnet


class Spy(brewnet.Layer):
    """Appends every batch it sees to seen.npy (in the working directory)."""
    seen = []

    def forward(self, bottom, top):
        Spy.seen.append(np.array(bottom[0].data))
        np.save("seen.npy", np.concatenate(Spy.seen))
'''


def _solver(tmp_path, source):
    (tmp_path / "net.prototxt").write_text(f'''
layer {{ name: "d" type: "Data" top: "data" top: "label"
        data_param {{ source: "{source}" backend: LMDB batch_size: 4 }} }}
layer {{ name: "spy" type: "Python" bottom: "data" python_param {{ module: "spy_layer" layer: "Spy" }}
        include {{ phase: TRAIN }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param {{ num_output: 8 weight_filler {{ type: "xavier" }} }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
''')
    (tmp_path / "solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.0001 lr_policy: "fixed" max_iter: 4 display: 0 random_seed: 7\n'
        'snapshot_prefix: "run"\n')


def test_cli_train_augment_flag_reaches_the_train_data_layer(tmp_path, monkeypatch, capsys):
    from brewnet.commands import main as cli

    images = _lmdb(tmp_path / "db")
    _solver(tmp_path, tmp_path / "db")
    (tmp_path / "spy_layer.py").write_text(SPY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.json").write_text('{"flip": "fliplr", "rotate": 3}')
    assert cli.main(["train", "-solver", "solver.prototxt", "-augment", "bad.json"]) == 1
    assert "unknown key(s) rotate" in capsys.readouterr().err
    (tmp_path / "aug.json").write_text('{"flip": "flipud"}')
    assert cli.main(["train", "-solver", "solver.prototxt", "-augment", "aug.json"]) == 0
    seen = np.load(tmp_path / "seen.npy")
    assert seen.shape == (16, 3, 6, 6)
    flipped = same = 0
    for i, got in enumerate(seen):   # batch 4, 8 records: record i % 8, as it is or upside down
        im = images[i % 8].astype(np.float32)
        flipped += bool(np.array_equal(got, im[:, ::-1, :]))
        same += bool(np.array_equal(got, im))
    assert flipped + same == 16 and flipped and same
    from brewnet.data.augment import train_augmentation
    assert train_augmentation() is None    # the flag does not outlive the command
