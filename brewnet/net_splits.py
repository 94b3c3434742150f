"""Caffe's InsertSplits: a blob read by several layers gets a Split layer (named as Caffe names
it), so every bottom reads its own copy and the diffs add up as in Caffe."""
from __future__ import annotations

from .proto import caffe_pb2


def _split_blob_name(layer: str, blob: str, top_index: int, k: int) -> str:
    return f"{blob}_{layer}_{top_index}_split_{k}"


def insert_splits(net_param):
    """Caffe's InsertSplits: a top read by several bottoms (or read and used as a loss) gets a
    Split layer, named as Caffe names it, so blob and layer names match pycaffe's."""
    last_top: dict[str, tuple[int, int]] = {}
    source: dict[tuple[int, int], tuple[int, int]] = {}
    uses: dict[tuple[int, int], int] = {}
    loss_weight: dict[tuple[int, int], float] = {}
    for i, lp in enumerate(net_param.layer):
        for j, b in enumerate(lp.bottom):
            if b not in last_top:
                continue  # the net reports the unknown bottom with the layer's name
            source[(i, j)] = last_top[b]
            uses[last_top[b]] = uses.get(last_top[b], 0) + 1
        for j, t in enumerate(lp.top):
            last_top[t] = (i, j)
        for j in range(min(len(lp.loss_weight), len(lp.top))):
            idx = last_top[lp.top[j]]
            loss_weight[idx] = lp.loss_weight[j]
            if lp.loss_weight[j]:
                uses[idx] = uses.get(idx, 0) + 1
    if all(n <= 1 for n in uses.values()):
        return net_param
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net_param)
    del out.layer[:]
    next_split: dict[tuple[int, int], int] = {}
    names = [lp.name for lp in net_param.layer]
    for i, src_lp in enumerate(net_param.layer):
        lp = out.layer.add()
        lp.CopyFrom(src_lp)
        for j in range(len(lp.bottom)):
            idx = source.get((i, j))
            if idx is not None and uses.get(idx, 0) > 1:
                k = next_split.get(idx, 0)
                next_split[idx] = k + 1
                lp.bottom[j] = _split_blob_name(names[idx[0]], lp.bottom[j], idx[1], k)
        for j, top in enumerate(src_lp.top):
            n = uses.get((i, j), 0)
            if n <= 1:
                continue
            split = out.layer.add()
            split.name = f"{top}_{names[i]}_{j}_split"
            split.type = "Split"
            split.bottom.append(top)
            split.top.extend(_split_blob_name(names[i], top, j, k) for k in range(n))
            if src_lp.HasField("phase"):
                split.phase = src_lp.phase
            w = loss_weight.get((i, j), 0.0)
            if w:
                split.loss_weight.extend([w] + [0.0] * (n - 1))
                del lp.loss_weight[:]
                next_split[(i, j)] = next_split.get((i, j), 0) + 1
    return out
