"""``brewnet train``: train a network from a solver file, like ``caffe train``.

    brewnet train -solver S [-weights a.caffemodel[,b...]] [-snapshot s.solverstate]
                  [-gpu 0|0,1|all] [-cpu_procs K] [-bn_sync all|none|bn1,bn2]
                  [-dist_timeout S] [-hang_timeout S] [-iterations N] [-level L] [-stage a,b]
                  [-sigint_effect stop|snapshot|none] [-sighup_effect stop|snapshot|none]
                  [-metrics FILE] [-bn_recalibrate N [-bn_compare on|off]] [-augment FILE]

The log is Caffe's (``Iteration 100, lr = 0.01``, ``Iteration 100 (...), loss = 0.53``,
``Iteration 100, Testing net (#0)``, ``Test net output #0: accuracy = 0.87``); the same numbers go
to ``<snapshot_prefix>_metrics.jsonl`` as JSON lines (see brewnet.reporting.metrics).  A progress bar is
drawn on stderr when it is a terminal, and progress lines go to ``$BREWNET_PROGRESS_FILE`` when
it is set (brewnet.reporting.progress_file: task "train", done = iteration, total = max_iter).

Data-parallel training (brewnet.distributed): ``-gpu 0,1`` (or ``all``) starts one process per
GPU, ``-cpu_procs K`` K CPU processes (gloo); ``torchrun --nnodes N --nproc-per-node M -m brewnet
train -solver S`` does the same across machines (``-gpu all`` there: one GPU per local rank).  As
in Caffe each process takes a batch of the prototxt's ``batch_size`` (rank r the r-th slice of
each global batch), so the effective batch is batch × processes; BatchNorm statistics are
reduced over all processes (``-bn_sync``); rank 0 tests, logs, writes metrics and snapshots.

``-augment FILE`` (brewnet's addition; brewnet.data.augment): the TRAIN-phase Data and ImageData
layers augment each decoded image before transform_param as the JSON file says (DIGITS' flips,
quarter turns, rotation, scale, noise, contrast and HSV shifts); test phases are not augmented.

SIGINT and SIGTERM follow ``-sigint_effect`` (default ``stop``: finish the current iteration,
write a snapshot and exit 0); SIGHUP follows ``-sighup_effect`` (default ``snapshot``: write a
snapshot and go on).  A second SIGINT while a stop is pending exits at once.
"""
from __future__ import annotations

import logging
import os
import signal
import sys

from ..errors import BrewnetError
from ..reporting.progress_bar import TerminalProgress
from .shared_flags import add_speed_flags, apply_speed_flags, flag, gpu_ids_from_flag

log = logging.getLogger("brewnet")

EFFECTS = ("stop", "snapshot", "none")


def add_arguments(parser) -> None:
    flag(parser, "solver", default="", help="the solver prototxt")
    flag(parser, "weights", default="", help="caffemodel(s) to fine-tune from, comma separated")
    flag(parser, "snapshot", default="", help="a .solverstate to resume from")
    flag(parser, "gpu", default="",
         help="GPUs: an id, a comma separated list or 'all' (several: one process each, data-parallel); "
              "empty for the CPU")
    flag(parser, "cpu_procs", type=int, default=1, metavar="K",
         help="train data-parallel on K CPU processes (gloo); default 1")
    flag(parser, "bn_sync", default="all", metavar="all|none|LAYERS",
         help="data-parallel: BatchNorm layers whose batch statistics are reduced over all processes: "
              "all (default), none, or comma separated layer names")
    flag(parser, "dist_timeout", type=float, default=1800.0, metavar="SECONDS",
         help="data-parallel: a collective that waits this long for a rank ends the job (default 1800, "
              "PyTorch's; rank 0's test phases must fit in it)")
    flag(parser, "hang_timeout", type=float, default=120.0, metavar="SECONDS",
         help="data-parallel with -gpu 0,1 / -cpu_procs: a rank showing no sign of life (heartbeat) "
              "this long ends the job (default 120)")
    flag(parser, "iterations", type=int, default=None, help="override the solver's max_iter")
    flag(parser, "level", type=int, default=0, help="NetState level of the train net")
    flag(parser, "stage", default="", help="NetState stages of the train net, comma separated")
    flag(parser, "sigint_effect", default="stop", choices=EFFECTS,
         help="on SIGINT and SIGTERM: stop (snapshot, then exit), snapshot (and go on), none")
    flag(parser, "sighup_effect", default="snapshot", choices=EFFECTS, help="on SIGHUP")
    flag(parser, "task_metrics", default="auto", choices=("auto", "none"),
         help="test-phase segmentation (mean IoU, pixel accuracy, IoU per class) and regression (RMSE, "
              "MAE) metrics, logged and in the metrics file (default auto)")
    flag(parser, "metrics", default="", help="metrics file (default <snapshot_prefix>_metrics.jsonl)")
    add_speed_flags(parser)
    flag(parser, "bn_recalibrate", type=int, default=0, metavar="N",
         help="before each test and snapshot, re-estimate BatchNorm statistics over N training "
              "batches (precise BN; default 0: Caffe's moving averages as they are)")
    flag(parser, "bn_compare", default="on", choices=("on", "off"),
         help="with -bn_recalibrate: also test with the moving averages before re-estimating them, "
              "metrics phase test_moving_bn (default on: both numbers at every test)")
    flag(parser, "augment", default="", metavar="FILE",
         help="augment the TRAIN-phase Data/ImageData images as the JSON FILE says (flip, quad_rot, "
              "rotation, scale, noise, contrast, hsv_h/s/v; brewnet.data.augment); default none")


