"""The deploy net of a train_val, by DIGITS' rules (:func:`deploy_net_param`), and its trained
weights (:func:`trained_net`, :func:`to_bvlc_batchnorm`, :func:`deploy_caffemodel`).

Layers filtered by phase TEST and stage "deploy"; the data layers replaced by one ``Input`` of the
validation item's shape after the crop; loss and accuracy layers removed, then every layer that
only fed them (label branches, auxiliary heads); a ``Softmax`` "prob" added where the net ends in
the logits its ``SoftmaxWithLoss`` read (an existing Softmax output is kept instead); NetState
rules and NVCaffe-only fields dropped, so that real BVLC Caffe parses it; an NVCaffe BatchNorm
becomes BVLC BatchNorm + Scale with the weights.

brewnet.net, brewnet.layers and brewnet.convert.dialects import torch: they are imported where
used, so that importing this module does not.
"""
from __future__ import annotations

import logging
from typing import Sequence

from ..formats.batchnorm_layouts import nvcaffe_dialect
from ..net_state import filter_net
from ..proto import caffe_pb2
from ..weights import load_weights
from .bundle import DeployError
from .validation import (DEPLOY_STAGE, TEST, Analysis, analyse, is_data_layer, load_model, phase_test_state,
                         validation_net)

log = logging.getLogger("brewnet")

#: fields of our schema that BVLC Caffe's does not have, by message (checked against BVLC's
#: schema by tests/test_deploy.py). BVLC Caffe refuses a prototxt that names any of them.
#: BatchNormParameter's (scale_bias, fillers, engine) are not simply dropped: the layer is
#: converted to BVLC BatchNorm + Scale (brewnet.convert.dialects.to_bvlc).
NVCAFFE_ONLY = {
    "NetParameter": ("default_forward_type", "default_backward_type", "default_forward_math",
                     "default_backward_math", "global_grad_scale", "global_grad_scale_adaptive",
                     "default_conv_algos_override", "reduce_buckets", "default_cudnn_math_override",
                     "eltwise_mem_sharing"),
    "LayerParameter": ("debug", "cudnn_math_override", "nvcaffe_recurrent_param", "trt_param",
                       "annotated_data_param", "multibox_loss_param", "permute_param",
                       "prior_box_param", "detection_output_param", "detection_evaluate_param",
                       "norm_param", "video_data_param", "detectnet_groundtruth_param",
                       "detectnet_augmentation_param", "forward_type", "backward_type",
                       "forward_math", "backward_math"),
    "TransformationParameter": ("use_gpu_transform", "random_seed", "img_rand_resize_lower",
                                "img_rand_resize_upper", "rand_resize_ratio_lower",
                                "rand_resize_ratio_upper", "vertical_stretch_lower",
                                "vertical_stretch_upper", "horizontal_stretch_lower",
                                "horizontal_stretch_upper", "interpolation_algo_down",
                                "interpolation_algo_up", "allow_upscale", "forward_packing",
                                "display", "num_labels", "resize_param", "noise_param",
                                "emit_constraint", "crop_h", "crop_w", "distort_param",
                                "expand_param"),
    "LossParameter": ("label_smoothing",),
    "ConvolutionParameter": ("cudnn_convolution_algo_seeker", "conv_algos_override"),
    "DataParameter": ("threads", "parser_threads", "cache", "shuffle", "precache"),
    "DropoutParameter": ("engine", "random_seed"),
    "ELUParameter": ("lambda",),
    "ImageDataParameter": ("short_side", "threads", "cache", "precache", "dataset_share_per_node"),
    "PoolingParameter": ("torch_pooling",),
}

def is_loss_layer(lp) -> bool:
    """Loss layers (the registry's ``is_loss``, or any non-zero ``loss_weight``) and Accuracy."""
    if lp.type == "Accuracy" or any(w != 0 for w in lp.loss_weight):
        return True
    from ..layers import LAYER_REGISTRY  # torch
    cls = LAYER_REGISTRY.get(lp.type)
    return bool(cls is not None and cls.is_loss)


def _strip_nvcaffe(msg, notes: list[str], where: str) -> None:
    """Clear the fields BVLC Caffe's schema lacks, in ``msg`` and the messages inside it."""
    drop = NVCAFFE_ONLY.get(msg.DESCRIPTOR.name, ())
    for fd, value in msg.ListFields():
        if fd.name in drop:
            msg.ClearField(fd.name)
            notes.append(f"{where}: dropped NVCaffe-only {msg.DESCRIPTOR.name}.{fd.name} "
                         "(BVLC Caffe has no such field)")
        elif fd.message_type is not None:
            for m in (value if fd.is_repeated else [value]):
                _strip_nvcaffe(m, notes, where)


