"""Tests of brewnet.formats: Caffe text/binary files, blobs, and legacy-net upgrades.

Golden caffemodels/npz in tests/golden were recorded from real BVLC Caffe (see its README).
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format, unknown_fields

from brewnet import formats
from brewnet.formats import CaffeFormatError
from brewnet.proto import caffe_pb2

GOLDEN = Path(__file__).parent / "golden"
# Layer cases: the caffemodel holds the weights that the npz lists as param/<layer>/<i>.
LAYER_CASES = sorted(p.stem for p in GOLDEN.glob("*.caffemodel")
                     if (GOLDEN / f"{p.stem}.npz").exists())
ALL_CAFFEMODELS = sorted(GOLDEN.glob("*.caffemodel"))


def _key(number: int, wire_type: int) -> bytes:
    return formats.blobs.varint(number << 3 | wire_type)


# ----------------------------------------------------------------------------------------------
# Round trips and golden files
# ----------------------------------------------------------------------------------------------

def test_golden_set_present():
    assert len(LAYER_CASES) >= 10, "tests/golden must hold the BVLC-recorded layer cases"


def test_text_round_trip(tmp_path):
    net = formats.read_net(GOLDEN / "batchnorm_train_inplace_scale.prototxt")
    assert net.layer and net.layer[0].type == "Input"
    out = tmp_path / "net.prototxt"
    formats.write_prototxt(net, out)
    again = formats.read_net(out)
    assert again == net
    assert text_format.MessageToString(again) == out.read_text()


@pytest.mark.parametrize("path", ALL_CAFFEMODELS, ids=lambda p: p.stem)
def test_golden_caffemodel_binary_round_trip(path, tmp_path):
    raw = path.read_bytes()
    net = formats.read_caffemodel(path)
    # Python protobuf writes exactly what Caffe's C++ wrote: same field order, packed floats.
    assert net.SerializeToString() == raw
    formats.write_caffemodel(net, tmp_path / "copy.caffemodel")
    assert (tmp_path / "copy.caffemodel").read_bytes() == raw
    assert [p.name for p in tmp_path.iterdir()] == ["copy.caffemodel"]  # no temp files left


@pytest.mark.parametrize("case", LAYER_CASES)
def test_golden_caffemodel_blobs_equal_npz(case):
    net = formats.read_caffemodel(GOLDEN / f"{case}.caffemodel")
    npz = np.load(GOLDEN / f"{case}.npz")
    expected = {k for k in npz.files if k.startswith("param/")}
    seen = set()
    for layer in net.layer:
        for i, blob in enumerate(layer.blobs):
            key = f"param/{layer.name}/{i}"
            arr = formats.blob_to_array(blob)
            assert arr.dtype == np.float32
            np.testing.assert_array_equal(arr, npz[key], err_msg=key)
            assert arr.shape == npz[key].shape
            seen.add(key)
    assert seen == expected


def test_golden_solverstate_and_mean():
    for path in sorted(GOLDEN.glob("*.solverstate")):
        state = formats.read_binary(path, caffe_pb2.SolverState)
        assert state.iter > 0 and state.history
        assert state.SerializeToString() == path.read_bytes()
        for blob in state.history:
            assert formats.blob_to_array(blob).size == int(np.prod(formats.blob_shape(blob)))
    mean = formats.read_binaryproto(GOLDEN / "mean.binaryproto")
    assert mean.shape == (1, 3, 10, 12) and mean.dtype == np.float32
    expected = np.load(GOLDEN / "data_layer.npz")["mean"]
    np.testing.assert_array_equal(mean.reshape(expected.shape), expected)


def test_golden_prototxts_parse():
    for path in sorted(GOLDEN.glob("*.prototxt")):
        if path.name.startswith("solver_") and not path.name.endswith("_net.prototxt"):
            solver = formats.read_solver(path)
            assert solver.HasField("base_lr"), path
        else:
            assert formats.read_net(path).layer, path


def test_binaryproto_round_trip(tmp_path):
    arr = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4) / 7
    formats.write_binaryproto(arr, tmp_path / "m.binaryproto")
    back = formats.read_binaryproto(tmp_path / "m.binaryproto")
    np.testing.assert_array_equal(back, arr)
    # Same bytes as a BlobProto filled the plain (slow) way: packed floats, then the shape.
    plain = caffe_pb2.BlobProto(data=arr.ravel().tolist())
    plain.shape.dim.extend(arr.shape)
    assert (tmp_path / "m.binaryproto").read_bytes() == plain.SerializeToString()


def test_atomic_write_replaces_and_honours_umask(tmp_path):
    path = tmp_path / "x.prototxt"
    path.write_text("garbage")
    formats.write_prototxt(caffe_pb2.NetParameter(name="n"), path)
    assert formats.read_net(path).name == "n"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.prototxt"]


# ----------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------

def test_syntax_error_names_file_line_column(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "n"\nlayer {\n  name: "ip"\n  type: "InnerProduct"\n  top: \n}\n')
    with pytest.raises(CaffeFormatError) as err:
        formats.read_net(path)
    assert f"{path}:6:1:" in str(err.value)
    assert "in layer 'ip'" in str(err.value)


def test_unknown_field_names_field_layer_and_suggestion(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(
        'name: "n"\n'
        'layer {\n'
        '  type: "Convolution"\n'
        '  convolution_param {\n'
        '    num_output: 4\n'
        '    kernal_size: 3\n'
        '  }\n'
        '  name: "conv1"   # the name may come after the error\n'
        '}\n')
    with pytest.raises(CaffeFormatError) as err:
        formats.read_net(path)
    assert str(err.value) == (f"{path}:6:5: unknown field 'kernal_size' in layer 'conv1' "
                              "(ConvolutionParameter); did you mean 'kernel_size'?")


def test_unknown_field_outside_layers_and_unknown_enum(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text('net: "n.prototxt"\nbse_lr: 0.1\n')
    with pytest.raises(CaffeFormatError, match=r"solver.prototxt:2:1: unknown field 'bse_lr' "
                                               r"\(SolverParameter\); did you mean 'base_lr'\?"):
        formats.read_solver(path)
    with pytest.raises(CaffeFormatError, match="unknown value 'TRIAN' for Phase in layer 'd'; "
                                               "did you mean 'TRAIN'"):
        formats.net_from_text('layer { name: "d" include { phase: TRIAN } }')
    with pytest.raises(CaffeFormatError, match="'kernel_size' belongs inside convolution_param"):
        formats.net_from_text('layer { name: "c" type: "Convolution" kernel_size: 3 }')


def test_singular_field_twice_is_an_error_like_caffe():
    with pytest.raises(CaffeFormatError, match="<string>:1:"):
        formats.net_from_text('name: "a" name: "b"')


def test_bad_binary_files(tmp_path):
    good = (GOLDEN / "inner_product.caffemodel").read_bytes()
    truncated = tmp_path / "truncated.caffemodel"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(CaffeFormatError, match="truncated.caffemodel: cannot parse .* truncated"):
        formats.read_caffemodel(truncated)
    text = tmp_path / "text.caffemodel"
    text.write_bytes((GOLDEN / "inner_product.prototxt").read_bytes())
    with pytest.raises(CaffeFormatError, match="looks like a text file"):
        formats.read_caffemodel(text)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(CaffeFormatError, match="empty.caffemodel: file is empty"):
        formats.read_caffemodel(empty)
    unrelated = tmp_path / "blob.caffemodel"  # a valid message, but not a net
    unrelated.write_bytes(_key(7, 2) + b"\x00")
    with pytest.raises(CaffeFormatError, match="holds no layers"):
        formats.read_caffemodel(unrelated)
    with pytest.raises(CaffeFormatError, match="binary file, not a text prototxt"):
        formats.read_net(GOLDEN / "inner_product.caffemodel")


# ----------------------------------------------------------------------------------------------
# Blobs
# ----------------------------------------------------------------------------------------------

def test_array_to_blob_round_trip_and_options():
    arr = np.random.default_rng(0).standard_normal((2, 3, 4)).astype(np.float32)
    blob = formats.array_to_blob(arr, diff=2 * arr)
    assert list(blob.shape.dim) == [2, 3, 4] and not blob.HasField("num")
    np.testing.assert_array_equal(formats.blob_to_array(blob), arr)
    np.testing.assert_array_equal(formats.blob_to_array(blob, diff=True), 2 * arr)
    assert list(blob.data) == list(arr.ravel())  # fast path gives the same repeated field

    dbl = formats.array_to_blob(arr.astype(np.float64) / 3, double=True)
    assert not dbl.data and formats.blob_to_array(dbl).dtype == np.float64

    net = caffe_pb2.NetParameter()
    target = net.layer.add().blobs.add()
    assert formats.array_to_blob(np.ones(5), blob=target) is target
    assert list(net.layer[0].blobs[0].data) == [1.0] * 5

    scalar = formats.array_to_blob(np.float32(3.5))
    assert formats.blob_to_array(scalar).shape == () and scalar.HasField("shape")


def test_legacy_4d_blob_shape():
    bias = caffe_pb2.BlobProto(num=1, channels=1, height=1, width=3, data=[1, 2, 3])
    arr = formats.blob_to_array(bias)
    assert arr.shape == (1, 1, 1, 3)
    assert formats.blob_matches_shape(bias, (3,))  # Caffe's ShapeEquals left-pads with ones
    assert formats.blob_matches_shape(bias, (1, 3))
    assert not formats.blob_matches_shape(bias, (3, 1))
    weights = formats.array_to_blob(np.zeros((4, 5)), legacy_4d=True)
    assert (weights.num, weights.channels, weights.height, weights.width) == (1, 1, 4, 5)
    assert not weights.HasField("shape")
    assert formats.blob_matches_shape(weights, (4, 5))
    assert not formats.blob_matches_shape(formats.array_to_blob(np.zeros((4, 5))), (1, 4, 5))


@pytest.mark.parametrize("kind, disk, out", [(caffe_pb2.FLOAT, "<f4", np.float32),
                                             (caffe_pb2.FLOAT16, "<f2", np.float32),
                                             (caffe_pb2.DOUBLE, "<f8", np.float64)])
def test_nvcaffe_raw_data_blobs(kind, disk, out):
    values = np.array([[0.5, -1.25, 3.0], [1024.0, 2.0 ** -3, -0.0]])
    blob = caffe_pb2.BlobProto(raw_data_type=kind, raw_data=values.astype(disk).tobytes(),
                               raw_diff_type=kind, raw_diff=(-values).astype(disk).tobytes())
    blob.shape.dim.extend([2, 3])
    # Through the wire, as NVCaffe would have written it.
    blob = caffe_pb2.BlobProto.FromString(blob.SerializeToString())
    arr = formats.blob_to_array(blob)
    assert arr.dtype == out
    np.testing.assert_array_equal(arr, values.astype(out))
    np.testing.assert_array_equal(formats.blob_to_array(blob, diff=True), -values.astype(out))


def test_blob_count_mismatch_is_clear():
    blob = caffe_pb2.BlobProto(data=[1, 2, 3])
    blob.shape.dim.extend([2, 2])
    with pytest.raises(CaffeFormatError, match=r"shape \(2, 2\) needs 4 values but its data "
                                               r"holds 3"):
        formats.blob_to_array(blob)
    half = caffe_pb2.BlobProto(raw_data_type=caffe_pb2.FLOAT16, raw_data=b"\0\0\0")
    with pytest.raises(CaffeFormatError, match="3 bytes"):
        formats.blob_to_array(half)
    with pytest.raises(CaffeFormatError, match="needs 4 values but its diff holds 0"):
        formats.blob_to_array(formats.array_to_blob(np.zeros((2, 2))), diff=True)


# ----------------------------------------------------------------------------------------------
# Upgrades
# ----------------------------------------------------------------------------------------------

V1_NET = """
name: "v1net"
input: "data"
input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8
layers {
  name: "conv1"  type: CONVOLUTION  bottom: "data"  top: "conv1"
  blobs_lr: 1  blobs_lr: 2  weight_decay: 1  weight_decay: 0
  param: "conv1_w"  param: "conv1_b"  blob_share_mode: PERMISSIVE
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } }
  include { phase: TRAIN }
}
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers { name: "loss" type: SOFTMAX_LOSS bottom: "conv1" bottom: "label" top: "loss"
         loss_weight: 2 }
