"""NVCaffe BatchNorm caffemodels whose prototxt leaves scale/bias implicit (issue 10, item 4).

NVCaffe 0.14's cuDNN BatchNorm and every 0.15 BatchNorm always had scale and bias, and their
prototxts said so with no field at all (``batch_norm_param { engine: CUDNN }`` or no
batch_norm_param); NVCaffe 0.16/0.17 files carry them after [mean, var, correction].  Such a
file loads into such a prototxt: the layer takes the file's scale/bias as parameters, applies
them, keeps them when saved, and the load notes, ``brewnet lint`` (with the weights) and
``brewnet doctor`` name the layout found.  A file that does not fit (channels, shapes, a
one-channel file whose layout cannot be told) is a clear error naming the layer and shapes.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import brewnet
from brewnet import formats
from brewnet.commands import main as cli
from brewnet.batchnorm.lint import apply_fixes, lint
from brewnet.errors import NetError
from brewnet.proto import caffe_pb2

C = 3
RNG = np.random.default_rng(7)
MEAN = RNG.normal(size=C).astype(np.float32) * 3
VAR = RNG.uniform(0.2, 4.0, size=C).astype(np.float32)
GAMMA = RNG.uniform(0.5, 2.0, size=C).astype(np.float32)
BETA = RNG.normal(size=C).astype(np.float32) * 5
X = (RNG.normal(size=(4, C, 3, 3)) * 2 + 1).astype(np.float32)

INPUT = (f'layer {{ name: "data" type: "Input" top: "data" '
         f'input_param {{ shape {{ dim: 4 dim: {C} dim: 3 dim: 3 }} }} }}\n')

# How NVCaffe users wrote the layer: the engine only, or nothing at all
FORMS = {
    "engine-cudnn": "batch_norm_param { engine: CUDNN }",
    "engine-caffe": "batch_norm_param { engine: CAFFE }",
    "no-param": "",
}


def prototxt(tmp_path, form, scale_layer=False, name="m.prototxt", head=""):
    text = head + INPUT + f'layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" {FORMS[form]} }}\n'
    if scale_layer:
        text += 'layer { name: "sc" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true } }\n'
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def r4(v):
    return np.asarray(v, np.float32).reshape(1, -1, 1, 1)


def nvcaffe_blobs(layout, mean=MEAN, var=VAR, gamma=GAMMA, beta=BETA):
    """The blob arrays NVCaffe writes for each layout."""
    if layout == "nvcaffe-0.14-cudnn":  # scale, bias, unused, mean, var (cuDNN's running stats)
        return [r4(gamma), r4(beta), np.zeros((1, 1, 1, 1), np.float32), r4(mean), r4(var)]
    if layout == "nvcaffe-0.15-caffe":  # scale, bias, mean, var, counter
        return [gamma, beta, mean, var, np.array([123.0], np.float32)]
    if layout == "nvcaffe-0.15-cudnn":
        return [r4(gamma), r4(beta), r4(mean), r4(var), np.full((1, 1, 1, 1), 123.0, np.float32)]
    if layout == "nvcaffe-0.16":  # mean, var, correction, scale, bias
        return [mean, var, np.ones(1, np.float32), gamma, beta]
    raise AssertionError(layout)


def caffemodel(tmp_path, layers, name="m.caffemodel"):
    """{layer name: (type, [arrays])} -> a caffemodel written with formats, as NVCaffe stores it."""
    net = caffe_pb2.NetParameter(name="nv")
    for lname, (ltype, arrays) in layers.items():
        lp = net.layer.add(name=lname, type=ltype)
        for a in arrays:
            formats.array_to_blob(np.asarray(a, np.float32), lp.blobs.add())
    p = tmp_path / name
    formats.write_caffemodel(net, str(p))
    return str(p)


def closed_form(x, eps, gamma=GAMMA, beta=BETA, mean=MEAN, var=VAR):
    x = np.asarray(x, np.float64)
    sh = (1, -1, 1, 1)
    g, b = np.float64(gamma).reshape(sh), np.float64(beta).reshape(sh)
    m, v = np.float64(mean).reshape(sh), np.float64(var).reshape(sh)
    return g * (x - m) / np.sqrt(v + eps) + b


def eps_of(layout):
    return 1e-4 if layout == "nvcaffe-0.14-cudnn" else 1e-5


def assert_close(actual, expected):
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6 * max(1.0, scale))


# (layout, how the prototxt was written): each NVCaffe layout with the forms its users wrote
CASES = [
    ("nvcaffe-0.14-cudnn", "engine-cudnn"), ("nvcaffe-0.14-cudnn", "no-param"),
    ("nvcaffe-0.15-caffe", "engine-caffe"), ("nvcaffe-0.15-caffe", "no-param"),
    ("nvcaffe-0.15-cudnn", "engine-cudnn"), ("nvcaffe-0.15-cudnn", "no-param"),
    ("nvcaffe-0.16", "engine-cudnn"), ("nvcaffe-0.16", "engine-caffe"),
]
IDS = [f"{lay}-{form}" for lay, form in CASES]


@pytest.mark.parametrize("layout,form", CASES, ids=IDS)
def test_implicit_scale_bias_loads_and_is_applied(tmp_path, layout, form, caplog):
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs(layout))})
    with caplog.at_level(logging.INFO, logger="brewnet"):
        net = brewnet.Net(prototxt(tmp_path, form), w, brewnet.TEST)
    bn = net.layer_dict["bn"]
    assert bn.loaded_layout == layout
    assert bn.scale_bias and bn.use_global_stats
    assert bn.eps == pytest.approx(eps_of(layout))
    # the load note names the layout detected and says where scale/bias went
    assert layout in caplog.text and "scale/bias" in caplog.text
    out = net.forward(data=X)["bn"]
    assert_close(out, closed_form(X, eps_of(layout)))
    # net.params shows the NVCaffe 0.16/0.17 order the explicit case uses: mean, var, 1, γ, β
    p = net.params["bn"]
    assert len(p) == 5
    np.testing.assert_array_equal(p[0].data, MEAN)
    np.testing.assert_array_equal(p[1].data, VAR)
    assert p[2].data[0] == 1
    np.testing.assert_array_equal(p[3].data, GAMMA)
    np.testing.assert_array_equal(p[4].data, BETA)


@pytest.mark.parametrize("layout,form", CASES, ids=IDS)
def test_load_report_notes_name_the_layout(tmp_path, layout, form):
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs(layout))})
    net = brewnet.Net(prototxt(tmp_path, form), brewnet.TEST)
    report = net.copy_from(w)
    assert report.copied == ["bn"]
    implicit = [n for n in report.notes if layout in n and "scale/bias" in n]
    assert implicit and all("layer 'bn'" in n for n in implicit), report.notes


@pytest.mark.parametrize("layout,form", CASES, ids=IDS)
def test_implicit_case_matches_the_explicit_one(tmp_path, layout, form):
    """The same file into `scale_bias: true`: same outputs, same blobs, same saved file."""
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs(layout))})
    implicit = brewnet.Net(prototxt(tmp_path, form), w, brewnet.TEST)
    text = INPUT + ('layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" '
                    'batch_norm_param { scale_bias: true } }')
    (tmp_path / "explicit.prototxt").write_text(text)
    explicit = brewnet.Net(str(tmp_path / "explicit.prototxt"), w, brewnet.TEST)
    np.testing.assert_array_equal(implicit.forward(data=X)["bn"], explicit.forward(data=X)["bn"])
    for a, b in zip(implicit.params["bn"], explicit.params["bn"]):
        np.testing.assert_array_equal(a.data, b.data)
    a_layer, b_layer = implicit.layer_dict["bn"], explicit.layer_dict["bn"]
    assert a_layer.eps == b_layer.eps and a_layer.nvcaffe and b_layer.nvcaffe
    assert [implicit.layer_dict["bn"].param_spec(i).lr_mult for i in range(5)] == [0, 0, 0, 1, 1]


@pytest.mark.parametrize("layout,form", CASES, ids=IDS)
def test_save_keeps_scale_bias_and_reloads(tmp_path, layout, form):
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs(layout))})
    proto = prototxt(tmp_path, form)
    net = brewnet.Net(proto, w, brewnet.TEST)
    expected = net.forward(data=X)["bn"].copy()
    out = str(tmp_path / "saved.caffemodel")
    net.save(out)
    saved = {lp.name: lp for lp in formats.read_caffemodel(out).layer}["bn"]
    arrays = [formats.blob_to_array(b) for b in saved.blobs]
    # NVCaffe 0.16/0.17 order, and the layer definition says it has scale/bias
    assert [a.shape for a in arrays] == [(C,), (C,), (1,), (C,), (C,)]
    np.testing.assert_array_equal(arrays[3], GAMMA)
    np.testing.assert_array_equal(arrays[4], BETA)
    assert saved.batch_norm_param.scale_bias
    again = brewnet.Net(proto, out, brewnet.TEST)  # the same prototxt takes the saved file back
    assert again.layer_dict["bn"].loaded_layout == "nvcaffe-0.16"
    for a, b in zip(again.params["bn"], net.params["bn"]):
        np.testing.assert_array_equal(a.data, b.data)
    if layout == "nvcaffe-0.14-cudnn":
        # 0.14's fixed cuDNN eps belongs to that layout, not to the prototxt: the 0.17-order file
        # runs with the prototxt's eps (as the explicit `scale_bias: true` case does)
        assert again.layer_dict["bn"].eps == pytest.approx(1e-5)
        assert_close(again.forward(data=X)["bn"], closed_form(X, 1e-5))
    else:
        np.testing.assert_array_equal(again.forward(data=X)["bn"], expected)


@pytest.mark.parametrize("layout,form", [("nvcaffe-0.15-cudnn", "engine-cudnn"), ("nvcaffe-0.15-caffe", "no-param"),
                                         ("nvcaffe-0.14-cudnn", "no-param")])
def test_loaded_scale_bias_are_trainable_parameters(tmp_path, layout, form):
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs(layout))})
    net = brewnet.Net(prototxt(tmp_path, form, head="force_backward: true\n"), w, brewnet.TRAIN)
    bn = net.layer_dict["bn"]
    assert isinstance(bn.weight, torch.nn.Parameter) and bn.weight.requires_grad
    assert bn.blob_is_learnable(3) and bn.blob_is_learnable(4) and not bn.blob_is_learnable(0)
    y = net.forward(data=X)["bn"]
    # TRAIN: batch statistics, then the file's γ and β
    xs = X.astype(np.float64)
    m = xs.mean(axis=(0, 2, 3)).reshape(1, -1, 1, 1)
    v = xs.var(axis=(0, 2, 3)).reshape(1, -1, 1, 1)
    assert_close(y, GAMMA.reshape(1, -1, 1, 1) * (xs - m) / np.sqrt(v + eps_of(layout)) + BETA.reshape(1, -1, 1, 1))
    d = RNG.normal(size=X.shape)
    net.blobs["bn"].diff[...] = d
    net.backward()
    xhat = (xs - m) / np.sqrt(v + eps_of(layout))
    # dL/dβ = Σ dy, dL/dγ = Σ dy·x̂ over N, H, W: both reach the loaded parameters
    np.testing.assert_allclose(net.params["bn"][4].diff, d.sum(axis=(0, 2, 3)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(net.params["bn"][3].diff, (d * xhat).sum(axis=(0, 2, 3)), rtol=1e-4, atol=1e-4)


def test_scale_layer_after_implicit_batchnorm_applies_both(tmp_path):
    """A field-less BatchNorm followed by a Scale (both with blobs in the file): NVCaffe 0.15 ran
    both affines; brewnet too, on the unfused (TEST) and the fused (TRAIN) path."""
    s, t = np.float32([2.0, -1.0, 0.5]), np.float32([0.25, 1.0, -3.0])
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs("nvcaffe-0.15-caffe")),
                              "sc": ("Scale", [s, t])})
    proto = prototxt(tmp_path, "no-param", scale_layer=True)
    net = brewnet.Net(proto, w, brewnet.TEST)
    inner = closed_form(X, 1e-5)
    expected = s.reshape(1, -1, 1, 1) * inner + t.reshape(1, -1, 1, 1)
    assert_close(net.forward(data=X)["bn"], expected)
    train = brewnet.Net(proto, w, brewnet.TRAIN)
    fused = train.forward(data=X)["bn"].copy()
    train2 = brewnet.Net(proto, w, brewnet.TRAIN)
    train2.fuse = False
    np.testing.assert_allclose(fused, train2.forward(data=X)["bn"], rtol=1e-5, atol=1e-5)


def test_identity_scale_bias_are_kept_as_parameters(tmp_path):
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs("nvcaffe-0.15-cudnn", gamma=np.ones(C),
                                                                beta=np.zeros(C)))})
    net = brewnet.Net(prototxt(tmp_path, "engine-cudnn"), w, brewnet.TEST)
    assert len(net.params["bn"]) == 5
    assert_close(net.forward(data=X)["bn"], closed_form(X, 1e-5, gamma=np.ones(C), beta=np.zeros(C)))


def test_same_prototxt_without_weights_is_unchanged(tmp_path):
    """Nothing is implied before a file says so: `engine: CUDNN` alone builds 3 blobs, as in 0.16+."""
    for form in FORMS:
        net = brewnet.Net(prototxt(tmp_path, form, name=f"{form}.prototxt"), brewnet.TEST)
        assert len(net.params["bn"]) == 3 and not net.layer_dict["bn"].scale_bias


# ----- errors: inconsistent or truly ambiguous files ----------------------------------------------
@pytest.mark.parametrize("layout", ["nvcaffe-0.14-cudnn", "nvcaffe-0.15-caffe", "nvcaffe-0.15-cudnn"])
def test_wrong_channel_count_names_layer_layout_and_shapes(tmp_path, layout):
    four = [np.arange(4, dtype=np.float32) + 1] * 4
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs(layout, *four))})
    with pytest.raises(NetError) as e:
        brewnet.Net(prototxt(tmp_path, "no-param"), w, brewnet.TEST)
    msg = str(e.value)
    assert "layer 'bn'" in msg and "4 channels" in msg and "the net has 3" in msg and layout in msg
    assert str(nvcaffe_blobs(layout, *four)[0].shape) in msg


def test_inconsistent_blob_shapes_name_layer_and_shapes(tmp_path):
    blobs = nvcaffe_blobs("nvcaffe-0.15-cudnn")
    blobs[1] = np.zeros((1, 2, 1, 1), np.float32)  # bias with 2 channels, the rest 3
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", blobs)})
    with pytest.raises(NetError, match=r"layer 'bn'.*\(1, 2, 1, 1\).*no known BatchNorm layout"):
        brewnet.Net(prototxt(tmp_path, "engine-cudnn"), w, brewnet.TEST)


@pytest.mark.parametrize("form", ["engine-cudnn", "no-param"])
def test_one_channel_file_is_ambiguous_without_a_declaration(tmp_path, form):
    text = (INPUT.replace(f"dim: {C}", "dim: 1")
            + f'layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" {FORMS[form]} }}\n')
    (tmp_path / "one.prototxt").write_text(text)
    blobs = [np.full((1, 1, 1, 1), v, np.float32) for v in (1.5, 0.5, 0.2, 2.0, 9.0)]
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", blobs)})
    with pytest.raises(NetError) as e:
        brewnet.Net(str(tmp_path / "one.prototxt"), w, brewnet.TEST)
    msg = str(e.value)
    assert "layer 'bn'" in msg and "ambiguous" in msg and "(1, 1, 1, 1)" in msg and "scale_bias: true" in msg
    # declaring scale/bias settles it (brewnet's documented reading of one-channel files)
    (tmp_path / "decl.prototxt").write_text(
        text.replace("top: \"bn\" ", "top: \"bn\" batch_norm_param { scale_bias: true } ")
        if form == "no-param" else text.replace("engine: CUDNN", "engine: CUDNN scale_bias: true"))
    net = brewnet.Net(str(tmp_path / "decl.prototxt"), w, brewnet.TEST)
    assert net.layer_dict["bn"].loaded_layout == "nvcaffe-0.15-cudnn"


def test_016_file_into_fieldless_bvlc_prototxt_still_refused_clearly(tmp_path):
    """NVCaffe 0.16/0.17 write scale/bias only for layers that declare them, so a field-less
    prototxt is BVLC's (its Scale layer holds γ/β): the error says how to load the file."""
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs("nvcaffe-0.16"))})
    with pytest.raises(NetError) as e:
        brewnet.Net(prototxt(tmp_path, "no-param", scale_layer=True), w, brewnet.TEST)
    msg = str(e.value)
    assert "layer 'bn'" in msg and "nvcaffe-0.16" in msg and "scale_bias: true" in msg
    assert "brewnet convert" in msg and "-to bvlc" in msg


