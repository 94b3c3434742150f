"""Pictures of a net definition (a ``caffe_pb2.NetParameter``), as pycaffe's ``caffe.draw``.

Layers become boxes (coloured by type; in-place layers such as ReLU in green), blobs become
grey octagons, and arrows run from bottom blobs to layers and from layers to top blobs::

    from google.protobuf import text_format
    import brewnet.draw
    from brewnet.proto import caffe_pb2

    net = text_format.Parse(open("lenet_train_test.prototxt").read(), caffe_pb2.NetParameter())
    brewnet.draw.draw_net_to_file(net, "lenet.png", rankdir="LR", phase=caffe_pb2.TRAIN)

The graph is built with the ``pydot`` package; rendering it to an image (PNG, SVG, PDF, ...)
runs Graphviz's ``dot`` program, which comes from the system's ``graphviz`` package
(``apt-get install graphviz``).  Writing to a ``.raw`` file saves the DOT source instead, which
needs no Graphviz.

Differences from pycaffe's drawing, all in cases where pycaffe's picture was wrong:

- every layer gets its own box (pycaffe merged layers with the same name and type, e.g. the
  TRAIN and TEST data layers of one file); every blob is drawn in the blob style;
- phase filtering follows Caffe's rules: an include/exclude rule without a ``phase`` applies
  to both phases (stages and levels are not looked at);
- labels escape the characters that Graphviz's record shapes treat specially, and show
  per-axis kernels (``kernel_h``/``kernel_w``, or several ``kernel_size`` values) as ``HxW``;
- a net written with the legacy V1 ``layers`` field is upgraded before drawing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any, Optional, Sequence, Tuple, Union

from ..errors import BrewnetError
from ..net_state import has_include_and_exclude, layer_included, phase_meets_rule
from ..proto import caffe_pb2

__all__ = ["LAYER_STYLE_DEFAULT", "NEURON_LAYER_STYLE", "BLOB_STYLE", "GraphvizNotFoundError",
           "GraphvizError", "get_pooling_types_dict", "get_edge_label", "get_layer_lr_mult",
           "get_layer_label", "choose_color_by_layertype", "get_pydot_graph", "draw_net",
           "draw_net_to_file"]

# Node styles (Graphviz attributes).  Layer boxes take their fill colour from
# choose_color_by_layertype; these dicts are never modified.
LAYER_STYLE_DEFAULT = {"shape": "record", "fillcolor": "#6495ED", "style": "filled"}
NEURON_LAYER_STYLE = {"shape": "record", "fillcolor": "#90EE90", "style": "filled"}
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}

_LEARNING_TYPES = ("Convolution", "Deconvolution", "InnerProduct")
_WINDOW_TYPES = ("Convolution", "Deconvolution", "Pooling")
_RECORD_SPECIALS = '\\"{}|<>'  # characters a record label must escape
_STRING_SPECIALS = '\\"'  # characters any quoted DOT string must escape
_NO_LABEL = '""'

PhaseArg = Union[int, str, None]


class GraphvizNotFoundError(BrewnetError, FileNotFoundError):
    """Graphviz's ``dot`` program, which renders the picture, is not installed."""


class GraphvizError(BrewnetError, RuntimeError):
    """``dot`` refused the graph or the output format (its message is included)."""


def _pydot():
    """The pydot module, imported when a graph is first built."""
    try:
        import pydot
    except ImportError as e:
        raise ImportError("drawing nets needs the 'pydot' package: pip install pydot") from e
    return pydot


def __getattr__(name: str):
    # pycaffe's module exposes the pydot module it uses as caffe.draw.pydot
    if name == "pydot":
        return _pydot()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_pooling_types_dict() -> dict[int, str]:
    """Pooling method number -> its name: ``{0: 'MAX', 1: 'AVE', 2: 'STOCHASTIC'}``."""
    enum = caffe_pb2.PoolingParameter.PoolMethod.DESCRIPTOR
    return {value.number: name for name, value in enum.values_by_name.items()}


