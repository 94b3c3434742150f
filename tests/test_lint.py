"""brewnet lint: one small prototxt per rule, silence on a clean BVLC BatchNorm + Scale net, --fix
output re-linted clean, and the DIGITS #629 configurations (benchmarks/seed_configs)."""
from __future__ import annotations

from pathlib import Path

import pytest

from brewnet import formats
from brewnet.commands import main as cli
from brewnet.batchnorm.lint import apply_fixes, lint

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "benchmarks" / "seed_configs"

INPUT = '''layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param { shape { dim: 2 dim: 3 dim: 8 dim: 8 } }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 }
}
'''

CLEAN = INPUT + '''layer {
  name: "bn1"
  type: "BatchNorm"
  bottom: "conv1"
  top: "conv1"
  param { lr_mult: 0 }
  param { lr_mult: 0 }
  param { lr_mult: 0 }
}
layer {
  name: "scale1"
  type: "Scale"
  bottom: "conv1"
  top: "conv1"
  scale_param { bias_term: true }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
'''


def bn(body: str, top: str = "conv1", extra: str = "", scale: bool = True) -> str:
    text = INPUT + f'''layer {{
  name: "bn1"
  type: "BatchNorm"
  bottom: "conv1"
  top: "{top}"
{extra}  batch_norm_param {{ {body} }}
}}
'''
    if scale:
        text += (f'layer {{ name: "scale1" type: "Scale" bottom: "{top}" top: "{top}" '
                 f'scale_param {{ bias_term: true }} }}\n')
    return text


FILLERS = 'scale_filler { type: "constant" value: 1 } bias_filler { type: "constant" value: 0 }'

CASES = {
    "BN001": (bn("engine: CUDNN " + FILLERS, scale=False), {}, "error"),
    "BN002": (bn('engine: CAFFE scale_filler { type: "constant" } bias_filler { type: "constant" }', top="bn1",
                 scale=False), {}, "error"),
    "BN002-missing": (bn("engine: CAFFE", top="bn1", scale=False), {}, "warning"),
    "BN003": (bn("", extra="  param { lr_mult: 1 decay_mult: 1 }\n" * 3), {}, "warning"),
    "BN004": (INPUT + 'layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" include { phase: TEST }\n'
               '  batch_norm_param { use_global_stats: false } }\n'
               'layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" include { phase: TRAIN } }\n'
               'layer { name: "scale1" type: "Scale" bottom: "bn1" top: "bn1" scale_param { bias_term: true } }\n',
               {}, "error"),
    "BN005": (INPUT + 'layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" include { phase: TEST } }\n'
              'layer { name: "scale1" type: "Scale" bottom: "bn1" top: "bn1" scale_param { bias_term: true } }\n',
              {}, "error"),
    "BN006": (bn("", top="bn1", scale=False) + 'layer { name: "relu" type: "ReLU" bottom: "bn1" top: "bn1" }\n',
              {}, "warning"),
    "BN007": (bn("eps: 1e-7 engine: CUDNN " + FILLERS, top="bn1", scale=False), {}, "error"),
    "BN008-noisy": (bn("moving_average_fraction: 0.5"), {}, "warning"),
    "BN008-stale": (bn("moving_average_fraction: 0.999"), {"max_iter": 1000}, "warning"),
    "BN009": ('''layer {
  name: "data"
  type: "Data"
  top: "data"
  top: "label"
  transform_param { scale: 0.00390625 }
  data_param { source: "train_db" batch_size: 4 }
}
''', {"deploy": INPUT}, "warning"),
}


