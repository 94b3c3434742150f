"""Requests/s and latency of ``brewnet serve``'s status and metrics routes while a model trains,
and what that load costs the training.

    python benchmarks/bench_serve.py [--seconds 20] [--clients 50] [--max-requests 100000]
                                     [--images-per-class 40] [--json out.json] [--keep]

1. A real server: ``python -m brewnet serve`` (a subprocess, loopback, a free port, a fresh jobs
   folder), in DIGITS' local mode.
2. A training job through /api/v1: a dataset of generated 28x28 grey images (three patterns,
   ``--images-per-class`` each), then LeNet-BN on it for many epochs (validation and snapshots
   practically never), so that it trains during the whole measurement.
3. Side by side in one run, each window ``--seconds`` long: quiet, loaded, quiet.  In the loaded
   window ``--clients`` concurrent clients (httpx.AsyncClient, one connection each) cycle through
   ``GET /jobs/<id>/status`` (DIGITS), ``GET /api/v1/jobs/<id>`` and
   ``GET /api/v1/jobs/<id>/metrics?max_points=200``, until the window ends or ``--max-requests``
   were sent.  Prints requests/s, p50 and p99 latency per route (errors counted apart), and the
   trainer's iterations/s in each window (from the ``time`` of its metrics.jsonl train records).

No thresholds: the numbers are for reading (and for comparing runs on one machine).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

ROUTES = ("/jobs/{id}/status", "/api/v1/jobs/{id}", "/api/v1/jobs/{id}/metrics?max_points=200")
USER = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_images(root: Path, n: int, size: int = 28) -> None:
    """Three grey patterns (bars, columns, dots) with noise, ``n`` PNGs per class."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    patterns = {"bars": (yy // 4) % 2 == 0, "columns": (xx // 4) % 2 == 0,
                "dots": ((yy % 6) < 2) & ((xx % 6) < 2)}
    for name, mask in patterns.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = np.where(mask, 200.0, 40.0) + rng.normal(0, 25, (size, size))
            Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(root / name / f"{i}.png")


