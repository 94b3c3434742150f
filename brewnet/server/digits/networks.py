"""DIGITS' standard image-classification networks, and brewnet's BatchNorm variants, written as
DIGITS-style prototxt: one file for every use, its layers picked by NetState stages.

- ``include { stage: "train" }`` / ``include { stage: "val" }``: the Data layers of training and
  validation (``model_files`` gives them their LMDB, batch size, mean and crop);
- ``include { stage: "val" }``: the Accuracy;
- ``exclude { stage: "deploy" }``: the losses (and GoogLeNet's auxiliary heads);
- ``include { stage: "deploy" }``: the Softmax ``prob`` (and, for the nets that scale their
  input, a Power layer doing in deploy what ``transform_param { scale }`` does in training).

The last InnerProduct has no ``num_output``: DIGITS' rule gives every InnerProduct without one
the dataset's class count.  The texts are generated here (not copied from DIGITS or Caffe).

BatchNorm variants use BVLC ``BatchNorm`` (``use_global_stats`` left to the phase: batch
statistics in TRAIN, the moving averages in TEST) followed by ``Scale { bias_term: true }``,
the convolutions before them without bias, and ``moving_average_fraction: 0.99`` (statistics
over ~100 iterations: DIGITS' runs are short; see ``brewnet lint`` rule BN008).  The ResNets end
in global average pooling, so they also run on small images (32x32).
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: id -> title, in the order the form lists them
STANDARD_NETWORKS: dict[str, str] = {
    "lenet": "LeNet",
    "lenet_bn": "LeNet with BatchNorm",
    "alexnet": "AlexNet",
    "alexnet_bn": "AlexNet with BatchNorm",
    "googlenet": "GoogLeNet",
    "googlenet_bn": "GoogLeNet with BatchNorm",
    "resnet18": "ResNet-18",
    "resnet50": "ResNet-50",
}

#: DIGITS' three (its form offered only these); brewnet adds the others
DIGITS_NETWORKS = ("lenet", "alexnet", "googlenet")


class _Enum(str):
    """A protobuf enum value: written bare (``MAX``), not quoted."""


def _scalar(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, _Enum):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v)
    return str(int(v))


def _lines(items: list, indent: int) -> list[str]:
    """Text-format lines of ``items``: (key, value) pairs; a list value is a sub-message."""
    pad = "  " * indent
    out = []
    for key, value in items:
        if isinstance(value, list):
            inner = _lines(value, indent + 1)
            if len(inner) <= 3 and sum(len(s) for s in inner) < 60:
                out.append(f"{pad}{key} {{ " + " ".join(s.strip() for s in inner) + " }")
            else:
                out += [f"{pad}{key} {{", *inner, f"{pad}}}"]
        else:
            out.append(f"{pad}{key}: {_scalar(value)}")
    return out


@dataclass
class _Net:
    """A list of layers being written (each a list of (key, value) pairs)."""
    name: str
    comment: str = ""
    layers: list[list] = field(default_factory=list)

    def add(self, name: str, type_: str, bottom=(), top=(), *extra, include: str | None = None,
            exclude: str | None = None) -> str:
        """Append a layer; returns its first top (for chaining)."""
        bottom = [bottom] if isinstance(bottom, str) else list(bottom)
        top = [top] if isinstance(top, str) else list(top)
        items: list = [("name", name), ("type", type_)]
        items += [("bottom", b) for b in bottom] + [("top", t) for t in top]
        items += list(extra)
        if include:
            items.append(("include", [("stage", include)]))
        if exclude:
            items.append(("exclude", [("stage", exclude)]))
        self.layers.append(items)
        return top[0] if top else ""

    def text(self) -> str:
        head = [f"# {line}" if line else "#" for line in self.comment.strip().splitlines()]
        body = [f'name: "{self.name}"']
        for items in self.layers:
            body += ["layer {", *_lines(items, 1), "}"]
        return "\n".join(head + body) + "\n"


# ----- pieces ---------------------------------------------------------------------------------

def _filler(kind: str, **kw) -> list:
    return [("type", kind)] + [(k, float(v)) for k, v in kw.items()]


def _params(bias: bool) -> list:
    """Caffe's customary multipliers: weights lr 1 / decay 1, biases lr 2 / decay 0."""
    out = [("param", [("lr_mult", 1), ("decay_mult", 1)])]
    if bias:
        out.append(("param", [("lr_mult", 2), ("decay_mult", 0)]))
    return out