class _Signals:
    """Caffe's SignalHandler: signals become requested solver actions."""

    def __init__(self, sigint_effect: str, sighup_effect: str):
        self.effects = {signal.SIGINT: sigint_effect, signal.SIGTERM: sigint_effect}
        if hasattr(signal, "SIGHUP"):
            self.effects[signal.SIGHUP] = sighup_effect
        self.pending: list[str] = []
        self.stop_pending = False
        self.old = {}

    def __enter__(self):
        for sig in self.effects:
            self.old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, h in self.old.items():
            signal.signal(sig, h)

    def _handle(self, signum, frame):
        effect = self.effects.get(signum, "none")
        if signum == signal.SIGINT and self.stop_pending:
            raise KeyboardInterrupt  # a second Ctrl-C: leave now
        if effect == "none":
            return
        if effect == "stop":
            self.stop_pending = True
            log.info("Received %s: stopping after this iteration (a snapshot will be written)",
                     signal.Signals(signum).name)
        self.pending.append(effect)

    def action(self) -> str:
        if not self.pending:
            return "none"
        return self.pending.pop(0)


class _ProgressLines:
    """``$BREWNET_PROGRESS_FILE`` lines for the solver's progress callback: task "train", done =
    the iteration, total = max_iter (brewnet.reporting.progress_file throttles them); chains to the
    terminal bar when there is one."""

    def __init__(self, file, max_iter: int, then=None):
        self.file = file
        self.max_iter = int(max_iter)
        self.then = then

    def __call__(self, it, start, stop) -> None:
        self.file.update("train", it, self.max_iter)
        if self.then is not None:
            self.then(it, start, stop)

    def close(self) -> None:
        self.file.close()


def _warn_about_batchnorm_pitfalls(solver) -> None:
    """`brewnet lint`'s BatchNorm findings for the train net, as warnings before training starts
    (the user may mean them; nothing is changed)."""
    from ..batchnorm.lint import lint
    from ..proto import caffe_pb2

    findings = lint(solver.net.net_param, phase=caffe_pb2.TRAIN, max_iter=solver.param.max_iter)
    for f in findings:
        log.warning("%s %s layer '%s': %s (fix: %s)", f.rule, f.name, f.layer, f.message, f.fix)
    if any(f.rule == "BN008" for f in findings) and not solver.bn_recalibrate:
        log.warning("or keep the file as it is and train with -bn_recalibrate 100: BatchNorm "
                    "statistics are then re-estimated before each test and snapshot")


def run(args) -> int:
    from ..distributed.launch import start_heartbeat
    start_heartbeat()  # a rank of `-cpu_procs` / `-gpu 0,1`: its launcher watches it from now on

    import torch

    from .. import distributed, formats, runtime
    from ..data.augment import Augmentation, set_train_augmentation

    if not args.solver:
        raise BrewnetError("train needs a solver: brewnet train -solver solver.prototxt")
    if args.snapshot and args.weights:
        raise BrewnetError("give a snapshot to resume training or weights to fine-tune, not both")
    if not os.path.exists(args.solver):
        raise BrewnetError(f"solver file not found: {args.solver}")
    param = formats.read_solver(args.solver)
    augmentation = Augmentation.load(args.augment) if args.augment else None
    if args.iterations is not None:
        if args.iterations < 0:
            raise BrewnetError(f"-iterations must be >= 0, got {args.iterations}")
        param.max_iter = args.iterations
    if args.level:
        param.train_state.level = args.level
    for s in filter(None, (x.strip() for x in args.stage.split(","))):
        param.train_state.stage.append(s)
    gpu = args.gpu
    if not gpu and param.HasField("solver_mode") and param.solver_mode == param.GPU:
        if torch.cuda.is_available():
            gpu = "all" if distributed.env_world() else str(param.device_id)
        else:
            log.warning("the solver asks for solver_mode: GPU but CUDA is not available; using the CPU")
    gpu_ids = gpu_ids_from_flag(gpu)
    if args.cpu_procs < 1:
        raise BrewnetError(f"-cpu_procs must be at least 1, got {args.cpu_procs}")
    if gpu_ids and args.cpu_procs > 1:
        raise BrewnetError("give -gpu or -cpu_procs, not both")
    world_env = distributed.env_world()
    if world_env is None and max(len(gpu_ids), args.cpu_procs) > 1:
        from ..distributed.launch import run_ranks
        return run_ranks(list(args.argv), max(len(gpu_ids), args.cpu_procs), hang_timeout_s=args.hang_timeout)
    device = _rank_device(gpu_ids, world_env)
    if device.type == "cuda":
        runtime.set_mode_gpu()
        runtime.set_device(device.index or 0)
    else:
        runtime.set_mode_cpu()
    rank = 0
    if world_env is not None and world_env[1] > 1:
        if world_env[0] != 0:  # rank 0 logs; the others say only what goes wrong
            logging.getLogger("brewnet").setLevel(logging.WARNING)
        _share_cpu_threads(device)
        distributed.init_from_env(device, args.dist_timeout)
        rank = distributed.rank()
    log.info("Using %s", "GPU " + str(device.index) if device.type == "cuda" else "the CPU")
    set_train_augmentation(augmentation)
    try:
        return _train(args, param, device, rank)
    finally:
        set_train_augmentation(None)
        distributed.shutdown()