# ----- lint and doctor name the layout ----------------------------------------------------------
@pytest.mark.parametrize("layout,form", CASES, ids=IDS)
def test_lint_with_weights_names_the_layout(tmp_path, layout, form):
    proto = prototxt(tmp_path, form)
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs(layout))})
    text = (tmp_path / "m.prototxt").read_text()
    net = formats.read_net(proto)
    found = lint(net, text, weights=formats.read_caffemodel(w))
    mine = [f for f in found if f.rule == "BN010"]
    assert len(mine) == 1 and mine[0].severity == "info" and mine[0].layer == "bn"
    assert layout in mine[0].message and "scale_bias: true" in mine[0].fix
    assert not [f for f in found if f.rule == "BN006"]  # the file's γ/β are the layer's: no Scale needed
    # without weights, lint cannot know (and says nothing of the kind)
    assert not [f for f in lint(net, text) if f.rule == "BN010"]
    # the mechanical fix declares scale_bias; the fixed prototxt then loads the file explicitly
    fixed, _ = apply_fixes(net, mine)
    assert fixed.layer[1].batch_norm_param.scale_bias
    formats.write_prototxt(fixed, str(tmp_path / "fixed.prototxt"))
    again = brewnet.Net(str(tmp_path / "fixed.prototxt"), w, brewnet.TEST)
    assert_close(again.forward(data=X)["bn"], closed_form(X, eps_of(layout)))
    assert not [f for f in lint(fixed, weights=formats.read_caffemodel(w)) if f.rule == "BN010"]


