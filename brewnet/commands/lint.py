"""brewnet lint: BatchNorm and deploy pitfalls in a prototxt (rules in brewnet/batchnorm/lint.py).

Prints one finding per problem (file:line, severity, rule id, layer, message, fix); exits 0 when
nothing is found, 1 when something is.  ``--fix OUT`` writes a corrected prototxt (comments and
formatting are not kept; rules without a mechanical fix are left for you).
"""
from __future__ import annotations

from pathlib import Path

from .shared_flags import flag



def add_arguments(p) -> None:
    p.add_argument("model", help="network prototxt (train_val or deploy)")
    flag(p, "phase", choices=("TRAIN", "TEST"), help="lint only the layers of this phase")
    flag(p, "fix", metavar="OUT", help="write a corrected prototxt to OUT")
    flag(p, "max-iter", type=int, help="planned training iterations (for BN008)")
    flag(p, "solver", help="solver prototxt: max_iter is taken from it")
    flag(p, "target", choices=("bvlc", "nvcaffe", "nvcaffe-0.14"),
         help="the Caffe the net is meant for (default: judged from the prototxt)")
    flag(p, "weights", help="a caffemodel for this net: BN010 names the BatchNorm layouts it holds "
                            "(e.g. NVCaffe scale/bias the prototxt leaves implicit)")
    flag(p, "deploy", help="the deploy prototxt that goes with this train_val (BN009; default: "
                           "deploy.prototxt beside the model, as DIGITS lays jobs out)")


def _deploy_beside(model: str) -> str | None:
    """deploy.prototxt in the model's folder, unless the model is that file."""
    candidate = Path(model).resolve().with_name("deploy.prototxt")
    if candidate.is_file() and candidate != Path(model).resolve():
        return str(candidate)
    return None


def run(args) -> int:
    from .. import formats
    from ..proto import caffe_pb2
    from ..batchnorm.lint import apply_fixes, lint
    text = Path(args.model).read_text(encoding="utf-8", errors="replace")
    net = formats.read_net(args.model)
    max_iter = args.max_iter
    if max_iter is None and args.solver:
        max_iter = formats.read_solver(args.solver).max_iter or None
    phase = None if args.phase is None else getattr(caffe_pb2, args.phase)
    deploy_path = args.deploy or _deploy_beside(args.model)
    deploy = formats.read_net(deploy_path) if deploy_path else None
    if deploy_path and not args.deploy:
        print(f"(deploy net for BN009: {deploy_path})")
    weights = formats.read_caffemodel(args.weights) if args.weights else None
    findings = lint(net, text, phase=phase, max_iter=max_iter, target=args.target, deploy=deploy,
                    weights=weights)
    for f in findings:
        print(f.format(args.model))
    counts = {s: sum(f.severity == s for f in findings) for s in ("error", "warning", "info")}
    if findings:
        print(f"{len(findings)} finding(s): {counts['error']} error(s), {counts['warning']} warning(s), "
              f"{counts['info']} info")
    else:
        print(f"{args.model}: no findings")
    if args.fix:
        fixed, n = apply_fixes(net, findings)
        formats.write_prototxt(fixed, args.fix)
        print(f"wrote {args.fix} ({n} fix(es) applied)")
    return 1 if findings else 0