def get_edge_label(layer: caffe_pb2.LayerParameter) -> str:
    """The label of the arrows out of ``layer``: ``'Batch <batch_size>'`` for a Data layer,
    the number of outputs of a Convolution, Deconvolution or InnerProduct, and the empty
    DOT string ``'""'`` for anything else."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return _NO_LABEL


def get_layer_lr_mult(layer: caffe_pb2.LayerParameter) -> Tuple[float, float]:
    """The learning rate multipliers ``(weights, bias)`` of a Convolution, Deconvolution or
    InnerProduct layer (1.0 where its ``param`` entries do not say).

    Raises:
        ValueError: another layer type, or more than two ``param`` entries.
    """
    if layer.type not in _LEARNING_TYPES:
        raise ValueError(f"{layer.type} layers do not have a learning rate multiplier")
    specs = list(layer.param)
    if len(specs) > 2:
        raise ValueError("Could not parse the learning rate multiplier")
    mults = [spec.lr_mult for spec in specs] + [1.0] * (2 - len(specs))
    return mults[0], mults[1]


def _escape(text: str, specials: str = _RECORD_SPECIALS) -> str:
    """``text`` made literal inside a quoted Graphviz label (of a record shape by default)."""
    return "".join("\\" + ch if ch in specials else ch for ch in text)


def _per_axis(values: Sequence[int], default: int) -> str:
    """One number when all axes agree (or ``default`` when none is given), else ``HxW``."""
    values = list(values) or [default]
    if len(set(values)) == 1:
        return str(values[0])
    return "x".join(str(v) for v in values)


def _window(layer: caffe_pb2.LayerParameter) -> Tuple[str, str, str]:
    """Kernel size, stride and pad of a Convolution, Deconvolution or Pooling, as text."""
    if layer.type == "Pooling":
        p = layer.pooling_param
        if p.global_pooling:
            kernel = "global"
        elif p.HasField("kernel_h") or p.HasField("kernel_w"):
            kernel = _per_axis([p.kernel_h, p.kernel_w], 1)
        else:
            kernel = str(p.kernel_size)
        stride = (_per_axis([p.stride_h, p.stride_w], 1)
                  if p.HasField("stride_h") or p.HasField("stride_w") else str(p.stride))
        pad = (_per_axis([p.pad_h, p.pad_w], 0)
               if p.HasField("pad_h") or p.HasField("pad_w") else str(p.pad))
        return kernel, stride, pad
    p = layer.convolution_param
    kernel = (_per_axis([p.kernel_h, p.kernel_w], 1)
              if p.HasField("kernel_h") or p.HasField("kernel_w") else _per_axis(p.kernel_size, 1))
    stride = (_per_axis([p.stride_h, p.stride_w], 1)
              if p.HasField("stride_h") or p.HasField("stride_w") else _per_axis(p.stride, 1))
    pad = (_per_axis([p.pad_h, p.pad_w], 0)
           if p.HasField("pad_h") or p.HasField("pad_w") else _per_axis(p.pad, 0))
    return kernel, stride, pad


def get_layer_label(layer: caffe_pb2.LayerParameter, rankdir: str,
                    display_lrm: bool = False) -> str:
    """The text of a layer's box, as a quoted DOT string.

    Lines: the layer name; its type in parentheses (with the method for Pooling, e.g.
    ``(Pooling MAX)``); for Convolution, Deconvolution and Pooling ``kernel size: K``,
    ``stride: S``, ``pad: P``; with ``display_lrm``, ``lr mult: W, B`` for learning layers.
    In a vertical layout (``rankdir`` TB or BT) the parts are separated by spaces, since
    width is free there; otherwise by line breaks.
    """
    separator = " " if rankdir in ("TB", "BT") else r"\n"
    parts = [_escape(layer.name)]
    if layer.type == "Pooling":
        method = get_pooling_types_dict().get(layer.pooling_param.pool,
                                              str(layer.pooling_param.pool))
        parts.append(f"({_escape(layer.type)} {method})")
    else:
        parts.append(f"({_escape(layer.type)})")
    if layer.type in _WINDOW_TYPES:
        kernel, stride, pad = _window(layer)
        parts.append(separator.join([f"kernel size: {kernel}", f"stride: {stride}",
                                     f"pad: {pad}"]))
    if display_lrm and layer.type in _LEARNING_TYPES:
        weights_mult, bias_mult = get_layer_lr_mult(layer)
        if weights_mult or bias_mult:
            parts.append(f"lr mult: {weights_mult:.1f}, {bias_mult:.1f}")
    return '"' + separator.join(parts) + '"'


def choose_color_by_layertype(layertype: str) -> str:
    """The fill colour of a layer box: red for (de)convolutions, orange for pooling, purple
    for inner products, blue for the rest."""
    return {"Convolution": "#FF5050", "Deconvolution": "#FF5050", "Pooling": "#FF9900",
            "InnerProduct": "#CC33FF"}.get(layertype, "#6495ED")


def _phase_number(phase: PhaseArg) -> Optional[int]:
    """``caffe_pb2.TRAIN``/``TEST`` (or None), also given by name (``'TRAIN'``, ``'test'``)."""
    if phase is None:
        return None
    if isinstance(phase, str):
        try:
            return caffe_pb2.Phase.Value(phase.upper())
        except ValueError:
            raise ValueError(f"unknown phase {phase!r}: use TRAIN or TEST") from None
    if isinstance(phase, bool) or phase not in caffe_pb2.Phase.values():
        raise ValueError(f"unknown phase {phase!r}: use caffe_pb2.TRAIN or caffe_pb2.TEST")
    return int(phase)


def _in_phase(layer: caffe_pb2.LayerParameter, phase: Optional[int]) -> bool:
    """Whether ``layer`` is part of the net in ``phase`` (always when ``phase`` is None)."""
    if phase is None:
        return True
    if has_include_and_exclude(layer):
        raise ValueError(f"layer {layer.name} has both include and exclude specified.")
    return layer_included(layer, lambda rule: phase_meets_rule(phase, rule))


def _current_format(net: caffe_pb2.NetParameter) -> caffe_pb2.NetParameter:
    """``net`` itself, or an upgraded copy when it uses the legacy V1 ``layers`` field."""
    if net.layers and not net.layer:
        from ..formats import upgrade_net
        return upgrade_net(net)
    return net


def get_pydot_graph(caffe_net: caffe_pb2.NetParameter, rankdir: str, label_edges: bool = True,
                    phase: PhaseArg = None, display_lrm: bool = False) -> Any:
    """The ``pydot.Dot`` graph of ``caffe_net``.

    Args:
        caffe_net: the net definition.
        rankdir: the direction of the layout: ``'LR'``, ``'TB'``, ``'BT'`` (or ``'RL'``).
        label_edges: label the arrows out of layers (see :func:`get_edge_label`).
        phase: draw only the layers of this phase (``caffe_pb2.TRAIN`` or ``caffe_pb2.TEST``);
            None draws all layers.
        display_lrm: show the learning rate multipliers of learning layers.
    Returns:
        A ``pydot.Dot`` with one node per drawn layer (named ``layer<i>``, ``i`` its index in
        ``caffe_net``) and one per blob (named ``blob<j>`` in order of first use; an in-place
        layer's top is its bottom's node); node labels give the names.
    Raises:
        ValueError: a layer has both include and exclude rules (when ``phase`` is given), or
            ``phase`` is not a phase.
    """
    pydot = _pydot()
    phase = _phase_number(phase)
    net = _current_format(caffe_net)
    graph = pydot.Dot(net.name or "Net", graph_type="digraph", rankdir=rankdir)
    blob_nodes: dict[str, Any] = {}
    edges: list[tuple[Any, Any, str]] = []

    def blob_node(name: str):
        if name not in blob_nodes:
            blob_nodes[name] = pydot.Node(f"blob{len(blob_nodes)}",
                                          label='"' + _escape(name, _STRING_SPECIALS) + '"',
                                          **BLOB_STYLE)
        return blob_nodes[name]

    layer_nodes = []
    for index, layer in enumerate(net.layer):
        if not _in_phase(layer, phase):
            continue
        in_place = len(layer.bottom) == 1 and list(layer.top) == list(layer.bottom)
        if in_place:
            style = NEURON_LAYER_STYLE
        else:
            style = dict(LAYER_STYLE_DEFAULT, fillcolor=choose_color_by_layertype(layer.type))
        node = pydot.Node(f"layer{index}", label=get_layer_label(layer, rankdir, display_lrm),
                          **style)
        layer_nodes.append(node)
        for bottom in layer.bottom:
            edges.append((blob_node(bottom), node, _NO_LABEL))
        top_label = get_edge_label(layer) if label_edges else _NO_LABEL
        for top in layer.top:
            edges.append((node, blob_node(top), top_label))

    for node in layer_nodes + list(blob_nodes.values()):
        graph.add_node(node)
    for src, dst, label in edges:
        if label == _NO_LABEL:
            graph.add_edge(pydot.Edge(src, dst))
        else:
            quoted = '"' + _escape(label, _STRING_SPECIALS) + '"'
            graph.add_edge(pydot.Edge(src, dst, label=quoted))
    return graph


def _render(dot_source: str, ext: str) -> bytes:
    """``dot_source`` laid out and rendered by Graphviz's ``dot`` in format ``ext``."""
    dot = shutil.which("dot")
    if dot is None:
        raise GraphvizNotFoundError(
            "drawing a net needs Graphviz's 'dot' program, which is not installed (or not on "
            "PATH): install the graphviz package, e.g. 'apt-get install graphviz' (Debian, "
            "Ubuntu), 'brew install graphviz' (macOS), 'conda install graphviz'; or write a "
            "'.raw' file to get the DOT source")
    proc = subprocess.run([dot, f"-T{ext}"], input=dot_source.encode("utf-8"),
                          capture_output=True)
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip()
        raise GraphvizError(f"Graphviz 'dot -T{ext}' failed (exit code {proc.returncode}): "
                            f"{message}")
    return proc.stdout


