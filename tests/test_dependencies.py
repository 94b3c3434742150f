"""Every third-party module the brewnet package imports is a dependency in pyproject.toml: the
engine's (everything outside brewnet/server) core ones, so `pip install brewnet` trains, tests,
converts and deploys; the server's core or `[server]` ones, so `pip install 'brewnet[server]'`
serves; and without the server's packages the engine still works and `brewnet serve` says in one
line what to install."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# imported inside try/except ImportError with a working fallback, so optional on purpose
OPTIONAL = {
    "onnxruntime": "convert.pytorch_onnx.run_onnx falls back to onnx's reference evaluator",
    "selective_search_ijcv_with_python": "Detector.detect_selective_search needs Caffe's external "
                                         "MATLAB wrapper (not on PyPI); without it a clear error",
}


#: the server's side of the package: what `brewnet serve` runs (the command checks the stack)
SERVER_SIDE = ("brewnet/server/", "brewnet/commands/serve.py")


def _top_level_imports(server_side: bool) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in (ROOT / "brewnet").rglob("*.py"):
        if str(path.relative_to(ROOT)).startswith(SERVER_SIDE) != server_side:
            continue
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


def _names(requirements) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", d, maxsplit=1)[0].lower() for d in requirements}


def _dependencies(extra: str | None = None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return _names(project["dependencies"] if extra is None else project["optional-dependencies"][extra])


@pytest.mark.parametrize("server_side", [False, True], ids=["engine-core", "server-core-or-server-extra"])
def test_every_imported_third_party_module_is_a_dependency(server_side):
    dists = metadata.packages_distributions()
    allowed = _dependencies() | (_dependencies("server") if server_side else set())
    missing = []
    for module, where in sorted(_top_level_imports(server_side).items()):
        if module in sys.stdlib_module_names or module in ("brewnet", "__future__") or module in OPTIONAL:
            continue
        names = {d.lower() for d in dists.get(module, [module])}
        if not names & allowed:
            missing.append(f"{module} (imported in {where}; distribution {sorted(names)})")
    assert not missing, "not among the dependencies: " + ", ".join(missing)


def test_the_server_stack_is_the_server_extra_and_the_tests_install_it():
    server, core = _dependencies("server"), _dependencies()
    assert {"fastapi", "sqlalchemy", "uvicorn", "psycopg", "plotly"} <= server
    assert not server & core  # the engine installs without the server's stack
    assert "brewnet" in _dependencies("test")  # brewnet[server]: the tests cover the server


# Runs with the server's packages unimportable, as on `pip install brewnet` without [server]
_WITHOUT_SERVER_STACK = """
import importlib.abc, sys
BLOCKED = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "argon2", "psycopg",
           "plotly", "jinja2", "multipart", "python_multipart", "pydantic", "anyio"}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
import brewnet
from brewnet.commands.main import main
sys.exit(main(sys.argv[1:]))
"""


def _without_server_stack(*argv, cwd):
    return subprocess.run([sys.executable, "-c", _WITHOUT_SERVER_STACK, *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_the_engine_works_without_the_server_stack_and_serve_says_what_to_install(tmp_path):
    net = tmp_path / "net.prototxt"
    net.write_text('name: "tiny" layer { name: "data" type: "Input" top: "data" '
                   'input_param { shape { dim: 2 dim: 3 } } }\n'
                   'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
                   'inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }\n')
    timed = _without_server_stack("time", "-model", str(net), "-iterations", "2", cwd=tmp_path)
    assert timed.returncode == 0, timed.stderr[-2000:]
    served = _without_server_stack("serve", "--jobs", str(tmp_path / "jobs"), cwd=tmp_path)
    assert served.returncode == 1
    lines = served.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'brewnet[server]'" in lines[0] and "missing" in lines[0], \
        served.stderr
    assert not (tmp_path / "jobs").exists()


def test_optional_imports_are_really_guarded():
    export = (ROOT / "brewnet" / "convert" / "pytorch_onnx.py").read_text()
    assert "import onnxruntime" in export and "except ImportError" in export
    detector = (ROOT / "brewnet" / "pycaffe" / "detector.py").read_text()
    assert "SELECTIVE_SEARCH_MODULE" in detector and "ImportError" in detector
