"""A model job's aug_* fields and Python layer file (issue 20 item 5): recorded in the job's
files, applied by the training (a Python layer from the job's own uploaded file records what the
TRAIN data layer gave it), shown on the model page; refused with 400 when the server does not
allow Python layers; each job imports only its own Python layer folder."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from brewnet import formats
from brewnet.server.app import create_app
from brewnet.server.config import ServerConfig
from brewnet.server.jobs.tasks import model_steps, python_path

from test_digits_routes import TINY_LENET, USER, dataset_form, make_images, model_form, wait_status

# the job's Python layer file: a layer of the train net that saves every batch it is given
SPY = b'''
import numpy as np
import brewnet


class Spy(brewnet.Layer):
    seen = []

    def forward(self, bottom, top):
        Spy.seen.append(np.array(bottom[0].data))
        np.save("seen.npy", np.concatenate(Spy.seen))
'''
SPY_NET = TINY_LENET + ('layer { name: "spy" type: "Python" bottom: "data" include { stage: "train" } '
                        'python_param { module: "digits_python_layers" layer: "Spy" } }\n')


def _server(root: Path, allow):
    data = root / "data"
    make_images(data / "train")
    config = ServerConfig(jobs_dir=root / "jobs", data_roots=[data], poll_interval_s=0.1,
                          allow_python_layers=allow)
    client = TestClient(create_app(config))
    return client, data, config


@pytest.mark.slow
def test_augmented_model_job_records_and_applies_its_fields(tmp_path):
    client, data, config = _server(tmp_path, True)
    with client as c:
        assert c.post("/login", data={"username": USER}, follow_redirects=False).status_code == 302
        r = c.post("/datasets/images/classification.json", data=dataset_form(data / "train", folder_pct_val=20))
        assert r.status_code == 200, r.text
        ds = r.json()["id"]
        assert wait_status(c, "datasets", ds, 120)["status"] == "Done"

        # off by default: no augment.json, no -augment
        r = c.post("/models/images/classification.json", data=model_form(ds, name="plain", train_epochs=1))
        assert r.status_code == 200, r.text
        plain = r.json()["id"]
        plain_dir = config.jobs_dir / plain
        assert (plain_dir / "plan.json").is_file() and not (plain_dir / "augment.json").exists()
        assert json.loads((plain_dir / "plan.json").read_text())["augmentation"] == {}
        assert wait_status(c, "models", plain, 300)["status"] == "Done"
        log = (plain_dir / "log.txt").read_text()
        assert "-augment" not in log and "augments images" not in log

        form = model_form(ds, name="augmented", custom_network=SPY_NET, use_mean="none", aug_flip="fliplr",
                          python_layer_from_client="true")
        r = c.post("/models/images/classification.json", data=form,
                   files={"python_layer_client_file": ("spy.py", SPY, "text/x-python")})
        assert r.status_code == 200, r.text
        job = r.json()["id"]
        assert wait_status(c, "models", job, 300)["status"] == "Done"
        d = Path(c.get(f"/models/{job}.json").json()["directory"])

        # recorded: augment.json beside the solver, plan.json, the job's copy of the layer file;
        # the prototxt stays plain Caffe
        assert json.loads((d / "augment.json").read_text()) == {"flip": "fliplr"}
        assert json.loads((d / "plan.json").read_text())["augmentation"] == {"flip": "fliplr"}
        assert (d / "python_layers" / "digits_python_layers.py").read_bytes() == SPY
        train_val = (d / "train_val.prototxt").read_text()
        net = formats.net_from_text(train_val)
        assert "flip" not in train_val and not any(lp.transform_param.mirror for lp in net.layer)
        log = (d / "log.txt").read_text()
        assert "-augment augment.json" in log and "augments images: flip=fliplr" in log

        # applied: every image the train net saw has its gradient along x rising (as stored) or
        # falling (flipped left-right), and both occur
        seen = np.load(d / "seen.npy")
        assert seen.shape[0] >= 10 and seen.shape[1:] == (3, 10, 10)
        profiles = seen.sum(axis=(1, 2))                      # per image: column sums, along x
        rising = [bool(np.all(np.diff(p) > 0)) for p in profiles]
        falling = [bool(np.all(np.diff(p) < 0)) for p in profiles]
        assert all(a or b for a, b in zip(rising, falling))
        assert any(rising) and any(falling)

        # shown on the model page's settings; the new-model page offers the fields and the file
        page = c.get(f"/models/{job}").text
        assert "augmentation" in page and "flip=fliplr" in page
        new = c.get("/models/images/classification/new").text
        for name in ("aug_flip", "aug_quad_rot", "aug_rot", "aug_scale", "aug_noise", "aug_contrast", "aug_hsv_use",
                     "aug_hsv_h", "aug_hsv_s", "aug_hsv_v", "python_layer_client_file"):
            assert f'name="{name}"' in new, name


def test_python_layer_file_without_the_flag_is_a_400_naming_the_field(tmp_path):
    client, data, config = _server(tmp_path, None)
    with client as c:
        assert c.post("/login", data={"username": USER}, follow_redirects=False).status_code == 302
        r = c.post("/datasets/images/classification.json", data=dataset_form(data / "train"))
        ds = r.json()["id"]
        form = model_form(ds, custom_network=SPY_NET, python_layer_from_client="true")
        r = c.post("/models/images/classification.json", data=form,
                   files={"python_layer_client_file": ("spy.py", SPY, "text/x-python")})
        assert r.status_code == 400, r.text
        errors = r.json()["errors"]
        assert "--allow-python-layers" in errors["python_layer_client_file"][0]
        assert "--allow-python-layers" in errors["custom_network"][0]
        assert 'name="python_layer_client_file"' not in c.get("/models/images/classification/new").text
        # nothing was made
        assert [p.name for p in config.jobs_dir.iterdir() if p.is_dir() and p.name != ds] == []


def test_each_job_imports_only_its_own_python_layer_folder(tmp_path):
    config = ServerConfig(jobs_dir=tmp_path / "jobs", allow_python_layers=True)
    mine, theirs = "20260101-000000-aaaa", "20260101-000000-bbbb"
    for jid in (mine, theirs):
        (config.jobs_dir / jid).mkdir(parents=True)
    (config.jobs_dir / mine / "python_layers").mkdir()
    own = SimpleNamespace(id=mine, kind="model", spec={}, parent_id=None)
    other = SimpleNamespace(id=theirs, kind="model", spec={}, parent_id=None)
    infer = SimpleNamespace(id="20260101-000000-cccc", kind="inference", spec={"model_id": mine}, parent_id=mine)
    assert python_path(own, config) == [str(config.jobs_dir / mine / "python_layers")]
    assert python_path(other, config) == []
    assert python_path(infer, config) == python_path(own, config)
    # a server that no longer allows Python layers puts no job folder on the path
    assert python_path(own, ServerConfig(jobs_dir=config.jobs_dir)) == []
    # and the training step passes -augment only when the job has the file
    own.assigned = {}
    assert "-augment" not in model_steps(own, config, resume=False)[0]
    (config.jobs_dir / mine / "augment.json").write_text("{}")
    argv = model_steps(own, config, resume=False)[0]
    assert argv[argv.index("-augment") + 1] == "augment.json"


def test_serve_flag_allows_python_layers_with_or_without_a_folder(tmp_path):
    from brewnet.commands import serve

    p = argparse.ArgumentParser()
    serve.add_arguments(p)
    args = p.parse_args(["--jobs", str(tmp_path / "jobs")])
    assert not serve._config(args).python_layers_allowed
    args = p.parse_args(["--jobs", str(tmp_path / "jobs"), "--allow-python-layers", "--port", "5001"])
    cfg = serve._config(args)
    assert cfg.python_layers_allowed and cfg.python_layer_folder is None and cfg.port == 5001
    args = p.parse_args(["--jobs", str(tmp_path / "jobs"), "--allow-python-layers", str(tmp_path)])
    cfg = serve._config(args)
    assert cfg.python_layers_allowed and cfg.python_layer_folder == tmp_path.resolve()
