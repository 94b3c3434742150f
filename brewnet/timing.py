"""Per-layer timing of a Net (what ``brewnet time`` prints): each layer's forward, and its
backward as its own autograd call, timed alone."""
from __future__ import annotations

import time

import torch


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class LayerTimer:
    """Runs a Net layer by layer, each layer's autograd graph separate, and times each part."""

    def __init__(self, net):
        self.net = net
        self.device = net.device
        n = len(net.layers)
        self.fwd = [0.0] * n
        self.bwd = [0.0] * n

    def forward(self):
        net, dev = self.net, self.device
        env: dict[str, tuple[torch.Tensor, tuple[int, int]]] = {}  # name -> (tensor, producer)
        records = []
        loss = 0.0
        grad = torch.is_grad_enabled()
        for i, layer in enumerate(net.layers):
            lp = layer.param
            leaves, srcs = [], []
            sync(dev)
            t0 = time.perf_counter()
            if getattr(layer, "reads_blob_storage", False):
                outs = [net.blobs[t]._value(dev).to(net.dtype) for t in lp.top]
            else:
                for j, b in enumerate(lp.bottom):
                    if b in env:
                        t, src = env[b]
                    else:
                        t, src = net.blobs[b]._value(dev), None
                    need = grad and t.requires_grad and not net._detach[i][j]
                    leaf = t.detach().requires_grad_(need) if need else t.detach()
                    leaves.append(leaf)
                    srcs.append(src if need else None)
                with net._autocast():
                    outs = layer(*leaves)
                if isinstance(outs, torch.Tensor):
                    outs = (outs,)
                if not lp.bottom:
                    outs = [o.to(dev, net.dtype) for o in outs]
            sync(dev)
            self.fwd[i] += time.perf_counter() - t0
            outs = list(outs)
            for j, (name, t) in enumerate(zip(lp.top, outs)):
                env[name] = (t, (i, j))
                w = net._loss_weights.get(name)
                if w is not None:
                    loss += float(t.detach().sum()) * w
            records.append((leaves, srcs, outs))
        for name, (t, _) in env.items():
            net.blobs[name]._set_value(t)
        return loss, records

    def backward(self, records):
        net, dev = self.net, self.device
        grads: dict[tuple[int, int], torch.Tensor] = {}
        for i, layer in enumerate(net.layers):
            for j, name in enumerate(layer.param.top):
                w = net._loss_weights.get(name)
                if w is not None and records[i][2][j].requires_grad:
                    grads[(i, j)] = torch.full_like(records[i][2][j], w)
        for i in range(len(net.layers) - 1, -1, -1):
            leaves, srcs, outs = records[i]
            roots, gs = [], []
            for j, t in enumerate(outs):
                g = grads.pop((i, j), None)
                if g is not None and t.requires_grad:
                    roots.append(t)
                    gs.append(g)
            if not roots:
                continue
            sync(dev)
            t0 = time.perf_counter()
            torch.autograd.backward(roots, gs)
            sync(dev)
            self.bwd[i] += time.perf_counter() - t0
            for leaf, src in zip(leaves, srcs):
                if src is not None and leaf.grad is not None:
                    prev = grads.get(src)
                    grads[src] = leaf.grad if prev is None else prev + leaf.grad