class Serve:
    """``python -m brewnet serve`` in its own process (output in ``<root>/serve.log``)."""

    def __init__(self, root: Path, data: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = root / "serve.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "brewnet", "serve", "--port", str(self.port), "--jobs", str(root / "jobs"),
             "--data-root", str(data)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 120
        while True:
            if self.proc.poll() is not None:
                raise SystemExit("brewnet serve exited:\n" + self.output())
            try:
                if httpx.get(self.url + "/index.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("brewnet serve did not answer in 120 s:\n" + self.output())
            time.sleep(0.3)
        # DIGITS' local mode: the user's name as a query parameter on every change
        self.client = httpx.Client(base_url=self.url, timeout=120, params={"username": USER})

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")[-4000:]

    def job(self, job_id: str) -> dict:
        r = self.client.get(f"/api/v1/jobs/{job_id}")
        r.raise_for_status()
        return r.json()

    def wait(self, job_id: str, until, timeout_s: float = 600) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.job(job_id)
            if job["status"] in until:
                return job
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id} still {job['status']} after {timeout_s} s:\n{self.output()}")
            time.sleep(0.5)

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_training(serve: Serve, data: Path) -> str:
    """A dataset, then LeNet-BN training on it for far longer than the benchmark; its id once it runs."""
    r = serve.client.post("/api/v1/datasets", json={
        "dataset_name": "bench", "method": "folder", "folder_train": str(data), "folder_pct_val": 25,
        "resize_channels": 1, "resize_width": 28, "resize_height": 28, "encoding": "png", "backend": "lmdb"})
    if r.status_code != 201:
        raise SystemExit(f"dataset: {r.status_code} {r.text}")
    ds = r.json()["id"]
    if serve.wait(ds, ("Done", "Aborted", "Error"))["status"] != "Done":
        raise SystemExit("the dataset failed:\n" + serve.output())
    r = serve.client.post("/api/v1/models", json={
        "model_name": "bench lenet_bn", "dataset": ds, "method": "standard", "standard_networks": "lenet_bn",
        "train_epochs": 100000, "val_interval": 50000, "snapshot_interval": 50000, "batch_size": 16,
        "learning_rate": 0.01, "random_seed": 7, "bn_recalibrate": 0})
    if r.status_code != 201:
        raise SystemExit(f"model: {r.status_code} {r.text}")
    model = r.json()["jobs"][0]["id"]
    serve.wait(model, ("Running", "Done", "Aborted", "Error"))
    return model


def train_records(metrics: Path) -> list[tuple[float, int]]:
    """(time, iteration) of every train record of metrics.jsonl."""
    out = []
    try:
        text = metrics.read_text()
    except FileNotFoundError:
        return out
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("phase") == "train" and isinstance(rec.get("time"), (int, float)):
            out.append((float(rec["time"]), int(rec["iter"])))
    return out


def iters_per_second(records: list[tuple[float, int]], t0: float, t1: float) -> float | None:
    """Iterations/s between the first and the last train record written in [t0, t1]."""
    inside = [(t, it) for t, it in records if t0 <= t <= t1]
    if len(inside) < 2:
        return None
    (ta, ia), (tb, ib) = min(inside), max(inside)
    return (ib - ia) / (tb - ta) if tb > ta else None


async def load(url: str, job_id: str, clients: int, seconds: float, max_requests: int) -> dict:
    """``clients`` concurrent clients cycling through ROUTES for ``seconds`` or ``max_requests``."""
    lat: dict[str, list[float]] = {r: [] for r in ROUTES}
    errors: dict[str, int] = {r: 0 for r in ROUTES}
    sent = 0
    end = time.monotonic() + seconds

    async def one(k: int) -> None:
        nonlocal sent
        async with httpx.AsyncClient(base_url=url, timeout=60,
                                     limits=httpx.Limits(max_connections=1, max_keepalive_connections=1)) as c:
            i = k
            while time.monotonic() < end and sent < max_requests:
                sent += 1
                route = ROUTES[i % len(ROUTES)]
                i += 1
                t = time.perf_counter()
                try:
                    r = await c.get(route.format(id=job_id))
                    ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    lat[route].append(time.perf_counter() - t)
                else:
                    errors[route] += 1

    t0 = time.monotonic()
    await asyncio.gather(*(one(k) for k in range(clients)))
    return {"lat": lat, "errors": errors, "wall": time.monotonic() - t0}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1000.0 if values else float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="length of each window (quiet, loaded, quiet)")
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--max-requests", type=int, default=100_000, help="at most this many requests under load")
    ap.add_argument("--images-per-class", type=int, default=40)
    ap.add_argument("--json", help="also write the numbers to this file")
    ap.add_argument("--keep", action="store_true", help="keep the temporary jobs folder")
    args = ap.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    data = root / "data"
    make_images(data, args.images_per_class)
    serve = Serve(root, data)
    try:
        print(f"brewnet serve on {serve.url}, jobs in {root / 'jobs'}", flush=True)
        model = start_training(serve, data)
        metrics = root / "jobs" / model / "metrics.jsonl"
        # let the trainer get past its start-up (imports, first batches)
        deadline = time.monotonic() + 120
        while len(train_records(metrics)) < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        print(f"training {model}; windows of {args.seconds:g} s: quiet, loaded ({args.clients} clients), quiet",
              flush=True)
        windows = []
        t = time.time()
        time.sleep(args.seconds)
        windows.append(("quiet", t, time.time()))
        t = time.time()
        result = asyncio.run(load(serve.url, model, args.clients, args.seconds, args.max_requests))
        windows.append(("loaded", t, time.time()))
        t = time.time()
        time.sleep(args.seconds)
        windows.append(("quiet", t, time.time()))
        time.sleep(1.0)     # the last records of the window reach the file
        records = train_records(metrics)
        its = [(name, iters_per_second(records, a, b)) for name, a, b in windows]
        if serve.job(model)["status"] != "Running":
            print(f"warning: the training is no longer running ({serve.job(model)['status']})")
        serve.client.post(f"/api/v1/jobs/{model}/abort")
    finally:
        serve.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    wall = result["wall"]
    rows = []
    print(f"\n{'route':48} {'ok':>7} {'errors':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for route in ROUTES:
        lat = result["lat"][route]
        row = {"route": route, "ok": len(lat), "errors": result["errors"][route], "rps": len(lat) / wall,
               "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99)}
        rows.append(row)
        print(f"{route:48} {row['ok']:7d} {row['errors']:6d} {row['rps']:8.1f} "
              f"{row['p50_ms']:8.1f} {row['p99_ms']:8.1f}")
    every = [x for r in ROUTES for x in result["lat"][r]]
    total = {"ok": len(every), "errors": sum(result["errors"].values()), "rps": len(every) / wall,
             "p50_ms": pct(every, 50), "p99_ms": pct(every, 99)}
    print(f"{'all':48} {total['ok']:7d} {total['errors']:6d} {total['rps']:8.1f} {total['p50_ms']:8.1f} "
          f"{total['p99_ms']:8.1f}")
    print("\ntraining iterations/s:")
    for name, v in its:
        print(f"  {name:7} {'n/a' if v is None else f'{v:.2f}'}")
    quiet = [v for name, v in its if name == "quiet" and v is not None]
    loaded = its[1][1]
    if quiet and loaded is not None:
        print(f"  loaded / quiet (mean of both quiet windows): {loaded / (sum(quiet) / len(quiet)):.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"clients": args.clients, "seconds": args.seconds, "wall_s": wall, "routes": rows,
                       "all": total, "iters_per_s": [{"window": n, "value": v} for n, v in its]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