def _conv(net: _Net, name: str, bottom: str, num_output: int, kernel: int, *, stride: int = 1,
          pad: int = 0, group: int = 1, bias: bool = True, weight=("xavier", {}),
          bias_value: float = 0.0, top: str | None = None) -> str:
    cp: list = [("num_output", num_output)]
    if pad:
        cp.append(("pad", pad))
    cp.append(("kernel_size", kernel))
    if stride != 1:
        cp.append(("stride", stride))
    if group != 1:
        cp.append(("group", group))
    if not bias:
        cp.append(("bias_term", False))
    cp.append(("weight_filler", _filler(weight[0], **weight[1])))
    if bias:
        cp.append(("bias_filler", _filler("constant", value=bias_value)))
    return net.add(name, "Convolution", bottom, top or name, *_params(bias), ("convolution_param", cp))


def _ip(net: _Net, name: str, bottom: str, num_output: int | None, *, bias: bool = True,
        weight=("xavier", {}), bias_value: float = 0.0, exclude: str | None = None) -> str:
    ipp: list = []
    if num_output is not None:
        ipp.append(("num_output", num_output))
    if not bias:
        ipp.append(("bias_term", False))
    ipp.append(("weight_filler", _filler(weight[0], **weight[1])))
    if bias:
        ipp.append(("bias_filler", _filler("constant", value=bias_value)))
    return net.add(name, "InnerProduct", bottom, name, *_params(bias), ("inner_product_param", ipp),
                   exclude=exclude)


def _bn(net: _Net, blob: str, prefix: str, exclude: str | None = None) -> str:
    """BVLC BatchNorm + Scale(bias) in place on ``blob``."""
    net.add(f"{prefix}_bn", "BatchNorm", blob, blob,
            ("batch_norm_param", [("moving_average_fraction", 0.99)]), exclude=exclude)
    net.add(f"{prefix}_scale", "Scale", blob, blob, ("scale_param", [("bias_term", True)]),
            exclude=exclude)
    return blob


def _relu(net: _Net, blob: str, name: str, exclude: str | None = None) -> str:
    return net.add(name, "ReLU", blob, blob, exclude=exclude)


def _pool(net: _Net, name: str, bottom: str, kind: str, kernel: int = 0, stride: int = 1, pad: int = 0,
          *, global_: bool = False, exclude: str | None = None) -> str:
    pp: list = [("pool", _Enum(kind))]
    if global_:
        pp.append(("global_pooling", True))
    else:
        pp.append(("kernel_size", kernel))
        if stride != 1:
            pp.append(("stride", stride))
        if pad:
            pp.append(("pad", pad))
    return net.add(name, "Pooling", bottom, name, ("pooling_param", pp), exclude=exclude)


def _lrn(net: _Net, name: str, bottom: str) -> str:
    return net.add(name, "LRN", bottom, name,
                   ("lrn_param", [("local_size", 5), ("alpha", 0.0001), ("beta", 0.75)]))


def _dropout(net: _Net, name: str, blob: str, ratio: float, exclude: str | None = None) -> str:
    return net.add(name, "Dropout", blob, blob, ("dropout_param", [("dropout_ratio", ratio)]),
                   exclude=exclude)


