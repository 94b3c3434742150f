"""The house's shape, checked from the code's own imports (docs/architecture.md is the map):

- no import circle between brewnet's modules (function-local imports count: they are arrows too);
- every import goes to the same floor or a lower one (FLOORS below, one row per room);
- no private name (``_x``) is imported from another module of brewnet.

The graph is read with ``ast`` from the source files, so the test needs nothing installed and
fails with the arrows that break a rule, named by file.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "brewnet"
GENERATED = {"brewnet.proto.caffe_pb2"}  # protoc's output: not ours to shape

#: Floors, lowest first: a room may import its own floor and those below it, never above. A room
#: is a module at the package root or a sub-package (inside brewnet.server, the sub-packages and
#: modules of the server). Keep docs/architecture.md in step with this table.
FLOORS: list[tuple[str, ...]] = [
    ("brewnet.errors", "brewnet.proto"),
    ("brewnet.formats", "brewnet.runtime", "brewnet.memory", "brewnet.timing", "brewnet.reporting",
     "brewnet.child_processes", "brewnet.net_state", "brewnet.net_splits", "brewnet.fillers",
     "brewnet.models", "brewnet.detection"),
    ("brewnet.data", "brewnet.distributed", "brewnet.blob", "brewnet.weights"),
    ("brewnet.layers", "brewnet.net_pycaffe"),
    ("brewnet.batchnorm",),
    ("brewnet.net",),
    ("brewnet.solver", "brewnet.convert"),
    ("brewnet.inference",),
    ("brewnet.pycaffe",),
    # the server, lowest first
    ("brewnet.server", "brewnet.server.config", "brewnet.server.errors", "brewnet.server.threads",
     "brewnet.server.formdata"),
    ("brewnet.server.store",),
    ("brewnet.server.auth", "brewnet.server.jobs"),
    ("brewnet.server.digits", "brewnet.server.security", "brewnet.server.scheduler",
     "brewnet.server.inference", "brewnet.server.schemas", "brewnet.server.app_state"),
    ("brewnet.server.service",),
    ("brewnet.server.web",),
    ("brewnet.server.routes",),
    ("brewnet.server.app",),
    ("brewnet.commands",),
    ("brewnet.__main__",),
]

#: Arrows up a floor that are the design, each with its reason.
ALLOWED_UP = {
    ("brewnet.layers", "brewnet.pycaffe"):
        "brewnet.layers is also pycaffe's caffe.layers: an unknown attribute such as "
        "layers.Convolution is NetSpec's layer function (imported on first use)",
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    found = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {m: p for m, p in found.items() if m not in GENERATED}


def _imports(modules: dict[str, Path]):
    """(importer, imported module, names taken) for every import of a brewnet module."""
    known = set(modules) | GENERATED
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                pairs = [(a.name, ()) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")
                    base = base[:len(base) - node.level + 1]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                pairs = []
                for a in node.names:  # `from pkg import module` names a module
                    sub = f"{source}.{a.name}"
                    pairs.append((sub, ()) if sub in known else (source, (a.name,)))
            else:
                continue
            for target, names in pairs:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    yield name, target, names


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:3] if len(parts) > 2 and parts[1] == "server" else parts[:2])


def _floor_of() -> dict[str, int]:
    return {room: i for i, rooms in enumerate(FLOORS) for room in rooms}


@pytest.fixture(scope="module")
def graph():
    modules = _modules()
    return modules, list(_imports(modules))


def test_every_room_has_a_floor(graph):
    modules, _ = graph
    floors = _floor_of()
    missing = sorted({_room(m) for m in modules if m != "brewnet" and _room(m) not in floors})
    assert not missing, f"rooms without a floor in FLOORS (and docs/architecture.md): {missing}"


def test_no_import_circle(graph):
    modules, imports = graph
    arrows = {m: set() for m in modules}
    for a, b, _ in imports:
        if b in arrows and not a.startswith(b + "."):  # a package's own __init__ is not an arrow
            arrows[a].add(b)
    # Tarjan's strongly connected components, iteratively
    index, low, on_stack, stack, circles = {}, {}, set(), [], []
    for start in arrows:
        if start in index:
            continue
        work = [(start, iter(sorted(arrows[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(arrows[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                part = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    part.append(m)
                    if m == node:
                        break
                if len(part) > 1:
                    circles.append(sorted(part))
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_no_room_imports_a_higher_floor(graph):
    _, imports = graph
    floors = _floor_of()
    up = set()
    for a, b, _ in imports:
        ra, rb = _room(a), _room(b)
        if ra == rb or "brewnet" in (ra, rb) or (ra, rb) in ALLOWED_UP:
            continue
        if ra in floors and rb in floors and floors[rb] > floors[ra]:
            up.add(f"{a} -> {b}")
    assert not up, "imports up a floor: " + ", ".join(sorted(up))


def test_no_private_name_is_imported_across_modules(graph):
    _, imports = graph
    private = sorted({f"{a} takes {n} from {b}" for a, b, names in imports for n in names
                      if n.startswith("_") and not n.startswith("__")})
    assert not private, "private names imported across modules: " + "; ".join(private)


def test_the_checks_see_the_house(graph):
    """A guard against a walk that reads nothing: the engine's known arrows are there."""
    _, imports = graph
    arrows = {(a, b) for a, b, _ in imports}
    assert ("brewnet.net", "brewnet.layers") in arrows or \
        any(a == "brewnet.net" and b.startswith("brewnet.layers") for a, b in arrows)
    assert len(imports) > 300
