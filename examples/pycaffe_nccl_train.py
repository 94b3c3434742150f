#!/usr/bin/env python3
"""Data-parallel training from a Python script with pycaffe's multi-process API, ``caffe.NCCL``:
one process per device, each training on its slice of every global batch.

    python examples/pycaffe_nccl_train.py --solver solver.prototxt --gpus 0 1
    python examples/pycaffe_nccl_train.py --solver solver.prototxt --cpu 2
    python examples/pycaffe_nccl_train.py --solver solver.prototxt --gpus 0 1 \\
        --snapshot snap_iter_1000.solverstate --timing

How the pieces fit: this process makes a session id (``caffe.NCCL.new_uid()``) and starts the
ranks; each rank says how many solvers there are and which one it is, builds its solver,
joins the session (``caffe.NCCL(solver, uid)``), takes rank 0's weights (``bcast()``) and lets
the NCCL object average the gradients before every update (a solver callback).  Rank 0 tests,
logs and snapshots.  ``--timing`` has rank 0 log, every ``display`` iterations, how long each
layer's forward and backward took, the whole iteration and the gradient all-reduce.

The same script trains on CPU processes (gloo): ``--cpu N`` instead of ``--gpus``.  The ranks
share one machine (the session id names a file in its temporary directory); across machines,
use ``torchrun`` with ``brewnet train``.  If a rank fails, the others are stopped and the script
exits with that rank's status.
"""
from __future__ import annotations

import argparse
import multiprocessing
import sys
from multiprocessing.connection import wait

import brewnet as caffe


class StepTimes:
    """Rank 0's timers: per layer (forward and backward, from the net's layer callbacks), the
    iteration up to its gradients, and the all-reduce (between two solver callbacks that
    bracket the NCCL one)."""

    def __init__(self, solver, nccl):
        self.solver = solver
        net = solver.net
        self.names = list(net._layer_names)
        self.forward = [caffe.Timer() for _ in self.names]
        self.backward = [caffe.Timer() for _ in self.names]
        self.compute = caffe.Timer()
        self.allreduce = caffe.Timer()
        net.before_forward(lambda i: self.forward[i].start())
        net.after_forward(lambda i: self.forward[i].stop())
        net.before_backward(lambda i: self.backward[i].start())
        net.after_backward(lambda i: self.backward[i].stop())
        # callbacks run in the order they were added: compute ends and the all-reduce timer
        # starts just before nccl averages the gradients, and stops just after
        solver.add_callback(self.compute.start, self._gradients_computed)
        solver.add_callback(nccl)
        solver.add_callback(lambda: None, self._gradients_averaged)

    def _gradients_computed(self) -> None:
        self.compute.stop()
        self.allreduce.start()

    def _gradients_averaged(self) -> None:
        self.allreduce.stop()
        every = self.solver.param.display
        if every and self.solver.iter % every == 0:
            caffe.log(self.report())

    def report(self) -> str:
        width = max(len(n) for n in self.names)
        lines = [f"Iteration {self.solver.iter}, rank 0 times (ms):",
                 f"  {'layer':<{width}}  {'forward':>9}  {'backward':>9}"]
        for name, fwd, bwd in zip(self.names, self.forward, self.backward):
            lines.append(f"  {name:<{width}}  {fwd.ms:9.3f}  {bwd.ms:9.3f}")
        lines.append(f"  forward + backward: {self.compute.ms:.3f}")
        lines.append(f"  gradient all-reduce: {self.allreduce.ms:.3f}")
        return "\n".join(lines)


def run_rank(rank: int, count: int, gpus: list[int] | None, args: argparse.Namespace, uid: bytes) -> None:
    """One rank's training, in its own process."""
    caffe.init_log()
    if gpus is None:
        caffe.set_mode_cpu()
    else:
        caffe.set_device(gpus[rank])
        caffe.set_mode_gpu()
    caffe.set_solver_count(count)
    caffe.set_solver_rank(rank)
    caffe.set_multiprocess(True)

    solver = caffe.get_solver(args.solver)  # the solver type the file names (SGD, Adam, ...)
    if args.snapshot:
        solver.restore(args.snapshot)
    nccl = caffe.NCCL(solver, uid)
    nccl.bcast()
    if args.timing and rank == 0:
        StepTimes(solver, nccl)
    else:
        solver.add_callback(nccl)
    if solver.param.layer_wise_reduce:
        solver.net.after_backward(nccl)
    solver.step(solver.param.max_iter - solver.iter)  # up to max_iter, also after a restore


def train(args: argparse.Namespace) -> int:
    gpus = None if args.cpu else args.gpus
    count = args.cpu or len(gpus)
    uid = caffe.NCCL.new_uid()
    caffe.init_log()
    caffe.log(f"Training on {count} CPU processes" if gpus is None else f"Training on GPUs {gpus}")
    # "spawn": every rank starts a fresh interpreter, so no CUDA or thread state is inherited
    context = multiprocessing.get_context("spawn")
    ranks = [context.Process(target=run_rank, args=(rank, count, gpus, args, uid), name=f"rank {rank}")
             for rank in range(count)]
    for p in ranks:
        p.start()
    running = list(ranks)
    status = 0
    while running:
        for sentinel in wait([p.sentinel for p in running]):
            p = next(p for p in running if p.sentinel == sentinel)
            p.join()
            running.remove(p)
            if p.exitcode != 0 and status == 0:
                status = p.exitcode if p.exitcode > 0 else 1
                caffe.log(f"{p.name} failed (exit status {p.exitcode}); stopping the others")
                for other in running:
                    other.terminate()
    return status


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--solver", required=True, help="the solver prototxt")
    parser.add_argument("--snapshot", help="a .solverstate to resume from")
    devices = parser.add_mutually_exclusive_group()
    devices.add_argument("--gpus", type=int, nargs="+", default=[0], help="GPU ids, one rank each")
    devices.add_argument("--cpu", type=int, metavar="N", help="train on N CPU processes instead")
    parser.add_argument("--timing", action="store_true",
                        help="log per-layer and all-reduce times on rank 0")
    args = parser.parse_args(argv)
    if args.cpu is not None and args.cpu < 1:
        parser.error("--cpu needs at least 1 process")
    return args


if __name__ == "__main__":
    sys.exit(train(parse_args()))
