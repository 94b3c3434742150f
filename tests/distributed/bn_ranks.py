"""One rank of the synchronised-BatchNorm check (run by test_batchnorm_sync.py as
``python -m tests.distributed.bn_ranks OUT sync|local|broadcast`` under torchrun's environment
variables; ``broadcast``: the weights broadcast from rank 0).

Every rank takes its slice of one float64 global batch, runs a TRAIN forward of three BatchNorm
variants (BVLC alone, BVLC fused with a Scale's γ/β, NVCaffe with scale/bias) and the backward of
sum(y · R), and saves its outputs, input and parameter gradients and running statistics."""
from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist

VARIANTS = {
    "bvlc": "",
    "bvlc_fused": "",
    "nvcaffe": "batch_norm_param { scale_bias: true moving_average_fraction: 0.9 }",
}
GLOBAL = (8, 3, 4, 5)


def global_batch():
    rng = np.random.default_rng(42)
    x = rng.standard_normal(GLOBAL) * np.array([1.0, 3.0, 0.5]).reshape(1, 3, 1, 1) + \
        np.array([0.0, 5.0, -2.0]).reshape(1, 3, 1, 1)
    weights = rng.standard_normal(GLOBAL)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    return x, weights, gamma, beta


def run(rank: int, world: int, sync: bool) -> dict:
    from tests.layer_harness import single_layer_net

    x_all, r_all, gamma, beta = global_batch()
    per = GLOBAL[0] // world
    part = slice(rank * per, (rank + 1) * per)
    out = {}
    for name, extra in VARIANTS.items():
        shape = (per,) + GLOBAL[1:]
        net = single_layer_net(f'type: "BatchNorm" {extra}', {"x": shape}, phase="TRAIN")
        bn = net.layer_dict["l"]
        bn.sync_statistics = sync
        if name == "nvcaffe":
            with torch.no_grad():
                bn.weight.copy_(torch.from_numpy(gamma))
                bn.bias.copy_(torch.from_numpy(beta))
        for step in range(2):  # the second forward sees statistics updated once
            x = torch.from_numpy(x_all[part]).requires_grad_(True)
            affine = None
            if name == "bvlc_fused":
                g = torch.from_numpy(gamma).requires_grad_(True)
                b = torch.from_numpy(beta).requires_grad_(True)
                affine = (g, b)
            for p in bn.parameters():
                p.grad = None
            y = bn.forward(x, affine=affine) if affine is not None else bn.forward(x)
            (y * torch.from_numpy(r_all[part])).sum().backward()
        out[f"{name}.y"] = y.detach().numpy()
        out[f"{name}.dx"] = x.grad.numpy()
        if name == "bvlc_fused":
            out[f"{name}.dgamma"], out[f"{name}.dbeta"] = g.grad.numpy(), b.grad.numpy()
        if name == "nvcaffe":
            out[f"{name}.dgamma"], out[f"{name}.dbeta"] = bn.weight.grad.numpy(), bn.bias.grad.numpy()
        out[f"{name}.mean"] = bn.running_mean.detach().numpy().copy()
        out[f"{name}.var"] = bn.running_var.detach().numpy().copy()
        out[f"{name}.factor"] = bn.factor.detach().numpy().copy()
    return out


def broadcast(rank: int) -> dict:
    """Every rank fills its net differently; DataParallel.broadcast_parameters gives rank 0's."""
    import types

    import brewnet
    from brewnet.solver.distributed import DataParallel
    from tests.layer_harness import single_layer_net

    brewnet.set_random_seed(100 + rank)
    net = single_layer_net('type: "BatchNorm" batch_norm_param { scale_bias: true '
                           'scale_filler { type: "gaussian" } bias_filler { type: "gaussian" } }',
                           {"x": (4, 3)}, phase="TRAIN")
    bn = net.layer_dict["l"]
    bn.weight_sum = 3.0 + rank
    with torch.no_grad():
        bn.running_mean.fill_(float(rank))
    before = {f"before.{i}": e.tensor.detach().numpy().copy() for i, e in enumerate(net.caffe_params)}
    DataParallel(types.SimpleNamespace(net=net), reduce_in_step=True).broadcast_parameters()
    after = {f"after.{i}": e.tensor.detach().numpy().copy() for i, e in enumerate(net.caffe_params)}
    return {**before, **after, "weight_sum": np.array(bn.weight_sum)}


def main() -> None:
    path, mode = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo", init_method="env://")
    try:
        result = broadcast(dist.get_rank()) if mode == "broadcast" else \
            run(dist.get_rank(), dist.get_world_size(), mode == "sync")
        np.savez(f"{path}.rank{dist.get_rank()}.npz", **result)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
