"""The Compare page's exports (brewnet/server/web/export.py and the /compare routes), no browser.

The CSV is read back with csv.reader and must give the exact values.  The TensorBoard event files
are read back by a reader written here, independent of the writer: it parses the TFRecord framing,
checks both CRCs with its own bitwise CRC-32C, and decodes the protobuf wire format generically,
then checks the Event/Summary field numbers (event.proto, summary.proto).  When the
``tensorboard`` package is importable, its EventAccumulator reads the files too."""
from __future__ import annotations

import csv
import io
import json
import math
import struct
import tarfile
import time
import zipfile

import pytest
from fastapi.testclient import TestClient

from brewnet.server.web import export
from brewnet.server.web.export import JobSeries

# ----------------------------------------------------------------------- an independent reader


def _crc32c_table() -> list[int]:
    poly = 0x82F63B78   # CRC-32C (Castagnoli), reflected
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_own_crc32c_is_right():
    assert crc32c(b"123456789") == 0xE3069283   # the standard check value of CRC-32C


def read_records(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        header = data[pos:pos + 8]
        assert len(header) == 8, "truncated length"
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert length_crc == masked(header), "length CRC"
        body = data[pos + 12:pos + 12 + length]
        assert len(body) == length, "truncated record"
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert body_crc == masked(body), "data CRC"
        out.append(body)
        pos += 16 + length
    return out


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def decode(data: bytes) -> dict[int, list]:
    """Protobuf wire format: field number -> values (ints, bytes, or raw 8/4-byte strings)."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = read_varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = read_varint(data, pos)
            value, pos = data[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise AssertionError(f"wire type {wire}")
        fields.setdefault(number, []).append((wire, value))
    assert pos == len(data)
    return fields


def read_events(data: bytes) -> list[dict]:
    """Events as dicts: wall_time, step, file_version, values [(tag, simple_value)]."""
    events = []
    for rec in read_records(data):
        f = decode(rec)
        ev = {"wall_time": None, "step": 0, "file_version": None, "values": []}
        for wire, v in f.get(1, []):        # Event.wall_time: double
            assert wire == 1
            (ev["wall_time"],) = struct.unpack("<d", v)
        for wire, v in f.get(2, []):        # Event.step: int64
            assert wire == 0
            ev["step"] = v
        for wire, v in f.get(3, []):        # Event.file_version: string
            assert wire == 2
            ev["file_version"] = v.decode()
        for wire, v in f.get(5, []):        # Event.summary: Summary
            assert wire == 2
            for wire2, value in decode(v).get(1, []):   # Summary.value: repeated Value
                assert wire2 == 2
                vf = decode(value)
                (tag,) = [x.decode() for w, x in vf[1]]           # Value.tag
                (raw,) = [x for w, x in vf[2]]                    # Value.simple_value: float
                assert vf[2][0][0] == 5
                ev["values"].append((tag, struct.unpack("<f", raw)[0]))
        events.append(ev)
    return events


def f32(v: float) -> float:
    return struct.unpack("<f", struct.pack("<f", v))[0]


# ----------------------------------------------------------------------- data

def sample_jobs() -> list[JobSeries]:
    a = JobSeries("20240101-000000-aaaa", 'lenet, "bn"', {
        "train": {"loss": [[0, 2.302585092994046, 1000.25], [1, 0.1 + 0.2, 1001.5], [2, None, 1002.0],
                           [3, 1e-12, 1003.125]],
                  "learning_rate": [[0, 0.01, 1000.25], [3, 0.005, 1003.125]]},
        "test": {"accuracy": [[0, 0.3333333333333333, 1000.75], [3, 0.875, 1003.5]]},
        "test_moving_bn": {"accuracy": [[3, 0.8125, 1003.75]]},
    })
    b = JobSeries("20240101-000000-bbbb", "../evil name/\nx", {
        "train": {"loss": [[5_000_000_000, 1.5, 2000.0]]},
        "test": {},
    })
    return [a, b]


def expected_points(job: JobSeries) -> list[tuple]:
    out = []
    for phase, names in job.series.items():
        for name, pts in names.items():
            out += [(phase, name, p[0], p[1], p[2]) for p in pts]
    return out


# ----------------------------------------------------------------------- CSV

def test_csv_round_trips_with_the_exact_values():
    jobs = sample_jobs()
    rows = list(csv.reader(io.StringIO(export.to_csv(jobs), newline="")))
    assert tuple(rows[0]) == export.CSV_COLUMNS
    got: dict[str, list] = {}
    for r in rows[1:]:
        job_id, job_name, phase, name, it, value, t = r
        got.setdefault(job_id, []).append(
            (job_name, phase, name, int(it), None if value == "" else float(value), None if t == "" else float(t)))
    assert set(got) == {j.job_id for j in jobs}
    for job in jobs:
        want = sorted((job.job_name, *p) for p in expected_points(job))
        assert sorted(got[job.job_id], key=lambda x: (x[0], x[1], x[2], x[3])) == \
            sorted(want, key=lambda x: (x[0], x[1], x[2], x[3]))
    # train, then test, then the other phases, per job
    phases = [r[2] for r in rows[1:] if r[0] == jobs[0].job_id]
    assert phases == sorted(phases, key=lambda p: ("train", "test", "test_moving_bn").index(p))
    assert len(rows) == 1 + sum(len(expected_points(j)) for j in jobs)


# ----------------------------------------------------------------------- event files

def test_event_file_decodes_with_an_independent_reader():
    job = sample_jobs()[0]
    events = read_events(export.event_file(job))
    first = events[0]
    assert first["file_version"] == "brain.Event:2" and not first["values"]
    assert first["wall_time"] == 1000.25       # the job's first point
    rest = events[1:]
    assert all(e["file_version"] is None and len(e["values"]) == 1 for e in rest)
    steps = [e["step"] for e in rest]
    assert steps == sorted(steps), "steps must not go back (TensorBoard takes that for a restart)"
    got = sorted((e["values"][0][0], e["step"], e["values"][0][1], e["wall_time"]) for e in rest)
    want = sorted((f"{phase}/{name}", it, value, t) for phase, name, it, value, t in expected_points(job))
    assert len(got) == len(want)
    for (tag, step, value, wall), (wtag, wstep, wvalue, wwall) in zip(got, want):
        assert (tag, step, wall) == (wtag, wstep, wwall)
        if wvalue is None:
            assert math.isnan(value)
        else:
            assert value == f32(wvalue)
    assert {e["values"][0][0] for e in rest} == {"train/loss", "train/learning_rate", "test/accuracy",
                                                 "test_moving_bn/accuracy"}


def test_large_steps_and_names_survive():
    job = sample_jobs()[1]
    events = read_events(export.event_file(job))
    assert [(e["step"], e["values"]) for e in events[1:]] == [(5_000_000_000, [("train/loss", 1.5)])]
    assert export.varint(-1) == b"\xff" * 9 + b"\x01"       # int64 -1: ten bytes
    assert read_varint(export.varint(300), 0) == (300, 2)


def _check_archive(files: dict[str, bytes], jobs: list[JobSeries]) -> None:
    assert len(files) == len(jobs)
    folders = {}
    for path, data in files.items():
        folder, name = path.split("/")
        assert "tfevents" in name
        assert folder and not folder.startswith(".") and all(c.isalnum() or c in "._-" for c in folder)
        folders[folder] = read_events(data)
    by_id = {j.job_id: j for j in jobs}
    for folder, events in folders.items():
        (job_id,) = [i for i in by_id if folder.endswith(i)]
        tags = {v[0] for e in events for v in e["values"]}
        assert tags == {f"{p}/{n}" for p, names in by_id[job_id].series.items() for n in names}
    assert any(f.startswith("evil_name_x_") for f in folders), folders
    assert any(f.startswith("lenet_bn_") for f in folders), folders


def test_zip_and_tar_gz_have_a_run_folder_per_job():
    jobs = sample_jobs()
    with zipfile.ZipFile(io.BytesIO(export.tensorboard_zip(jobs))) as z:
        _check_archive({n: z.read(n) for n in z.namelist()}, jobs)
    with tarfile.open(fileobj=io.BytesIO(export.tensorboard_tar_gz(jobs)), mode="r:gz") as t:
        _check_archive({m.name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}, jobs)
    # two jobs of the same name and id still get two folders
    twins = [JobSeries("x", "same", {"train": {}}), JobSeries("x", "same", {"train": {}})]
    assert len(set(export.run_folders(twins))) == 2


def test_tensorboard_reads_the_event_file_when_installed(tmp_path):
    job = sample_jobs()[0]
    run = tmp_path / "run"
    run.mkdir()
    (run / export.event_file_name(job)).write_bytes(export.event_file(job))
    # our own reader always checks the file; tensorboard's only where it is installed
    assert read_events((run / export.event_file_name(job)).read_bytes())[0]["file_version"] == "brain.Event:2"
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return   # tensorboard is not installed here: the independent reader above did the check
    acc = EventAccumulator(str(run))
    acc.Reload()
    scalars = acc.Tags()["scalars"]
    assert set(scalars) == {"train/loss", "train/learning_rate", "test/accuracy", "test_moving_bn/accuracy"}
    loss = [(e.step, e.value) for e in acc.Scalars("train/loss")]
    assert [s for s, _ in loss] == [0, 1, 2, 3]
    assert loss[0][1] == f32(2.302585092994046) and math.isnan(loss[2][1])


# ----------------------------------------------------------------------- the routes

@pytest.fixture
def env(tmp_path):
    from brewnet.server.app import create_app
    from brewnet.server.config import ServerConfig

    config = ServerConfig(jobs_dir=tmp_path / "jobs", data_roots=[tmp_path / "data"], poll_interval_s=0.1)
    (tmp_path / "data").mkdir()
    app = create_app(config)
    with TestClient(app) as client:
        yield {"client": client, "app": app}


def add_job(app, kind: str, name: str, records: list[dict] | None = None, spec: dict | None = None) -> str:
    """A finished job's row and folder as the scheduler leaves them (nothing trains)."""
    from brewnet.server.jobs.jobdir import write_job_json
    from brewnet.server.store.db import new_job_id
    from brewnet.server.store.models import Job

    job_id = new_job_id(None)
    d = app.state.config.jobs_dir / job_id
    d.mkdir(parents=True)
    now = time.time()
    job = Job(id=job_id, kind=kind, name=name, group_name="", notes="", owner="bob", status="Done",
              status_history=[["Initialized", now], ["Done", now]], created=now, progress=1.0,
              dataset_id=None, resources={}, assigned={}, spec=spec or {}, summary={}, queue_seq=None)
    if records is not None:
        (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with app.state.db.session() as s:
        s.add(job)
        s.flush()
        write_job_json(d, job)
    return job_id


def records(lr: float, n: int = 12) -> list[dict]:
    out = []
    for i in range(n):
        out.append({"iter": i, "phase": "train", "name": "loss", "value": 1.0 / (1 + i) + lr, "time": 500.0 + i / 3})
        out.append({"iter": i, "phase": "train", "name": "learning_rate", "value": lr, "time": 500.0 + i / 3})
        if i % 4 == 0:
            out.append({"iter": i, "phase": "test", "name": "accuracy", "value": 0.25 + i / 20, "time": 500.1 + i / 3})
    return out


def test_routes_export_what_the_api_answers(env):
    c, app = env["client"], env["app"]
    a = add_job(app, "model", "<b>alpha</b>", records(0.01), spec={"learning_rate": 0.01})
    b = add_job(app, "model", "beta, two", records(0.02), spec={"learning_rate": 0.02})
    page = c.get("/compare", params={"job": [a, b, "nope"]})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "&lt;b&gt;alpha&lt;/b&gt;" in page.text and "<b>alpha</b>" not in page.text
    assert page.text.count('class="c-pick"') == 2 and "nope" in page.text

    r = c.get("/compare/export.csv", params={"job": [a, b]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith("attachment;")
    rows = list(csv.DictReader(io.StringIO(r.text, newline="")))
    for job_id in (a, b):
        api = c.get(f"/api/v1/jobs/{job_id}/metrics").json()
        want = sorted((ph, n, p[0], p[1], p[2]) for ph in ("train", "test") for n, pts in api[ph].items() for p in pts)
        got = sorted((x["phase"], x["name"], int(x["iteration"]), float(x["value"]), float(x["time"]))
                     for x in rows if x["job_id"] == job_id)
        assert got == want and len(got) == 12 * 2 + 3
    assert {x["job_name"] for x in rows} == {"<b>alpha</b>", "beta, two"}

    z = c.get("/compare/export-tensorboard.zip", params={"job": [a, b]})
    assert z.status_code == 200 and z.headers["content-disposition"].startswith("attachment;")
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        names = zf.namelist()
        assert len(names) == 2 and len({n.split("/")[0] for n in names}) == 2
        evs = read_events(zf.read(next(n for n in names if n.split("/")[0].endswith(b))))
    lrs = {v for e in evs for tag, v in e["values"] if tag == "train/learning_rate"}
    assert lrs == {f32(0.02)}
    t = c.get("/compare/export-tensorboard.tar.gz", params={"job": a})
    assert t.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(t.content), mode="r:gz") as tf:
        assert len([m for m in tf.getmembers() if m.isfile()]) == 1


def test_routes_refuse_bad_choices_with_json(env):
    c, app = env["client"], env["app"]
    ds = add_job(app, "dataset", "data")
    m = add_job(app, "model", "m", records(0.1))
    for path in ("/compare/export.csv", "/compare/export-tensorboard.zip", "/compare/export-tensorboard.tar.gz"):
        r = c.get(path)
        assert r.status_code == 400 and r.json()["error"]["field"] == "job", r.text
        r = c.get(path, params={"job": [m, "20990101-000000-zzzz"]})
        assert r.status_code == 404 and "Traceback" not in r.text
        r = c.get(path, params={"job": ds})
        assert r.status_code == 400 and "not a model" in r.json()["error"]["description"]


def test_compare_needs_read_access_once_users_have_passwords(env):
    from brewnet.server import auth

    c, app = env["client"], env["app"]
    m = add_job(app, "model", "m", records(0.1))
    with app.state.db.session() as s:
        user = auth.create_user(s, "carol", "pw")
        s.flush()
        token = auth.create_token(s, user)
    for path in ("/compare", "/compare/export.csv", "/compare/export-tensorboard.zip"):
        assert c.get(path, params={"job": m}, headers={"Accept": "application/json"}).status_code == 401, path
        ok = c.get(path, params={"job": m}, headers={"Authorization": f"Bearer {token}"})
        assert ok.status_code == 200, (path, ok.text)