def fresh_name(base: str, taken: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``, ...: the first not in ``taken`` (new layers and blobs)."""
    from ..convert.dialects import unique_name  # torch
    return unique_name(base, taken, sep="_")


def build_deploy(a: Analysis, generic: bool = False) -> tuple[caffe_pb2.NetParameter, dict]:
    """The deploy NetParameter (BatchNorm left in the train_val's dialect) and its blobs:
    {"input": the Input's top, "outputs": the kept outputs, "output": the main one,
    "losses": the removed loss layers whose prediction is in the deploy net}.

    ``generic`` (regression, segmentation, image-to-image nets): no Softmax is added, and the
    outputs are every blob no kept layer reads (DIGITS' generic outputs); the main output is the
    prediction the first loss read."""
    notes = a.notes
    net = filter_net(a.train_val, phase_test_state([DEPLOY_STAGE]))
    layers = list(net.layer)
    data_layers = [lp for lp in layers if is_data_layer(lp)]
    if a.data is not None:
        input_name = a.data.top[0]
    elif data_layers:
        input_name = data_layers[0].top[0]
    else:  # no data layer: the first bottom no layer produces is the input
        produced: set[str] = set()
        input_name = None
        for lp in layers:
            free = [b for b in lp.bottom if b not in produced]
            if free:
                input_name = free[0]
                break
            produced.update(lp.top)
        if input_name is None:
            raise DeployError("the net has no data layer and no input blob")
    kept, removed_losses = [], []
    for lp in layers:
        if is_data_layer(lp):
            continue
        if is_loss_layer(lp):
            removed_losses.append(lp)
            notes.append(f"removed {lp.type} layer '{lp.name}'")
            continue
        kept.append(lp)
    # forward: a layer whose bottoms are not all there read a label (or a removed output)
    available = {input_name}
    reachable = []
    for lp in kept:
        missing = [b for b in lp.bottom if b not in available]
        if missing:
            notes.append(f"removed layer '{lp.name}' ({lp.type}): it reads '{missing[0]}', which "
                         "the deploy net does not have")
            continue
        reachable.append(lp)
        available.update(lp.top)
    outputs = _unread_tops(reachable)
    taken_layers = {lp.name for lp in reachable} | {input_name}
    softmax_out = [t for lp in reachable if lp.type == "Softmax" for t in lp.top if t in outputs]
    swl = [lp for lp in removed_losses if lp.type == "SoftmaxWithLoss" and lp.bottom
           and lp.bottom[0] in available]
    preds = []
    for lp in removed_losses:
        if lp.type != "Accuracy" and lp.bottom and lp.bottom[0] in available and lp.bottom[0] not in preds:
            preds.append(lp.bottom[0])
    if generic:
        keep = list(outputs)
    elif softmax_out:
        keep = softmax_out
    elif swl:
        logits = swl[-1].bottom[0]
        prob = caffe_pb2.LayerParameter(name=fresh_name("prob", taken_layers), type="Softmax",
                                        bottom=[logits], top=[fresh_name("prob", available)])
        if swl[-1].HasField("softmax_param"):
            prob.softmax_param.CopyFrom(swl[-1].softmax_param)
        reachable.append(prob)
        keep = [prob.top[0]]
        notes.append(f"added Softmax '{prob.name}' on the logits '{logits}' that "
                     f"'{swl[-1].name}' read")
    else:
        keep = preds or [t for t in outputs]
    if not keep:
        raise DeployError("the deploy net has no output left (every layer fed a loss or accuracy)")
    # backward: keep the layers the kept outputs depend on (dead heads and label branches go)
    live = set(keep)
    needed = []
    for lp in reversed(reachable):
        if any(t in live for t in lp.top):
            live.difference_update(lp.top)
            live.update(lp.bottom)
            needed.append(lp)
        else:
            notes.append(f"removed layer '{lp.name}' ({lp.type}): nothing the deploy net outputs "
                         "depends on it")
    needed.reverse()
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    for f in ("layer", "state", "force_backward", "debug_info"):
        out.ClearField(f)
    inp = out.layer.add(name=fresh_name(input_name, {lp.name for lp in needed}), type="Input",
                        top=[input_name])
    inp.input_param.shape.add().dim.extend((1,) + tuple(a.item))
    for src in needed:
        lp = out.layer.add()
        lp.CopyFrom(src)
        for f in ("include", "exclude", "phase", "loss_weight"):
            lp.ClearField(f)
        if lp.type == "BatchNorm" and lp.batch_norm_param.HasField("use_global_stats") \
                and not lp.batch_norm_param.use_global_stats:
            lp.batch_norm_param.ClearField("use_global_stats")
            notes.append(f"layer '{lp.name}': use_global_stats false dropped (a deploy net "
                         "normalises with the trained statistics)")
    _strip_nvcaffe_except_batchnorm(out, notes)
    # the losses validation computed (a deploy stage rule may have dropped them here already)
    losses = [lp for lp in validation_net(a.train_val).layer if is_loss_layer(lp) and lp.bottom
              and lp.bottom[0] in available]
    main = next((lp.bottom[0] for lp in losses if lp.bottom[0] in keep), keep[-1]) if generic else keep[-1]
    return out, {"input": input_name, "outputs": list(keep), "output": main, "losses": losses}


def _strip_nvcaffe_except_batchnorm(net: caffe_pb2.NetParameter, notes: list[str]) -> None:
    for fd, _ in net.ListFields():
        if fd.name in NVCAFFE_ONLY["NetParameter"]:
            net.ClearField(fd.name)
            notes.append(f"dropped NVCaffe-only NetParameter.{fd.name}")
    for lp in net.layer:
        bn = None
        if lp.HasField("batch_norm_param"):  # converted with the weights (write_bundle)
            bn = caffe_pb2.BatchNormParameter()
            bn.CopyFrom(lp.batch_norm_param)
            lp.ClearField("batch_norm_param")
        _strip_nvcaffe(lp, notes, f"layer '{lp.name}'")
        if bn is not None:
            lp.batch_norm_param.CopyFrom(bn)


def _unread_tops(layers) -> list[str]:
    """Caffe's net outputs: tops no later layer reads (an in-place top is read by nothing)."""
    consumed: set[str] = set()
    seen: list[str] = []
    for lp in layers:
        consumed.update(lp.bottom)
        for t in lp.top:
            consumed.discard(t)
            if t not in seen:
                seen.append(t)
    return [t for t in seen if t not in consumed]


def deploy_net_param(train_val, *, input_shape: Sequence[int] | None = None,
                     model_dir: str | None = None) -> caffe_pb2.NetParameter:
    """The deploy net of ``train_val`` (a NetParameter or a prototxt path), by DIGITS' rules.

    Layers are filtered for the NetState phase TEST, stage "deploy"; the data layers become one
    ``Input`` named after the data top with shape (1, C, H, W): the validation item after the
    crop, from the TEST data layer (its source read when it can be; otherwise its ``crop_size``
    and the dataset's ``summary.json``), or ``input_shape`` (C, H, W) when given. Loss and
    Accuracy layers go, then every layer whose bottoms are gone (labels) and every layer no
    output depends on; a ``Softmax`` "prob" reads the logits the last ``SoftmaxWithLoss`` read,
    unless the net already ends in a Softmax. Include/exclude rules, ``phase`` and NVCaffe-only
    fields are dropped, except a BatchNorm's: those need the weights to become BVLC BatchNorm +
    Scale, which :func:`brewnet.inference.deploy.write_bundle` does. ``model_dir`` resolves relative data paths (the
    prototxt's directory when ``train_val`` is a path).

    Raises DeployError when the input shape cannot be known.
    """
    tv, own_dir, _ = load_model(train_val)
    a = analyse(tv, model_dir if model_dir is not None else own_dir, input_shape)
    net, _ = build_deploy(a, generic=a.labels is not None)
    for note in a.notes:
        log.info("deploy: %s", note)
    return net


# ----- weights and BatchNorm -------------------------------------------------------------------------
def trained_net(model: caffe_pb2.NetParameter, weights, source: str):
    """The net of ``model`` with the weights (a path or a caffemodel NetParameter); every layer
    with blobs must find them."""
    from ..net import Net  # torch
    net = Net(model, phase=TEST)
    report = net.copy_from(weights) if isinstance(weights, str) else \
        load_weights(net, weights, source=source)
    if report.missing:
        raise DeployError(f"{source}: no weights for deploy layer(s) {', '.join(report.missing)} "
                          "(is it a snapshot of this net?)")
    return net


def to_bvlc_batchnorm(model, net, source: str, notes: list[str]):
    """(model, caffemodel NetParameter): NVCaffe BatchNorm layers (by the prototxt, or by the
    layout found in the weights) as BVLC BatchNorm + Scale; unchanged when there are none."""
    from ..convert.dialects import to_bvlc  # torch
    own = {layer.name: layer.param for layer in net.layers}
    if not any(lp.type == "BatchNorm" and nvcaffe_dialect(own.get(lp.name)) for lp in model.layer):
        return model, None
    defs = caffe_pb2.NetParameter()
    defs.CopyFrom(model)
    for lp in defs.layer:
        if lp.type == "BatchNorm" and lp.name in own:
            lp.CopyFrom(own[lp.name])  # a layer that took scale/bias from the file says so
            lp.ClearField("phase")
    new_model, new_weights, bn_notes = to_bvlc(defs, net.to_proto())
    notes.extend(bn_notes)
    notes.append("NVCaffe BatchNorm converted to BVLC BatchNorm + Scale "
                 "(brewnet.convert.dialects.to_bvlc)")
    return new_model, new_weights


def deploy_caffemodel(net, model) -> caffe_pb2.NetParameter:
    """``net.to_proto()`` holding exactly the deploy prototxt's layers (not Caffe's Splits)."""
    names = {lp.name for lp in model.layer}
    full = net.to_proto()
    out = caffe_pb2.NetParameter(name=full.name)
    out.layer.extend(lp for lp in full.layer if lp.name in names)
    return out
