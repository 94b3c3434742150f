"""Server-Sent Events over a real uvicorn server (in a thread of the test process) read with httpx:
per-job events in order (status, progress, each metric record once, done after the last record,
then the end of the stream), Last-Event-ID resumption without duplicates, the server-wide
stream (status, progress, queue, deleted), keep-alive comments, and the end of the polling when
the client goes away.  Jobs are rows and files the test writes itself, as a trainer would."""
from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from brewnet.server.app import create_app
from brewnet.server.config import ServerConfig
from brewnet.server.jobs.jobdir import write_job_json
from brewnet.server.routes import events
from brewnet.server.store.db import new_job_id
from brewnet.server.store.models import Job

READ_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server on a free loopback port, in local mode."""
    root = tmp_path_factory.mktemp("sse")
    port = free_port()
    app = create_app(ServerConfig(jobs_dir=root / "jobs", port=port, poll_interval_s=0.1))
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "app": app}
    srv.should_exit = True
    thread.join(timeout=30)


def add_job(app, status: str, kind: str = "model", progress: float = 0.0, records: list[dict] | None = None,
            dataset_id: str | None = None) -> str:
    config = app.state.config
    job_id = new_job_id()
    d = config.jobs_dir / job_id
    d.mkdir(parents=True)
    now = time.time()
    job = Job(id=job_id, kind=kind, name=f"{kind} {job_id}", group_name="", notes="", owner=None, status=status,
              status_history=[["Initialized", now], [status, now]], created=now, progress=progress,
              dataset_id=dataset_id, resources={}, assigned={}, spec={}, summary={},
              queue_seq=int(now * 1000) % 1_000_000_000 if status == "Waiting" else None)
    if records is not None:
        append(app, job_id, records)
    with app.state.db.session() as s:
        s.add(job)
        s.flush()
        write_job_json(d, job)
    return job_id


def append(app, job_id: str, records: list[dict], raw: bytes | None = None) -> None:
    """Append records to the job's metrics.jsonl as the trainer does (or raw bytes)."""
    with open(app.state.config.jobs_dir / job_id / "metrics.jsonl", "ab") as f:
        f.write(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in records).encode())


def change(app, job_id: str, **values) -> None:
    with app.state.db.session() as s:
        row = s.get(Job, job_id)
        for k, v in values.items():
            setattr(row, k, v)


def rec(i: int) -> dict:
    return {"iter": i, "phase": "train", "name": "loss", "value": 1.0 / (i + 1), "time": 1000.0 + i}


class EventReader:
    """Reads (event, id, data) triples of an open text/event-stream; comments as ("comment", None, text)."""

    def __init__(self, response: httpx.Response):
        self.lines = response.iter_lines()

    def next(self):
        event, event_id, data = "message", None, []
        for line in self.lines:
            if line == "":
                if data:
                    return event, event_id, json.loads("\n".join(data))
                continue
            if line.startswith(":"):
                return "comment", None, line[1:].strip()
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                event = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data.append(value)
        return None      # the stream ended

    def until(self, pred, limit: int = 200) -> list:
        got = []
        for _ in range(limit):
            ev = self.next()
            assert ev is not None, f"the stream ended before the wanted event: {got}"
            got.append(ev)
            if pred(ev):
                return got
        raise AssertionError(f"no wanted event in {limit}: {got}")


def stream(url: str, headers: dict | None = None):
    client = httpx.Client(timeout=httpx.Timeout(READ_TIMEOUT_S))
    return client, client.stream("GET", url, headers=headers or {})


def test_job_events_arrive_in_order_and_done_ends_the_stream(server):
    app, base = server["app"], server["url"]
    job = add_job(app, "Running", progress=0.1, records=[rec(0), rec(1), rec(2)])
    path = app.state.config.jobs_dir / job / "metrics.jsonl"
    client, ctx = stream(f"{base}/api/v1/jobs/{job}/events")
    with client, ctx as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["cache-control"] == "no-cache"
        reader = EventReader(r)
        first = reader.until(lambda e: e[0] == "metric" and e[2]["iter"] == 2)
        assert [e[0] for e in first] == ["status", "progress", "metric", "metric", "metric"]
        assert first[0][2]["status"] == "Running" and first[1][2]["progress"] == 0.1
        assert [e[2] for e in first[2:]] == [rec(0), rec(1), rec(2)]
        assert int(first[-1][1]) == path.stat().st_size          # the id is the byte offset after the line
        # a line being written is sent once it is complete, exactly once
        line = (json.dumps(rec(3)) + "\n").encode()
        append(app, job, [], raw=line[:10])
        time.sleep(1.2)
        append(app, job, [], raw=line[10:])
        ev = reader.until(lambda e: e[0] == "metric")
        assert ev[-1][2] == rec(3) and int(ev[-1][1]) == path.stat().st_size
        change(app, job, progress=0.5)
        ev = reader.until(lambda e: e[0] == "progress")
        assert ev[-1][2] == {"id": job, "progress": 0.5}
        # the job ends: its last records come before `done`, then the stream ends
        append(app, job, [rec(4), rec(5)])
        change(app, job, status="Done", progress=1.0)
        rest = reader.until(lambda e: e[0] == "done")
        metrics = [e[2]["iter"] for e in rest if e[0] == "metric"]
        assert metrics == [4, 5]
        assert [e[0] for e in rest if e[0] in ("status", "done")] == ["status", "done"]
        assert rest[-1][2]["status"] == "Done"
        assert reader.next() is None


