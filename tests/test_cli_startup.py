"""The command line answers help and argument errors without importing torch, commands never
import each other, and the library has no import circle between the net and its weights."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from brewnet.commands.main import VERBS

PACKAGE = Path(__file__).resolve().parent.parent / "brewnet"


def _imports(path: Path) -> set[str]:
    """Modules a file imports (relative imports resolved against its package), at any depth."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
    return found


@pytest.mark.parametrize("argv", [["--help"], *[[verb, "--help"] for verb in VERBS],
                                  ["train", "-no_such_flag"], ["convert", "-to", "nowhere"]])
def test_help_and_argument_errors_do_not_import_torch(argv):
    code = ("import sys\nfrom brewnet.commands import main as cli\ntry:\n    cli.main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\nprint('torch imported:', 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip().splitlines()[-1] == "torch imported: False", proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_command_imports_another_command():
    verbs = {f"brewnet.commands.{v}" for v in VERBS}
    for path in (PACKAGE / "commands").glob("*.py"):
        own = f"brewnet.commands.{path.stem}"
        assert not (_imports(path) & (verbs - {own})), f"{path.name} imports another command"


def test_net_and_weights_import_no_circle():
    assert not any(m == "brewnet.net" or m.startswith("brewnet.net.")
                   for m in _imports(PACKAGE / "weights.py"))