def _data(net: _Net, *, train_batch: int, val_batch: int, top: str = "data", scale: float | None = None,
          crop: int | None = None, mirror: bool = False) -> None:
    """DIGITS' two Data layers (no source, backend, mean: the job fills them in)."""
    for stage, batch in (("train", train_batch), ("val", val_batch)):
        tp: list = []
        if scale is not None:
            tp.append(("scale", scale))
        if mirror and stage == "train":
            tp.append(("mirror", True))
        if crop:
            tp.append(("crop_size", crop))
        extra = [("transform_param", tp)] if tp else []
        net.add(f"{stage}-data", "Data", (), (top, "label"), *extra,
                ("data_param", [("batch_size", batch)]), include=stage)
    if top != "data" and scale is not None:
        # deploy gets raw pixels in "data": scale them as transform_param did in training
        net.add("scale", "Power", "data", top, ("power_param", [("scale", scale)]), include="deploy")


def _head(net: _Net, logits: str) -> None:
    """Accuracy in validation, the loss outside deploy, the Softmax "prob" in deploy."""
    net.add("accuracy", "Accuracy", (logits, "label"), "accuracy", include="val")
    net.add("loss", "SoftmaxWithLoss", (logits, "label"), "loss", exclude="deploy")
    net.add("prob", "Softmax", logits, "prob", include="deploy")


# ----- LeNet ----------------------------------------------------------------------------------

def _lenet(bn: bool) -> str:
    net = _Net("LeNetBN" if bn else "LeNet", comment=(
        "LeNet" + (" with BVLC BatchNorm + Scale after conv1, conv2 and ip1" if bn else "") + ".\n"
        "Pixels scaled by 1/256 (transform_param in training, a Power layer in deploy).\n"
        "ip2 has no num_output: it gets the dataset's class count."))
    _data(net, train_batch=64, val_batch=100, top="scaled", scale=0.00390625)
    x = _conv(net, "conv1", "scaled", 20, 5, bias=not bn)
    if bn:
        _bn(net, x, "conv1")
        _relu(net, x, "conv1_relu")
    x = _pool(net, "pool1", x, "MAX", 2, 2)
    x = _conv(net, "conv2", x, 50, 5, bias=not bn)
    if bn:
        _bn(net, x, "conv2")
        _relu(net, x, "conv2_relu")
    x = _pool(net, "pool2", x, "MAX", 2, 2)
    x = _ip(net, "ip1", x, 500, bias=not bn)
    if bn:
        _bn(net, x, "ip1")
    _relu(net, x, "relu1")
    x = _ip(net, "ip2", x, None)
    _head(net, x)
    return net.text()


# ----- AlexNet --------------------------------------------------------------------------------

def _alexnet(bn: bool) -> str:
    net = _Net("AlexNetBN" if bn else "AlexNet", comment=(
        "AlexNet: 227x227 crops of 256x256 images, mirrored in training" +
        ("; BatchNorm + Scale after every convolution and fc6/fc7 instead of LRN" if bn else "") +
        ".\nfc8 has no num_output: it gets the dataset's class count."))
    _data(net, train_batch=100, val_batch=100, crop=227, mirror=True)
    g = ("gaussian", {"std": 0.01})
    specs = [("conv1", 96, 11, 4, 0, 1, 0.0), ("conv2", 256, 5, 1, 2, 2, 0.1),
             ("conv3", 384, 3, 1, 1, 1, 0.0), ("conv4", 384, 3, 1, 1, 2, 0.1),
             ("conv5", 256, 3, 1, 1, 2, 0.1)]
    x = "data"
    for i, (name, n, k, s, p, grp, bv) in enumerate(specs, 1):
        x = _conv(net, name, x, n, k, stride=s, pad=p, group=grp, bias=not bn,
                  weight=("msra", {}) if bn else g, bias_value=bv)
        if bn:
            _bn(net, x, name)
        _relu(net, x, f"relu{i}")
        if i in (1, 2):
            if not bn:
                x = _lrn(net, f"norm{i}", x)
            x = _pool(net, f"pool{i}", x, "MAX", 3, 2)
    x = _pool(net, "pool5", x, "MAX", 3, 2)
    for i in (6, 7):
        x = _ip(net, f"fc{i}", x, 4096, bias=not bn, weight=("gaussian", {"std": 0.005}), bias_value=0.1)
        if bn:
            _bn(net, x, f"fc{i}")
        _relu(net, x, f"relu{i}")
        _dropout(net, f"drop{i}", x, 0.5)
    x = _ip(net, "fc8", x, None, weight=g)
    _head(net, x)
    return net.text()


