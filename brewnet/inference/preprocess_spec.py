"""What the validation data path did to an image, as ``preprocess.json`` holds it (the schema is
:mod:`brewnet.inference.bundle`'s): read from the TEST Data (or ImageData) layer's
``transform_param`` and from the dataset ``brewnet dataset create`` wrote beside its LMDB
(``summary.json``: resize size and mode, image size and channels); :func:`describe_preprocess`
says it in one sentence.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from google.protobuf import text_format

from ..data.transformer import load_mean
from ..proto import caffe_pb2
from .bundle import OPENCV_BILINEAR, PILLOW_BILINEAR, PREPROCESS_VERSION, DeployError
from .deploy_net import build_deploy
from .validation import Analysis, analyse, load_model, resolve, source_path, summary_stored


def spec_from_analysis(a: Analysis, input_name: str) -> tuple[dict, np.ndarray | None, str | None]:
    """(preprocess.json's dict, the full mean image (C, H, W) or None, the mean file's path)."""
    lp = a.data
    item = list(a.item)
    rank3 = len(item) == 3
    spec = {"version": PREPROCESS_VERSION, "input": input_name, "input_shape": item,
            "channels": item[0] if rank3 else None, "channel_order": None, "stored_size": None,
            "resize": None, "transform_param": "", "crop": None, "mean": None, "scale": 1.0,
            "input_range": None, "source": None, "baked": False}
    if lp is None:
        spec["source"] = {"layer": None, "type": None, "db": None, "backend": None}
        if rank3:
            spec["stored_size"] = item[1:]
        spec["channel_order"] = _order(spec["channels"])
        return spec, None, None
    spec["source"] = {"layer": lp.name, "type": lp.type, "db": source_path(lp, a.model_dir),
                      "backend": {"Data": "LMDB", "ImageData": "image list"}.get(lp.type)}
    if lp.type not in ("Data", "ImageData"):
        # HDF5Data, MemoryData, DummyData, Input: values reach the net as they are
        if rank3:
            spec["stored_size"] = item[1:]
        spec["channel_order"] = _order(spec["channels"])
        return spec, None, None
    tp = caffe_pb2.TransformationParameter()
    tp.CopyFrom(lp.transform_param)
    stored = a.probe.stored
    if lp.type == "Data":
        summary = a.summary
        if summary is not None:
            from_summary = summary_stored(summary, tp)
            if stored is not None and tuple(stored) != from_summary:
                a.notes.append(f"{a.dataset_dir}/summary.json describes {from_summary} images but "
                               f"the LMDB holds {tuple(stored)}: it is not this LMDB's summary; "
                               "ignored")
                summary = None
            else:
                stored = from_summary
        if summary is not None and summary.get("resize"):
            w, h = (int(v) for v in summary["resize"])
            spec["resize"] = {"width": w, "height": h, "mode": summary.get("resize_mode") or "squash",
                              "interpolation": PILLOW_BILINEAR}
    else:
        p = lp.image_data_param
        if p.new_height > 0 and p.new_width > 0:
            spec["resize"] = {"width": int(p.new_width), "height": int(p.new_height), "mode": "squash",
                              "interpolation": OPENCV_BILINEAR}
    if stored is None and not tp.crop_size and len(a.item) == 3:
        stored = tuple(a.item)  # no crop: the images are what the net takes
        a.notes.append(f"data layer '{lp.name}': {a.probe.error}; stored size taken from the "
                       "input shape (no crop)")
    if stored is None:
        raise DeployError(f"cannot tell the size of the images data layer '{lp.name}' reads: "
                          f"{a.probe.error or 'no readable source'} (and no summary.json beside it)")
    spec["channels"] = int(stored[0])
    spec["channel_order"] = _order(spec["channels"])
    spec["stored_size"] = [int(stored[1]), int(stored[2])]
    spec["input_range"] = [0, 255]
    if tp.crop_size:
        spec["crop"] = {"height": int(tp.crop_size), "width": int(tp.crop_size)}
    spec["scale"] = _f32(tp.scale)
    mean = mean_path = None
    if tp.mean_file:
        mean_path = resolve(tp.mean_file, a.model_dir)
        mean = load_mean(mean_path, where=f"layer '{lp.name}' transform_param mean_file")
        if mean.shape != tuple(stored):
            raise DeployError(f"layer '{lp.name}': the mean file {mean_path} has shape {mean.shape} "
                              f"but the images are {tuple(stored)} (C, H, W)")
        tp.mean_file = "mean.binaryproto"
        spec["mean"] = {"image": "mean.binaryproto"}
    elif len(tp.mean_value):
        spec["mean"] = {"values": [_f32(v) for v in tp.mean_value]}
    spec["transform_param"] = text_format.MessageToString(tp)
    return spec, mean, mean_path


def _f32(value) -> float:
    """A float32 field as the shortest decimal that reads back as it (0.0125, not 0.01250000018)."""
    return float(str(np.float32(value)))


def _order(channels) -> str | None:
    return {3: "BGR", 1: "GRAY"}.get(channels)


def preprocess_spec(train_val, model_dir: str | None = None, *,
                    input_shape: Sequence[int] | None = None) -> tuple[dict, np.ndarray | None]:
    """What the validation data path did to an image, as preprocess.json (version 1) holds it,
    and the full mean image (C, H, W) float32 when validation subtracted one (else None).

    Read from the TEST data layer (``train_val`` a NetParameter or a prototxt path): its
    ``transform_param`` (as prototxt text, ``mean_file`` renamed "mean.binaryproto"), and for a
    Data layer the dataset folder that holds its LMDB: ``summary.json`` (``brewnet dataset
    create``) gives the resize (size, DIGITS mode, done with Pillow's bilinear) and the stored
    image size, else the first Datum gives the stored size. An ImageData layer's
    ``new_height``/``new_width`` are a squash with OpenCV's bilinear, ``is_color`` its
    channels. ``input_shape`` (C, H, W) is used when the source cannot be read.
    """
    tv, own_dir, _ = load_model(train_val)
    a = analyse(tv, model_dir if model_dir is not None else own_dir, input_shape)
    input_name = a.data.top[0] if a.data is not None else build_deploy(a)[1]["input"]
    spec, mean, _ = spec_from_analysis(a, input_name)
    return spec, mean


def describe_preprocess(spec: dict) -> str:
    """preprocess.json in one sentence (what ``brewnet deploy`` prints)."""
    parts = []
    order = spec.get("channel_order")
    if spec.get("channels"):
        parts.append(f"decode to {order or str(spec['channels']) + ' channels'}")
    r = spec.get("resize")
    if r:
        parts.append(f"resize to {r['width']}x{r['height']} ({r['mode']})")
    elif spec.get("stored_size"):
        h, w = spec["stored_size"]
        parts.append(f"images as stored at {w}x{h}")
    if spec.get("crop"):
        parts.append(f"centre crop {spec['crop']['width']}x{spec['crop']['height']}")
    mean = spec.get("mean")
    if mean and "image" in mean:
        parts.append(f"subtract the mean image ({mean['image']})")
    elif mean and "values" in mean:
        parts.append("subtract mean values " + ", ".join(f"{v:g}" for v in mean["values"]))
    if spec.get("scale", 1.0) != 1.0:
        parts.append(f"times {spec['scale']:g}")
    text = ", ".join(parts) if parts else "none"
    if spec.get("baked"):
        text += "; mean and scale are baked into the net, which takes raw 0-255 pixels"
    return text
