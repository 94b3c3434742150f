"""The scheduler: slots, GPU indices, queue order, dataset dependency, abort, errors, restart
recovery, and (slow) a real dataset, training, abort with snapshot, resume and inference."""
from __future__ import annotations

import asyncio
import json
import signal
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from brewnet.server.config import ServerConfig
from brewnet.server.errors import ApiError
from brewnet.server.jobs import states
from brewnet.server.jobs.jobdir import read_job_json, write_job_json
from brewnet.server.jobs.process import pid_alive, process_start_time, signal_group, start_step
from brewnet.server.jobs.progress import read_metrics
from brewnet.server.jobs.tasks import brewnet_argv, steps_for
from brewnet.server.scheduler import Scheduler
from brewnet.server.store.models import Job


@pytest.fixture
def pg_db(pg_url):
    """The PostgreSQL database of the session (conftest's pg_url), migrated, without jobs."""
    from sqlalchemy import delete

    from brewnet.server.store.db import Database
    d = Database(pg_url)
    d.migrate()
    with d.session() as s:
        s.execute(delete(Job))
    yield d
    with d.session() as s:
        s.execute(delete(Job))
    d.dispose()


@pytest.fixture
def config(tmp_path):
    c = ServerConfig(jobs_dir=tmp_path / "jobs", cpu_slots=1, gpus=[0, 1], poll_interval_s=0.05)
    c.ensure_dirs()
    return c


_ids = iter(range(1, 10_000))


def add_job(config, db, kind=states.MODEL, status=states.INITIALIZED, **kw) -> str:
    jid = kw.pop("id", None) or f"20240101-000000-{next(_ids):04x}"
    (config.jobs_dir / jid).mkdir()
    with db.session() as s:
        job = Job(id=jid, kind=kind, name=kw.pop("name", jid), status=status,
                  status_history=[[status, time.time()]], created=time.time(), progress=0.0,
                  spec=kw.pop("spec", {}), summary={}, resources=kw.pop("resources", {}),
                  assigned=kw.pop("assigned", {}), resume_requested=False, **kw)
        s.add(job)
        s.flush()
        write_job_json(config.jobs_dir / jid, job)
    return jid


def get(db, jid) -> Job:
    with db.session() as s:
        job = s.get(Job, jid)
        if job is not None:
            s.expunge(job)
        return job


def status(db, jid) -> str:
    return get(db, jid).status


# a step that records its CUDA_VISIBLE_DEVICES and resume flag, then waits for <jobdir>/go
WAIT_STEP = textwrap.dedent("""
    import os, sys, time
    open("cuda.txt", "w").write(os.environ["CUDA_VISIBLE_DEVICES"])
    open("resume.txt", "w").write(sys.argv[1])
    while not os.path.exists("go"):
        time.sleep(0.02)
    code = open("go").read().strip()
    if code:
        print("ValueError: the folder has no image", file=sys.stderr)
        sys.exit(int(code))
""")


def wait_steps(job, resume):
    if "steps" in (job.spec or {}):
        return [[sys.executable, "-c", code, "brewnet-test"] for code in job.spec["steps"]]
    return [[sys.executable, "-c", WAIT_STEP, str(resume), "brewnet-test"]]


def release(config, jid, code=""):
    (config.jobs_dir / jid / "go").write_text(code)