# ----- GoogLeNet ------------------------------------------------------------------------------

_INCEPTION = {  # name: (1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj)
    "3a": (64, 96, 128, 16, 32, 32), "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64), "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64), "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128), "5b": (384, 192, 384, 48, 128, 128),
}


def _googlenet(bn: bool) -> str:
    net = _Net("GoogLeNetBN" if bn else "GoogLeNet", comment=(
        "GoogLeNet (Inception v1): 224x224 crops of 256x256 images, mirrored in training; two\n"
        "auxiliary classifiers (loss weight 0.3) in training and validation only" +
        ("; BatchNorm + Scale after every convolution instead of LRN" if bn else "") + ".\n"
        "The classifiers have no num_output: they get the dataset's class count."))
    _data(net, train_batch=32, val_batch=32, crop=224, mirror=True)

    def conv(name, bottom, n, k, stride=1, pad=0, exclude=None):
        cp: list = [("num_output", n)]
        if pad:
            cp.append(("pad", pad))
        cp.append(("kernel_size", k))
        if stride != 1:
            cp.append(("stride", stride))
        if bn:
            cp += [("bias_term", False), ("weight_filler", _filler("msra"))]
        else:
            cp += [("weight_filler", _filler("xavier")), ("bias_filler", _filler("constant", value=0.2))]
        x = net.add(name, "Convolution", bottom, name, *_params(not bn), ("convolution_param", cp),
                    exclude=exclude)
        if bn:
            _bn(net, x, name, exclude=exclude)
        return _relu(net, x, f"{name}_relu", exclude=exclude)

    x = conv("conv1/7x7_s2", "data", 64, 7, 2, 3)
    x = _pool(net, "pool1/3x3_s2", x, "MAX", 3, 2)
    if not bn:
        x = _lrn(net, "pool1/norm1", x)
    x = conv("conv2/3x3_reduce", x, 64, 1)
    x = conv("conv2/3x3", x, 192, 3, pad=1)
    if not bn:
        x = _lrn(net, "conv2/norm2", x)
    x = _pool(net, "pool2/3x3_s2", x, "MAX", 3, 2)

    def aux(i: int, bottom: str) -> None:
        p = f"loss{i}"
        y = _pool(net, f"{p}/ave_pool", bottom, "AVE", 5, 3, exclude="deploy")
        y = conv(f"{p}/conv", y, 128, 1, exclude="deploy")
        y = _ip(net, f"{p}/fc", y, 1024, weight=("xavier", {}), bias_value=0.2, exclude="deploy")
        _relu(net, y, f"{p}/fc_relu", exclude="deploy")
        _dropout(net, f"{p}/drop_fc", y, 0.7, exclude="deploy")
        y = _ip(net, f"{p}/classifier", y, None, exclude="deploy")
        net.add(f"{p}/loss", "SoftmaxWithLoss", (y, "label"), f"{p}/loss", ("loss_weight", 0.3),
                exclude="deploy")

    for name, (n1, n3r, n3, n5r, n5, npool) in _INCEPTION.items():
        p = f"inception_{name}"
        b1 = conv(f"{p}/1x1", x, n1, 1)
        b3 = conv(f"{p}/3x3", conv(f"{p}/3x3_reduce", x, n3r, 1), n3, 3, pad=1)
        b5 = conv(f"{p}/5x5", conv(f"{p}/5x5_reduce", x, n5r, 1), n5, 5, pad=2)
        bp = conv(f"{p}/pool_proj", _pool(net, f"{p}/pool", x, "MAX", 3, 1, 1), npool, 1)
        x = net.add(f"{p}/output", "Concat", (b1, b3, b5, bp), f"{p}/output")
        if name == "4a":
            aux(1, x)
        elif name == "4d":
            aux(2, x)
        elif name in ("3b", "4e"):
            x = _pool(net, f"pool{name[0]}/3x3_s2", x, "MAX", 3, 2)
    x = _pool(net, "pool5/7x7_s1", x, "AVE", global_=True)
    _dropout(net, "pool5/drop_7x7_s1", x, 0.4)
    x = _ip(net, "loss3/classifier", x, None)
    _head(net, x)
    return net.text()


