"""Loading caffemodel weights into a Net, matching layers by name (Caffe's CopyTrainedLayersFrom).

Unlike Caffe, which stops at the first mismatch, every problem is collected and reported in one
error grouped by kind, and layers that are only on one side are listed in the returned report.
"""
from __future__ import annotations

import logging

from . import fileio
from .batchnorm.layouts import is_routine_note
from .errors import NetError

log = logging.getLogger("brewnet")


def load_weights(net, net_param, source: str = "<caffemodel>"):
    from .net import LoadReport

    report = LoadReport()
    src = {lp.name: lp for lp in net_param.layer if len(lp.blobs)}
    problems: list[str] = []
    for layer in net.layers:
        if not layer.blob_tensors:
            continue
        lp = src.get(layer.name)
        if lp is None:
            report.missing.append(layer.name)
            continue
        try:
            arrays = [fileio.blob_to_array(b) for b in lp.blobs]
            report.notes.extend(layer.load_caffe_blobs(arrays, lp))
            report.copied.append(layer.name)
        except (NetError, ValueError) as e:
            problems.append(str(e))
    own = set(net.layer_dict)
    report.ignored = [n for n in src if n not in own]
    if problems:
        raise NetError(f"{source}: cannot load weights into net '{net.name}':\n  " + "\n  ".join(problems))
    if report.ignored:
        log.info("%s: ignoring layers not in the net: %s", source, ", ".join(report.ignored))
    if report.missing:
        log.warning("%s: no weights for layers %s (they keep their filler values)",
                    source, ", ".join(report.missing))
    for note in report.notes:
        log.log(logging.DEBUG if is_routine_note(note) else logging.INFO, "%s: %s", source, note)
    return report