def test_last_event_id_resumes_without_duplicates(server):
    app, base = server["app"], server["url"]
    job = add_job(app, "Done", progress=1.0, records=[rec(i) for i in range(5)])
    client, ctx = stream(f"{base}/api/v1/jobs/{job}/events")
    with client, ctx as r:
        got = EventReader(r).until(lambda e: e[0] == "done")
    ids = [(e[1], e[2]["iter"]) for e in got if e[0] == "metric"]
    assert [i for _, i in ids] == [0, 1, 2, 3, 4]
    assert [int(x) for x, _ in ids] == sorted(int(x) for x, _ in ids)
    # EventSource sends the last id it saw: only the later records come again
    client, ctx = stream(f"{base}/api/v1/jobs/{job}/events", {"Last-Event-ID": ids[1][0]})
    with client, ctx as r:
        again = EventReader(r).until(lambda e: e[0] == "done")
    assert [e[2]["iter"] for e in again if e[0] == "metric"] == [2, 3, 4]
    assert [e[1] for e in again if e[0] == "metric"] == [x for x, _ in ids[2:]]
    client, ctx = stream(f"{base}/api/v1/jobs/{job}/events", {"Last-Event-ID": ids[-1][0]})
    with client, ctx as r:
        none = EventReader(r).until(lambda e: e[0] == "done")
    assert [e[0] for e in none] == ["status", "progress", "done"]
    r = httpx.get(f"{base}/api/v1/jobs/{job}/events", headers={"Last-Event-ID": "abc"})
    assert r.status_code == 400 and "Last-Event-ID" in r.json()["error"]["description"]


def test_unknown_job_and_cross_site_are_refused_before_streaming(server):
    base = server["url"]
    r = httpx.get(f"{base}/api/v1/jobs/20990101-000000-abcd/events")
    assert r.status_code == 404 and r.json()["error"]["description"] == "Job not found"
    r = httpx.get(f"{base}/api/v1/events", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403


def test_deleted_job_ends_its_stream(server):
    app, base = server["app"], server["url"]
    job = add_job(app, "Running")
    client, ctx = stream(f"{base}/api/v1/jobs/{job}/events")
    with client, ctx as r:
        reader = EventReader(r)
        reader.until(lambda e: e[0] == "progress")
        with app.state.db.session() as s:
            s.delete(s.get(Job, job))
        assert reader.until(lambda e: e[0] == "deleted")[-1][2] == {"id": job}
        assert reader.next() is None


def test_server_wide_events(server):
    app, base = server["app"], server["url"]
    before = add_job(app, "Done", kind="dataset", progress=1.0)
    client, ctx = stream(f"{base}/api/v1/events")
    with client, ctx as r:
        reader = EventReader(r)
        first = reader.until(lambda e: e[0] == "queue")
        assert any(e[0] == "status" and e[2]["id"] == before for e in first)
        # a model waiting for a running dataset: its status, and the queue
        ds = add_job(app, "Running", kind="dataset", progress=0.2)
        waiting = add_job(app, "Waiting", dataset_id=ds)
        got = reader.until(lambda e: e[0] == "queue" and any(q["id"] == waiting for q in e[2]["queue"]))
        statuses = {e[2]["id"]: e[2]["status"] for e in got if e[0] == "status"}
        assert statuses.get(ds) == "Running" and statuses.get(waiting) == "Waiting"
        queued = got[-1][2]["queue"]
        assert [(q["id"], q["position"]) for q in queued if q["id"] == waiting] == [(waiting, 1)]
        change(app, ds, progress=0.7)
        got = reader.until(lambda e: e[0] == "progress" and e[2]["id"] == ds)
        assert got[-1][2]["progress"] == 0.7
        with app.state.db.session() as s:
            s.delete(s.get(Job, waiting))
        got = reader.until(lambda e: e[0] == "deleted")
        assert got[-1][2] == {"id": waiting}


def test_keepalive_comments(server, monkeypatch):
    app, base = server["app"], server["url"]
    monkeypatch.setattr(events, "KEEPALIVE_S", 0.3)
    job = add_job(app, "Running")
    client, ctx = stream(f"{base}/api/v1/jobs/{job}/events")
    with client, ctx as r:
        got = EventReader(r).until(lambda e: e[0] == "comment")
    assert got[-1] == ("comment", None, "keep-alive")


def test_polling_stops_when_the_client_disconnects(server, monkeypatch):
    app, base = server["app"], server["url"]
    job = add_job(app, "Running")
    calls = []
    real = app.state.server.find_job

    def counting(job_id):
        if job_id == job:
            calls.append(time.monotonic())
        return real(job_id)
    monkeypatch.setattr(app.state.server, "find_job", counting)
    client, ctx = stream(f"{base}/api/v1/jobs/{job}/events")
    with client, ctx as r:
        reader = EventReader(r)        # kept: a dropped line iterator closes the response
        reader.until(lambda e: e[0] == "progress")
        time.sleep(1.5)
    assert len(calls) >= 2                          # it polled while connected
    # connected, it polls every POLL_S; gone, the count must stop growing (within a generous wait)
    deadline = time.monotonic() + 20
    while True:
        before = len(calls)
        time.sleep(4 * events.POLL_S)
        if len(calls) == before:
            break
        assert time.monotonic() < deadline, "the stream kept polling after the client left"
