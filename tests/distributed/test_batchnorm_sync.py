"""Synchronised BatchNorm over 2 gloo processes, in float64: outputs, input gradients, γ/β
gradients and running statistics equal one process's over the global batch (BVLC, BVLC fused
with Scale, NVCaffe with scale/bias); without synchronisation the ranks' statistics differ."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brewnet.distributed.launch import free_port
from tests.distributed import bn_ranks

ROOT = Path(__file__).resolve().parents[2]


def run_ranks(tmp_path: Path, mode: str, world: int = 2) -> list[dict]:
    port = free_port()
    procs = []
    for r in range(world):
        env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.distributed.bn_ranks",
                                       str(tmp_path / mode), mode], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        out = p.communicate(timeout=120)[0]
        assert p.returncode == 0, out[-3000:]
    return [dict(np.load(tmp_path / f"{mode}.rank{r}.npz")) for r in range(world)]


@pytest.fixture(scope="module")
def single():
    return bn_ranks.run(0, 1, sync=False)


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    return run_ranks(tmp_path_factory.mktemp("bnsync"), "sync")


@pytest.mark.parametrize("variant", list(bn_ranks.VARIANTS))
def test_synchronised_equals_global_batch(single, synced, variant):
    per = bn_ranks.GLOBAL[0] // 2
    for r, got in enumerate(synced):
        part = slice(r * per, (r + 1) * per)
        np.testing.assert_allclose(got[f"{variant}.y"], single[f"{variant}.y"][part], rtol=1e-10, atol=1e-12)
        # the gradient through the shared statistics: every rank's loss reaches every input
        np.testing.assert_allclose(got[f"{variant}.dx"], single[f"{variant}.dx"][part], rtol=1e-9, atol=1e-12)
        for stat in ("mean", "var", "factor"):  # identical running statistics on every rank
            np.testing.assert_allclose(got[f"{variant}.{stat}"], single[f"{variant}.{stat}"], rtol=1e-10,
                                       atol=1e-12)
    if variant != "bvlc":  # γ/β gradients: the ranks' sum is the global batch's
        for g in ("dgamma", "dbeta"):
            np.testing.assert_allclose(synced[0][f"{variant}.{g}"] + synced[1][f"{variant}.{g}"],
                                       single[f"{variant}.{g}"], rtol=1e-10, atol=1e-12)


def test_without_synchronisation_the_ranks_differ(tmp_path):
    local = run_ranks(tmp_path, "local")
    for variant in bn_ranks.VARIANTS:
        assert not np.allclose(local[0][f"{variant}.mean"], local[1][f"{variant}.mean"])
        assert not np.allclose(local[0][f"{variant}.var"], local[1][f"{variant}.var"])


def test_synchronised_gradient_matches_finite_differences(single):
    """The single-process reference itself: float64 central differences of sum(y·R)."""
    import torch

    from tests.layer_harness import single_layer_net

    x_all, r_all, _, _ = bn_ranks.global_batch()
    net = single_layer_net('type: "BatchNorm"', {"x": bn_ranks.GLOBAL}, phase="TRAIN")
    bn = net.layer_dict["l"]
    bn.update_statistics = False

    def f(x):
        return float((bn.forward(torch.from_numpy(x)) * torch.from_numpy(r_all)).sum())
    rng = np.random.default_rng(0)
    for _ in range(6):
        idx = tuple(int(rng.integers(0, s)) for s in bn_ranks.GLOBAL)
        e = np.zeros_like(x_all)
        e[idx] = 1e-6
        fd = (f(x_all + e) - f(x_all - e)) / 2e-6
        assert abs(fd - single["bvlc.dx"][idx]) < 1e-6 * max(1.0, abs(fd))


def test_broadcast_gives_every_rank_rank_0s_weights(tmp_path):
    """float64 weights, BatchNorm statistics and NVCaffe's average weight, all from rank 0."""
    r0, r1 = run_ranks(tmp_path, "broadcast")
    names = sorted(k[len("after."):] for k in r0 if k.startswith("after."))
    assert len(names) == 5  # mean, variance, correction, scale, bias
    assert any(not np.array_equal(r0[f"before.{n}"], r1[f"before.{n}"]) for n in names)
    for n in names:
        assert r0[f"after.{n}"].dtype == np.float64
        np.testing.assert_array_equal(r1[f"after.{n}"], r0[f"before.{n}"])
        np.testing.assert_array_equal(r0[f"after.{n}"], r0[f"before.{n}"])
    assert float(r0["weight_sum"]) == float(r1["weight_sum"]) == 3.0
