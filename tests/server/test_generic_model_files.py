"""A generic model job's files (brewnet/server/digits/generic_model_files.py): DIGITS'
save_files_generic rules (digits-other-jobs.md §1.6) on small C1 datasets of each kind, the
errors with DIGITS' messages, and brewnet's improvements (paired crops for segmentation, class
counts of standard networks)."""
from __future__ import annotations

import json

import pytest
from generic_datasets import FCN, REGRESSION_NET, make_gradients_dataset, make_segmentation_dataset
from google.protobuf import text_format

from brewnet.proto import caffe_pb2
from brewnet.server.digits.generic_model_files import (build_generic_files, fit_outputs, generic_model_json,
                                                       write_generic_model_files)
from brewnet.server.errors import FormErrors
from brewnet.server.jobs.specs import ModelSpec

def net_of(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


def spec(**kw) -> ModelSpec:
    base = dict(name="m", kind="generic", method="custom", custom_network=REGRESSION_NET, train_epochs=2,
                learning_rate=0.01)
    base.update(kw)
    return ModelSpec(**base)


@pytest.fixture(scope="module")
def gradients(tmp_path_factory):
    return make_gradients_dataset(tmp_path_factory.mktemp("grad") / "ds", train=40, val=12, size=8)


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory):
    return make_segmentation_dataset(tmp_path_factory.mktemp("seg") / "ds", train=6, val=2, size=16)


def layers_by_name(net: caffe_pb2.NetParameter) -> dict:
    return {lp.name: lp for lp in net.layer}


def test_regression_files_follow_digits_rules(gradients, tmp_path):
    plan = write_generic_model_files(tmp_path, spec(batch_size=10), {"directory": str(gradients)}, None)
    tv = net_of((tmp_path / "train_val.prototxt").read_text())
    by = layers_by_name(tv)
    assert [lp.name for lp in tv.layer[:4]] == ["train_data", "train_label", "val_data", "val_label"]
    for name, phase, db in (("train_data", caffe_pb2.TRAIN, "train_db/features"),
                            ("train_label", caffe_pb2.TRAIN, "train_db/labels"),
                            ("val_data", caffe_pb2.TEST, "val_db/features"),
                            ("val_label", caffe_pb2.TEST, "val_db/labels")):
        lp = by[name]
        assert [r.phase for r in lp.include] == [phase] and not lp.include[0].stage
        assert lp.data_param.source == str(gradients / db)
        assert lp.data_param.backend == caffe_pb2.DataParameter.LMDB
        assert lp.data_param.batch_size == 10              # the form's, over the network's
    # the mean on the features layers only
    assert by["train_data"].transform_param.mean_file == str(gradients / "train_db/mean.binaryproto")
    assert not by["train_label"].transform_param.HasField("mean_file")
    # the other layers: no rules (both phases)
    assert not by["ip1"].include and not by["loss"].include and not by["loss"].exclude
    deploy = net_of((tmp_path / "deploy.prototxt").read_text())
    assert list(deploy.input) == ["data"] and list(deploy.input_shape[0].dim) == [1, 1, 8, 8]
    assert [lp.name for lp in deploy.layer] == ["scale", "ip1"]
    solver = text_format.Parse((tmp_path / "solver.prototxt").read_text(), caffe_pb2.SolverParameter())
    assert plan.iters_per_epoch == 4 and solver.max_iter == 8            # ceil(40 / 10) x 2 epochs
    assert list(solver.test_iter) == [2]                                 # ceil(12 / 10)
    info = json.loads((tmp_path / "plan.json").read_text())
    assert info["dataset_kind"] == "gradients" and info["dataset_dir"] == str(gradients)
    assert info["kind"] == "generic" and info["image_dims"] == [8, 8, 1] and info["mean"] == "image"
    assert (tmp_path / "original.prototxt").read_text() == REGRESSION_NET


