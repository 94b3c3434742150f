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

A layer call only records itself (a :class:`Function` with its :class:`Top` outputs); the
prototxt is written when asked for, by a :class:`_Writer` that walks the graph from the wanted
tops, depth first, and emits each layer after its inputs.  Tops named through a NetSpec keep
their names; the others are named ``<Type><n>``, counted per type in the order the walk names
them (see tests/test_net_spec_prototxt.py for the nets this gives).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from ..proto import caffe_pb2

_LAYER_FIELDS = frozenset(f.name for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields)


def _type_param_fields() -> dict[str, str]:
    """Caffe type name -> the LayerParameter field of its parameters, read off the schema: a
    ``<x>_param`` field of message type ``<Type>Parameter`` serves type ``<Type>``."""
    by_type = {f.message_type.name[: -len("Parameter")]: f.name
               for f in caffe_pb2.LayerParameter.DESCRIPTOR.fields
               if f.message_type is not None and f.name.endswith("_param")}
    by_type["Deconvolution"] = "convolution_param"    # the one type that borrows another's
    return by_type


_TYPE_PARAM = _type_param_fields()


# ----- Python values into protobuf messages ----------------------------------------------------

def assign_proto(proto, name: str, value) -> None:
    """Set field ``name`` of a protobuf message from Python values: a dict fills a message, a
    list fills a repeated field (one value alone is taken as a list of one), a message is
    copied, anything else is assigned."""
    field = proto.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        raise AttributeError(f"{proto.DESCRIPTOR.name} has no field '{name}'")
    if not field.is_repeated:
        if field.message_type is None:
            setattr(proto, name, value)
        else:
            _fill(getattr(proto, name), value)
        return
    container = getattr(proto, name)
    items = value if isinstance(value, (list, tuple)) else [value]
    if field.message_type is None:
        container.extend(items)
    else:
        for item in items:
            _fill(container.add(), item)


def _fill(message, value) -> None:
    """A dict's items into ``message``'s fields, or a message copied into it."""
    if not isinstance(value, dict):
        message.CopyFrom(value)
        return
    for key, item in value.items():
        assign_proto(message, key, item)


def _layer_parameter(type_name: str, kwargs: dict) -> caffe_pb2.LayerParameter:
    """A LayerParameter of ``type_name`` holding ``kwargs``: LayerParameter fields on the layer,
    the others in the type's own parameter message."""
    layer = caffe_pb2.LayerParameter(type=type_name)
    for key, value in kwargs.items():
        if key in _LAYER_FIELDS:
            assign_proto(layer, key, value)
            continue
        own = _TYPE_PARAM.get(type_name)
        if own is None:
            raise AttributeError(f"layer type {type_name!r} takes no parameter '{key}'")
        assign_proto(getattr(layer, own), key, value)
    return layer


# ----- the recorded graph ----------------------------------------------------------------------

class Top:
    """Output ``n`` of the layer call ``fn``; usable as a bottom of later layers."""

    def __init__(self, fn: Function, n: int):
        self.fn = fn
        self.n = n

    def to_proto(self) -> caffe_pb2.NetParameter:
        """The NetParameter of this top and everything it is computed from."""
        return to_proto(self)


class Function:
    """One call of ``caffe.layers.<Type>(*inputs, **params)``: its type, its input Tops, its
    keyword arguments (``params``, without ``ntop`` and ``in_place``) and its ``tops``."""

    def __init__(self, type_name: str, inputs: Iterable, params: dict):
        inputs = tuple(inputs)
        for position, given in enumerate(inputs):
            if not isinstance(given, Top):
                raise TypeError(f"{type_name} input {position} is not a Top (type is {type(given)})")
        settings = dict(params)
        self.type_name = type_name
        self.inputs = list(inputs)
        self.ntop = settings.pop("ntop", 1)
        self.in_place = settings.pop("in_place", False)
        self.params = settings
        if self.in_place and len(inputs) != 1:
            raise ValueError("in_place=True needs exactly one bottom")
        self.tops = tuple(Top(self, k) for k in range(self.ntop))


# ----- writing the graph out -------------------------------------------------------------------

