"""Export a Caffe net to PyTorch (module + state_dict) and ONNX, and compare nets numerically.

- :class:`NetModule` is a plain ``nn.Module`` that runs a built :class:`brewnet.Net`'s layers on
  tensors passed as arguments (the tops of its data layers, in order) and returns the net's
  outputs.  It shares the layers, so its ``state_dict`` is the net's weights and statistics.
- :func:`save_pytorch` writes ``{"format", "prototxt", "phase", "inputs", "outputs",
  "state_dict"}`` with ``torch.save``; the prototxt is the phase-filtered net with every data layer
  replaced by an ``Input`` of the same shape (and BatchNorm eps written out), so the file is
  self-contained.  :func:`load_pytorch` rebuilds the module from it.
- :func:`export_onnx` traces the TEST-phase module with ``torch.onnx.export`` (the TorchScript
  exporter) and checks the file with ``onnx.checker``; :func:`run_onnx` runs it with onnxruntime
  when installed, else with onnx's own reference evaluator.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from google.protobuf import text_format
from torch import nn

from ..errors import BrewnetError
from ..formats import net_from_text
from ..net import Net
from ..proto import caffe_pb2

FORMAT = "brewnet.pytorch/1"


def deploy_outputs(net) -> list[str]:
    """The net's outputs without loss and Accuracy tops; when those were all it had, the blobs
    the loss/Accuracy layers read (the scores), traced back through Split layers."""
    producer = {}
    for layer in net.layers:
        for t in layer.param.top:
            producer[t] = layer
    heads = [layer for layer in net.layers if layer.is_loss or layer.type == "Accuracy"]
    head_tops = {t for layer in heads for t in layer.param.top}
    outs = [o for o in net.outputs if o not in head_tops]
    for layer in heads:
        b = layer.param.bottom[0]
        while b in producer and producer[b].type == "Split":
            b = producer[b].param.bottom[0]
        if b not in outs and b in producer and not producer[b].is_data:
            outs.append(b)
    return outs or list(net.outputs)


class NetModule(nn.Module):
    """A built Net as an nn.Module: ``forward(*inputs) -> tuple(outputs)``.

    ``outputs``: blob names to return (default: the net's outputs); ``"deploy"`` drops loss and
    Accuracy layers and returns the scores they read (see :func:`deploy_outputs`); ``"all"``
    returns every blob's final value (for numerical comparisons).  Only the layers the outputs
    need are run, and only the inputs they need are taken.
    """

    def __init__(self, net, outputs: Sequence[str] | str | None = None):
        super().__init__()
        self.net = [net]  # a list, so nn.Module does not try to register it
        self.layers = nn.ModuleList(net.layers)
        data = [layer.is_data and not layer.param.bottom for layer in net.layers]
        all_inputs = [t for layer, d in zip(net.layers, data) if d for t in layer.param.top]
        if outputs == "deploy":
            outs = deploy_outputs(net)
        elif outputs == "all":
            outs = [n for n in net.blobs if n not in all_inputs]
        else:
            outs = list(outputs) if outputs is not None else list(net.outputs)
        self.output_names = [o for o in dict.fromkeys(outs) if o not in all_inputs]
        need = set(self.output_names)
        keep = [False] * len(net.layers)
        for i in range(len(net.layers) - 1, -1, -1):  # layers the outputs depend on
            lp = net.layers[i].param
            if data[i]:
                continue
            if need & set(lp.top):
                keep[i] = True
                need.update(lp.bottom)
        self.input_names = [t for t in dict.fromkeys(all_inputs) if t in need]
        self._plan = [(list(layer.param.bottom), list(layer.param.top)) if k else None
                      for layer, k in zip(net.layers, keep)]

    def input_shapes(self) -> dict[str, tuple[int, ...]]:
        return {n: tuple(self.net[0].blobs[n].shape) for n in self.input_names}

    def forward(self, *inputs):
        if len(inputs) != len(self.input_names):
            raise BrewnetError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                               f"got {len(inputs)}")
        env = dict(zip(self.input_names, inputs))
        for layer, plan in zip(self.layers, self._plan):
            if plan is None:
                continue
            bottoms, tops = plan
            outs = layer(*[env[b] for b in bottoms])
            if isinstance(outs, torch.Tensor):
                outs = (outs,)
            env.update(zip(tops, outs))
        return tuple(env[n] for n in self.output_names)


def standalone_net_param(net) -> caffe_pb2.NetParameter:
    """The net as built (one phase, splits included) with data layers turned into Inputs of the
    same shapes and each BatchNorm's effective eps written out."""
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net.net_param)
    out.state.CopyFrom(net.state)
    del out.layer[:]
    for layer, lp in zip(net.layers, net.net_param.layer):
        if layer.is_data and not lp.bottom and lp.type != "Input":
            new = caffe_pb2.LayerParameter(name=lp.name, type="Input", top=list(lp.top))
            for t in lp.top:
                new.input_param.shape.add().dim.extend(net.blobs[t].shape)
        else:
            new = caffe_pb2.LayerParameter()
            new.CopyFrom(lp)
            del new.blobs[:]
            if lp.type == "BatchNorm":
                new.batch_norm_param.eps = float(layer.eps)
        out.layer.add().CopyFrom(new)
    return out