def test_batch_from_network_pixel_mean_and_no_val(gradients, tmp_path):
    files = build_generic_files(spec(use_mean="pixel"), {"directory": str(gradients)}, None)
    by = layers_by_name(files.train_val)
    assert by["train_data"].data_param.batch_size == 8 and by["val_data"].data_param.batch_size == 4
    assert len(by["train_data"].transform_param.mean_value) == 1
    assert by["train_data"].transform_param.mean_value[0] == pytest.approx(127.5, abs=2)
    assert files.plan.test_iter == 3                                    # ceil(12 / 4)

    summary = json.loads((gradients / "summary.json").read_text())
    no_val = tmp_path / "noval"
    no_val.mkdir()
    summary["stages"] = {"train": summary["stages"]["train"]}
    (no_val / "summary.json").write_text(json.dumps(summary))
    files = build_generic_files(spec(use_mean="none"), {"directory": str(no_val)}, None)
    assert [lp.name for lp in files.train_val.layer[:2]] == ["train_data", "train_label"]
    assert "val_data" not in layers_by_name(files.train_val)
    assert files.plan.test_iter == 0 and "test_iter" not in files.texts["solver.prototxt"]
    assert "mean" not in files.texts["train_val.prototxt"]


def test_a_net_without_data_layers_gets_them_and_input_layers_go(gradients):
    text = """
layer { name: "input" type: "Input" top: "data" input_param { shape { dim: 1 dim: 1 dim: 8 dim: 8 } } }
layer { name: "both" type: "Data" top: "data" data_param { batch_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "out" inner_product_param { num_output: 2 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "out" bottom: "label" top: "loss" exclude { stage: "deploy" } }
"""
    files = build_generic_files(spec(custom_network=text, batch_size=5), {"directory": str(gradients)}, None)
    names = [(lp.name, lp.type, list(lp.top), lp.include[0].phase if lp.include else None)
             for lp in files.train_val.layer]
    assert names[:4] == [("data", "Data", ["data"], caffe_pb2.TRAIN), ("label", "Data", ["label"], caffe_pb2.TRAIN),
                         ("data", "Data", ["data"], caffe_pb2.TEST), ("label", "Data", ["label"], caffe_pb2.TEST)]
    assert all(lp.type != "Input" for lp in files.train_val.layer)
    assert all(lp.type != "Input" for lp in files.deploy.layer)


@pytest.mark.parametrize("text, field, message", [
    ('layer { name: "d" type: "Data" top: "data" include { stage: "train" } }\n'
     'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" }',
     "custom_network", "Don't leave inner_product_param.num_output unset for generic networks (layer fc)"),
    ('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2 } }\n'
     'layer { name: "v" type: "Power" bottom: "data" top: "vonly" include { stage: "val" } }\n'
     'layer { name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "vonly" top: "loss" include { stage: "train" } }',
     "custom_network", "Layer 'loss' references bottom 'vonly' at the TRAIN stage however this blob is not "
                       "included at that stage. Please consider using an include directive to limit the scope "
                       "of this layer."),
    ('layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param { num_output: 2 } }\n'
     'layer { name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "label" top: "loss" }',
     "custom_network", "Layer 'loss' references bottom 'label' at the DEPLOY stage"),
    ('layer { name: "img" type: "ImageData" top: "data" top: "label" include { stage: "train" } }',
     "custom_network", "generic networks read LMDBs through Data layers only, not ImageData"),
    ('layer { name: "x" type: "Data" top: "pixels" include { stage: "train" } }',
     "custom_network", "its top 'pixels' names neither data"),
    ('layer {', "custom_network", "Bad network"),
])
def test_errors_name_the_field_and_the_layer(gradients, text, field, message):
    with pytest.raises(FormErrors) as e:
        build_generic_files(spec(custom_network=text), {"directory": str(gradients)}, None)
    assert field in e.value.errors
    assert message in " ".join(e.value.errors[field]), e.value.errors


