"""Writing prototxt from Python, as pycaffe's ``caffe.NetSpec``, ``caffe.layers`` and
``caffe.params`` do::

    n = NetSpec()
    n.data, n.label = L.Input(shape=[dict(dim=[64, 1, 28, 28]), dict(dim=[64])], ntop=2)
    n.conv = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type="xavier"))
    n.loss = L.SoftmaxWithLoss(n.conv, n.label)
    print(n.to_proto())

Keyword arguments that are LayerParameter fields (``param``, ``include``, ``loss_weight``,
``propagate_down``, ...) go to the layer; the others go to the layer's own ``<type>_param``.
``ntop`` sets the number of tops, ``in_place=True`` reuses the bottom's name.
"""
from __future__ import annotations

from collections import OrderedDict


from .proto import caffe_pb2

_LAYER_FIELDS = {f.name for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields}


def _param_field_by_type() -> dict[str, str]:
    """Caffe type name -> its LayerParameter field, from the schema (ConvolutionParameter ->
    convolution_param, so "Convolution" -> "convolution_param")."""
    out = {}
    for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields:
        if f.name.endswith("_param") and f.message_type is not None:
            type_name = f.message_type.name[: -len("Parameter")]
            out[type_name] = f.name
    out["Deconvolution"] = "convolution_param"
    return out


_PARAM_FIELD = _param_field_by_type()


def _assign(msg, name: str, value) -> None:
    """Set field ``name`` of ``msg`` from Python values (lists for repeated, dicts for messages)."""
    field = msg.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise AttributeError(f"{msg.DESCRIPTOR.name} has no field '{name}'")
    is_repeated = field.is_repeated
    values = value if isinstance(value, (list, tuple)) else [value]
    if field.message_type is not None:
        if is_repeated:
            for v in values:
                _fill_message(getattr(msg, name).add(), v)
        else:
            _fill_message(getattr(msg, name), value)
    elif is_repeated:
        getattr(msg, name).extend(values)
    else:
        setattr(msg, name, value)


def _fill_message(msg, value) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _assign(msg, k, v)
    else:
        msg.CopyFrom(value)


class Top:
    """One output of a layer function; usable as a bottom of later layers."""

    def __init__(self, fn: "Function", n: int):
        self.fn = fn
        self.n = n

    def to_proto(self) -> caffe_pb2.NetParameter:
        return to_proto(self)


class Function:
    """A layer call recorded by ``caffe.layers.<Type>(...)``."""

    def __init__(self, type_name: str, inputs, params: dict):
        self.type_name = type_name
        for i, inp in enumerate(inputs):
            if not isinstance(inp, Top):
                raise TypeError(f"{type_name} input {i} is not a Top (type is {type(inp)})")
        self.inputs = list(inputs)
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        if self.in_place and len(self.inputs) != 1:
            raise ValueError("in_place=True needs exactly one bottom")
        self.tops = tuple(Top(self, i) for i in range(self.ntop))

    def _top_name(self, top: "Top | Function", names: dict, autonames: dict) -> str:
        if top not in names:
            autonames[self.type_name] = autonames.get(self.type_name, 0) + 1
            names[top] = f"{self.type_name}{autonames[self.type_name]}"
        return names[top]

    def to_layer(self, names: dict, autonames: dict, layers: "OrderedDict") -> None:
        if self in layers:
            return
        bottoms = []
        for inp in self.inputs:
            inp.fn.to_layer(names, autonames, layers)
            bottoms.append(layers[inp.fn].top[inp.n])
        lp = caffe_pb2.LayerParameter()
        lp.type = self.type_name
        lp.bottom.extend(bottoms)
        if self.in_place:
            lp.top.extend(lp.bottom)
        else:
            lp.top.extend(self._top_name(t, names, autonames) for t in self.tops)
        params = dict(self.params)
        # the layer is named after its first top's NetSpec name (in place too), as pycaffe does
        # (a layer without tops, e.g. Silence, after the NetSpec name it was assigned to)
        default = self._top_name(self.tops[0] if self.tops else self, names, autonames)
        lp.name = params.pop("name", None) or default
        for k, v in params.items():
            if k in _LAYER_FIELDS:
                _assign(lp, k, v)
            else:
                field = _PARAM_FIELD.get(self.type_name)
                if field is None:
                    raise AttributeError(f"layer type {self.type_name!r} takes no parameter '{k}'")
                _assign(getattr(lp, field), k, v)
        layers[self] = lp


class NetSpec:
    """Name tops by assigning them as attributes; ``to_proto()`` gives the NetParameter."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name, value):
        self.tops[name] = value

    def __getattr__(self, name):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, key, value):
        self.__setattr__(key, value)

    def __getitem__(self, item):
        return self.__getattr__(item)

    def to_proto(self) -> caffe_pb2.NetParameter:
        names = {v: k for k, v in self.tops.items()}
        autonames: dict = {}
        layers: OrderedDict = OrderedDict()
        for top in self.tops.values():  # a Top, or the Function of a layer without tops
            (top if isinstance(top, Function) else top.fn).to_layer(names, autonames, layers)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


def to_proto(*tops: Top) -> caffe_pb2.NetParameter:
    """The NetParameter of everything the given tops depend on."""
    layers: OrderedDict = OrderedDict()
    names: dict = {}
    autonames: dict = {}
    for t in tops:
        t.fn.to_layer(names, autonames, layers)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class _Layers:
    """``caffe.layers.<Type>(*bottoms, **params)``."""

    def __getattr__(self, name: str):
        def layer_fn(*args, **kwargs):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            return fn.tops[0] if fn.ntop == 1 else fn.tops
        return layer_fn


class _Params:
    """``caffe.params.<Type>.<ENUM_VALUE>``, e.g. ``P.Pooling.MAX`` or ``P.Eltwise.SUM``."""

    def __getattr__(self, name: str):
        return _EnumNamespace(name)


class _EnumNamespace:
    def __init__(self, type_name: str):
        self.type_name = type_name

    def __getattr__(self, value_name: str):
        field = _PARAM_FIELD.get(self.type_name)
        msg = getattr(caffe_pb2.LayerParameter(), field) if field else None
        if msg is not None:
            for enum in msg.DESCRIPTOR.enum_types:
                if value_name in enum.values_by_name:
                    return enum.values_by_name[value_name].number
        raise AttributeError(f"{self.type_name} has no enum value {value_name!r}")


def param_name_dict() -> dict[str, str]:
    """Caffe layer type -> the prefix of its parameter field (``"Convolution"`` ->
    ``"convolution"``, for ``convolution_param``), as pycaffe's net_spec gives it."""
    return {t: f[: -len("_param")] for t, f in _PARAM_FIELD.items()}


def assign_proto(proto, name: str, value) -> None:
    """Set field ``name`` of a protobuf message from Python values (lists for repeated
    fields, dicts for messages), as pycaffe's net_spec.assign_proto."""
    _assign(proto, name, value)


# pycaffe's class names for the two namespaces
Layers = _Layers
Parameters = _Params

layers = _Layers()
params = _Params()
