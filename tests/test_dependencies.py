"""Every third-party module the brewnet package imports is a core dependency in pyproject.toml,
so every documented command works on the README's plain install (`pip install -e .`)."""
from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# imported inside try/except ImportError with a working fallback, so optional on purpose
OPTIONAL = {
    "onnxruntime": "export.run_onnx falls back to onnx's reference evaluator",
    "selective_search_ijcv_with_python": "Detector.detect_selective_search needs Caffe's external "
                                         "MATLAB wrapper (not on PyPI); without it a clear error",
}


def _top_level_imports() -> dict[str, str]:
    found: dict[str, str] = {}
    for path in (ROOT / "brewnet").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def _core_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in project["dependencies"]}


def test_every_imported_third_party_module_is_a_core_dependency():
    dists = metadata.packages_distributions()
    core = _core_dependencies()
    missing = []
    for module, where in sorted(_top_level_imports().items()):
        if module in sys.stdlib_module_names or module in ("brewnet", "__future__") or module in OPTIONAL:
            continue
        names = {d.lower() for d in dists.get(module, [module])}
        if not names & core:
            missing.append(f"{module} (imported in {where}; distribution {sorted(names)})")
    assert not missing, "not in [project.dependencies]: " + ", ".join(missing)


def test_optional_imports_are_really_guarded():
    export = (ROOT / "brewnet" / "export.py").read_text()
    assert "import onnxruntime" in export and "except ImportError" in export
    detector = (ROOT / "brewnet" / "pycaffe" / "detector.py").read_text()
    assert "SELECTIVE_SEARCH_MODULE" in detector and "ImportError" in detector