def _rank_device(gpu_ids: list[int], world_env):
    """This process's device: its local rank's GPU under torchrun or the launcher, else the first."""
    import torch

    if not gpu_ids:
        return torch.device("cpu")
    local, local_world = 0, 1
    if world_env is not None:
        local = world_env[2]
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_env[1]))
    if len(gpu_ids) == 1 and local_world > 1:
        raise BrewnetError(f"{local_world} processes on this machine but one GPU given: give one GPU per "
                           "process (-gpu 0,1,... or -gpu all)")
    if local >= len(gpu_ids):
        raise BrewnetError(f"local rank {local} has no GPU: -gpu lists {len(gpu_ids)} "
                           f"({','.join(map(str, gpu_ids))})")
    torch.cuda.set_device(gpu_ids[local])
    return torch.device(f"cuda:{gpu_ids[local]}")


def _share_cpu_threads(device) -> None:
    """CPU ranks on one machine share its cores instead of each taking them all."""
    import torch

    if device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, local_world)))


def _train(args, param, device, rank: int) -> int:
    import torch

    from ..reporting.metrics import MetricsWriter
    from ..solver import solver_class
    from .. import distributed
    from ..solver.distributed import DataParallel

    solver = solver_class(param.type or "SGD")(args.solver, device=device, param=param)
    apply_speed_flags([solver.net, *solver.test_nets], args)
    solver.bn_recalibrate = args.bn_recalibrate
    solver.task_metrics = args.task_metrics
    solver.bn_compare = args.bn_compare == "on"
    if rank == 0:  # once per job
        _warn_about_batchnorm_pitfalls(solver)

    weights = [w.strip() for w in args.weights.split(",") if w.strip()]
    for w in weights:
        solver.copy_weights(w)
    if distributed.active():
        policy = args.bn_sync if args.bn_sync in ("all", "none") else \
            [n.strip() for n in args.bn_sync.split(",") if n.strip()]
        parallel = DataParallel.attach(solver, reduce_in_step=True, bn_sync=policy)
        parallel.broadcast_parameters()  # every rank starts from rank 0's weights
        if solver.param.random_seed >= 0:  # Dropout: one stream per rank
            torch.manual_seed(int(solver.param.random_seed) + rank)

    metrics = progress = lines = None
    if rank == 0:  # metrics, progress and snapshots come from rank 0 alone
        metrics_path = args.metrics or f"{solver.param.snapshot_prefix}_metrics.jsonl"
        metrics = MetricsWriter(metrics_path, truncate=not args.snapshot)
        solver.metrics = metrics
        log.info("Metrics (JSON lines): %s", metrics_path)
    if rank == 0 and sys.stderr.isatty():
        progress = TerminalProgress(sys.stderr)
        solver.progress = progress
        for h in logging.getLogger().handlers:
            h.addFilter(progress.filter)
    from ..reporting.progress_file import from_env
    pfile = from_env() if rank == 0 else None
    if pfile is not None:
        lines = _ProgressLines(pfile, solver.param.max_iter, then=progress)
        solver.progress = lines
    try:
        with _Signals(args.sigint_effect, args.sighup_effect) as sigs:
            solver.set_action_function(sigs.action)
            if args.snapshot:
                log.info("Resuming from %s", args.snapshot)
            solver.solve(args.snapshot or None)
    finally:
        if metrics is not None:
            metrics.close()
        if lines is not None:
            lines.close()
        if progress is not None:
            progress.close()
            for h in logging.getLogger().handlers:
                h.removeFilter(progress.filter)
    return 0
