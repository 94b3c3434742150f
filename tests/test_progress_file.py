"""$BREWNET_PROGRESS_FILE: JSON lines {"task", "done", "total", "time"}, throttled, final line always."""
from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image

from brewnet.commands.main import main
from brewnet.reporting.task_progress import Progress
from brewnet.reporting.progress_file import ENV, ProgressFile, from_env, read_progress_file


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_throttled_to_two_per_second_and_final_line_written(tmp_path):
    clock = FakeClock()
    path = tmp_path / "p.jsonl"
    f = ProgressFile(path, clock=clock)
    for i in range(1, 101):  # 100 updates over 1 s of the clock: 0.01 s apart
        clock.t += 0.01
        f.update("train_db", i, 100)
    f.close()
    recs = read_progress_file(path)
    assert [r["done"] for r in recs] == [1, 51, 100]  # first, 0.5 s later, and the final one
    assert all(set(r) == {"task", "done", "total", "time"} and r["task"] == "train_db" and r["total"] == 100
               for r in recs)
    assert all(isinstance(r["time"], float) for r in recs)


def test_close_writes_the_last_numbers_held_back(tmp_path):
    clock = FakeClock()
    path = tmp_path / "p.jsonl"
    with ProgressFile(path, clock=clock) as f:
        f.update("train", 10, 1000)
        f.update("train", 20, 1000)  # throttled
        f.update("val", 1, 5)  # another task has its own throttle
    recs = [(r["task"], r["done"]) for r in read_progress_file(path)]
    assert recs == [("train", 10), ("val", 1), ("train", 20)]


def test_appends_whole_lines_to_an_existing_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"task": "a", "done": 1, "total": 1, "time": 1.0}\n')
    with ProgressFile(path) as f:
        f.update("b", 2, 2)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["task"] == "b"
    path.write_text(path.read_text() + '{"task": "half')  # a reader skips a partial last line
    assert len(read_progress_file(path)) == 2


def test_from_env(tmp_path):
    assert from_env({}) is None and from_env({ENV: ""}) is None
    f = from_env({ENV: str(tmp_path / "x" / "p.jsonl")})
    assert isinstance(f, ProgressFile)
    f.close()


def test_progress_bar_writes_the_file_when_the_env_is_set(tmp_path, monkeypatch):
    path = tmp_path / "p.jsonl"
    monkeypatch.setenv(ENV, str(path))
    bar = Progress(7, "classify", io.StringIO())
    for _ in range(7):
        bar.update()
    bar.close()
    recs = read_progress_file(path)
    assert recs[0]["done"] == 0 and recs[-1]["done"] == 7
    assert {r["task"] for r in recs} == {"classify"} and {r["total"] for r in recs} == {7}


def _folder(root):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_dataset_create_and_train_write_progress(tmp_path, monkeypatch, capsys):
    path = tmp_path / "progress.jsonl"
    monkeypatch.setenv(ENV, str(path))
    src = _folder(tmp_path / "src")
    assert main(["dataset", "create", str(src), str(tmp_path / "ds"), "-seed", "1", "-val-percent", "50"]) == 0
    recs = read_progress_file(path)
    # both splits are announced before any is written
    assert [(r["task"], r["done"], r["total"]) for r in recs[:2]] == [("train_db", 0, 6), ("val_db", 0, 6)]
    final = {r["task"]: r for r in recs}
    assert final["train_db"]["done"] == final["train_db"]["total"] == 6
    assert final["val_db"]["done"] == final["val_db"]["total"] == 6

    net = tmp_path / "net.prototxt"
    net.write_text(f"""
layer {{ name: "d" type: "Data" top: "data" top: "label"
        data_param {{ source: "{tmp_path / 'ds' / 'train_db'}" batch_size: 4 backend: LMDB }} }}
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param {{ num_output: 2 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }}
""")
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{net}" base_lr: 0.001 lr_policy: "fixed" max_iter: 7 display: 0 '
                      f'snapshot_prefix: "{tmp_path / "snap"}"\n')
    path.unlink()
    assert main(["train", "-solver", str(solver), "-metrics", str(tmp_path / "m.jsonl")]) == 0
    recs = read_progress_file(path)
    assert {r["task"] for r in recs} == {"train"} and {r["total"] for r in recs} == {7}
    assert recs[0]["done"] == 1 and recs[-1]["done"] == 7
    assert [r["done"] for r in recs] == sorted(r["done"] for r in recs)