def test_dataset_errors(gradients, tmp_path):
    with pytest.raises(FormErrors) as e:
        build_generic_files(spec(), {"directory": str(tmp_path)}, None)
    assert "has no summary.json" in e.value.errors["dataset"][0]
    with pytest.raises(FormErrors) as e:
        build_generic_files(spec(crop_size=9), {"directory": str(gradients)}, None)
    assert e.value.errors["crop_size"] == ["crop_size is larger than the image size"]


def test_segmentation_crop_and_mirror_go_to_the_labels_too(segmentation):
    files = build_generic_files(spec(custom_network=FCN, crop_size=12), {"directory": str(segmentation)}, None)
    by = {lp.name: lp for lp in reversed(files.train_val.layer)}     # the first of a name: the TRAIN one
    assert by["data"].transform_param.crop_size == 12 and by["label"].transform_param.crop_size == 12
    assert by["data"].transform_param.mirror and by["label"].transform_param.mirror
    assert not by["label"].transform_param.HasField("mean_file")
    assert list(files.deploy.input_shape[0].dim) == [1, 3, 12, 12]
    assert files.info["num_classes"] == 3 and files.info["class_labels"] == ["background", "square", "disc"]
    # a custom network keeps its own class count
    assert by["score"].convolution_param.num_output == 21
    # the val Data layers are made from the train ones' defaults
    val = [lp for lp in files.train_val.layer if lp.type == "Data" and lp.include[0].phase == caffe_pb2.TEST]
    assert [lp.name for lp in val] == ["data", "label"]
    assert val[1].transform_param.crop_size == 12


def test_fit_outputs_gives_the_score_layers_the_class_count():
    net = net_of(FCN)
    assert fit_outputs(net, 3, None) == ["upscore", "score"]
    by = layers_by_name(net)
    assert by["score"].convolution_param.num_output == 3
    assert by["upscore"].convolution_param.num_output == 3 and by["upscore"].convolution_param.group == 3
    assert by["conv1"].convolution_param.num_output == 4
    reg = net_of(REGRESSION_NET.replace("num_output: 2", "num_output: 7"))
    assert fit_outputs(reg, None, 2) == ["ip1"]
    assert layers_by_name(reg)["ip1"].inner_product_param.num_output == 2


def test_generic_model_json(gradients):
    d = {"labels file": "labels.txt", "image resize mode": "squash", "mean file": "mean.binaryproto",
         "image dimensions": None}
    out = generic_model_json(d, {"directory": str(gradients)})
    assert "labels file" not in out and "image resize mode" not in out   # an extension dataset
    assert out["image dimensions"] == [8, 8, 1] and out["mean file"] == "mean.binaryproto"
    summary = json.loads((gradients / "summary.json").read_text())
    assert out["dataset kind"] == summary["kind"]


def test_standard_networks_get_the_dataset_class_count(segmentation, gradients):
    files = build_generic_files(spec(method="standard", standard_network="fcn_small", custom_network=None),
                                {"directory": str(segmentation)}, None)
    by = layers_by_name(files.train_val)
    assert by["score_fr"].convolution_param.num_output == 3
    assert by["upscore"].convolution_param.num_output == 3 and by["upscore"].convolution_param.group == 3
    assert [lp.type for lp in files.train_val.layer[:4]] == ["Data"] * 4
    reg = build_generic_files(spec(method="standard", standard_network="regression_lenet", custom_network=None),
                              {"directory": str(gradients)}, None)
    assert "EuclideanLoss" in reg.texts["train_val.prototxt"]
    assert list(reg.deploy.input_shape[0].dim) == [1, 1, 8, 8]
    with pytest.raises(FormErrors) as e:
        build_generic_files(spec(method="standard", standard_network="lenet", custom_network=None),
                            {"directory": str(gradients)}, None)
    assert e.value.errors == {"standard_networks": ["Not a valid choice"]}
