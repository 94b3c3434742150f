"""brewnet.io behaves like pycaffe's caffe.io; LMDB, IDX and image round trips."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
from PIL import Image

import brewnet.pycaffe.io as cio
from brewnet import formats
from brewnet.data.image import decode_datum_image, digits_resize, encode_image, resize_bilinear
from brewnet.data.idx import read_idx, write_idx
from brewnet.data.lmdb_io import DatumWriter, count_records, read_datums
from brewnet.proto import caffe_pb2


# ----- datums and blobs --------------------------------------------------------------------------
def test_uint8_datum_round_trip():
    a = np.random.default_rng(0).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    d = cio.array_to_datum(a, 7)
    assert (d.channels, d.height, d.width, d.label) == (3, 4, 5, 7)
    assert d.data == a.tobytes() and not d.float_data
    back = cio.datum_to_array(caffe_pb2.Datum.FromString(d.SerializeToString()))
    assert back.dtype == np.uint8 and back.flags.writeable
    np.testing.assert_array_equal(back, a)


def test_float_datum_round_trip_gives_float64_like_pycaffe():
    a = np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4)
    d = cio.array_to_datum(a)
    assert not d.data and len(d.float_data) == 24 and not d.HasField("label")
    back = cio.datum_to_array(d)
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, a)
    with pytest.raises(ValueError):
        cio.array_to_datum(np.zeros((2, 3)))


def test_encoded_datum_decodes_in_bgr():
    rgb = np.random.default_rng(1).integers(0, 256, size=(5, 6, 3), dtype=np.uint8)
    d = caffe_pb2.Datum(encoded=True, data=encode_image(rgb, "png"), label=2)
    np.testing.assert_array_equal(cio.datum_to_array(d), rgb[:, :, ::-1].transpose(2, 0, 1))
    gray = rgb[:, :, 0]
    d = caffe_pb2.Datum(encoded=True, data=encode_image(gray, "png"))
    np.testing.assert_array_equal(decode_datum_image(d), gray[None])
    np.testing.assert_array_equal(decode_datum_image(d, force_color=True), np.repeat(gray[None], 3, 0))
    smooth = np.zeros((16, 16, 3), np.uint8)
    smooth[..., 0], smooth[..., 2] = 200, 40  # reddish: JPEG keeps it, decoded as B=40, R=200
    jpg = caffe_pb2.Datum(encoded=True, data=encode_image(smooth, "jpg"))
    dec = decode_datum_image(jpg).astype(int)
    assert abs(dec[0].mean() - 40) < 4 and abs(dec[2].mean() - 200) < 4


def test_blobproto_round_trips(tmp_path):
    a = np.random.default_rng(2).standard_normal((1, 3, 4, 5)).astype(np.float32)
    b = cio.array_to_blobproto(a, diff=a * 2)
    np.testing.assert_array_equal(cio.blobproto_to_array(b), a)
    np.testing.assert_array_equal(cio.blobproto_to_array(b, return_diff=True), a * 2)
    s = cio.arraylist_to_blobprotovector_str([a, a[0, 0]])
    back = cio.blobprotovector_str_to_arraylist(s)
    np.testing.assert_array_equal(back[1], a[0, 0])
    formats.write_binaryproto(a, str(tmp_path / "m.binaryproto"))
    np.testing.assert_array_equal(formats.read_binaryproto(str(tmp_path / "m.binaryproto")), a)


# ----- images ------------------------------------------------------------------------------------
def test_load_image_like_pycaffe(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    Image.fromarray(rgb[:, :, 1]).save(tmp_path / "g.png")
    im = cio.load_image(str(tmp_path / "c.png"))
    assert im.shape == (4, 5, 3) and im.dtype == np.float32
    np.testing.assert_allclose(im, rgb / 255.0, atol=1e-7)
    g = cio.load_image(str(tmp_path / "g.png"))  # grey file, colour requested: tiled
    np.testing.assert_allclose(g, np.repeat(rgb[:, :, 1:2], 3, 2) / 255.0, atol=1e-7)
    lum = cio.load_image(str(tmp_path / "c.png"), color=False)  # skimage rgb2gray weights
    assert lum.shape == (4, 5, 1)
    np.testing.assert_allclose(lum[:, :, 0], (rgb / 255.0) @ [0.2125, 0.7154, 0.0721], atol=1e-6)
    np.testing.assert_allclose(cio.load_image(str(tmp_path / "g.png"), color=False)[:, :, 0],
                               rgb[:, :, 1] / 255.0, atol=1e-7)


def test_transformer_preprocess_and_deprocess():
    t = cio.Transformer({"data": (1, 3, 4, 5)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([10.0, 20.0, 30.0]))
    t.set_input_scale("data", 0.5)
    im = np.random.default_rng(4).random((4, 5, 3)).astype(np.float32)
    x = t.preprocess("data", im)
    assert x.shape == (3, 4, 5) and x.dtype == np.float32
    # hand: channel 0 of the output is the image's blue channel
    np.testing.assert_allclose(x[0], (im[:, :, 2] * 255 - 10) * 0.5, rtol=1e-6)
    np.testing.assert_allclose(x[2], (im[:, :, 0] * 255 - 30) * 0.5, rtol=1e-6)
    np.testing.assert_allclose(t.deprocess("data", x), im, atol=1e-5)
    # resizing to the input size happens first (bilinear)
    big = np.random.default_rng(5).random((8, 10, 3)).astype(np.float32)
    assert t.preprocess("data", big).shape == (3, 4, 5)
    with pytest.raises(ValueError):
        t.set_channel_swap("data", (1, 0))
    with pytest.raises(ValueError):
        t.set_mean("data", np.zeros((3, 2, 2)))
    with pytest.raises(ValueError):
        t.preprocess("nope", im)


def test_resize_bilinear_matches_half_pixel_centres():
    a = np.array([[[0, 100]]], dtype=np.uint8)  # 1x1x2 -> 1x1x4: 0, 25, 75, 100
    np.testing.assert_array_equal(resize_bilinear(a, 1, 4)[0, 0], [0, 25, 75, 100])


@pytest.mark.parametrize("mode", ["squash", "crop", "fill", "half_crop"])
def test_digits_resize_modes_give_the_size(mode):
    im = Image.fromarray(np.random.default_rng(6).integers(0, 256, size=(20, 40, 3), dtype=np.uint8))
    out = digits_resize(im, 16, 16, mode, np.random.default_rng(0))
    assert out.size == (16, 16)
    arr = np.asarray(out)
    if mode == "crop":  # height 20 -> 16, width 40 -> 32, centre 16 columns kept
        ref = np.asarray(im.resize((32, 16), Image.BILINEAR))[:, 8:24]
        np.testing.assert_array_equal(arr, ref)
    if mode == "fill":  # 40x20 -> 16x8 in the middle, 4 rows of noise above and below
        ref = np.asarray(im.resize((16, 8), Image.BILINEAR))
        np.testing.assert_array_equal(arr[4:12], ref)


# ----- LMDB and IDX --------------------------------------------------------------------------------
def test_lmdb_writer_grows_the_map_and_keeps_order(tmp_path):
    path = str(tmp_path / "db")
    arrays = [np.full((1, 64, 64), i, np.uint8) for i in range(40)]
    with DatumWriter(path, batch=7, map_size=16 * 1024) as w:  # tiny map: must grow
        for i, a in enumerate(arrays):
            w.put(cio.array_to_datum(a, i))
    assert count_records(path) == 40
    keys, labels = zip(*[(k, d.label) for k, d in read_datums(path)])
    assert keys[0] == b"00000000" and keys[-1] == b"00000039"
    assert list(labels) == list(range(40))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    a = np.random.default_rng(7).integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    p = str(tmp_path / ("x-idx3-ubyte" + (".gz" if gz else "")))
    write_idx(p, a)
    np.testing.assert_array_equal(read_idx(p), a)
    if gz:
        with gzip.open(p, "rb") as f:
            assert f.read(4) == b"\x00\x00\x08\x03"
