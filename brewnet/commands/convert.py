"""brewnet convert: between BVLC and NVCaffe BatchNorm dialects, to PyTorch and to ONNX.

Every conversion checks its own result on random input (TEST phase) and prints the largest
difference between the original model's outputs and the converted one's.
"""
from __future__ import annotations

import os

from ..errors import BrewnetError
from .shared_flags import flag

TARGETS = ("bvlc", "nvcaffe", "pytorch", "onnx")


def add_arguments(p) -> None:
    flag(p, "model", required=True, help="network prototxt")
    flag(p, "weights", required=True, help="caffemodel (any BVLC or NVCaffe BatchNorm layout)")
    flag(p, "to", required=True, choices=TARGETS, help="target format")
    flag(p, "output", required=True, help="output prefix (PREFIX.prototxt/.caffemodel, .pt, .onnx)")
    flag(p, "seed", type=int, default=0, help="seed of the random check input")


def _build(model, weights, dtype=None):
    import torch

    from ..net import TEST, Net
    return Net(model, weights, TEST, dtype=dtype or torch.float32)


def _report(title: str, diffs: dict[str, tuple[float, float]]) -> float:
    worst = max((d for d in diffs.values()), default=(0.0, 0.0), key=lambda d: d[1])
    for name, (a, r) in list(diffs.items())[-8:]:  # the last blobs (outputs) in net order
        print(f"  {name}: max |diff| {a:.3g}, relative {r:.3g}")
    if len(diffs) > 8:
        print(f"  ... and {len(diffs) - 8} earlier blob(s) compared")
    print(f"{title}: largest difference {worst[0]:.3g} (relative {worst[1]:.3g})")
    return worst[1]


def check_caffe_pair(model_a, weights_a, model_b, weights_b, seed: int = 0,
                     dtype=None) -> dict[str, tuple[float, float]]:
    """Outputs of two Caffe models on the same random input (TEST phase, float64 by default)."""
    import torch

    from ..convert.pytorch_onnx import NetModule, compare, random_inputs
    dtype = dtype or torch.float64
    a = NetModule(_build(model_a, weights_a, dtype), "all")
    b = NetModule(_build(model_b, weights_b, dtype), "all")
    names = [n for n in a.output_names if n in b.output_names]  # every blob both nets have
    if not names:
        raise BrewnetError("the converted net has none of the original outputs to compare")
    inputs = random_inputs(a, seed, dtype)
    by_name = dict(zip(a.input_names, inputs))
    with torch.no_grad():
        oa = dict(zip(a.output_names, a(*inputs)))
        ob = dict(zip(b.output_names, b(*[by_name[n] for n in b.input_names])))
    return compare([oa[n] for n in names], [ob[n] for n in names], names)


def run(args) -> int:
    import torch

    from .. import formats

    from ..convert import dialects as dialect
    prefix = args.output
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    if args.to in ("bvlc", "nvcaffe"):
        model = formats.read_net(args.model)
        weights = formats.read_caffemodel(args.weights)
        convert = dialect.to_bvlc if args.to == "bvlc" else dialect.to_nvcaffe
        new_model, new_weights, notes = convert(model, weights)
        for n in notes:
            print(n)
        formats.write_prototxt(new_model, prefix + ".prototxt")
        formats.write_caffemodel(new_weights, prefix + ".caffemodel")
        print(f"wrote {prefix}.prototxt and {prefix}.caffemodel")
        try:
            diffs = check_caffe_pair(args.model, args.weights, prefix + ".prototxt", prefix + ".caffemodel",
                                     args.seed)
        except BrewnetError as e:
            print(f"numeric check skipped: {e}")
            return 0
        _report("check (TEST phase, float64, random input)", diffs)
        return 0
    from ..convert.pytorch_onnx import compare, export_onnx, load_pytorch, random_inputs, run_onnx, save_pytorch
    net = _build(args.model, args.weights)
    if args.to == "pytorch":
        module = save_pytorch(net, prefix + ".pt")
        print(f"wrote {prefix}.pt (state_dict + prototxt; "
              "brewnet.convert.pytorch_onnx.load_pytorch rebuilds the module)")
        loaded = load_pytorch(prefix + ".pt")
        inputs = random_inputs(module, args.seed)
        with torch.no_grad():
            diffs = compare(module(*inputs), loaded(*inputs), module.output_names)
        _report("check (reloaded module vs original net, float32)", diffs)
        return 0
    module = export_onnx(net, prefix + ".onnx")
    print(f"wrote {prefix}.onnx (onnx.checker: ok)")
    inputs = random_inputs(module, args.seed)
    with torch.no_grad():
        expected = module(*inputs)
    got, runtime = run_onnx(prefix + ".onnx", {n: t.numpy() for n, t in zip(module.input_names, inputs)})
    _report(f"check ({runtime} vs the torch module, float32)", compare(expected, got, module.output_names))
    return 0
