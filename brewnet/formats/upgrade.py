"""Upgrades of legacy nets and solvers, as Caffe's ``UpgradeNetAsNeeded`` does on read.

V0/V1 ``layers`` become ``layer``, legacy net inputs (``input_dim``/``input_shape``) become an
``Input`` layer, legacy data-layer transformation fields move into ``transform_param``, and a
solver's ``solver_type`` enum becomes ``type``.
"""
from __future__ import annotations

from brewnet.proto import caffe_pb2

from .errors import CaffeFormatError

__all__ = ["upgrade_net", "upgrade_net_with_notes", "upgrade_solver"]


# V1LayerParameter.LayerType name -> the type string of today's LayerParameter.
_V1_TYPES = {
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL",
    "CONCAT": "Concat", "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution",
    "DATA": "Data", "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData", "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise",
    "EXP": "Exp", "FLATTEN": "Flatten", "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col", "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct", "LRN": "LRN",
    "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence",
    "SOFTMAX": "Softmax", "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice",
    "TANH": "TanH", "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}
# V1 repeated fields that become fields of the i-th ParamSpec.
_V1_PARAM_SPEC = {"param": "name", "blob_share_mode": "share_mode", "blobs_lr": "lr_mult",
                  "weight_decay": "decay_mult"}
# V0 type string -> V1 LayerType name, and the V1 *_param message its settings go into.
_V0_TYPES = {
    "accuracy": "ACCURACY", "bnll": "BNLL", "concat": "CONCAT", "conv": "CONVOLUTION",
    "data": "DATA", "dropout": "DROPOUT", "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN", "hdf5_data": "HDF5_DATA", "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL", "images": "IMAGE_DATA", "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT", "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS", "pool": "POOLING", "relu": "RELU",
    "sigmoid": "SIGMOID", "softmax": "SOFTMAX", "softmax_loss": "SOFTMAX_LOSS", "split": "SPLIT",
    "tanh": "TANH", "window_data": "WINDOW_DATA",
}
_V0_PARAM_MSG = {
    "CONCAT": "concat_param", "CONVOLUTION": "convolution_param", "DATA": "data_param",
    "DROPOUT": "dropout_param", "HDF5_DATA": "hdf5_data_param",
    "HDF5_OUTPUT": "hdf5_output_param", "IMAGE_DATA": "image_data_param",
    "INFOGAIN_LOSS": "infogain_loss_param", "INNER_PRODUCT": "inner_product_param",
    "LRN": "lrn_param", "POOLING": "pooling_param", "WINDOW_DATA": "window_data_param",
}
# V0 field -> its name inside the *_param message (only where that message has it).
_V0_FIELDS = {
    "num_output": "num_output", "biasterm": "bias_term", "weight_filler": "weight_filler",
    "bias_filler": "bias_filler", "pad": "pad", "kernelsize": "kernel_size", "group": "group",
    "stride": "stride", "pool": "pool", "dropout_ratio": "dropout_ratio",
    "local_size": "local_size", "alpha": "alpha", "beta": "beta", "k": "k", "source": "source",
    "scale": "scale", "meanfile": "mean_file", "batchsize": "batch_size",
    "cropsize": "crop_size", "mirror": "mirror", "rand_skip": "rand_skip",
    "shuffle_images": "shuffle", "new_height": "new_height", "new_width": "new_width",
    "concat_dim": "concat_dim", "det_fg_threshold": "fg_threshold",
    "det_bg_threshold": "bg_threshold", "det_fg_fraction": "fg_fraction",
    "det_context_pad": "context_pad", "det_crop_mode": "crop_mode",
}
_LEGACY_TRANSFORM = ("scale", "mean_file", "crop_size", "mirror")
_SOLVER_TYPES = {"SGD": "SGD", "NESTEROV": "Nesterov", "ADAGRAD": "AdaGrad",
                 "RMSPROP": "RMSProp", "ADADELTA": "AdaDelta", "ADAM": "Adam"}


def upgrade_net(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """An upgraded copy of ``net`` in today's format (see :func:`upgrade_net_with_notes`)."""
    return upgrade_net_with_notes(net)[0]


def upgrade_net_with_notes(net: caffe_pb2.NetParameter
                           ) -> tuple[caffe_pb2.NetParameter, list[str]]:
    """Upgrade a copy of ``net`` as Caffe's ``UpgradeNetAsNeeded`` does; say what changed.

    Steps, each applied only when needed:
      1. V0 layers (``layers { layer { type: "conv" ... } }``, pre-2014) -> V1, merging the old
         separate "padding" layers into the convolution/pooling that consumes them.
      2. V1 ``layers`` -> ``layer``: type enum -> type string, ``blobs_lr``/``weight_decay``/
         ``param``/``blob_share_mode`` -> ``param { lr_mult decay_mult name share_mode }``.
      3. Legacy scale/mean_file/crop_size/mirror of data_param, image_data_param and
         window_data_param -> ``transform_param`` (an explicit transform_param value wins).
      4. Net ``input`` + ``input_dim`` (4 per input) or ``input_shape`` -> one ``Input`` layer per
         input, named like its blob, at the front of the net. (BVLC Caffe makes a single layer
         named "input" with all the inputs as tops; blobs and outputs are the same.) An
         ``input`` without dims, as in old caffemodels, is simply dropped.
    Not applied: BVLC's removal of BatchNorm ``param`` specs. brewnet never trains BatchNorm
    statistics whatever they say, and keeps them so that lint can warn about them.

    Returns:
        (upgraded copy, human-readable notes; empty when nothing needed upgrading)
    Raises:
        CaffeFormatError: the net cannot be upgraded (e.g. both ``layer`` and ``layers``).
    """
    out = caffe_pb2.NetParameter()
    out.CopyFrom(net)
    notes: list[str] = []
    if out.layers:
        if out.layer:
            raise CaffeFormatError("net mixes 'layer' and legacy 'layers' entries; "
                                   "use one or the other")
        if any(v1.HasField("layer") for v1 in out.layers):
            _upgrade_v0(out, notes)
        upgraded = [_v1_to_layer(v1) for v1 in out.layers]
        out.ClearField("layers")
        out.layer.extend(upgraded)
        notes.append(f"converted {len(upgraded)} V1 'layers' entries to 'layer'")
    for layer in out.layer:
        _upgrade_transform(layer, notes)
    _upgrade_inputs(out, notes)
    return out, notes


def upgrade_solver(solver: caffe_pb2.SolverParameter) -> caffe_pb2.SolverParameter:
    """An upgraded copy of ``solver``: the legacy ``solver_type`` enum becomes ``type``."""
    out = caffe_pb2.SolverParameter()
    out.CopyFrom(solver)
    if out.HasField("solver_type"):
        name = _SOLVER_TYPES[caffe_pb2.SolverParameter.SolverType.Name(out.solver_type)]
        if out.HasField("type") and out.type != name:
            raise CaffeFormatError(f"solver gives both solver_type ({name}) and type "
                                   f"({out.type!r}); remove solver_type")
        out.type = name
        out.ClearField("solver_type")
    return out


def _v1_to_layer(v1: caffe_pb2.V1LayerParameter) -> caffe_pb2.LayerParameter:
    layer = caffe_pb2.LayerParameter()
    for field, value in v1.ListFields():
        name = field.name
        if name == "name":
            layer.name = value
        elif name == "type":
            type_name = caffe_pb2.V1LayerParameter.LayerType.Name(value)
            if type_name not in _V1_TYPES:
                raise CaffeFormatError(f"V1 layer '{v1.name}' has type {type_name}, which has "
                                       "no modern equivalent")
            layer.type = _V1_TYPES[type_name]
        elif name in ("bottom", "top", "include", "exclude", "loss_weight", "blobs"):
            getattr(layer, name).extend(value)
        elif name in _V1_PARAM_SPEC:
            for i, item in enumerate(value):
                while len(layer.param) <= i:
                    layer.param.add()
                setattr(layer.param[i], _V1_PARAM_SPEC[name], item)
        elif name.endswith("_param"):  # every V1 *_param has a same-named LayerParameter field
            getattr(layer, name).CopyFrom(value)
        else:
            raise CaffeFormatError(f"V1 layer '{v1.name}': cannot upgrade field '{name}'")
    if not v1.HasField("type"):
        raise CaffeFormatError(f"V1 layer '{v1.name}' has no type")
    return layer


def _upgrade_v0(net: caffe_pb2.NetParameter, notes: list[str]) -> None:
    """Rewrite V0 connections (``layers { layer {...} bottom top }``) as V1 layers in place."""
    padding: dict[str, caffe_pb2.V1LayerParameter] = {}  # top name -> V0 "padding" connection
    converted = []
    for conn in net.layers:
        v0 = conn.layer
        if v0.type == "padding":
            # V0 padded with a separate layer; Caffe folds its pad into the consumer.
            padding[conn.top[0]] = conn
            continue
        v1 = caffe_pb2.V1LayerParameter()
        v1.CopyFrom(conn)
        v1.ClearField("layer")
        pad = None
        for i, bottom in enumerate(conn.bottom):
            if bottom in padding:
                if v0.type not in ("conv", "pool"):
                    raise CaffeFormatError(f"V0 layer '{v0.name}' ({v0.type}) reads the output "
                                           "of a padding layer; only conv and pool may")
                v1.bottom[i] = padding[bottom].bottom[0]
                pad = padding[bottom].layer.pad
        _v0_fill(v0, v1)
        if pad is not None:
            msg = getattr(v1, _V0_PARAM_MSG[caffe_pb2.V1LayerParameter.LayerType.Name(v1.type)])
            if isinstance(msg, caffe_pb2.ConvolutionParameter):
                msg.ClearField("pad")
                msg.pad.append(pad)
            else:
                msg.pad = pad
        converted.append(v1)
    net.ClearField("layers")
    net.layers.extend(converted)
    notes.append(f"converted {len(converted)} V0 layers to V1"
                 + (f", folding {len(padding)} padding layers" if padding else ""))


def _v0_fill(v0: caffe_pb2.V0LayerParameter, v1: caffe_pb2.V1LayerParameter) -> None:
    if v0.type not in _V0_TYPES:
        raise CaffeFormatError(f"V0 layer '{v0.name}' has type '{v0.type}', which brewnet "
                               "cannot upgrade")
    type_name = _V0_TYPES[v0.type]
    v1.type = caffe_pb2.V1LayerParameter.LayerType.Value(type_name)
    if v0.HasField("name"):
        v1.name = v0.name
    v1.blobs.extend(v0.blobs)
    v1.blobs_lr.extend(v0.blobs_lr)
    v1.weight_decay.extend(v0.weight_decay)
    params = getattr(v1, _V0_PARAM_MSG[type_name]) if type_name in _V0_PARAM_MSG else None
    for field, value in v0.ListFields():
        if field.name in ("name", "type", "blobs", "blobs_lr", "weight_decay"):
            continue
        if field.name == "hdf5_output_param":
            v1.hdf5_output_param.CopyFrom(value)
            continue
        target = _V0_FIELDS.get(field.name)
        if params is None or target not in params.DESCRIPTOR.fields_by_name:
            raise CaffeFormatError(f"V0 layer '{v0.name}' ({v0.type}): cannot upgrade field "
                                   f"'{field.name}'")
        dest = params.DESCRIPTOR.fields_by_name[target]
        if dest.is_repeated:  # e.g. ConvolutionParameter.kernel_size
            getattr(params, target).append(value)
        elif dest.message_type is not None:
            getattr(params, target).CopyFrom(value)
        else:
            setattr(params, target, value)


def _upgrade_transform(layer: caffe_pb2.LayerParameter, notes: list[str]) -> None:
    """Move a data layer's pre-2014 transformation fields into ``transform_param``.

    Caffe only does this for V1 nets; a modern Caffe silently ignores these fields, which is
    never what the author meant, so brewnet moves them for every net and says so.
    """
    for params_name in ("data_param", "image_data_param", "window_data_param"):
        if not layer.HasField(params_name):
            continue
        params = getattr(layer, params_name)
        for field in _LEGACY_TRANSFORM:
            if not params.HasField(field):
                continue
            if layer.transform_param.HasField(field):
                notes.append(f"layer '{layer.name}': dropped legacy {params_name}.{field}, "
                             f"transform_param.{field} is set")
            else:
                setattr(layer.transform_param, field, getattr(params, field))
                notes.append(f"layer '{layer.name}': moved {params_name}.{field} to "
                             f"transform_param.{field}")
            params.ClearField(field)


def _upgrade_inputs(net: caffe_pb2.NetParameter, notes: list[str]) -> None:
    names, dims, shapes = list(net.input), list(net.input_dim), list(net.input_shape)
    if not (names or dims or shapes):
        return
    if dims and shapes:
        raise CaffeFormatError("net gives both input_dim and input_shape; use one")
    if dims and len(dims) != 4 * len(names):
        raise CaffeFormatError(f"net has {len(names)} inputs but {len(dims)} input_dim values "
                               f"(need 4 per input: N, C, H, W)")
    if shapes and len(shapes) != len(names):
        raise CaffeFormatError(f"net has {len(names)} inputs but {len(shapes)} input_shape")
    for f in ("input", "input_dim", "input_shape"):
        net.ClearField(f)
    if not (dims or shapes):  # an old caffemodel repeats the input names without shapes
        notes.append(f"dropped legacy net inputs {names} (no shapes given)")
        return
    # Caffe's UpgradeNetInput: one Input layer named "input" with every input as a top, so that
    # layer names match pycaffe's.
    layer = caffe_pb2.LayerParameter(name="input", type="Input", top=names)
    for i in range(len(names)):
        shape = layer.input_param.shape.add()
        if shapes:
            shape.CopyFrom(shapes[i])
        else:
            shape.dim.extend(dims[4 * i: 4 * i + 4])
    layers = [layer]
    layers.extend(net.layer)
    net.ClearField("layer")
    net.layer.extend(layers)
    notes.append(f"turned legacy net inputs {names} into Input layers")
