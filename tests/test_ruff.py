"""The linter's verdict is part of the suite: `ruff check` (its settings in pyproject.toml's
[tool.ruff]: pycodestyle and pyflakes, lines within 120) passes on everything we write."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_check_passes():
    assert shutil.which("ruff") or subprocess.run([sys.executable, "-m", "ruff", "--version"],
                                                  capture_output=True).returncode == 0, \
        "ruff is a test dependency: pip install -e '.[test]'"
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "brewnet", "tests", "benchmarks",
                          "scripts", "examples"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
