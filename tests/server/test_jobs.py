"""Job directories, paths, progress and metrics files, task command lines and step processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from brewnet.server.config import ServerConfig
from brewnet.server.errors import ApiError
from brewnet.server.jobs import states
from brewnet.server.jobs.jobdir import (confine_server_path, job_dir, job_from_dict, job_to_dict,
                                        read_job_json, safe_join, write_job_json, write_json_atomic)
from brewnet.server.jobs.process import (last_error_line, pid_alive, process_start_time, signal_group,
                                        start_step)
from brewnet.server.jobs.progress import (best_value, metric_series, read_metrics, read_progress)
from brewnet.server.jobs.tasks import newest_solverstate, snapshots, steps_for
from brewnet.server.store.models import Job

JOB_ID = "20240102-030405-abcd"


def make_job(**kw) -> Job:
    base = dict(id=JOB_ID, kind=states.MODEL, name="m", group_name="", notes="", owner="ann",
                status=states.INITIALIZED, status_history=[[states.INITIALIZED, 1.0]], created=1.0,
                progress=0.0, spec={}, summary={}, resources={}, assigned={}, resume_requested=False)
    base.update(kw)
    return Job(**base)


def wait_until(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return pred()


# ------------------------------------------------------------------ jobdir

def test_write_json_atomic_replaces_whole_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "job.json"
    write_json_atomic(p, {"a": 1})
    write_json_atomic(p, {"a": 2, "b": [1, 2]})
    assert json.loads(p.read_text()) == {"a": 2, "b": [1, 2]}
    with pytest.raises(TypeError):
        write_json_atomic(p, {"bad": object()})   # cannot be serialised: the old file stays
    assert json.loads(p.read_text()) == {"a": 2, "b": [1, 2]}
    assert sorted(x.name for x in tmp_path.iterdir()) == ["job.json"]


def test_job_json_round_trip(tmp_path):
    job = make_job(status=states.WAITING, queue_seq=7, spec={"train_epochs": 3},
                   resources={"gpu_count": 1}, summary={"snapshots": []}, dataset_id="20240101-000000-0000")
    write_job_json(tmp_path, job)
    d = read_job_json(tmp_path)
    assert d["id"] == JOB_ID and d["type"] == "Image Classification Model" and d["group"] == ""
    assert d["status"] == states.WAITING and d["queue_seq"] == 7 and d["owner"] == "ann"
    assert "brewnet_version" in d
    back = job_from_dict(d)
    assert job_to_dict(back) == d


def test_read_job_json_refuses_garbage(tmp_path):
    (tmp_path / "job.json").write_text("{not json")
    with pytest.raises(ValueError):
        read_job_json(tmp_path)
    with pytest.raises(FileNotFoundError):
        read_job_json(tmp_path / "nothing")


def test_job_dir_confines_ids(tmp_path):
    config = ServerConfig(jobs_dir=tmp_path)
    assert job_dir(config, JOB_ID) == tmp_path.resolve() / JOB_ID
    for bad in ("..", "../etc", "20240102-030405-abcd/..", "x", ""):
        with pytest.raises(ApiError) as e:
            job_dir(config, bad)
        assert e.value.status == 404


def test_safe_join_refuses_escapes(tmp_path):
    root = tmp_path / "job"
    root.mkdir()
    (tmp_path / "secret").write_text("s")
    assert safe_join(root, "uploads/a.png") == root.resolve() / "uploads" / "a.png"
    assert safe_join(root, "./x/./y") == root.resolve() / "x" / "y"
    os.symlink(tmp_path / "secret", root / "link")
    os.symlink(root / "uploads", root / "inner")  # a link that stays inside is fine
    assert safe_join(root, "inner/a.png") == root.resolve() / "inner" / "a.png"
    for bad in ("../secret", "a/../../secret", "/etc/passwd", "link", "a\\..\\..\\x", "", "a\x00b"):
        with pytest.raises(ApiError) as e:
            safe_join(root, bad)
        assert e.value.status == 400, bad


def test_confine_server_path(tmp_path):
    data = tmp_path / "data"
    (data / "set").mkdir(parents=True)
    other = tmp_path / "other"
    other.mkdir()
    os.symlink(other, data / "out")
    assert confine_server_path(str(data / "set"), [data], "folder_train") == (data / "set").resolve()
    cases = [(str(other), 403), (str(data / "out"), 403), (str(data / "set" / ".." / ".." / "other"), 403),
             ("set", 400), ("", 400)]
    for path, status in cases:
        with pytest.raises(ApiError) as e:
            confine_server_path(path, [data], "folder_train")
        assert e.value.status == status, path
        assert e.value.field == "folder_train"
    with pytest.raises(ApiError) as e:
        confine_server_path(str(data / "set"), [], "folder_train")
    assert e.value.status == 403 and "--data-root" in e.value.message


# ------------------------------------------------------------------ metrics and progress

def rec(it, phase, name, value, t=0.0):
    return {"iter": it, "phase": phase, "name": name, "value": value, "lr": 0.01, "time": t}


def test_read_metrics_complete_lines_and_offsets(tmp_path):
    p = tmp_path / "metrics.jsonl"
    p.write_text(json.dumps(rec(0, "train", "loss", 2.0)) + "\n" + '{"iter": 1, "pha')
    records, off = read_metrics(tmp_path)
    assert [r["iter"] for r in records] == [0]
    with open(p, "a") as f:
        f.write('se": "train", "name": "loss", "value": 1.5}\nnot json\n')
    more, off2 = read_metrics(tmp_path, off)
    assert [(r["iter"], r["value"]) for r in more] == [(1, 1.5)]
    assert off2 == p.stat().st_size
    assert read_metrics(tmp_path, off2) == ([], off2)
    assert read_metrics(tmp_path / "none") == ([], 0)


def test_metric_series_last_value_wins_and_other_phases_kept():
    records = [rec(0, "train", "loss", 3.0), rec(10, "train", "loss", 2.0), rec(10, "test", "accuracy", 0.5),
               rec(10, "test_moving_bn", "accuracy", 0.4),
               # a resume repeats iteration 10 and goes on
               rec(10, "train", "loss", 2.5), rec(20, "train", "loss", 1.0), rec(20, "test", "accuracy", 0.7)]
    s = metric_series(records)
    assert [p[:2] for p in s["train"]["loss"]] == [[0, 3.0], [10, 2.5], [20, 1.0]]
    assert [p[:2] for p in s["test"]["accuracy"]] == [[10, 0.5], [20, 0.7]]
    assert [p[:2] for p in s["test_moving_bn"]["accuracy"]] == [[10, 0.4]]
    assert best_value(records) == {"name": "accuracy", "value": 0.7, "iteration": 20}
    assert best_value(records, "test_moving_bn")["value"] == 0.4
    assert metric_series([]) == {"train": {}, "test": {}}


@pytest.mark.parametrize("max_points", [2, 3, 5, 17, 50])
def test_metric_series_downsampling_keeps_first_last_and_best(max_points):
    n = 101
    acc = [0.1 + 0.001 * i for i in range(n)]
    acc[37] = 0.99          # the best accuracy, between stride points
    loss = [5.0 - 0.01 * i for i in range(n)]
    loss[63] = 0.01         # the lowest loss
    records = [rec(i, "test", "accuracy", acc[i]) for i in range(n)] + \
              [rec(i, "test", "loss", loss[i]) for i in range(n)] + \
              [rec(i, "train", "loss", loss[i]) for i in range(n)]
    s = metric_series(records, max_points=max_points)
    a = s["test"]["accuracy"]
    keep_count = max(max_points, 3)
    assert len(a) <= keep_count
    its = [p[0] for p in a]
    assert its == sorted(set(its))
    assert its[0] == 0 and its[-1] == n - 1 and 37 in its
    assert 63 in [p[0] for p in s["test"]["loss"]]
    t = [p[0] for p in s["train"]["loss"]]
    assert len(t) <= max(max_points, 2) and t[0] == 0 and t[-1] == n - 1
    if max_points == 50:
        assert len(a) == 50 and len(t) == 50


def test_read_progress_model_and_dataset(tmp_path):
    model = make_job(status=states.RUNNING)
    (tmp_path / "plan.json").write_text(json.dumps({"max_iter": 200, "iters_per_epoch": 50}))
    assert read_progress(tmp_path, model) == 0.0
    with open(tmp_path / "metrics.jsonl", "w") as f:
        for r in (rec(0, "train", "loss", 1), rec(50, "train", "loss", 1), rec(50, "test", "accuracy", 0.5)):
            f.write(json.dumps(r) + "\n")
    assert read_progress(tmp_path, model) == pytest.approx(0.25)
    ds = make_job(kind=states.DATASET, status=states.RUNNING)
    with open(tmp_path / "progress.jsonl", "w") as f:
        f.write(json.dumps({"task": "train", "done": 30, "total": 30, "time": 1}) + "\n")
        f.write(json.dumps({"task": "val", "done": 0, "total": 10, "time": 1}) + "\n")
        f.write(json.dumps({"task": "val", "done": 5, "total": 10, "time": 2}) + "\n")
        f.write('{"task": "val", "done": 9')   # being written
    assert read_progress(tmp_path, ds) == pytest.approx(35 / 40)
    ds.status = states.DONE
    assert read_progress(tmp_path, ds) == 1.0


# ------------------------------------------------------------------ tasks

def test_snapshots_sorted_by_iteration(tmp_path):
    for n in (200, 1000, 30):
        (tmp_path / f"snapshot_iter_{n}.caffemodel").write_bytes(b"")
        (tmp_path / f"snapshot_iter_{n}.solverstate").write_bytes(b"")
    (tmp_path / "snapshot_iter_x.caffemodel").write_bytes(b"")
    assert [n for n, _ in snapshots(tmp_path)] == [30, 200, 1000]
    assert newest_solverstate(tmp_path).name == "snapshot_iter_1000.solverstate"
    assert newest_solverstate(tmp_path / "none") is None


def test_model_steps_fresh_resume_gpu(tmp_path):
    config = ServerConfig(jobs_dir=tmp_path)
    d = tmp_path / JOB_ID
    d.mkdir()
    (d / "plan.json").write_text(json.dumps({"max_iter": 10, "weights": ["/w/a.caffemodel", "/w/b.caffemodel"]}))
    job = make_job(spec={"bn_recalibrate": 100})
    [argv] = steps_for(job, config, resume=False)
    assert argv[:4] == [sys.executable, "-m", "brewnet", "train"]
    args = argv[4:]
    assert args[:6] == ["-solver", "solver.prototxt", "-metrics", "metrics.jsonl", "-sigint_effect", "stop"]
    assert args[args.index("-weights") + 1] == "/w/a.caffemodel,/w/b.caffemodel"
    assert args[args.index("-bn_recalibrate") + 1] == "100"
    assert "-gpu" not in args and "-snapshot" not in args
    from brewnet.errors import BrewnetError
    with pytest.raises(BrewnetError):
        steps_for(job, config, resume=True)   # nothing to resume from
    (d / "snapshot_iter_5.solverstate").write_bytes(b"")
    (d / "snapshot_iter_10.solverstate").write_bytes(b"")
    job.assigned = {"gpus": [3]}
    job.spec = {"bn_recalibrate": 0}
    [argv] = steps_for(job, config, resume=True)
    args = argv[4:]
    assert args[args.index("-snapshot") + 1] == "snapshot_iter_10.solverstate"
    assert "-weights" not in args and "-bn_recalibrate" not in args
    # CUDA_VISIBLE_DEVICES holds only GPU 3: the trainer uses its first visible GPU
    assert args[args.index("-gpu") + 1] == "0"
    # several GPUs: one training process each (data-parallel), visible as 0..n-1
    job.assigned = {"gpus": [1, 4, 6]}
    [argv] = steps_for(job, config, resume=True)
    assert argv[argv.index("-gpu") + 1] == "0,1,2"


def test_inference_steps_deploy_only_when_bundle_missing(tmp_path):
    config = ServerConfig(jobs_dir=tmp_path)
    model_id, ds_id = "20240101-000000-0001", "20240101-000000-0002"
    mdir, ddir = tmp_path / model_id, tmp_path / ds_id
    mdir.mkdir()
    ddir.mkdir()
    (ddir / "labels.txt").write_text("a\nb\n")
    (mdir / "snapshot_iter_40.caffemodel").write_bytes(b"")
    write_job_json(mdir, make_job(id=model_id, dataset_id=ds_id))
    (tmp_path / JOB_ID).mkdir()
    job = make_job(kind=states.INFERENCE, parent_id=model_id,
                   spec={"model_id": model_id, "iteration": 40, "source": {"list": "images.txt"}})
    deploy, classify = steps_for(job, config, resume=False)
    bundle = str(mdir.resolve() / "bundles" / "iter_40")
    assert deploy[3] == "deploy"
    assert deploy[deploy.index("-model") + 1] == str(mdir.resolve() / "train_val.prototxt")
    assert deploy[deploy.index("-weights") + 1] == str(mdir.resolve() / "snapshot_iter_40.caffemodel")
    assert deploy[deploy.index("-labels") + 1] == str(ddir.resolve() / "labels.txt")
    assert deploy[deploy.index("-output") + 1] == bundle
    assert classify[3] == "classify" and classify[classify.index("-bundle") + 1] == bundle
    assert classify[classify.index("-list") + 1] == str(tmp_path.resolve() / JOB_ID / "images.txt")
    assert classify[classify.index("-json") + 1] == "result.json"
    Path(bundle).mkdir(parents=True)
    (Path(bundle) / "info.json").write_text("{}")
    job.spec = {"model_id": model_id, "iteration": 40, "source": {"lmdb": str(ddir / "val_db")}}
    [classify] = steps_for(job, config, resume=False)
    assert classify[classify.index("-lmdb") + 1] == str(ddir / "val_db")
    job.spec = {"model_id": model_id, "iteration": 41, "source": {"list": "images.txt"}}
    from brewnet.errors import BrewnetError
    with pytest.raises(BrewnetError, match="iteration 41"):
        steps_for(job, config, resume=False)


# ------------------------------------------------------------------ processes

def test_start_step_logs_header_output_and_env(tmp_path):
    code = ("import os, sys; print('out', os.environ['BREWNET_PROGRESS_FILE']); "
            "print('cuda=' + os.environ['CUDA_VISIBLE_DEVICES'], file=sys.stderr); "
            "print('pgid', os.getpgid(0) == os.getpid())")
    p = start_step([sys.executable, "-c", code, "brewnet-test"], tmp_path, gpus=[2, 5])
    assert p.wait(timeout=30) == 0
    p = start_step([sys.executable, "-c", "print('again')"], tmp_path)
    assert p.wait(timeout=30) == 0
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert lines[0].startswith("==> ") and "brewnet-test" in lines[0]
    assert f"out {tmp_path.resolve() / 'progress.jsonl'}" in lines
    assert "cuda=2,5" in lines and "pgid True" in lines
    assert lines[-2].startswith("==> ") and lines[-1] == "again"


def test_a_step_imports_the_servers_own_brewnet(tmp_path):
    """Whatever brewnet the environment would give ``python -m brewnet`` (another checkout's
    editable install, a module named brewnet in the job's folder), a step runs this server's."""
    import brewnet

    (tmp_path / "brewnet.py").write_text("raise SystemExit('the wrong brewnet')\n")
    p = start_step([sys.executable, "-c", "import brewnet; print('from', brewnet.__file__)"], tmp_path)
    assert p.wait(timeout=60) == 0, (tmp_path / "log.txt").read_text()
    assert f"from {brewnet.__file__}" in (tmp_path / "log.txt").read_text().splitlines()
    # the server's Python layer folder is importable
    layers = tmp_path.parent / f"{tmp_path.name}-layers"
    layers.mkdir()
    (layers / "mylayer.py").write_text("NAME = 'my layer'\n")
    p = start_step([sys.executable, "-c", "import mylayer; print(mylayer.NAME)"], tmp_path, python_path=[str(layers)])
    assert p.wait(timeout=60) == 0 and (tmp_path / "log.txt").read_text().splitlines()[-1] == "my layer"


def brewnet_named_python(tmp_path: Path) -> str:
    """This interpreter under a path that names brewnet, as in a virtualenv at
    ``~/.cache/brewnet-<hash>/venv``: every command line it runs then contains "brewnet"."""
    link = tmp_path / "brewnet-cache" / "venv" / "bin" / "python3"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.realpath(sys.executable))
    return str(link)


@pytest.fixture(params=["python", "brewnet-named-python"])
def python(request, tmp_path_factory):
    if request.param == "python":
        return sys.executable
    if not sys.platform.startswith("linux"):
        pytest.skip("process identity beyond existence is read from /proc")
    return brewnet_named_python(tmp_path_factory.mktemp("venv"))


def test_pid_alive_checks_the_process_is_ours(tmp_path, python):
    other = tmp_path / "other"
    other.mkdir()
    p = start_step([python, "-c", "import time; time.sleep(60)", "brewnet-test"], tmp_path)
    try:
        assert wait_until(lambda: pid_alive(p.pid, tmp_path))
        assert not pid_alive(p.pid, other)                 # another job's directory
        # a process in the job's directory that no start_step started
        q = subprocess.Popen([python, "-c", "import time; time.sleep(60)"], cwd=tmp_path,
                             start_new_session=True)
        try:
            assert not pid_alive(q.pid, tmp_path)          # not a step of this job
        finally:
            signal_group(q.pid, signal.SIGKILL)
            q.wait()
    finally:
        assert signal_group(p.pid, signal.SIGTERM)
        p.wait(timeout=30)
    assert not pid_alive(p.pid, tmp_path)
    assert not pid_alive(None) and not pid_alive(0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pid_alive_is_the_pid_start_time_and_directory_not_words(tmp_path):
    """A step is identified by its pid, the start time recorded when it was spawned and its
    job directory; a process whose interpreter, arguments and directory all say "brewnet" is
    not taken for it."""
    python = brewnet_named_python(tmp_path)
    jobdir = tmp_path / "brewnet-jobs" / "20240102-030405-abcd"
    jobdir.mkdir(parents=True)
    p = start_step([python, "-c", "import time; time.sleep(60)", "brewnet", "train"], jobdir)
    q = subprocess.Popen([python, "-c", "import time; time.sleep(60)", "-m", "brewnet"], cwd=jobdir,
                         start_new_session=True)
    try:
        started = process_start_time(p.pid)
        assert isinstance(started, int) and started > 0
        assert started == process_start_time(p.pid)        # the same process, the same time
        assert pid_alive(p.pid, jobdir, started)
        assert not pid_alive(p.pid, jobdir, started + 1)   # a recycled pid: another start time
        assert not pid_alive(p.pid, tmp_path, started)     # not in the job's directory
        assert not pid_alive(q.pid, jobdir)                # words in its command line are not enough
        assert pid_alive(q.pid, jobdir, process_start_time(q.pid))  # the process that started then
    finally:
        for proc in (p, q):
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not pid_alive(p.pid, jobdir, started)
    assert process_start_time(p.pid) is None and process_start_time(None) is None


def test_signal_group_reaches_grandchildren(tmp_path):
    code = textwrap.dedent("""
        import subprocess, sys, time
        c = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open("child.pid", "w").write(str(c.pid))
        time.sleep(60)
    """)
    p = start_step([sys.executable, "-c", code], tmp_path)
    assert wait_until(lambda: (tmp_path / "child.pid").is_file() and (tmp_path / "child.pid").read_text())
    child = int((tmp_path / "child.pid").read_text())
    signal_group(p.pid, signal.SIGTERM)
    assert p.wait(timeout=30) == -signal.SIGTERM
    assert wait_until(lambda: not Path(f"/proc/{child}").exists()
                      or "Z" in Path(f"/proc/{child}/stat").read_text().split(")")[-1][:3])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_step_gets_sigterm_when_the_server_is_killed(tmp_path):
    """A 'server' process starts a step, then dies by SIGKILL: the step receives SIGTERM (as a
    trainer with -sigint_effect stop would, to snapshot and exit)."""
    step = textwrap.dedent("""
        import signal, sys, time
        def on_term(signum, frame):
            open("got_sigterm", "w").write("yes")
            sys.exit(0)
        signal.signal(signal.SIGTERM, on_term)
        open("started", "w").write("1")
        time.sleep(60)
    """)
    server = textwrap.dedent(f"""
        import sys, time
        from brewnet.server.jobs.process import start_step
        p = start_step([sys.executable, "-c", {step!r}, "brewnet-test"], {str(tmp_path)!r})
        print(p.pid, flush=True)
        time.sleep(60)
    """)
    srv = subprocess.Popen([sys.executable, "-c", server], stdout=subprocess.PIPE, text=True,
                           cwd=os.getcwd())
    try:
        child_pid = int(srv.stdout.readline())
        assert wait_until(lambda: (tmp_path / "started").is_file())
        srv.kill()
        srv.wait()
        assert wait_until(lambda: (tmp_path / "got_sigterm").is_file())
        assert wait_until(lambda: not pid_alive(child_pid, tmp_path))
    finally:
        if srv.poll() is None:
            srv.kill()
        signal_group(child_pid, signal.SIGKILL) if "child_pid" in locals() else None


def test_last_error_line(tmp_path):
    assert last_error_line(tmp_path) is None
    (tmp_path / "log.txt").write_text("==> start\nbrewnet.errors.DataError: no images\nTraceback\nend\n")
    assert last_error_line(tmp_path) == "brewnet.errors.DataError: no images"