def write(tmp_path, text, name="m.prototxt"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def run_lint(text, **kw):
    if "deploy" in kw:
        kw["deploy"] = formats.net_from_text(kw["deploy"])
    return lint(formats.net_from_text(text), text, **kw)


def cli_args(tmp_path, text, kw):
    """lint's command line for a case; a deploy net goes beside the model, where lint finds it."""
    if "deploy" in kw:
        write(tmp_path, kw["deploy"], "deploy.prototxt")
    return ["lint", write(tmp_path, text)] + (["--max-iter", str(kw["max_iter"])] if "max_iter" in kw else [])


def test_clean_bvlc_batchnorm_scale_net_is_silent(tmp_path, capsys):
    assert run_lint(CLEAN) == []
    assert run_lint(CLEAN, max_iter=10000) == []
    assert cli.main(["lint", write(tmp_path, CLEAN)]) == 0
    assert "no findings" in capsys.readouterr().out


@pytest.mark.parametrize("case", list(CASES))
def test_each_rule_fires(case, tmp_path, capsys):
    text, kw, severity = CASES[case]
    rule = case.split("-")[0]
    found = run_lint(text, **kw)
    mine = [f for f in found if f.rule == rule]
    assert mine, f"{rule} not found in {found}"
    assert mine[0].severity == severity
    assert mine[0].fix
    # the line is the layer's `name:` line in the file
    lines = text.split("\n")
    assert f'name: "{mine[0].layer}"' in lines[mine[0].line - 1]
    assert cli.main(cli_args(tmp_path, text, kw)) == 1
    out = capsys.readouterr().out
    assert rule in out and f"layer '{mine[0].layer}'" in out


def test_bn004_use_global_stats_true_in_train_only_layer():
    text = INPUT + ('layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" include { phase: TRAIN } '
                    'batch_norm_param { use_global_stats: true } }\n'
                    'layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "bn1" include { phase: TEST } }\n'
                    'layer { name: "scale1" type: "Scale" bottom: "bn1" top: "bn1" scale_param { bias_term: true } }\n')
    found = [f for f in run_lint(text) if f.rule == "BN004"]
    assert len(found) == 1 and found[0].severity == "error" and "TRAIN" in found[0].message


def test_bn005_type_mismatch_between_phases():
    text = INPUT + ('layer { name: "x" type: "Scale" bottom: "conv1" top: "x" include { phase: TRAIN } }\n'
                    'layer { name: "x" type: "Bias" bottom: "conv1" top: "x" include { phase: TEST } }\n')
    assert [f.rule for f in run_lint(text)] == ["BN005"]


def test_stats_lr_mult_zero_with_caffe_default_decay_is_fine():
    assert run_lint(bn("", extra="  param { lr_mult: 0 decay_mult: 1 }\n" * 3)) == []


def test_phase_option_restricts_layers():
    text = CASES["BN004"][0]
    assert [f.rule for f in run_lint(text, phase=0)] == []  # the TEST-only layer is not in TRAIN


def test_target_nvcaffe_014_flags_default_engine_filler_and_inplace():
    text = bn("", top="conv1", scale=False)
    rules = {f.rule for f in run_lint(text, target="nvcaffe-0.14")}
    assert {"BN001", "BN002"} <= rules


@pytest.mark.parametrize("case", [c for c in CASES if c not in ("BN005", "BN009")])
def test_fix_output_relints_clean(case, tmp_path, capsys):
    text, kw, _ = CASES[case]
    src = write(tmp_path, text)
    out = str(tmp_path / "fixed.prototxt")
    args = ["lint", src, "--fix", out] + (["--max-iter", str(kw["max_iter"])] if kw else [])
    assert cli.main(args) == 1
    args2 = ["lint", out] + (["--max-iter", str(kw["max_iter"])] if kw else [])
    assert cli.main(args2) == 0, capsys.readouterr().out


def test_fix_inplace_cudnn_rewires_following_layers():
    text = bn("engine: CUDNN " + FILLERS, scale=False) + \
        'layer { name: "relu" type: "ReLU" bottom: "conv1" top: "conv1" }\n' \
        'layer { name: "pool" type: "Pooling" bottom: "conv1" top: "pool" pooling_param { kernel_size: 2 } }\n'
    net = formats.net_from_text(text)
    fixed, n = apply_fixes(net, lint(net, text))
    layers = {lp.name: lp for lp in fixed.layer}
    assert list(layers["bn1"].top) == ["bn1"]
    assert list(layers["relu"].bottom) == list(layers["relu"].top) == ["bn1"]
    assert list(layers["pool"].bottom) == ["bn1"]
    import brewnet
    brewnet.Net(fixed, brewnet.TEST)  # still a valid net


SEED_EXPECTED = {
    "bn_after_relu_train_test": {"BN006": 3},
    "nvcaffe_inplace_4params_cudnn": {"BN001": 3},
    "bn_after_data": {"BN004": 4},
    "nvcaffe_2params_phase_default": {},
}


@pytest.mark.parametrize("name", list(SEED_EXPECTED))
def test_seed_configurations(name):
    path = SEED / f"{name}.prototxt"
    text = path.read_text()
    found = lint(formats.read_net(str(path)), text)
    counts = {}
    for f in found:
        counts[f.rule] = counts.get(f.rule, 0) + 1
        assert f.line is not None
    assert counts == SEED_EXPECTED[name]


def test_seed_sodeypunk_config_on_nvcaffe_014_gets_gamma_zero_error():
    path = SEED / "bn_after_relu_train_test.prototxt"
    found = lint(formats.read_net(str(path)), path.read_text(), target="nvcaffe-0.14")
    assert any(f.rule == "BN002" for f in found)


def test_bn009_needs_a_deploy_net(tmp_path, capsys):
    """Without a deploy net nothing says the preprocessing will be lost: a clean net with a
    scaled Data layer is silent; with a plain deploy.prototxt beside it, BN009 names the layer."""
    text = CASES["BN009"][0] + CLEAN.replace(INPUT, "")
    assert run_lint(text) == []
    assert cli.main(["lint", write(tmp_path, text)]) == 0
    capsys.readouterr()
    write(tmp_path, INPUT, "deploy.prototxt")
    assert cli.main(["lint", write(tmp_path, text)]) == 1
    out = capsys.readouterr().out
    assert "deploy.prototxt" in out and "BN009" in out and "layer 'data'" in out


def test_deploy_that_carries_the_scale_silences_bn009(tmp_path):
    text = CASES["BN009"][0]
    deploy = formats.net_from_text(INPUT.replace('top: "data"\n  input', 'top: "data"\n  input', 1) +
                                  'layer { name: "pre" type: "Power" bottom: "data" top: "data" '
                                  'power_param { scale: 0.00390625 } }\n')
    assert lint(formats.net_from_text(text), text, deploy=deploy) == []


def test_solver_gives_max_iter(tmp_path, capsys):
    text = bn("moving_average_fraction: 0.999")
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "m.prototxt"\nbase_lr: 0.1\nmax_iter: 600\n')
    assert cli.main(["lint", write(tmp_path, text), "--solver", str(solver)]) == 1
    assert "BN008" in capsys.readouterr().out


def test_bn009_suggested_fix_silences_it_for_an_inexact_scale():
    """1/255 is not exact in float32: the printed fix carries enough digits, and the deploy net's
    float32 field read back counts as the same scale (it kept warning after the fix)."""
    text = CASES["BN009"][0].replace("scale: 0.00390625", "scale: 0.0039215686")
    found = [f for f in lint(formats.net_from_text(text), text, deploy=formats.net_from_text(INPUT))
             if f.rule == "BN009"]
    assert len(found) == 1
    power = found[0].fix[found[0].fix.index('layer {'):found[0].fix.index('} }') + 3]
    deploy = formats.net_from_text(INPUT + power.replace('layer { type: "Power"',
                                                        'layer { name: "pre" type: "Power" '
                                                        'bottom: "data" top: "data"'))
    assert lint(formats.net_from_text(text), text, deploy=deploy) == []
    other = formats.net_from_text(INPUT + 'layer { name: "pre" type: "Power" bottom: "data" top: "data" '
                                         'power_param { scale: 0.004 } }')
    assert [f.rule for f in lint(formats.net_from_text(text), text, deploy=other)] == ["BN009"]
