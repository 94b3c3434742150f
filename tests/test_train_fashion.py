"""Issue 4's end-to-end claim: `brewnet train -solver` on the bundled Fashion-MNIST LeNet-BN
(Data layers on LMDBs built by `brewnet dataset create`) reaches >= 0.85 test accuracy in 600
iterations, scored by `brewnet test` on the 10,000 t10k images from the saved caffemodel."""
import os
import re
import shutil
import subprocess
import sys

import pytest

FASHION = "/usr/share/datasets/fashion-mnist"
MODELS = os.path.join(os.path.dirname(__file__), "..", "brewnet", "models")


def brewnet_cli(*args, cwd):
    out = subprocess.run([sys.executable, "-m", "brewnet", *args], cwd=cwd, capture_output=True,
                         text=True, timeout=1200)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(FASHION), reason="needs Debian's dataset-fashion-mnist (.ci/run installs it)")
def test_lenet_bn_reaches_085_in_600_iterations(tmp_path):
    brewnet_cli("dataset", "create", FASHION, str(tmp_path), cwd=tmp_path)
    for name in ("lenet_bn_fashion_train_val.prototxt", "lenet_bn_fashion_solver.prototxt"):
        shutil.copy(os.path.join(MODELS, name), tmp_path / name)
    brewnet_cli("train", "-solver", "lenet_bn_fashion_solver.prototxt", cwd=tmp_path)
    weights = tmp_path / "lenet_bn_fashion_iter_600.caffemodel"
    assert weights.exists()
    metrics = (tmp_path / "lenet_bn_fashion_metrics.jsonl").read_text().splitlines()
    assert any('"phase": "test"' in line for line in metrics)
    # the same net, its TEST Data layer reading the t10k test set (100 batches of 100)
    text = (tmp_path / "lenet_bn_fashion_train_val.prototxt").read_text().replace('"val_db"', '"test_db"')
    (tmp_path / "test.prototxt").write_text(text)
    out = brewnet_cli("test", "-model", "test.prototxt", "-weights", str(weights), "-iterations", "100",
                      cwd=tmp_path)
    accuracy = float(re.search(r"^accuracy = ([0-9.]+)$", out.stdout, re.M).group(1))
    assert accuracy >= 0.85
