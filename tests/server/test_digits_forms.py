"""DIGITS' dataset and model forms: defaults, WTForms' boolean rule, validation messages on
DIGITS' field names, server paths confined to the data roots, sweeps, custom networks (parse
errors with lines, lint findings, Python layers), and the dataset spec's CLI flags accepted by
``brewnet dataset create``."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from brewnet.server.config import ServerConfig
from brewnet.server.digits.forms import OUTSIDE, parse_dataset_form, parse_model_form
from brewnet.server.jobs.specs import DatasetSpec, ModelSpec
from brewnet.server.errors import FormErrors

TINY = """name: "tiny"
layer { name: "train-data" type: "Data" top: "data" top: "label"
        data_param { batch_size: 4 } include { stage: "train" } }
layer { name: "val-data" type: "Data" top: "data" top: "label"
        data_param { batch_size: 4 } include { stage: "val" } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" exclude { stage: "deploy" } }
layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" include { stage: "deploy" } }
"""


class MultiForm:
    """A form with repeated fields (as Starlette's FormData)."""

    def __init__(self, items):
        self.items_ = list(items)

    def get(self, name, default=None):
        vals = self.getlist(name)
        return vals[-1] if vals else default

    def getlist(self, name):
        return [v for k, v in self.items_ if k == name]


@pytest.fixture
def roots(tmp_path):
    data = tmp_path / "data"
    for cls in ("cat", "dog_big"):
        (data / "train" / cls).mkdir(parents=True)
        (data / "val" / cls).mkdir(parents=True)
    (data / "lists").mkdir()
    (data / "lists" / "train.txt").write_text("a.png 0\n")
    (data / "lists" / "labels.txt").write_text("cat\ndog\n")
    outside = tmp_path / "outside"
    (outside / "a").mkdir(parents=True)
    (outside / "b").mkdir()
    return {"data": data, "outside": outside,
            "config": ServerConfig(jobs_dir=tmp_path / "jobs", data_roots=[data])}


def ds_form(folder, **extra):
    form = {"dataset_name": "ds", "method": "folder", "folder_train": str(folder)}
    form.update({k: str(v) for k, v in extra.items()})
    return form


def errors_of(fn, *args) -> dict:
    with pytest.raises(FormErrors) as e:
        fn(*args)
    return e.value.errors


# ----- datasets -----------------------------------------------------------------------------------

def test_dataset_defaults(roots):
    spec = parse_dataset_form(ds_form(roots["data"] / "train"), {}, roots["config"])
    assert (spec.method, spec.pct_val, spec.pct_test, spec.min_per_class, spec.max_per_class) == \
        ("folder", 25, 0, 2, None)
    assert (spec.encoding, spec.channels, spec.width, spec.height, spec.resize_mode) == ("png", 3, 256, 256, "squash")
    assert (spec.backend, spec.compression, spec.folder_val, spec.folder_test) == ("lmdb", "none", None, None)
    assert spec.folder_train == str((roots["data"] / "train").resolve())
    assert DatasetSpec.from_json(spec.to_json()) == spec


def test_missing_boolean_is_false_and_false_texts(roots):
    cfg = roots["config"]
    val = str(roots["data"] / "val")
    # the checkbox missing, 'false' or '' -> no separate val folder (folder_val is ignored)
    for flag in (None, "false", ""):
        extra = {"folder_val": val} if flag is None else {"folder_val": val, "has_val_folder": flag}
        assert parse_dataset_form(ds_form(roots["data"] / "train", **extra), {}, cfg).folder_val is None
    for flag in ("True", "y", "0", "on"):
        spec = parse_dataset_form(ds_form(roots["data"] / "train", has_val_folder=flag, folder_val=val), {}, cfg)
        assert spec.folder_val == str(Path(val).resolve())
    assert errors_of(parse_dataset_form, ds_form(roots["data"] / "train", has_val_folder="y"), {}, cfg) == \
        {"folder_val": ["This field is required."]}


def test_dataset_field_errors(roots):
    cfg = roots["config"]
    train = roots["data"] / "train"
    assert errors_of(parse_dataset_form, {"method": "folder"}, {}, cfg) == \
        {"dataset_name": ["This field is required."], "folder_train": ["This field is required."]}
    assert errors_of(parse_dataset_form, ds_form(train, resize_width="wide"), {}, cfg) == \
        {"resize_width": ["Not a valid integer value"]}
    assert errors_of(parse_dataset_form, ds_form(train, resize_height="0"), {}, cfg) == \
        {"resize_height": ["Number must be at least 1."]}
    assert errors_of(parse_dataset_form, ds_form(train, folder_pct_val="101"), {}, cfg) == \
        {"folder_pct_val": ["Number must be between 0 and 100."]}
    assert "folder_pct_val" in errors_of(parse_dataset_form, ds_form(train, folder_pct_val=60, folder_pct_test=50),
                                         {}, cfg)
    assert errors_of(parse_dataset_form, ds_form(train, resize_channels="4", encoding="gif", method="folder"),
                     {}, cfg) == {"resize_channels": ["Not a valid choice"], "encoding": ["Not a valid choice"]}
    assert errors_of(parse_dataset_form, ds_form(train, method="web"), {}, cfg) == {"method": ["Not a valid choice"]}
    assert errors_of(parse_dataset_form, ds_form(train, backend="hdf5"), {}, cfg) == \
        {"backend": ["brewnet builds LMDB datasets; hdf5 is not supported"]}
    assert errors_of(parse_dataset_form, ds_form(train, folder_train_min_per_class=5,
                                                 folder_train_max_per_class=3), {}, cfg) == \
        {"folder_train_max_per_class": ["must be greater than or equal to the minimum"]}
    # several errors at once, each on its own field
    errs = errors_of(parse_dataset_form, {"dataset_name": "", "resize_width": "x", "folder_train": "/nope"}, {}, cfg)
    assert set(errs) == {"dataset_name", "resize_width", "folder_train"}


def test_server_paths_are_confined_to_the_data_roots(roots, tmp_path):
    cfg = roots["config"]
    data, outside = roots["data"], roots["outside"]
    assert errors_of(parse_dataset_form, ds_form(outside), {}, cfg) == {"folder_train": [OUTSIDE]}
    assert OUTSIDE == "Path is outside the server's data roots"
    # a '..' that leaves the root, and a symlink inside the root pointing out of it
    assert errors_of(parse_dataset_form, ds_form(f"{data}/../outside"), {}, cfg) == {"folder_train": [OUTSIDE]}
    os.symlink(outside, data / "link")
    assert errors_of(parse_dataset_form, ds_form(data / "link"), {}, cfg) == {"folder_train": [OUTSIDE]}
    # inside the roots: existence checked
    assert errors_of(parse_dataset_form, ds_form(data / "nope"), {}, cfg) == {"folder_train": ["Folder does not exist"]}
    assert errors_of(parse_dataset_form, ds_form("train"), {}, cfg) == {"folder_train": ["Must be an absolute path"]}
    assert "folder_train" in errors_of(parse_dataset_form, ds_form(data / "train" / "cat"), {}, cfg)   # no classes
    assert errors_of(parse_dataset_form, ds_form(data / "train", has_val_folder="y", folder_val=str(outside)),
                     {}, cfg) == {"folder_val": [OUTSIDE]}
    # no data roots: every server path refused
    bare = ServerConfig(jobs_dir=tmp_path / "jobs2")
    assert errors_of(parse_dataset_form, ds_form(data / "train"), {}, bare) == {"folder_train": [OUTSIDE]}


def test_textfile_uploads_and_local_files(roots, tmp_path):
    cfg, data = roots["config"], roots["data"]
    up_train, up_labels = tmp_path / "jobs" / "train.txt", tmp_path / "jobs" / "labels.txt"
    form = {"dataset_name": "t", "method": "textfile", "textfile_train_folder": str(data / "train")}
    spec = parse_dataset_form(form, {"textfile_train_images": str(up_train), "textfile_labels_file": str(up_labels)},
                              cfg)
    assert (spec.textfile_train, spec.textfile_labels, spec.textfile_val) == (str(up_train), str(up_labels), None)
    assert spec.shuffle is True
    args = spec.cli_args("/jobs/x")
    assert args[:4] == [str(up_train), "/jobs/x", "-labels", str(up_labels)]
    assert args[args.index("-list-root") + 1] == str((data / "train").resolve())
    assert args[args.index("-val-percent") + 1] == "0"
    assert errors_of(parse_dataset_form, {**form, "textfile_use_val": "y"}, {"textfile_labels_file": "x"}, cfg) == \
        {"textfile_train_images": ["This field is required."], "textfile_val_images": ["This field is required."]}
    local = {"dataset_name": "t", "method": "textfile", "textfile_use_local_files": "y",
             "textfile_local_train_images": str(data / "lists" / "train.txt"),
             "textfile_local_labels_file": str(data / "lists" / "labels.txt"), "textfile_shuffle": "0"}
    spec = parse_dataset_form(local, {}, cfg)
    assert spec.textfile_train == str((data / "lists" / "train.txt").resolve()) and spec.shuffle is False
    assert "-no-shuffle" in spec.cli_args("/o")
    (roots["outside"] / "labels.txt").write_text("a\n")
    assert errors_of(parse_dataset_form, {**local, "textfile_local_labels_file": str(roots["outside"] / "labels.txt")},
                     {}, cfg) == {"textfile_local_labels_file": [OUTSIDE]}
    assert errors_of(parse_dataset_form, {**local, "textfile_local_train_images": str(data / "lists" / "no.txt")},
                     {}, cfg) == {"textfile_local_train_images": ["File does not exist"]}


def make_images(root: Path, n: int = 6) -> None:
    for ci, name in enumerate(("red", "green_ish")):
        (root / name).mkdir(parents=True)
        for i in range(n):
            a = np.zeros((12, 12, 3), np.uint8)
            a[..., ci] = 60 + 25 * i
            Image.fromarray(a).save(root / name / f"{i}.png")


def test_dataset_cli_args_run_brewnet_dataset_create(tmp_path):
    data = tmp_path / "data"
    make_images(data / "train")
    make_images(data / "val", n=2)
    cfg = ServerConfig(jobs_dir=tmp_path / "jobs", data_roots=[data])
    spec = parse_dataset_form(ds_form(data / "train", resize_width=8, resize_height=6, resize_channels=1,
                                      folder_pct_test=0, has_val_folder="y", folder_val=str(data / "val"),
                                      folder_val_min_per_class=1, encoding="none"), {}, cfg)
    args = spec.cli_args(str(tmp_path / "out"))
    assert args[args.index("-resize") + 1] == "8x6" and "-grayscale" in args and "-digits-labels" in args
    assert args[args.index("-val-folder") + 1] == str((data / "val").resolve())
    r = subprocess.run([sys.executable, "-m", "brewnet", "dataset", "create", *args],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr + r.stdout
    import json
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["labels"] == ["green ish", "red"]          # DIGITS: sorted folders, '_' -> ' '
    assert summary["image"] == {"channels": 1, "height": 6, "width": 8, "channel_order": "gray"}
    assert {k: v["total"] for k, v in summary["splits"].items()} == {"train": 12, "val": 4}


# ----- models -------------------------------------------------------------------------------------

@pytest.fixture
def jobs(tmp_path):
    table = {
        "ds1": {"id": "ds1", "kind": "dataset", "status": "Done", "image": {"height": 28, "width": 28, "channels": 1}},
        "ds_run": {"id": "ds_run", "kind": "dataset", "status": "Running", "image": {}},
        "ds_err": {"id": "ds_err", "kind": "dataset", "status": "Error"},
        "m1": {"id": "m1", "kind": "model", "status": "Done", "directory": str(tmp_path),
               "snapshots": [{"iteration": 6, "epoch": 2, "path": "x"}, {"iteration": 9, "epoch": 2.5, "path": "y"}]},
    }
    return table.get


def m_form(**extra):
    form = {"model_name": "m", "dataset": "ds1", "method": "standard", "standard_networks": "lenet"}
    form.update({k: str(v) for k, v in extra.items()})
    return form


def test_model_defaults(roots, jobs):
    [spec] = parse_model_form(m_form(), {}, roots["config"], jobs)
    assert (spec.name, spec.dataset_id, spec.method, spec.standard_network) == ("m", "ds1", "standard", "lenet")
    assert (spec.train_epochs, spec.snapshot_interval, spec.val_interval) == (30, 1.0, 1.0)
    assert (spec.learning_rate, spec.lr_policy, spec.solver_type, spec.batch_size) == (0.01, "step", "SGD", None)
    assert spec.lr_params == {"lr_step_size": 33.0, "lr_step_gamma": 0.1}
    assert (spec.use_mean, spec.crop_size, spec.shuffle, spec.random_seed) == ("image", None, False, None)
    assert (spec.bn_recalibrate, spec.select_gpu_count, spec.select_gpus) == (100, 1, [])
    assert ModelSpec.from_json(spec.to_json()) == spec


def test_model_field_errors(roots, jobs):
    cfg = roots["config"]
    for ds in ("nope", "ds_err", "m1"):
        assert errors_of(parse_model_form, m_form(dataset=ds), {}, cfg, jobs) == {"dataset": ["Not a valid choice"]}
    assert parse_model_form(m_form(dataset="ds_run"), {}, cfg, jobs)[0].dataset_id == "ds_run"
    assert errors_of(parse_model_form, m_form(standard_networks=""), {}, cfg, jobs) == \
        {"standard_networks": ["This field is required."]}
    assert errors_of(parse_model_form, m_form(standard_networks="vgg"), {}, cfg, jobs) == \
        {"standard_networks": ["Not a valid choice"]}
    assert errors_of(parse_model_form, m_form(train_epochs=0, learning_rate=-1, solver_type="LBFGS",
                                              random_seed="x", framework="torch"), {}, cfg, jobs) == {
        "train_epochs": ["Number must be at least 1."], "learning_rate": ["Number must be at least 0."],
        "solver_type": ["Not a valid choice"], "random_seed": ["Not a valid integer value"],
        "framework": ["Not a valid choice"]}
    assert errors_of(parse_model_form, m_form(crop_size=29), {}, cfg, jobs) == \
        {"crop_size": ["crop_size is larger than the image size"]}
    assert errors_of(parse_model_form, m_form(method="pretrained", pretrained_networks="p1"), {}, cfg, jobs) == \
        {"pretrained_networks": ["Not a valid choice"]}
    # optional numbers may be blank; the others keep their defaults when missing only
    [spec] = parse_model_form(m_form(random_seed="", batch_size="", crop_size=""), {}, cfg, jobs)
    assert (spec.random_seed, spec.batch_size, spec.crop_size) == (None, None, None)


@pytest.mark.parametrize("name", ["lenet_bn", "alexnet_bn", "googlenet_bn", "resnet18", "resnet50", "alexnet"])
def test_brewnet_standard_networks_accepted(roots, jobs, name):
    assert parse_model_form(m_form(standard_networks=name), {}, roots["config"], jobs)[0].standard_network == name


def test_shuffle_and_brewnet_fields(roots, jobs):
    cfg = roots["config"]
    [spec] = parse_model_form(m_form(shuffle="true", bn_recalibrate=0, select_gpus_list="0,2",
                                     select_gpu_count=2, lr_policy="exp", lr_exp_gamma="0.9",
                                     solver_type="ADAM"), {}, cfg, jobs)
    assert spec.shuffle is True and spec.bn_recalibrate == 0 and spec.select_gpus == [0, 2]
    assert spec.select_gpu_count == 2 and spec.lr_params == {"lr_exp_gamma": 0.9} and spec.solver_type == "ADAM"
    assert parse_model_form(m_form(shuffle="false"), {}, cfg, jobs)[0].shuffle is False
    assert parse_model_form(m_form(select_gpu="1"), {}, cfg, jobs)[0].select_gpus == [1]
    assert parse_model_form(m_form(select_gpu="next"), {}, cfg, jobs)[0].select_gpus == []
    assert errors_of(parse_model_form, m_form(bn_recalibrate=-1), {}, cfg, jobs) == \
        {"bn_recalibrate": ["Number must be at least 0."]}


def test_sweeps(roots, jobs):
    cfg = roots["config"]
    specs = parse_model_form(m_form(model_name="sweep", learning_rate="[0.01, 0.001]"), {}, cfg, jobs)
    assert [(s.name, s.learning_rate) for s in specs] == [("sweep learning_rate:0.01", 0.01),
                                                          ("sweep learning_rate:0.001", 0.001)]
    form = MultiForm(list(m_form(model_name="s").items()) + [("learning_rate", "0.1"), ("learning_rate", "0.2"),
                                                             ("batch_size", "8"), ("batch_size", "10")])
    specs = parse_model_form(form, {}, cfg, jobs)
    assert [s.name for s in specs] == ["s learning_rate:0.1 batch_size:8", "s learning_rate:0.1 batch_size:10",
                                       "s learning_rate:0.2 batch_size:8", "s learning_rate:0.2 batch_size:10"]
    assert [(s.learning_rate, s.batch_size) for s in specs] == [(0.1, 8), (0.1, 10), (0.2, 8), (0.2, 10)]
    [one] = parse_model_form(m_form(model_name="one", batch_size="[12]"), {}, cfg, jobs)
    assert (one.name, one.batch_size) == ("one", 12)
    assert errors_of(parse_model_form, m_form(batch_size="[8, x]"), {}, cfg, jobs) == \
        {"batch_size": ["Not a valid integer value"]}


def test_previous_network_and_its_snapshot(roots, jobs):
    cfg = roots["config"]
    [spec] = parse_model_form(m_form(method="previous", previous_networks="m1", **{"m1-snapshot": "2.5"}),
                              {}, cfg, jobs)
    assert (spec.previous_job_id, spec.previous_epoch) == ("m1", 2.5)
    for epoch in ("0", "-1"):
        assert parse_model_form(m_form(method="previous", previous_networks="m1", **{"m1-snapshot": epoch}),
                                {}, cfg, jobs)[0].previous_epoch == float(epoch)
    assert errors_of(parse_model_form, m_form(method="previous", previous_networks="m1", **{"m1-snapshot": "3"}),
                     {}, cfg, jobs) == \
        {"m1-snapshot": ["For the job m1, selected pretrained_model for epoch 3 is invalid!"]}
    assert errors_of(parse_model_form, m_form(method="previous", previous_networks="m1"), {}, cfg, jobs) == \
        {"m1-snapshot": ["This field is required."]}
    assert errors_of(parse_model_form, m_form(method="previous", previous_networks="ds1", **{"ds1-snapshot": "1"}),
                     {}, cfg, jobs) == {"previous_networks": ["Not a valid choice"]}


def test_custom_network_parse_errors_name_the_line(roots, jobs):
    cfg = roots["config"]
    bad = TINY.replace('type: "InnerProduct"', 'type: "InnerProduct" kernel: 3')
    errs = errors_of(parse_model_form, m_form(method="custom", custom_network=bad), {}, cfg, jobs)
    assert list(errs) == ["custom_network"]
    msg = errs["custom_network"][0]
    assert msg.startswith("Bad network: 6: ") and "kernel" in msg and "'ip'" in msg
    no_softmax = "\n".join(line for line in TINY.splitlines() if '"Softmax"' not in line)
    errs = errors_of(parse_model_form, m_form(method="custom", custom_network=no_softmax), {}, cfg, jobs)
    assert "missing a Softmax" in errs["custom_network"][0]
    assert errors_of(parse_model_form, m_form(method="custom", custom_network=" "), {}, cfg, jobs) == \
        {"custom_network": ["This field is required."]}


def test_custom_network_lint_findings_kept(roots, jobs):
    net = TINY.replace('layer { name: "ip"', 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }\n'
                                              'layer { name: "ip"')
    [spec] = parse_model_form(m_form(method="custom", custom_network=net), {}, roots["config"], jobs)
    assert spec.custom_network == net
    f = next(f for f in spec.lint_findings if f["rule"] == "BN006")
    assert f["layer"] == "bn" and f["line"] == 6 and f["message"] and f["fix"]
    [clean] = parse_model_form(m_form(method="custom", custom_network=TINY), {}, roots["config"], jobs)
    assert clean.lint_findings == []


def test_custom_weights_are_confined(roots, jobs):
    cfg = roots["config"]
    inside = roots["data"] / "w.caffemodel"
    inside.write_bytes(b"x")
    out = roots["outside"] / "w.caffemodel"
    out.write_bytes(b"x")
    [spec] = parse_model_form(m_form(method="custom", custom_network=TINY, custom_network_snapshot=str(inside)),
                              {}, cfg, jobs)
    assert spec.custom_weights == [str(inside.resolve())]
    assert errors_of(parse_model_form, m_form(method="custom", custom_network=TINY,
                                              custom_network_snapshot=f"{inside}:{out}"), {}, cfg, jobs) == \
        {"custom_network_snapshot": [OUTSIDE]}


def test_python_layers_need_the_servers_folder(roots, jobs, tmp_path):
    net = TINY.replace('layer { name: "ip"',
                       'layer { name: "py" type: "Python" bottom: "data" top: "data" '
                       'python_param { module: "mylayers" layer: "Double" } }\nlayer { name: "ip"')
    form = m_form(method="custom", custom_network=net)
    errs = errors_of(parse_model_form, form, {}, roots["config"], jobs)
    assert "refused" in errs["custom_network"][0]
    layers = tmp_path / "pylayers"
    layers.mkdir()
    allowed = ServerConfig(jobs_dir=tmp_path / "jobs", data_roots=[roots["data"]], allow_python_layers=layers)
    errs = errors_of(parse_model_form, form, {}, allowed, jobs)
    assert "mylayers" in errs["custom_network"][0]
    (layers / "mylayers.py").write_text("class Double: pass\n")
    [spec] = parse_model_form(form, {}, allowed, jobs)
    assert spec.python_layer_file == str((layers / "mylayers.py").resolve())


# ----- augmentation and Python layer files (issue 20 item 5: nothing accepted and dropped) ---------

def test_augmentation_fields_become_the_jobs_augment_file(roots, jobs):
    [spec] = parse_model_form(m_form(), {}, roots["config"], jobs)
    assert spec.augmentation == {}                       # off by default
    form = m_form(aug_flip="fliplrud", aug_quad_rot="rot180", aug_rot=12, aug_scale=0.07, aug_noise=0.03,
                  aug_contrast=0.8, aug_hsv_use="true", aug_hsv_s=0.1)
    [spec] = parse_model_form(form, {}, roots["config"], jobs)
    assert spec.augmentation == {"flip": "fliplrud", "quad_rot": "rot180", "rotation": 12.0, "scale": 0.07,
                                 "noise": 0.03, "contrast": 0.8, "hsv_h": 0.02, "hsv_s": 0.1, "hsv_v": 0.06}
    # HSV values count only with aug_hsv_use (DIGITS' checkbox); "none" choices are off
    [spec] = parse_model_form(m_form(aug_flip="none", aug_hsv_h=0.3, aug_hsv_use="false"), {}, roots["config"], jobs)
    assert spec.augmentation == {}


def test_bad_augmentation_fields_are_named(roots, jobs):
    errs = errors_of(parse_model_form, m_form(aug_flip="sideways", aug_rot=200, aug_noise="loud",
                                              aug_hsv_use="1", aug_hsv_v=0.9, aug_whitening="true"),
                     {}, roots["config"], jobs)
    assert errs["aug_flip"] == ["Not a valid choice"]
    assert errs["aug_rot"] == ["Number must be between 0 and 180."]
    assert errs["aug_noise"] == ["Not a valid float value"]
    assert errs["aug_hsv_v"] == ["Number must be between 0 and 0.5."]
    assert "not applied" in errs["aug_whitening"][0]


PY_NET = TINY.replace('layer { name: "ip"', 'layer { name: "py" type: "Python" bottom: "data" top: "data" '
                      'python_param { module: "digits_python_layers" layer: "Double" } }\nlayer { name: "ip"')


def test_python_layer_files_are_refused_without_the_servers_flag(roots, jobs, tmp_path):
    upload = tmp_path / "layers.py"
    upload.write_text("class Double: pass\n")
    server_file = roots["data"] / "layers.py"
    server_file.write_text("class Double: pass\n")
    for form, uploads, name in ((m_form(python_layer_from_client="true"), {"python_layer_client_file": str(upload)},
                                 "python_layer_client_file"),
                                (m_form(python_layer_server_file=str(server_file)), {}, "python_layer_server_file")):
        errs = errors_of(parse_model_form, form, uploads, roots["config"], jobs)
        assert "--allow-python-layers" in errs[name][0], errs


def test_python_layer_files_with_the_flag(roots, jobs, tmp_path):
    allowed = ServerConfig(jobs_dir=tmp_path / "jobs", data_roots=[roots["data"]], allow_python_layers=True)
    upload = tmp_path / "layers.py"
    upload.write_text("class Double: pass\n")
    form = m_form(method="custom", custom_network=PY_NET, python_layer_from_client="true")
    [spec] = parse_model_form(form, {"python_layer_client_file": str(upload)}, allowed, jobs)
    assert spec.python_layer_upload == str(upload) and spec.python_layer_file is None
    server_file = roots["data"] / "layers.py"
    server_file.write_text("class Double: pass\n")
    [spec] = parse_model_form(m_form(method="custom", custom_network=PY_NET, python_layer_server_file=str(server_file)),
                              {}, allowed, jobs)
    assert spec.python_layer_upload == str(server_file.resolve())
    # the network's digits_python_layers needs the file; other modules need --allow-python-layers DIR
    errs = errors_of(parse_model_form, m_form(method="custom", custom_network=PY_NET), {}, allowed, jobs)
    assert "python_layer_client_file" in errs["custom_network"][0]
    other = PY_NET.replace('module: "digits_python_layers"', 'module: "mylayers"')
    errs = errors_of(parse_model_form, m_form(method="custom", custom_network=other), {}, allowed, jobs)
    assert "'mylayers' is not available" in errs["custom_network"][0]
    # not Python, outside the data roots, both given without the checkbox, the checkbox without a file
    upload.write_text("def broken(:\n")
    errs = errors_of(parse_model_form, form, {"python_layer_client_file": str(upload)}, allowed, jobs)
    assert errs["python_layer_client_file"][0].startswith("Not a valid Python file: line 1")
    outside = roots["outside"] / "x.py"
    outside.write_text("")
    errs = errors_of(parse_model_form, m_form(python_layer_server_file=str(outside)), {}, allowed, jobs)
    assert errs["python_layer_server_file"] == [OUTSIDE]
    errs = errors_of(parse_model_form, m_form(python_layer_server_file=str(server_file)),
                     {"python_layer_client_file": str(upload)}, allowed, jobs)
    assert "Both" in errs["python_layer_client_file"][0]
    errs = errors_of(parse_model_form, m_form(python_layer_from_client="true"), {}, allowed, jobs)
    assert errs["python_layer_client_file"] == ["This field is required."]