class _Writer:
    """Emits LayerParameters for the graph behind some tops, each layer once, inputs first."""

    def __init__(self, given_names: dict | None = None):
        self.names: dict[Top | Function, str] = dict(given_names or {})
        self.per_type: Counter = Counter()
        self.written: dict[Function, caffe_pb2.LayerParameter] = {}

    def name(self, key: Top | Function, type_name: str) -> str:
        """``key``'s given name, else the next ``<type_name><n>`` (kept for later uses)."""
        if key not in self.names:
            self.per_type[type_name] += 1
            self.names[key] = f"{type_name}{self.per_type[type_name]}"
        return self.names[key]

    def add(self, root: Function) -> None:
        """Write ``root`` and whatever it needs that is not written yet, depth first."""
        pending = [(root, iter(root.inputs))]
        while pending:
            fn, inputs = pending[-1]
            needed = next((t.fn for t in inputs if t.fn not in self.written), None)
            if needed is not None:
                pending.append((needed, iter(needed.inputs)))
                continue
            pending.pop()
            if fn not in self.written:
                self.written[fn] = self._layer(fn)

    def _layer(self, fn: Function) -> caffe_pb2.LayerParameter:
        bottoms = [self.written[t.fn].top[t.n] for t in fn.inputs]
        if fn.in_place:
            tops = bottoms
        else:
            tops = [self.name(t, fn.type_name) for t in fn.tops]
        # named after its first top (unnamed in place: a name of its own), a top-less one
        # after itself
        default = self.name(fn.tops[0] if fn.tops else fn, fn.type_name)
        kwargs = dict(fn.params)
        layer = _layer_parameter(fn.type_name, {k: v for k, v in kwargs.items() if k != "name"})
        layer.name = kwargs.get("name") or default
        layer.bottom.extend(bottoms)
        layer.top.extend(tops)
        return layer

    def net(self) -> caffe_pb2.NetParameter:
        return caffe_pb2.NetParameter(layer=list(self.written.values()))


def to_proto(*tops: Top) -> caffe_pb2.NetParameter:
    """The NetParameter of everything the given tops depend on (unnamed tops get
    ``<Type><n>`` names)."""
    writer = _Writer()
    for top in tops:
        writer.add(top.fn)
    return writer.net()


class NetSpec:
    """Name tops by assigning them as attributes (or items); ``to_proto()`` gives the
    NetParameter of everything assigned, under those names."""

    def __init__(self):
        object.__setattr__(self, "tops", {})

    def __setattr__(self, name: str, value) -> None:
        self.tops[name] = value

    def __getattr__(self, name: str):
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    __setitem__ = __setattr__

    def __getitem__(self, name: str):
        return self.tops[name]

    def to_proto(self) -> caffe_pb2.NetParameter:
        writer = _Writer({value: name for name, value in self.tops.items()})
        for value in self.tops.values():   # a Top, or a top-less layer's Function
            writer.add(value if isinstance(value, Function) else value.fn)
        return writer.net()


# ----- the caffe.layers and caffe.params namespaces --------------------------------------------

def _call_layer(type_name: str, *bottoms: Top, **kwargs: Any):
    """What ``caffe.layers.<type_name>(...)`` returns: its Top, its tuple of Tops, or (without
    tops) the Function itself, to be assigned to a NetSpec."""
    fn = Function(type_name, bottoms, kwargs)
    if fn.ntop == 1:
        return fn.tops[0]
    return fn.tops if fn.tops else fn


class Layers:
    """``caffe.layers``: ``layers.<Type>(*bottoms, **params)`` records a layer call."""

    def __getattr__(self, type_name: str):
        def layer(*bottoms, **kwargs):
            return _call_layer(type_name, *bottoms, **kwargs)
        layer.__name__ = type_name
        return layer


def _enum_number(type_name: str, value_name: str) -> int:
    """The number of enum value ``value_name`` in the parameter message of ``type_name``."""
    field = _TYPE_PARAM.get(type_name)
    if field is not None:
        message = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name[field].message_type
        for enum in message.enum_types:
            value = enum.values_by_name.get(value_name)
            if value is not None:
                return value.number
    raise AttributeError(f"{type_name} has no enum value {value_name!r}")


class _TypeEnums:
    def __init__(self, type_name: str):
        self._type_name = type_name

    def __getattr__(self, value_name: str) -> int:
        return _enum_number(self._type_name, value_name)


class Parameters:
    """``caffe.params``: ``params.<Type>.<VALUE>`` is an enum value of that type's parameters,
    e.g. ``params.Pooling.MAX`` or ``params.Eltwise.SUM``."""

    def __getattr__(self, type_name: str) -> _TypeEnums:
        return _TypeEnums(type_name)


def param_name_dict() -> dict[str, str]:
    """Caffe layer type -> the prefix of its parameter field (``"Convolution"`` ->
    ``"convolution"``, for ``convolution_param``), as pycaffe's net_spec gives it."""
    return {type_name: field[: -len("_param")] for type_name, field in _TYPE_PARAM.items()}


layers = Layers()
params = Parameters()