def test_lint_with_weights_flags_a_file_that_will_not_load(tmp_path):
    proto = prototxt(tmp_path, "no-param", scale_layer=True)
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs("nvcaffe-0.16"))})
    found = lint(formats.read_net(proto), weights=formats.read_caffemodel(w))
    mine = [f for f in found if f.rule == "BN010"]
    assert len(mine) == 1 and mine[0].severity == "error" and "nvcaffe-0.16" in mine[0].message


@pytest.mark.parametrize("layout,form", [("nvcaffe-0.15-cudnn", "engine-cudnn"), ("nvcaffe-0.14-cudnn", "no-param"),
                                         ("nvcaffe-0.15-caffe", "no-param")])
def test_doctor_names_the_layout(tmp_path, layout, form, capsys):
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs(layout))})
    proto = prototxt(tmp_path, form)
    out_model = str(tmp_path / "recal.caffemodel")
    assert cli.main(["doctor", "-model", proto, "-weights", w, "-iterations", "2",
                     "-recalibrate", "2", "-output", out_model]) == 0
    text = capsys.readouterr().out
    assert layout in text and "implicit" in text
    # the recalibrated file keeps γ/β and loads back into the same prototxt
    net = brewnet.Net(proto, out_model, brewnet.TEST)
    np.testing.assert_array_equal(net.params["bn"][3].data, GAMMA)
    np.testing.assert_array_equal(net.params["bn"][4].data, BETA)


