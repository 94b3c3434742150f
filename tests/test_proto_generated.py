"""The committed caffe_pb2.py is what scripts/gen_proto.sh makes, and caffe.proto matches the
schema facts in tests/schema_facts (every BVLC field exact; NVCaffe fields except documented clashes).
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from brewnet.proto import caffe_pb2

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "tests" / "schema_facts"  # copied from the design notes (see its README)


def test_generated_module_is_up_to_date(tmp_path):
    try:
        import grpc_tools.protoc  # noqa: F401
    except ImportError:
        pytest.skip("grpc_tools is not importable (pip install grpcio-tools), so caffe_pb2.py "
                    "cannot be regenerated to compare")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", str(REPO),
                    f"--python_out={tmp_path}", "brewnet/proto/caffe.proto"],
                   check=True, cwd=REPO)
    generated = (tmp_path / "brewnet" / "proto" / "caffe_pb2.py").read_text()
    committed = (REPO / "brewnet" / "proto" / "caffe_pb2.py").read_text()
    assert generated == committed, "caffe_pb2.py is stale: run scripts/gen_proto.sh"


def test_module_name_allows_pickling():
    import pickle
    layer = caffe_pb2.LayerParameter(name="conv1", type="Convolution")
    assert caffe_pb2.LayerParameter.__module__ == "brewnet.proto.caffe_pb2"
    assert pickle.loads(pickle.dumps(layer)) == layer


# NVCaffe fields that deliberately differ from NVCaffe's own schema (see caffe.proto's header).
NVCAFFE_CLASHES = {
    ("SolverParameter", "rms_decay"), ("SolverParameter", "per_parameter_reduce"),
    ("SolverParameter", "test_initialization"), ("SolverParameter", "rampup_interval"),
    ("SolverParameter", "rampup_lr"), ("LayerParameter", "forward_type"),
    ("LayerParameter", "backward_type"), ("LayerParameter", "forward_math"),
    ("LayerParameter", "backward_math"), ("LayerParameter", "recurrent_param"),
    ("BatchNormParameter", "use_global_stats"), ("DataParameter", "prefetch"),
}
_FIELD_LINE = re.compile(r"- (\w+) = (\d+) : (\w+) ([\w.]+)(?: \[(.*)\])?")


def _schema_facts(doc: Path):
    message = None
    for line in doc.read_text().splitlines():
        if line.startswith("### "):
            message = line[4:].strip()
        elif m := _FIELD_LINE.match(line):
            name, number, label, type_name, options = m.groups()
            yield message, name, int(number), label, type_name, options or ""


def _problems(message, name, number, label, type_name, options) -> list[str]:
    desc = caffe_pb2.DESCRIPTOR.pool.FindMessageTypeByName("caffe." + message)
    field = desc.fields_by_name.get(name)
    if field is None:
        return ["missing"]
    out = []
    actual_label = ("repeated" if field.is_repeated else
                    "required" if field.is_required else "optional")
    if (field.number, actual_label) != (number, label):
        out.append(f"is {actual_label} = {field.number}")
    sub = field.message_type or field.enum_type
    if sub is not None and sub.name != type_name.split(".")[-1]:
        out.append(f"type {sub.name}")
    if ("packed = true" in options) != field.is_packed and field.is_repeated:
        out.append(f"packed={field.is_packed}")
    default = re.search(r"default = ('[^']*'|\"[^\"]*\"|[^,\]]+)", options)
    if bool(default) != field.has_default_value:
        out.append(f"has_default_value={field.has_default_value}")
    elif default:
        want, got = default.group(1).strip("'\""), field.default_value
        if field.enum_type is not None:
            got = field.enum_type.values_by_number[got].name
        if isinstance(got, bool):
            ok = str(got).lower() == want
        elif isinstance(got, float):
            ok = got == pytest.approx(float(want), rel=1e-6)
        else:
            ok = str(got) == want
        if not ok:
            out.append(f"default {got!r}, doc {want!r}")
    return out


@pytest.mark.parametrize("doc", ["caffe-schema-bvlc.md", "caffe-schema-nvcaffe-diff.md"])
def test_schema_matches_docs(doc):
    path = DOCS / doc
    if not path.exists():
        pytest.fail(f"{path} not found: the schema facts are part of the repository")
    facts = list(_schema_facts(path))
    assert len(facts) > 300
    bad = [f"{m}.{n}: {p}" for m, n, *rest in facts
           if (p := _problems(m, n, *rest)) and (m, n) not in NVCAFFE_CLASHES]
    assert not bad, "\n".join(bad)