"""


def test_v1_layers_upgrade():
    net, notes = formats.upgrade_net_with_notes(text_format.Parse(V1_NET,
                                                                 caffe_pb2.NetParameter()))
    assert not net.layers and not net.input and not net.input_dim
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("input", "Input"), ("conv1", "Convolution"), ("relu1", "ReLU"),
        ("loss", "SoftmaxWithLoss")]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"] and list(conv.top) == ["conv1"]
    assert [(p.name, p.lr_mult, p.decay_mult) for p in conv.param] == [
        ("conv1_w", 1, 1), ("conv1_b", 2, 0)]
    assert conv.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert not conv.param[1].HasField("share_mode")
    assert list(conv.convolution_param.kernel_size) == [3]
    assert conv.convolution_param.weight_filler.type == "xavier"
    assert conv.include[0].phase == caffe_pb2.TRAIN
    assert list(net.layer[3].loss_weight) == [2]
    assert list(net.layer[0].input_param.shape[0].dim) == [2, 3, 8, 8]
    assert any("V1" in n for n in notes) and any("Input" in n for n in notes)
    # read_net applies the same upgrade
    assert formats.net_from_text(V1_NET) == net


def test_v1_mixed_with_layer_is_an_error():
    with pytest.raises(CaffeFormatError, match="mixes 'layer' and legacy 'layers'"):
        formats.net_from_text('layer { name: "a" } layers { name: "b" type: RELU }')


def test_input_dim_upgrade_two_inputs():
    net = formats.net_from_text('input: "data" input_dim: 1 input_dim: 3 input_dim: 4 '
                               'input_dim: 5 input: "label" input_dim: 1 input_dim: 1 '
                               'input_dim: 1 input_dim: 1\n'
                               'layer { name: "ip" type: "InnerProduct" bottom: "data" }')
    # as Caffe's UpgradeNetInput: one layer "input" with every input as a top
    assert [(layer.name, layer.type, list(layer.top)) for layer in net.layer] == [
        ("input", "Input", ["data", "label"]), ("ip", "InnerProduct", [])]
    assert list(net.layer[0].input_param.shape[1].dim) == [1, 1, 1, 1]
    with pytest.raises(CaffeFormatError, match="1 inputs but 3 input_dim"):
        formats.net_from_text('input: "data" input_dim: 1 input_dim: 3 input_dim: 4')


def test_input_shape_upgrade_and_bare_input():
    net = formats.net_from_text('input: "x" input_shape { dim: 10 dim: 7 }\n'
                               'layer { name: "f" type: "Flatten" bottom: "x" top: "y" }')
    assert net.layer[0].name == "input" and net.layer[0].type == "Input"
    assert list(net.layer[0].input_param.shape[0].dim) == [10, 7]
    assert not net.input and not net.input_shape
    bare, notes = formats.upgrade_net_with_notes(caffe_pb2.NetParameter(input=["data"]))
    assert not bare.input and not bare.layer and "dropped" in notes[0]


def test_modern_net_is_unchanged():
    net = formats.read_net(GOLDEN / "neurons.prototxt")
    again, notes = formats.upgrade_net_with_notes(net)
    assert again == net and notes == []


def test_legacy_transform_fields_move_to_transform_param():
    net, notes = formats.upgrade_net_with_notes(text_format.Parse(
        'layers { name: "d" type: DATA top: "data" data_param { source: "db" batch_size: 4 '
        'scale: 0.5 mean_file: "m.binaryproto" crop_size: 8 mirror: true } }\n'
        'layers { name: "i" type: IMAGE_DATA top: "img" image_data_param { source: "l.txt" '
        'scale: 0.25 } transform_param { scale: 2 } }', caffe_pb2.NetParameter()))
    data, image = net.layer
    assert (data.transform_param.scale, data.transform_param.mean_file,
            data.transform_param.crop_size, data.transform_param.mirror) == (
        0.5, "m.binaryproto", 8, True)
    assert not data.data_param.HasField("scale") and data.data_param.source == "db"
    assert image.transform_param.scale == 2 and not image.image_data_param.HasField("scale")
    assert any("dropped legacy image_data_param.scale" in n for n in notes)


def test_v0_layers_upgrade_with_padding():
    v0 = text_format.Parse(
        'input: "data" input_dim: 1 input_dim: 3 input_dim: 9 input_dim: 9\n'
        'layers { layer { name: "pad1" type: "padding" pad: 2 } bottom: "data" top: "pad1" }\n'
        'layers { layer { name: "conv1" type: "conv" num_output: 8 kernelsize: 5 stride: 2 '
        'biasterm: false blobs_lr: 1 blobs_lr: 2 weight_filler { type: "gaussian" std: 0.01 } } '
        'bottom: "pad1" top: "conv1" }\n'
        'layers { layer { name: "pool1" type: "pool" pool: AVE kernelsize: 3 stride: 2 } '
        'bottom: "conv1" top: "pool1" }\n'
        'layers { layer { name: "drop" type: "dropout" dropout_ratio: 0.3 } '
        'bottom: "pool1" top: "pool1" }', caffe_pb2.NetParameter())
    net = formats.upgrade_net(v0)
    assert [(layer.name, layer.type) for layer in net.layer] == [
        ("input", "Input"), ("conv1", "Convolution"), ("pool1", "Pooling"), ("drop", "Dropout")]
    conv = net.layer[1]
    assert list(conv.bottom) == ["data"]
    cp = conv.convolution_param
    assert (cp.num_output, list(cp.kernel_size), list(cp.stride), list(cp.pad), cp.bias_term) \
        == (8, [5], [2], [2], False)
    assert cp.weight_filler.std == pytest.approx(0.01)
    assert [p.lr_mult for p in conv.param] == [1, 2]
    pp = net.layer[2].pooling_param
    assert (pp.pool, pp.kernel_size, pp.stride) == (caffe_pb2.PoolingParameter.AVE, 3, 2)
    assert net.layer[3].dropout_param.dropout_ratio == pytest.approx(0.3)
    with pytest.raises(CaffeFormatError, match="V0 layer 'r' \\(relu\\): cannot upgrade field "
                                               "'num_output'"):
        formats.net_from_text('layers { layer { name: "r" type: "relu" num_output: 3 } }')


def test_solver_type_upgrade(tmp_path):
    path = tmp_path / "solver.prototxt"
    path.write_text('base_lr: 0.1\nsolver_type: ADAM\n')
    solver = formats.read_solver(path)
    assert solver.type == "Adam" and not solver.HasField("solver_type")
    path.write_text('base_lr: 0.1\nsolver_type: ADAM\ntype: "SGD"\n')
    with pytest.raises(CaffeFormatError, match="solver.prototxt: solver gives both"):
        formats.read_solver(path)


# ----------------------------------------------------------------------------------------------
# NVCaffe dialect
# ----------------------------------------------------------------------------------------------

def test_nvcaffe_text_prototxt_parses():
    net = formats.net_from_text("""
        default_forward_type: FLOAT16
        default_backward_math: FLOAT
        layer {
          name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1"
          forward_type: FLOAT16  backward_type: FLOAT16  forward_math: FLOAT  backward_math: FLOAT
          batch_norm_param {
            scale_bias: true
            scale_filler { type: "constant" value: 1 }
            bias_filler { type: "constant" value: 0 }
            engine: CUDNN
          }
        }
        layer { name: "elu" type: "ELU" bottom: "bn1" top: "bn1" elu_param { lambda: 1.05 } }
        layer { name: "d" type: "Data" top: "data"
                data_param { source: "db" batch_size: 2 threads: 4 cache: true shuffle: true } }
        """)
    bn = net.layer[0]
    assert bn.forward_type == caffe_pb2.FLOAT16 and bn.forward_math == caffe_pb2.FLOAT
    assert bn.batch_norm_param.scale_bias and bn.batch_norm_param.scale_filler.value == 1
    assert bn.batch_norm_param.engine == caffe_pb2.BatchNormParameter.CUDNN
    assert not bn.batch_norm_param.HasField("use_global_stats")  # presence stays detectable
    assert getattr(net.layer[1].elu_param, "lambda") == pytest.approx(1.05)
    assert net.layer[2].data_param.threads == 4
    assert net.default_forward_type == caffe_pb2.FLOAT16
    # A BVLC default is kept where NVCaffe's differs.
    assert caffe_pb2.DataParameter().prefetch == 4
    assert caffe_pb2.SolverParameter().test_initialization is True


def test_nvcaffe_binary_varint_at_bvlc_field_145_is_kept_as_unknown():
    # NVCaffe 0.17 writes forward_type (enum, varint) at 145; BVLC has parameter_param
    # (a message, length-delimited) there. Build such a layer by hand, inside a net.
    layer = (_key(1, 2) + b"\x02bn" + _key(2, 2) + b"\x09BatchNorm"
             + _key(145, 0) + b"\x02"  # forward_type: FLOAT16
             + _key(149, 0) + b"\x01")  # NVCaffe debug: true (a field brewnet knows)
    raw = _key(100, 2) + bytes([len(layer)]) + layer
    net = caffe_pb2.NetParameter.FromString(raw)
    bn = net.layer[0]
    assert (bn.name, bn.type, bn.debug) == ("bn", "BatchNorm", True)
    assert not bn.HasField("parameter_param")
    assert not bn.HasField("forward_type") and bn.forward_type == caffe_pb2.FLOAT
    unknown = [(f.field_number, f.wire_type, f.data) for f in unknown_fields.UnknownFieldSet(bn)]
    assert unknown == [(145, 0, caffe_pb2.FLOAT16)]
    # Kept on binary re-serialisation, but after the known fields; dropped from text.
    again = net.SerializeToString()
    assert sorted(again) == sorted(raw) and again != raw
    assert again.endswith(_key(145, 0) + b"\x02")
    assert "145" not in text_format.MessageToString(net)
    # The reader API accepts it too.
    assert formats.upgrade_net(net).layer[0].name == "bn"


def test_nvcaffe_binary_solver_field_41_reads_as_layer_wise_reduce():
    # Documented caveat in caffe.proto: NVCaffe's rampup_interval (int32 at 41) shares the
    # varint wire type with BVLC's bool layer_wise_reduce; rampup_lr (float at 42) does not.
    raw = _key(41, 0) + b"\x05" + _key(42, 5) + np.float32(1.0).tobytes()
    solver = caffe_pb2.SolverParameter.FromString(raw)
    assert solver.HasField("layer_wise_reduce") and solver.layer_wise_reduce is True
    assert not solver.weights and not solver.HasField("rampup_lr")
    assert [f.field_number for f in unknown_fields.UnknownFieldSet(solver)] == [42]
    text = formats.parse_text("rampup_interval: 100 rampup_lr: 0.01 per_parameter_reduce: false",
                             caffe_pb2.SolverParameter)
    assert (text.rampup_interval, text.per_parameter_reduce) == (100, False)