def _solver_files(tmp_path, form):
    net = tmp_path / "train.prototxt"
    net.write_text(
        f'layer {{ name: "data" type: "DummyData" top: "data" top: "label" dummy_data_param {{ '
        f'shape {{ dim: 4 dim: {C} dim: 3 dim: 3 }} shape {{ dim: 4 }} '
        f'data_filler {{ type: "gaussian" std: 2 }} data_filler {{ type: "constant" value: 1 }} }} }}\n'
        f'layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "bn" {FORMS[form]} }}\n'
        'layer { name: "ip" type: "InnerProduct" bottom: "bn" top: "ip" '
        'inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.3 } } }\n'
        'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n')
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}" base_lr: 0.1 momentum: 0.9 lr_policy: "fixed" max_iter: 4 '
                      f'random_seed: 1 snapshot_prefix: "{tmp_path}/snap" snapshot_after_train: false')
    return str(solver)


@pytest.mark.parametrize("layout,form", [("nvcaffe-0.15-cudnn", "engine-cudnn"), ("nvcaffe-0.14-cudnn", "no-param")])
def test_solver_trains_loaded_scale_bias_and_resumes_them(tmp_path, layout, form):
    """Blobs a load adds are parameters of the net: the solver updates γ and β (they were left
    out of its parameter list), and a snapshot resumes with their values and update history."""
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs(layout))})
    solver = brewnet.SGDSolver(_solver_files(tmp_path, form), weights=w)
    assert [e.name for e in solver.net.caffe_params] == ["bn[0]", "bn[1]", "bn[2]", "bn[3]", "bn[4]",
                                                         "ip[0]", "ip[1]"]
    solver.step(2)
    gamma = solver.net.params["bn"][3].data.copy()
    assert not np.allclose(gamma, GAMMA.reshape(-1)), "the solver left the loaded scale untouched"
    _, state = solver.snapshot()
    history = [h.clone() for h in solver.history]
    params = [p.data.copy() for p in solver.net.params["bn"]]

    resumed = brewnet.SGDSolver(_solver_files(tmp_path, form))  # the prototxt alone: 3 blobs
    resumed.restore(state)
    assert resumed.iter == 2 and len(resumed.net.params["bn"]) == 5
    assert len(resumed.test_nets) == 0 or len(resumed.test_nets[0].params["bn"]) == 5
    for a, b in zip(params, resumed.net.params["bn"]):
        np.testing.assert_array_equal(b.data, a)  # a file round trip: bit-exact
    assert len(resumed.history) == len(history)
    for a, b in zip(history, resumed.history):
        assert torch.equal(a, b)  # the momentum of γ and β came back too
    resumed.step(1)
    assert not np.array_equal(resumed.net.params["bn"][3].data, gamma)


