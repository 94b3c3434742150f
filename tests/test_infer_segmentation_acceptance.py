"""Issue 22's segmentation acceptance, all through brewnet's CLI on the CPU: the synthetic shapes
dataset (brewnet.data.generic.synthetic) -> `brewnet dataset create --kind segmentation` ->
the small FCN (brewnet/models/generic/fcn_small.prototxt, the Data layers' sources filled in
here) -> `brewnet train` -> mean IoU >= 0.8 on val in the metrics file, and `brewnet infer
-evaluate segmentation` on the deploy bundle over the same val LMDBs gives the same mean IoU
(both from one confusion matrix over the same pixels: equal to 1e-6).
"""
from __future__ import annotations

import json
import os

import pytest
from google.protobuf import text_format

from brewnet.commands import main as cli
from brewnet.data.generic.synthetic import make_shapes_dataset
from brewnet.formats import read_net
from brewnet.models.generic import generic_network_path
from brewnet.reporting.metrics import read_metrics

pytest.importorskip("brewnet.solver.task_metrics")  # E's test-phase metrics (issue 22, C3)

COUNT = 120
VAL_PERCENT = 20
BATCH = 4
MAX_ITER = 1200


def _filled_fcn(ds: str, val_entries: int, out: str) -> None:
    net = read_net(generic_network_path("fcn_small"))
    for lp in net.layer:
        if lp.type != "Data":
            continue
        stage = "train" if any("train" in r.stage for r in lp.include) else "val"
        kind = "features" if "data" in lp.top[0] else "labels"
        lp.data_param.source = os.path.join(ds, f"{stage}_db", kind)
        lp.data_param.batch_size = BATCH if stage == "train" else val_entries  # one test batch: the whole set
    with open(out, "w", encoding="utf-8") as f:
        f.write(text_format.MessageToString(net))


@pytest.mark.slow
def test_shapes_fcn_reaches_mean_iou_and_infer_agrees(tmp_path, capsys):
    images, labels, classes = make_shapes_dataset(str(tmp_path / "shapes"), count=COUNT, size=64, seed=0)
    ds = str(tmp_path / "ds")
    assert cli.main(["dataset", "create", "--kind", "segmentation", images, labels, ds, "-class-labels", classes,
                     "-val-percent", str(VAL_PERCENT), "-seed", "1"]) == 0
    with open(os.path.join(ds, "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    val_n = summary["stages"]["val"]["entries"]
    model = str(tmp_path / "train_val.prototxt")
    _filled_fcn(ds, val_n, model)
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{model}"\nbase_lr: 0.05\nmomentum: 0.9\nweight_decay: 0.0001\nlr_policy: "step"\n'
                      f'gamma: 0.2\nstepsize: {MAX_ITER * 3 // 4}\nmax_iter: {MAX_ITER}\ndisplay: 100\n'
                      f'test_iter: 1\ntest_interval: {MAX_ITER}\ntest_initialization: false\n'
                      f'snapshot_prefix: "{tmp_path}/fcn"\nrandom_seed: 7\n'
                      'train_state { stage: "train" }\ntest_state { stage: "val" }\n')
    assert cli.main(["train", "-solver", str(solver)]) == 0
    records = read_metrics(str(tmp_path / "fcn_metrics.jsonl"))
    logged = {r["name"]: r["value"] for r in records if r.get("phase") == "test" and r.get("iter") == MAX_ITER}
    print("logged test metrics:", logged)
    # "mean_iou", or "<layer>/mean_iou" when several layers (loss, accuracy) score the same output
    iou_name = next(n for n in logged if n.split("/")[-1] == "mean_iou")
    acc_name = iou_name[:-len("mean_iou")] + "pixel_accuracy"
    assert logged[iou_name] >= 0.8
    weights = str(tmp_path / f"fcn_iter_{MAX_ITER}.caffemodel")
    bundle = str(tmp_path / "bundle")
    assert cli.main(["deploy", "-model", model, "-weights", weights, "-output", bundle, "-dataset", ds]) == 0
    out = tmp_path / "eval.json"
    capsys.readouterr()
    assert cli.main(["infer", "-bundle", bundle, "-lmdb", os.path.join(ds, "val_db", "features"),
                     "-evaluate", "segmentation", "-label_lmdb", os.path.join(ds, "val_db", "labels"),
                     "-json", str(out)]) == 0
    evaluation = json.loads(out.read_text())["evaluation"]
    assert evaluation["count"] == val_n
    assert evaluation["mean_iou"] == pytest.approx(logged[iou_name], abs=1e-6)
    assert evaluation["pixel_accuracy"] == pytest.approx(logged[acc_name], abs=1e-6)
