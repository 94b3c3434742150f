"""BVLC Caffe's own pycaffe test files (tests/bvlc_caffe, copied unchanged from Caffe) pass with
``import caffe`` resolving to brewnet.

They run in a pytest process of their own: the ``caffe`` alias and the modules they import stay
out of this session, and their files (snapshots, temporary nets) go to a scratch directory.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent / "bvlc_caffe"
TEST_DIR = HERE / "python" / "caffe" / "test"

# the ten files of Caffe's python/caffe/test/
BVLC_FILES = ["test_coord_map.py", "test_draw.py", "test_io.py", "test_layer_type_list.py",
              "test_nccl.py", "test_net.py", "test_net_spec.py", "test_python_layer.py",
              "test_python_layer_with_param_str.py", "test_solver.py"]


def test_all_ten_files_are_there():
    assert sorted(p.name for p in TEST_DIR.glob("test_*.py")) == sorted(BVLC_FILES)


def test_bvlc_pycaffe_suite_passes(tmp_path):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(HERE / "pytest.ini"), "-q", "-rfEs",
         "--junit-xml", str(tmp_path / "report.xml"), str(TEST_DIR)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"BVLC's pycaffe tests failed:\n{output[-6000:]}"
    summary = output.strip().splitlines()[-1]
    passed = int(re.search(r"(\d+) passed", summary).group(1))
    assert not re.search(r"failed|error|skipped", summary), summary
    # every file contributed tests (none silently collected nothing)
    report = (tmp_path / "report.xml").read_text()
    for name in BVLC_FILES:
        module = name[:-3]
        assert re.search(rf'classname="(?:[\w.]*\.)?{module}\.', report), f"{name}: no test ran\n{summary}"
    assert passed >= 50, summary