def test_hdf5_weights_of_a_grown_layer_load_into_the_plain_prototxt(tmp_path):
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs("nvcaffe-0.15-caffe"))})
    net = brewnet.Net(prototxt(tmp_path, "no-param"), w, brewnet.TEST)
    net.save_hdf5(str(tmp_path / "w.h5"))
    again = brewnet.Net(prototxt(tmp_path, "no-param"), brewnet.TEST)
    again.load_hdf5(str(tmp_path / "w.h5"))
    assert len(again.params["bn"]) == 5
    for a, b in zip(net.params["bn"], again.params["bn"]):
        np.testing.assert_array_equal(a.data, b.data)  # a file round trip: bit-exact
    assert_close(again.forward(data=X)["bn"], net.forward(data=X)["bn"])


def test_lint_command_takes_weights(tmp_path, capsys):
    w = caffemodel(tmp_path, {"bn": ("BatchNorm", nvcaffe_blobs("nvcaffe-0.15-cudnn"))})
    model = prototxt(tmp_path, "engine-cudnn")
    cli.main(["lint", model, "-weights", w])
    out = capsys.readouterr().out
    assert "BN010" in out and "nvcaffe-0.15-cudnn" in out
    cli.main(["lint", model])
    assert "BN010" not in capsys.readouterr().out