def save_pytorch(net, path: str, outputs="deploy") -> NetModule:
    module = NetModule(net, outputs)
    text = text_format.MessageToString(standalone_net_param(net))
    torch.save({"format": FORMAT, "prototxt": text, "phase": int(net.phase),
                "inputs": module.input_names, "outputs": module.output_names,
                "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}}, path)
    return module


def load_pytorch(path: str, device=None) -> NetModule:
    """Rebuild the NetModule saved by :func:`save_pytorch` (``brewnet convert -to pytorch``)."""
    blob = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise BrewnetError(f"{path}: not a brewnet PyTorch export ({FORMAT})")
    net = Net(net_from_text(blob["prototxt"]), blob["phase"], device=device)
    module = NetModule(net, blob["outputs"])
    module.load_state_dict(blob["state_dict"])
    return module


def random_inputs(module: NetModule, seed: int = 0, dtype=torch.float32) -> list[torch.Tensor]:
    """Gaussian inputs; blobs named like labels get zeros (a valid class for any loss)."""
    g = np.random.default_rng(seed)
    out = []
    for name, shape in module.input_shapes().items():
        if "label" in name.lower():
            out.append(torch.zeros(shape, dtype=dtype))
        else:
            out.append(torch.as_tensor(g.normal(size=shape), dtype=dtype))
    return out


def compare(a: Sequence, b: Sequence, names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """{output: (max |a-b|, max |a-b| / max |a|)} for matching outputs."""
    res = {}
    for n, x, y in zip(names, a, b):
        x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        y = np.asarray(y.detach().cpu() if isinstance(y, torch.Tensor) else y, dtype=np.float64)
        d = float(np.max(np.abs(x - y))) if x.size else 0.0
        scale = float(np.max(np.abs(x))) if x.size else 0.0
        res[n] = (d, d / scale if scale > 0 else d)
    return res


def export_onnx(net, path: str, opset: int = 17, outputs="deploy") -> NetModule:
    import onnx
    module = NetModule(net, outputs).eval()
    example = tuple(random_inputs(module, dtype=net.dtype))
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module, example, os.fspath(path), input_names=module.input_names,
                              output_names=module.output_names, opset_version=opset, dynamo=False)
    onnx.checker.check_model(onnx.load(os.fspath(path)), full_check=True)
    return module


def run_onnx(path: str, inputs: dict[str, np.ndarray]) -> tuple[list[np.ndarray], str]:
    """Run an ONNX file; returns (outputs, which runtime ran it)."""
    try:
        import onnxruntime as ort
        sess = ort.InferenceSession(os.fspath(path), providers=["CPUExecutionProvider"])
        return sess.run(None, inputs), "onnxruntime"
    except ImportError:
        import onnx
        from onnx.reference import ReferenceEvaluator
        return ReferenceEvaluator(onnx.load(os.fspath(path))).run(None, inputs), \
            "onnx.reference (onnxruntime is not installed)"