def run_until(sched, pred, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        sched.tick()
        if pred():
            return True
        time.sleep(0.05)
    return pred()


@pytest.fixture
def sched(config, db):
    s = Scheduler(config, db, steps_override=wait_steps, abort_grace_s=0.5, train_abort_grace_s=0.5,
                  recovery_wait_s=0.5)
    yield s
    for run in list(s._running.values()):       # nothing outlives a test
        signal_group(run.proc.pid, signal.SIGKILL)
        run.proc.wait()


# ------------------------------------------------------------------ slots and queue

def test_cpu_slots_queue_order_and_short_waits_erased(config, db, sched):
    a, b, c = (add_job(config, db, kind=states.DATASET) for _ in range(3))
    for j in (a, b, c):
        sched.submit(j)
    sched.tick()
    assert [status(db, j) for j in (a, b, c)] == [states.RUNNING, states.WAITING, states.WAITING]
    q = sched.queue()
    assert [(x["id"], x["position"], x["waiting_for"]) for x in q] == [(b, 1, "a CPU slot"), (c, 2, "a CPU slot")]
    assert sched.slots()["cpu"] == {"total": 1, "used": 1}
    sched.submit(b)              # already queued: it keeps its place
    assert [x["id"] for x in sched.queue()] == [b, c]
    time.sleep(1.1)              # b and c have now waited longer than a second
    release(config, a)
    assert run_until(sched, lambda: status(db, b) == states.RUNNING)
    assert status(db, a) == states.DONE and status(db, c) == states.WAITING
    assert [x["id"] for x in sched.queue()] == [c]
    release(config, b)
    release(config, c)
    assert run_until(sched, lambda: status(db, c) == states.DONE)
    ja, jb = get(db, a), get(db, b)
    # a waited less than a second: DIGITS erases that Waiting from the history
    assert [h[0] for h in ja.status_history] == [states.INITIALIZED, states.RUNNING, states.DONE]
    assert [h[0] for h in jb.status_history] == [states.INITIALIZED, states.WAITING, states.RUNNING, states.DONE]
    assert ja.progress == 1.0 and ja.pid is None and ja.finished >= ja.started
    assert read_job_json(config.jobs_dir / a)["status"] == states.DONE
    assert (config.jobs_dir / a / "log.txt").read_text().startswith("==> ")
    with pytest.raises(ApiError) as e:
        sched.submit(a)
    assert e.value.status == 409
    with pytest.raises(ApiError) as e:
        sched.submit("20991231-000000-ffff")
    assert e.value.status == 404


def test_gpu_indices_and_cpu_slot_independence(config, db, sched):
    a = add_job(config, db, resources={"gpus": [1]})
    b = add_job(config, db, resources={"gpu_count": 1})
    c = add_job(config, db, resources={"gpus": [1]})
    d = add_job(config, db, kind=states.DATASET)
    e = add_job(config, db, resources={"gpus": [7]})
    f = add_job(config, db, resources={"gpu_count": 3})
    for j in (a, b, c, d, e, f):
        sched.submit(j)
    sched.tick()
    assert [status(db, j) for j in (a, b, c, d)] == [states.RUNNING, states.RUNNING, states.WAITING, states.RUNNING]
    assert status(db, e) == states.ERROR and "GPU 7" in get(db, e).error
    assert status(db, f) == states.ERROR and "3 GPUs" in get(db, f).error
    assert get(db, a).assigned == {"gpus": [1]} and get(db, b).assigned == {"gpus": [0]}
    assert sched.slots() == {"cpu": {"total": 1, "used": 1},
                             "gpus": [{"index": 0, "job_id": b}, {"index": 1, "job_id": a}]}
    assert sched.queue() == [{"id": c, "name": c, "kind": states.MODEL, "position": 1, "waiting_for": "GPU 1"}]
    cuda = lambda j: (config.jobs_dir / j / "cuda.txt").read_text()  # noqa: E731
    assert run_until(sched, lambda: all((config.jobs_dir / j / "cuda.txt").is_file() for j in (a, b, d)))
    assert (cuda(a), cuda(b), cuda(d)) == ("1", "0", "")
    release(config, b)
    assert run_until(sched, lambda: status(db, b) == states.DONE)
    assert status(db, c) == states.WAITING        # GPU 0 is free, but c wants GPU 1
    release(config, a)
    assert run_until(sched, lambda: status(db, c) == states.RUNNING)
    assert get(db, c).assigned == {"gpus": [1]}
    for j in (c, d):
        release(config, j)
    assert run_until(sched, lambda: status(db, c) == states.DONE and status(db, d) == states.DONE)
    assert get(db, c).assigned == {}


def test_model_waits_for_its_dataset_postgresql(config, pg_db):
    """The same scheduling on PostgreSQL (skipped without BREWNET_TEST_POSTGRES_URL)."""
    sched = Scheduler(config, pg_db, steps_override=wait_steps)
    try:
        test_model_waits_for_its_dataset(config, pg_db, sched)
    finally:
        for run in list(sched._running.values()):
            signal_group(run.proc.pid, signal.SIGKILL)
            run.proc.wait()


def test_model_waits_for_its_dataset(config, db, sched):
    seen = []
    sched.listeners.append(lambda d: seen.append((d["id"], d["status"])))
    ds = add_job(config, db, kind=states.DATASET)
    m = add_job(config, db, dataset_id=ds)
    sched.submit(ds)
    sched.submit(m)
    sched.tick()
    assert status(db, ds) == states.RUNNING and status(db, m) == states.WAITING
    assert seen == [(ds, states.WAITING), (m, states.WAITING), (ds, states.RUNNING)]
    assert sched.queue()[0]["waiting_for"] == f"dataset {ds}"
    release(config, ds)
    assert run_until(sched, lambda: status(db, m) == states.RUNNING)
    release(config, m)
    assert run_until(sched, lambda: status(db, m) == states.DONE)
    changes = [st for j, st in seen if j == m]     # progress updates repeat a status
    assert [st for i, st in enumerate(changes) if i == 0 or changes[i - 1] != st] == \
        [states.WAITING, states.RUNNING, states.DONE]


def test_failed_dataset_aborts_its_models(config, db, sched):
    ds = add_job(config, db, kind=states.DATASET)
    m = add_job(config, db, dataset_id=ds)
    m2 = add_job(config, db, dataset_id="20991231-000000-0000")
    for j in (ds, m, m2):
        sched.submit(j)
    sched.tick()
    release(config, ds, code="3")
    assert run_until(sched, lambda: status(db, m) != states.WAITING)
    d = get(db, ds)
    assert d.status == states.ERROR and d.error == "ValueError: the folder has no image"
    assert status(db, m) == states.ABORTED and get(db, m).error == f"dataset {ds} ended Error"
    assert status(db, m2) == states.ABORTED and "not found" in get(db, m2).error


def test_abort_waiting_running_and_unstoppable(config, db, sched):
    stubborn = textwrap.dedent("""
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        open("started", "w").write("1")
        time.sleep(120)
    """)
    a = add_job(config, db, kind=states.DATASET, spec={"steps": [stubborn]})
    b = add_job(config, db, kind=states.DATASET)
    sched.submit(a)
    sched.submit(b)
    sched.tick()
    assert sched.abort(b) is True and status(db, b) == states.ABORTED
    assert sched.queue() == []
    assert run_until(sched, lambda: (config.jobs_dir / a / "started").is_file())
    pid = get(db, a).pid
    assert sched.abort(a) is True
    assert status(db, a) == states.RUNNING        # until the process has gone
    assert run_until(sched, lambda: status(db, a) == states.ABORTED)   # SIGKILL after the grace period
    assert not pid_alive(pid, config.jobs_dir / a)
    assert sched.abort(a) is False and sched.abort("20991231-000000-ffff") is False
    assert get(db, a).error is None


def test_next_step_runs_only_after_success(config, db, sched):
    ok = "open('one', 'w').write('1')"
    two = "open('two', 'w').write('2')"
    j = add_job(config, db, kind=states.INFERENCE, spec={"steps": [ok, two]})
    k = add_job(config, db, kind=states.INFERENCE, spec={"steps": ["raise SystemExit('error: bad list')", two]})
    sched.submit(j)
    sched.submit(k)
    assert run_until(sched, lambda: status(db, k) in states.FINISHED)
    assert (config.jobs_dir / j / "two").is_file()
    assert status(db, j) == states.DONE
    assert status(db, k) == states.ERROR and get(db, k).error == "error: bad list"
    assert not (config.jobs_dir / k / "two").is_file()
    log = (config.jobs_dir / j / "log.txt").read_text()
    assert log.count("==> ") == 2


def test_resume_requires_a_solverstate(config, db, sched):
    m = add_job(config, db, status=states.INTERRUPTED)
    ds = add_job(config, db, kind=states.DATASET, status=states.ABORTED)
    with pytest.raises(ApiError) as e:
        sched.resume(m)
    assert e.value.status == 400 and "solverstate" in e.value.message
    with pytest.raises(ApiError) as e:
        sched.resume(ds)
    assert e.value.status == 400
    (config.jobs_dir / m / "snapshot_iter_20.solverstate").write_bytes(b"")
    sched.resume(m)
    j = get(db, m)
    assert j.status == states.WAITING and j.resume_requested
    assert run_until(sched, lambda: (config.jobs_dir / m / "resume.txt").is_file())
    assert (config.jobs_dir / m / "resume.txt").read_text() == "True"
    assert get(db, m).resume_requested is False
    with pytest.raises(ApiError) as e:
        sched.resume(m)              # running: nothing to resume
    assert e.value.status == 409
    release(config, m)
    assert run_until(sched, lambda: status(db, m) == states.DONE)


# ------------------------------------------------------------------ recovery

def test_recover_after_a_crash(config, db, sched, tmp_path):
    jobs = config.jobs_dir
    # a training that was running when the server died; its process is gone
    dead = add_job(config, db, status=states.RUNNING, pid=2 ** 22 + 17, spec={"train_epochs": 2},
                   assigned={"gpus": [0]})
    (jobs / dead / "plan.json").write_text(json.dumps({"max_iter": 40, "iters_per_epoch": 20}))
    for n in (20, 30):
        (jobs / dead / f"snapshot_iter_{n}.caffemodel").write_bytes(b"")
    (jobs / dead / "snapshot_iter_30.solverstate").write_bytes(b"")
    with open(jobs / dead / "metrics.jsonl", "w") as f:
        for it in range(0, 31, 10):
            f.write(json.dumps({"iter": it, "phase": "train", "name": "loss", "value": 1.0}) + "\n")
        f.write(json.dumps({"iter": 20, "phase": "test", "name": "accuracy", "value": 0.8}) + "\n")
    # a step of the old server that still runs (it ignores SIGTERM: recovery must SIGKILL it)
    alive = add_job(config, db, kind=states.DATASET, status=states.RUNNING)
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    proc = start_step([sys.executable, "-c", code, "brewnet-test"], jobs / alive)
    with db.session() as s:
        s.get(Job, alive).pid = proc.pid
    w_late = add_job(config, db, status=states.WAITING, queue_seq=5)
    w_early = add_job(config, db, status=states.WAITING, queue_seq=2)
    init = add_job(config, db, status=states.INITIALIZED)
    gone = add_job(config, db, status=states.DONE)
    (jobs / gone / "job.json").unlink()
    (jobs / gone).rmdir()
    # directories whose rows were lost
    orphan_run = "20240101-000000-aaaa"
    orphan_done = "20240101-000000-bbbb"
    for jid, st in ((orphan_run, states.RUNNING), (orphan_done, states.DONE)):
        (jobs / jid).mkdir()
        write_job_json(jobs / jid, Job(id=jid, kind=states.MODEL, name=f"lost {jid}", status=st,
                                       status_history=[[st, 1.0]], created=1.0, progress=0.5, spec={},
                                       summary={"x": 1}, resources={}, assigned={}, queue_seq=None,
                                       resume_requested=False))
    (jobs / "not-a-job").mkdir()
    (jobs / "20240101-000000-cccc").mkdir()     # no job.json: left alone
    try:
        asyncio.run(sched.recover())
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    d = get(db, dead)
    assert d.status == states.INTERRUPTED and d.pid is None and d.assigned == {}
    assert d.summary["snapshots"] == [{"iteration": 20, "epoch": 1}, {"iteration": 30, "epoch": 1.5}]
    assert d.summary["best"] == {"name": "accuracy", "value": 0.8, "iteration": 20}
    assert d.progress == pytest.approx(30 / 40)
    assert read_job_json(jobs / dead)["status"] == states.INTERRUPTED
    assert status(db, alive) == states.INTERRUPTED
    assert get(db, gone) is None
    assert status(db, orphan_run) == states.INTERRUPTED and get(db, orphan_run).name == f"lost {orphan_run}"
    assert status(db, orphan_done) == states.DONE and get(db, orphan_done).summary == {"x": 1}
    assert get(db, "20240101-000000-cccc") is None
    assert [q["id"] for q in sched.queue()] == [w_early, w_late, init]
    assert status(db, init) == states.WAITING
    # the interrupted training resumes from its newest solverstate
    sched.resume(dead)
    assert [q["id"] for q in sched.queue()][-1] == dead


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_step_is_recorded_and_recognised_by_its_start_time(config, db, sched):
    """The row and job.json keep the step's start time while it runs; recovery signals a
    process of the old server only when pid, start time and directory are the step's, so a
    recycled pid (here: the right pid with another start time) is left alone."""
    a = add_job(config, db, kind=states.DATASET)
    sched.submit(a)
    sched.tick()
    job = get(db, a)
    assert job.status == states.RUNNING
    assert job.pid_start == process_start_time(job.pid) and job.pid_start is not None
    assert read_job_json(config.jobs_dir / a)["pid_start"] == job.pid_start
    release(config, a)
    assert run_until(sched, lambda: status(db, a) == states.DONE)
    assert (get(db, a).pid, get(db, a).pid_start, read_job_json(config.jobs_dir / a)["pid_start"]) == (None,) * 3

    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
    jobs = config.jobs_dir
    recycled, ours = (add_job(config, db, kind=states.DATASET, status=states.RUNNING) for _ in range(2))
    procs = {jid: start_step([sys.executable, "-c", code, "brewnet-test"], jobs / jid) for jid in (recycled, ours)}
    with db.session() as s:
        for jid, proc in procs.items():
            s.get(Job, jid).pid = proc.pid
            s.get(Job, jid).pid_start = process_start_time(proc.pid) + (1 if jid == recycled else 0)
    try:
        asyncio.run(sched.recover())
        assert procs[ours].wait(timeout=10) == -signal.SIGKILL
        assert procs[recycled].poll() is None          # not the step that row names: never signalled
        assert pid_alive(procs[recycled].pid, jobs / recycled)
        for jid in (recycled, ours):
            assert status(db, jid) == states.INTERRUPTED and get(db, jid).pid_start is None
    finally:
        for proc in procs.values():
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()


def test_start_runs_the_loop_and_stop_interrupts(config, db):
    sched = Scheduler(config, db, steps_override=wait_steps, abort_grace_s=0.5)
    a = b = None

    async def scenario():
        nonlocal a, b
        await sched.start()
        a = add_job(config, db, kind=states.DATASET)
        b = add_job(config, db, kind=states.DATASET)
        sched.submit(a)
        while status(db, a) != states.RUNNING:
            await asyncio.sleep(0.05)
        release(config, a)
        while status(db, a) != states.DONE:
            await asyncio.sleep(0.05)
        sched.submit(b)
        while not (config.jobs_dir / b / "cuda.txt").is_file():
            await asyncio.sleep(0.05)
        await sched.stop(timeout_s=10)

    asyncio.run(asyncio.wait_for(scenario(), 60))
    assert status(db, a) == states.DONE
    jb = get(db, b)
    assert jb.status == states.INTERRUPTED and jb.pid is None
    assert sched.running_ids() == []


# ------------------------------------------------------------------ real jobs (slow)

TINY_NET = """
name: "tiny"
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
  transform_param { mean_file: "{ds}/mean.binaryproto" scale: 0.0078125 }
  data_param { source: "{ds}/train_db" batch_size: 8 backend: LMDB } }
layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
  transform_param { mean_file: "{ds}/mean.binaryproto" scale: 0.0078125 }
  data_param { source: "{ds}/val_db" batch_size: 8 backend: LMDB } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "accuracy" type: "Accuracy" bottom: "fc" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
"""

SOLVER = """net: "train_val.prototxt"
test_iter: 1
test_interval: 10
base_lr: 0.01
momentum: 0.9
lr_policy: "fixed"
display: 1
max_iter: {max_iter}
snapshot: 0
snapshot_prefix: "snapshot"
random_seed: 1
solver_mode: CPU
"""


def make_images(root: Path) -> Path:
    from PIL import Image
    rng = np.random.default_rng(0)
    for c, name in enumerate(("alpha", "beta", "gamma")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            img = rng.integers(0, 60, (8, 8, 3), dtype=np.uint8)
            img[:, :, c] += 150      # each class has its own dominant channel
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


@pytest.mark.slow
def test_real_dataset_training_abort_resume_and_inference(config, db, tmp_path):
    images = make_images(tmp_path / "images")
    jobs = config.jobs_dir

    def steps(job, resume):
        if job.kind == states.DATASET:   # the DatasetSpec form is another module's; its CLI is real
            return [brewnet_argv("dataset", "create", str(images), str(jobs / job.id),
                                 "--val-percent", "30", "--seed", "1")]
        return steps_for(job, config, resume=resume)

    sched = Scheduler(config, db, steps_override=steps, train_abort_grace_s=120)
    try:
        ds = add_job(config, db, kind=states.DATASET)
        model = add_job(config, db, dataset_id=ds, spec={"train_epochs": 2, "bn_recalibrate": 0})
        mdir = jobs / model
        (mdir / "train_val.prototxt").write_text(TINY_NET.replace("{ds}", str(jobs / ds)))
        # so many iterations that the abort always comes first
        (mdir / "solver.prototxt").write_text(SOLVER.format(max_iter=100000))
        (mdir / "plan.json").write_text(json.dumps({"max_iter": 100000, "iters_per_epoch": 50000}))
        sched.submit(ds)
        sched.submit(model)
        assert run_until(sched, lambda: status(db, ds) == states.DONE, timeout=180)
        summary = get(db, ds).summary
        assert summary["labels"] == ["alpha", "beta", "gamma"] and summary["num_classes"] == 3
        assert summary["counts"]["train"] + summary["counts"]["val"] == 30
        assert summary["image"]["height"] == 8 and Path(summary["mean_file"]).is_file()
        assert Path(summary["lists"]["train"]).is_file() and Path(summary["dbs"]["val"]).is_dir()
        # the model waited for the dataset and now trains
        assert run_until(sched, lambda: (read_metrics(mdir)[0] or [{}])[-1].get("iter", 0) >= 12, timeout=300)
        assert status(db, model) == states.RUNNING
        assert run_until(sched, lambda: get(db, model).progress > 0)
        assert sched.abort(model)
        assert run_until(sched, lambda: status(db, model) in states.FINISHED, timeout=150)
        job = get(db, model)
        assert job.status == states.ABORTED, job.error
        snaps = job.summary["snapshots"]
        assert len(snaps) == 1, snaps
        k = snaps[0]["iteration"]
        assert (mdir / f"snapshot_iter_{k}.solverstate").is_file()
        assert job.summary["best"]["name"] == "accuracy"
        before, _ = read_metrics(mdir)
        assert max(r["iter"] for r in before if r["phase"] == "train") == k - 1

        # resume: the same iteration, the same metrics file; finish 10 iterations later
        (mdir / "solver.prototxt").write_text(SOLVER.format(max_iter=k + 10))
        (mdir / "plan.json").write_text(json.dumps({"max_iter": k + 10, "iters_per_epoch": (k + 10) / 2}))
        sched.resume(model)
        assert run_until(sched, lambda: status(db, model) in states.FINISHED, timeout=300)
        job = get(db, model)
        assert job.status == states.DONE, job.error
        after, _ = read_metrics(mdir)
        assert after[:len(before)] == before          # appended, not rewritten
        resumed_train = [r["iter"] for r in after[len(before):] if r["phase"] == "train"]
        assert resumed_train[0] == k and max(resumed_train) == k + 10   # Caffe logs the loss at max_iter too
        assert [s["iteration"] for s in job.summary["snapshots"]] == [k, k + 10]
        assert job.summary["snapshots"][-1]["epoch"] == 2
        assert job.progress == 1.0
        log = (mdir / "log.txt").read_text()
        assert log.count("==> ") == 2 and f"-snapshot snapshot_iter_{k}.solverstate" in log

        # classify many through a deploy bundle made on demand
        inf = add_job(config, db, kind=states.INFERENCE, parent_id=model, dataset_id=ds,
                      spec={"model_id": model, "iteration": k + 10, "source": {"list": "images.txt"}})
        (jobs / inf / "images.txt").write_text("".join(f"{images / c / '0.png'} {i}\n"
                                                       for i, c in enumerate(("alpha", "beta", "gamma"))))
        sched.submit(inf)
        assert run_until(sched, lambda: status(db, inf) in states.FINISHED, timeout=300)
        ij = get(db, inf)
        assert ij.status == states.DONE, ij.error
        assert ij.summary["count"] == 3 and ij.summary["labelled"] == 3
        assert (mdir / "bundles" / f"iter_{k + 10}" / "info.json").is_file()
        result = json.loads((jobs / inf / "result.json").read_text())
        assert len(result["predictions"]) == 3
    finally:
        for run in list(sched._running.values()):
            signal_group(run.proc.pid, signal.SIGKILL)
            run.proc.wait()


SERVER_SCRIPT = """
import asyncio, sys
from brewnet.server.config import ServerConfig
from brewnet.server.scheduler import Scheduler
from brewnet.server.store.db import Database

jobs_dir, url, job_id = sys.argv[1:4]
db = Database(url)

async def main():
    sched = Scheduler(ServerConfig(jobs_dir=jobs_dir, poll_interval_s=0.05), db)
    await sched.start()
    sched.submit(job_id)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.slow
def test_server_killed_mid_training_recovers_and_resumes(config, db, tmp_path):
    """kill -9 of the server while a model trains: the trainer gets SIGTERM (PR_SET_PDEATHSIG),
    snapshots and exits; the restarted scheduler marks the job Interrupted with that snapshot,
    and a resume continues at its iteration."""
    import subprocess
    images = make_images(tmp_path / "images")
    jobs = config.jobs_dir
    ds = add_job(config, db, kind=states.DATASET, status=states.DONE)
    subprocess.run(brewnet_argv("dataset", "create", str(images), str(jobs / ds), "--val-percent", "30",
                                "--seed", "1"), check=True, capture_output=True)
    model = add_job(config, db, dataset_id=ds, spec={"train_epochs": 1})
    mdir = jobs / model
    (mdir / "train_val.prototxt").write_text(TINY_NET.replace("{ds}", str(jobs / ds)))
    (mdir / "solver.prototxt").write_text(SOLVER.format(max_iter=100000))
    (mdir / "plan.json").write_text(json.dumps({"max_iter": 100000}))
    server = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(jobs), db.url, model],
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and server.poll() is None:
            recs, _ = read_metrics(mdir)
            if recs and recs[-1]["iter"] >= 12:
                break
            time.sleep(0.1)
        assert server.poll() is None, server.stderr.read().decode()[-3000:]
        assert status(db, model) == states.RUNNING
        trainer = get(db, model).pid
        server.kill()
        server.wait()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    sched = Scheduler(config, db, steps_override=lambda job, resume: steps_for(job, config, resume=resume),
                      recovery_wait_s=60)
    asyncio.run(sched.recover())
    assert not pid_alive(trainer, mdir)
    job = get(db, model)
    assert job.status == states.INTERRUPTED
    assert len(job.summary["snapshots"]) == 1        # written by the trainer on its SIGTERM
    k = job.summary["snapshots"][0]["iteration"]
    assert "Received SIGTERM" in (mdir / "log.txt").read_text()
    (mdir / "solver.prototxt").write_text(SOLVER.format(max_iter=k + 5))
    (mdir / "plan.json").write_text(json.dumps({"max_iter": k + 5}))
    before, _ = read_metrics(mdir)
    sched.resume(model)
    try:
        assert run_until(sched, lambda: status(db, model) in states.FINISHED, timeout=300)
    finally:
        for run in list(sched._running.values()):
            signal_group(run.proc.pid, signal.SIGKILL)
            run.proc.wait()
    job = get(db, model)
    assert job.status == states.DONE, job.error
    after, _ = read_metrics(mdir)
    assert [r["iter"] for r in after[len(before):] if r["phase"] == "train"][0] == k
    assert [s["iteration"] for s in job.summary["snapshots"]] == [k, k + 5]
