"""The steps of scripts/gpu_check.sh (run that: it sets up PYTHONPATH and the carried wheels).

1. the CUDA tests (tests/test_cuda.py and the 2-GPU NCCL test, which skips on one GPU);
2. every golden layer case of real Caffe run on the GPU and on the CPU: the largest difference
   between the two, and each against Caffe's recording (the suite's tolerance, 2e-5);
3. the bundled LeNet-BN trained on the GPU for a few hundred iterations from the carried
   Fashion-MNIST LMDB (.gpu_check/fashion, from `gpu_check.sh --prepare`), else from a
   synthetic learnable LMDB made here: accuracy, speed, and the snapshot scored again on the GPU
   (the logged count, exactly) and on the CPU;
4. `brewnet time` against the same LeNet-BN hand-written in PyTorch (benchmarks/bench_train_step.py)
   on the same device, then that benchmark's whole SGD steps.

Every step runs even when an earlier one failed; the summary says which failed and the exit
status is 1 then.  Environment: BREWNET_GPU_CHECK_DEVICE (cuda, or cpu to try the script
without a GPU), BREWNET_GPU_CHECK_ITERS (training iterations, default 300), OUT (where the
summary goes: $OUT/gpu_summary.txt, else ./gpu_check_summary.txt).
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "benchmarks")]
import brewnet  # noqa: E402

DEVICE = os.environ.get("BREWNET_GPU_CHECK_DEVICE", "cuda")
ITERS = int(os.environ.get("BREWNET_GPU_CHECK_ITERS", "300"))
SUMMARY = Path(os.environ["OUT"]) / "gpu_summary.txt" if os.environ.get("OUT") else REPO / "gpu_check_summary.txt"
GPU_FLAG = ["-gpu", "0"] if DEVICE == "cuda" else []
WORK = Path(tempfile.mkdtemp(prefix="brewnet-gpu-check-"))
lines: list[str] = []          # the summary
failed: list[str] = []


def note(text: str) -> None:
    print(text, flush=True)
    lines.append(text)


def write_summary() -> None:
    verdict = f"FAILED: {', '.join(failed)}" if failed else "all steps passed"
    SUMMARY.write_text("\n".join(lines + [f"verdict: {verdict}", ""]))


def run_step(fn) -> None:
    """Run one check; an exception or a failed assertion marks it failed, the others still run."""
    note(f"\n== {fn.__name__} ({DEVICE})")
    t0 = time.perf_counter()
    try:
        fn()
        result = "PASS"
    except Exception:
        traceback.print_exc()
        note("   " + traceback.format_exc().strip().splitlines()[-1])
        failed.append(fn.__name__)
        result = "FAIL"
    note(f"-- {fn.__name__}: {result} in {time.perf_counter() - t0:.0f} s")
    write_summary()


def sh(args: list[str], timeout: float, cwd: Path = REPO) -> str:
    """Run a command, echo its output, fail on a non-zero status."""
    print("$", " ".join(args), flush=True)
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONUNBUFFERED="1"))
    out = proc.stdout + proc.stderr
    print(out, flush=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:4])} ... exited {proc.returncode}: {out[-500:]}")
    return out


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


# ----- 1. the CUDA tests --------------------------------------------------------------------------
def cuda_tests():
    out = sh([sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "tests/test_cuda.py",
              "tests/distributed/test_data_parallel_training.py::test_two_gpus_with_nccl_equal_one_gpu_of_twice_the_batch"],
             timeout=300)
    tally = [ln for ln in out.splitlines() if re.search(r"\d+ (passed|skipped|failed)", ln)]
    note("   pytest: " + (tally[-1].strip("= ") if tally else "no summary line"))
    if DEVICE == "cuda":
        assert tally and re.search(r"\d+ passed", tally[-1]), "no CUDA test ran"


# ----- 2. golden nets: GPU vs CPU vs Caffe ------------------------------------------------------------
def blobs_of(net, ref, backward: bool) -> dict[str, np.ndarray]:
    """Every blob the recording has: data, parameters after the pass, and with backward the
    diffs and parameter diffs."""
    out = {}
    for key in ref.files:
        kind, _, rest = key.partition("/")
        if kind == "data":
            out[key] = net.blobs[rest].data
        elif backward and kind == "diff":
            out[key] = net.blobs[rest].diff
        elif backward and kind == "pdiff":
            layer, i = rest.split("/")
            out[key] = net.params[layer][int(i)].diff
        elif kind == "param_after":  # e.g. BatchNorm's statistics after a TRAIN pass
            layer, i = rest.split("/")
            out[key] = net.params[layer][int(i)].data
    return {k: np.array(v, dtype=np.float64) for k, v in out.items()}


def rel(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    """The smallest rtol for which |a - b| <= rtol * (|b| + scale) holds everywhere (the suite's
    criterion, tests/numeric.py; scale: the blob's largest magnitude, or its layer's for a
    parameter diff, as tests/test_golden.py takes it)."""
    return float((np.abs(a - b) / (np.abs(b) + max(scale, 1e-30))).max(initial=0.0))


def golden_gpu_vs_cpu():
    import test_golden

    worst_gpu_cpu = worst_caffe = 0.0
    for name in test_golden.LAYER_CASES:
        net_c, ref, backward = test_golden.run_case(name, "cpu")
        net_g, _, _ = test_golden.run_case(name, DEVICE)
        cpu, gpu = blobs_of(net_c, ref, backward), blobs_of(net_g, ref, backward)
        scales = {k: test_golden.layer_scale(ref, "pdiff", k.split("/")[1]) if k.startswith("pdiff/")
                  else float(np.abs(ref[k]).max(initial=0.0)) for k in cpu}
        d_cpu = max(rel(gpu[k], cpu[k], scales[k]) for k in cpu)
        d_caffe = max(rel(gpu[k], ref[k], scales[k]) for k in cpu)
        worst_gpu_cpu, worst_caffe = max(worst_gpu_cpu, d_cpu), max(worst_caffe, d_caffe)
        print(f"   {name:32s} {DEVICE} vs cpu {d_cpu:.1e}   {DEVICE} vs Caffe {d_caffe:.1e}")
    note(f"   {len(test_golden.LAYER_CASES)} golden cases (data, parameters after, diffs, parameter diffs), "
         "largest difference in "
         f"the suite's terms: {DEVICE} vs cpu {worst_gpu_cpu:.2e}, {DEVICE} vs Caffe {worst_caffe:.2e} "
         f"(tolerance {test_golden.RTOL:g})")
    assert worst_gpu_cpu <= test_golden.RTOL and worst_caffe <= test_golden.RTOL


# ----- 3. LeNet-BN trained on the device ---------------------------------------------------------------
def synthetic_lmdbs(root: Path) -> tuple[Path, Path]:
    """10 classes of random 28x28 grey prototypes under noise: 6400 training, 1000 validation images."""
    from brewnet.data.lmdb_io import DatumWriter
    from brewnet.pycaffe.io import array_to_datum

    rng = np.random.default_rng(0)
    prototypes = rng.integers(0, 256, size=(10, 1, 28, 28))
    for name, n in (("train_db", 6400), ("val_db", 1000)):
        with DatumWriter(str(root / name)) as w:
            for _ in range(n):
                label = int(rng.integers(0, 10))
                img = np.clip(prototypes[label] + rng.normal(0, 90, (1, 28, 28)), 0, 255).astype(np.uint8)
                w.put(array_to_datum(img, label))
    return root / "train_db", root / "val_db"


def lenet_bn_job(train_db: Path, val_db: Path, n_val: int) -> Path:
    """The bundled LeNet-BN prototxts with these LMDBs and max_iter = test_interval = snapshot = ITERS."""
    models = REPO / "brewnet" / "models"
    net = (models / "lenet_bn_fashion_train_val.prototxt").read_text()
    net = net.replace('source: "train_db"', f'source: "{train_db}"').replace('source: "val_db"', f'source: "{val_db}"')
    (WORK / "train_val.prototxt").write_text(net)
    solver = (models / "lenet_bn_fashion_solver.prototxt").read_text()
    for key, value in (("net", '"train_val.prototxt"'), ("test_iter", n_val // 100), ("test_interval", ITERS),
                       ("max_iter", ITERS), ("snapshot", ITERS), ("snapshot_prefix", '"lenet_bn"'), ("display", 100)):
        solver, n = re.subn(rf"^{key}: .*$", f"{key}: {value}", solver, flags=re.M)
        assert n == 1, f"{key} not in the bundled solver"
    (WORK / "solver.prototxt").write_text(solver)
    return WORK / "solver.prototxt"


def score(weights: Path, device: str, batches: int) -> tuple[int, float]:
    """(correct count, mean loss) of the TEST net over ``batches`` validation batches of 100."""
    net = brewnet.Net(str(WORK / "train_val.prototxt"), brewnet.TEST, weights=str(weights), device=device)
    correct, losses = 0, []
    for _ in range(batches):
        out = net.forward()
        correct += round(float(np.asarray(out["accuracy"]).reshape(-1)[0]) * 100)
        losses.append(float(np.asarray(out["loss"]).reshape(-1)[0]))
    return correct, float(np.mean(losses))


def train_lenet_bn():
    from brewnet.data.lmdb_io import count_records

    kit = REPO / ".gpu_check" / "fashion"
    if (kit / "train_db").is_dir() and (kit / "val_db").is_dir():
        train_db, val_db, data = kit / "train_db", kit / "val_db", "Fashion-MNIST subset (.gpu_check/fashion)"
    else:
        train_db, val_db = synthetic_lmdbs(WORK)
        data = "synthetic prototypes (no .gpu_check/fashion carried)"
    n_train, n_val = count_records(str(train_db)), count_records(str(val_db))
    solver = lenet_bn_job(train_db, val_db, n_val)
    t0 = time.perf_counter()
    out = sh([sys.executable, "-m", "brewnet", "train", "-solver", str(solver), *GPU_FLAG], timeout=300, cwd=WORK)
    wall = time.perf_counter() - t0
    speeds = re.findall(r"Iteration \d+ \(([\d.]+) iter/s", out)
    records = [json.loads(x) for x in (WORK / "lenet_bn_metrics.jsonl").read_text().splitlines()]
    logged = {r["name"]: r["value"] for r in records if r["phase"] == "test" and r["iter"] == ITERS}
    batches = n_val // 100
    note(f"   data: {data}, {n_train} training / {n_val} validation images")
    note(f"   {ITERS} iterations of batch 64 in {wall:.1f} s with start-up ({speeds[-1] if speeds else '?'} iter/s "
         f"at the last display); validation accuracy {logged['accuracy']:.4f}, loss {logged['loss']:.4f}")
    snapshot = WORK / f"lenet_bn_iter_{ITERS}.caffemodel"
    dev_count, dev_loss = score(snapshot, DEVICE, batches)
    cpu_count, cpu_loss = score(snapshot, "cpu", batches)
    note(f"   the snapshot scored again: {DEVICE} {dev_count}/{batches * 100} (loss {dev_loss:.6f}), "
         f"cpu {cpu_count}/{batches * 100} (loss {cpu_loss:.6f}); logged {round(logged['accuracy'] * batches * 100)}")
    assert logged["accuracy"] > 0.5, "LeNet-BN did not learn"
    assert dev_count == round(logged["accuracy"] * batches * 100), "the logged accuracy is not the snapshot's"
    assert abs(dev_loss - cpu_loss) <= 1e-4 * max(1.0, cpu_loss), f"{DEVICE} and cpu disagree on the snapshot's loss"


# ----- 4. brewnet time vs hand-written PyTorch -----------------------------------------------------------
def time_vs_pytorch():
    import torch.nn.functional as F

    import bench_train_step as bench

    batch, n = 64, 50
    model_path = WORK / "lenet_bn_time.prototxt"
    model_path.write_text(bench.lenet_bn_prototxt(batch))
    out = sh([sys.executable, "-m", "brewnet", "time", "-model", str(model_path), "-iterations", str(n), *GPU_FLAG],
             timeout=180)
    ours = float(re.search(r"Average Forward-Backward: ([\d.e+-]+) ms", out).group(1))
    # the same forward + backward, hand-written, timed as `brewnet time` times it (synchronised)
    model = bench.LeNetBN().to(DEVICE)
    x = torch.randn(batch, 1, 28, 28, device=DEVICE)
    y = torch.randint(0, 10, (batch,), device=DEVICE)
    for _ in range(10):
        F.cross_entropy(model(x), y).backward()
    model.zero_grad()
    sync()
    t0 = time.perf_counter()
    for _ in range(n):
        F.cross_entropy(model(x), y).backward()
        sync()
        model.zero_grad()
    theirs = (time.perf_counter() - t0) * 1e3 / n
    note(f"   LeNet-BN batch {batch}, forward + backward: brewnet time {ours:.3f} ms, hand-written PyTorch "
         f"{theirs:.3f} ms ({theirs / ours:.2f}x; above 1: brewnet faster)")
    repeats, steps = ("5", "20") if DEVICE == "cuda" else ("2", "2")
    out = sh([sys.executable, "benchmarks/bench_train_step.py", "--device", DEVICE, "--repeats", repeats,
              "--steps", steps], timeout=240)
    note("   whole SGD steps (benchmarks/bench_train_step.py):")
    for line in out.splitlines():
        if line.startswith(("  ", "lenet_bn", "resnet_small")):
            note("   " + line)


def main() -> int:
    note(f"brewnet GPU check, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; device {DEVICE}; torch {torch.__version__} "
         f"(CUDA {torch.version.cuda}); python {sys.version.split()[0]}; "
         f"{os.environ.get('GPU_CHECK_SETUP', 'run without scripts/gpu_check.sh')}")
    if DEVICE == "cuda":
        if not torch.cuda.is_available():
            note("CUDA is not available to torch (BREWNET_GPU_CHECK_DEVICE=cpu tries the script on the CPU)")
            failed.append("cuda")
            write_summary()
            return 1
        p = torch.cuda.get_device_properties(0)
        note(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} device(s)")
    for check in (cuda_tests, golden_gpu_vs_cpu, train_lenet_bn, time_vs_pytorch):
        run_step(check)
    print(f"\nsummary written to {SUMMARY}")
    if failed:
        print(f"GPU CHECK FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("GPU CHECK PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