# ----- ResNet ---------------------------------------------------------------------------------

def _resnet(depth: int) -> str:
    bottleneck = depth == 50
    blocks = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3)}[depth]
    net = _Net(f"ResNet-{depth}", comment=(
        f"ResNet-{depth} ({'bottleneck' if bottleneck else 'basic'} blocks), BVLC BatchNorm + Scale after "
        "every convolution;\n224x224 crops of 256x256 images, mirrored in training.  Global average "
        "pooling at the end:\nit also runs on small images (32x32).\n"
        "fc has no num_output: it gets the dataset's class count."))
    _data(net, train_batch=32, val_batch=32, crop=224, mirror=True)
    msra = ("msra", {})

    def conv_bn(name, bottom, n, k, stride=1, pad=0, relu=True):
        x = _conv(net, name, bottom, n, k, stride=stride, pad=pad, bias=False, weight=msra)
        _bn(net, x, name)
        return _relu(net, x, f"{name}_relu") if relu else x

    x = conv_bn("conv1", "data", 64, 7, 2, 3)
    x = _pool(net, "pool1", x, "MAX", 3, 2)
    channels = 64
    for s, n_blocks in enumerate(blocks):
        width = 64 * 2 ** s
        out = width * 4 if bottleneck else width
        for b in range(n_blocks):
            p = f"res{s + 2}{chr(ord('a') + b)}"
            stride = 2 if (b == 0 and s > 0) else 1
            if b == 0 and (stride != 1 or channels != out):
                short = conv_bn(f"{p}_branch1", x, out, 1, stride, relu=False)
            else:
                short = x
            if bottleneck:
                y = conv_bn(f"{p}_branch2a", x, width, 1, stride)
                y = conv_bn(f"{p}_branch2b", y, width, 3, 1, 1)
                y = conv_bn(f"{p}_branch2c", y, out, 1, relu=False)
            else:
                y = conv_bn(f"{p}_branch2a", x, width, 3, stride, 1)
                y = conv_bn(f"{p}_branch2b", y, width, 3, 1, 1, relu=False)
            x = net.add(p, "Eltwise", (short, y), p, ("eltwise_param", [("operation", _Enum("SUM"))]))
            _relu(net, x, f"{p}_relu")
            channels = out
    x = _pool(net, "pool5", x, "AVE", global_=True)
    x = _ip(net, "fc", x, None, weight=msra)
    _head(net, x)
    return net.text()


_BUILDERS = {
    "lenet": lambda: _lenet(False), "lenet_bn": lambda: _lenet(True),
    "alexnet": lambda: _alexnet(False), "alexnet_bn": lambda: _alexnet(True),
    "googlenet": lambda: _googlenet(False), "googlenet_bn": lambda: _googlenet(True),
    "resnet18": lambda: _resnet(18), "resnet50": lambda: _resnet(50),
}


def network_prototxt(name: str) -> str:
    """The standard network ``name`` (a key of :data:`STANDARD_NETWORKS`) as DIGITS-style prototxt
    text with train/val/deploy stages.  Raises KeyError for an unknown name."""
    if name not in _BUILDERS:
        raise KeyError(name)
    return _BUILDERS[name]()