def draw_net(caffe_net: caffe_pb2.NetParameter, rankdir: str, ext: str = "png",
             phase: PhaseArg = None, display_lrm: bool = False) -> bytes:
    """The picture of ``caffe_net`` in Graphviz output format ``ext`` ('png', 'svg', 'pdf',
    'jpg', 'dot', ...; 'raw' gives the DOT source and needs no Graphviz).

    The other arguments are those of :func:`get_pydot_graph`.

    Raises:
        GraphvizNotFoundError: Graphviz's ``dot`` is not installed.
        GraphvizError: ``dot`` failed, e.g. on an unknown format.
    """
    graph = get_pydot_graph(caffe_net, rankdir, phase=phase, display_lrm=display_lrm)
    source = graph.to_string()
    if ext == "raw":
        return source.encode("utf-8")
    return _render(source, ext)


def draw_net_to_file(caffe_net: caffe_pb2.NetParameter, filename: Union[str, os.PathLike],
                     rankdir: str = "LR", phase: PhaseArg = None,
                     display_lrm: bool = False) -> None:
    """Draw ``caffe_net`` into ``filename``, in the format its extension names (``.png``,
    ``.svg``, ``.pdf``, ...; ``.raw`` writes the DOT source, to render by hand with Graphviz).

    The picture is made before the file is opened, so a failure leaves no empty file.

    Raises:
        ValueError: ``filename`` has no extension.
        GraphvizNotFoundError, GraphvizError: as :func:`draw_net`.
    """
    filename = os.fspath(filename)
    ext = os.path.splitext(filename)[1][1:].lower()
    if not ext:
        raise ValueError(f"{filename!r} has no extension to choose the picture format from "
                         f"(e.g. .png, .svg, .pdf, .raw)")
    image = draw_net(caffe_net, rankdir, ext, phase, display_lrm)
    with open(filename, "wb") as f:
        f.write(image)
