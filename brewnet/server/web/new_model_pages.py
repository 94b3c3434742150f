"""The New Model page (DIGITS' /models/images/classification/new) and its helpers.

The form keeps DIGITS' field names (digits-rest.md §4) and posts them, as DIGITS' own page did,
to ``/models/images/classification.json``; errors come back per field and are shown next to it.
Beyond DIGITS: every standard network brewnet builds, a custom prototxt checked by ``brewnet
lint`` as you type (findings with their line numbers, next to the editor, from ``/api/v1/lint``),
a picture of the network (``caffe.draw``'s graph rendered as SVG by Graphviz, from
``/models/network.svg`` here), the learning rate over the run for the solver fields as they
stand (``/api/v1/lr-curve``), batch accumulation, the seed, precise BatchNorm, GPUs and sweeps
(several learning rates or batch sizes, comma-separated: one job each).
"""
from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response
from google.protobuf import text_format
from pydantic import BaseModel, Field

from ... import draw
from ...proto import caffe_pb2
from ..app_state import server_of
from ..digits.networks import STANDARD_NETWORKS
from ..digits.solver_form import LR_DEFAULTS, LR_FIELDS, LR_POLICIES, SOLVER_TYPES
from ..errors import ApiError
from ..jobs import states
from ..threads import in_thread
from .render import page
from .routers import page_router

router = page_router()

#: the largest prototxt drawn (bigger nets make pictures nobody can read, and cost Graphviz time)
MAX_DRAWN_LAYERS = 400


def form_choices(server) -> dict:
    """What the form offers: datasets, previous models with their snapshots, networks, GPUs,
    and a Python layer file upload when the server allows Python layers."""
    datasets, models = [], []
    for job in server.list_jobs():
        if job.kind == states.DATASET and job.status in ("Initialized", "Waiting", "Running", "Done"):
            datasets.append({"id": job.id, "name": job.name, "status": job.status})
        elif job.kind == states.MODEL:
            snaps = [{"epoch": s["epoch"], "iteration": s["iteration"]} for s in server.snapshot_list(job)]
            models.append({"id": job.id, "name": job.name, "status": job.status, "snapshots": snaps})
    return {"datasets": datasets, "models": models, "networks": STANDARD_NETWORKS,
            "solver_types": SOLVER_TYPES, "lr_policies": LR_POLICIES, "lr_fields": LR_FIELDS,
            "lr_defaults": LR_DEFAULTS, "gpus": [g["index"] for g in server.scheduler.slots()["gpus"]],
            "python_layers_allowed": server.config.python_layers_allowed}


def field_values(fields: dict) -> dict[str, str]:
    """A cloned job's fields as the form shows them (a sweep's list as comma-separated text)."""
    out = {}
    for k, v in (fields or {}).items():
        out[k] = ", ".join(str(x) for x in v) if isinstance(v, list) else ("" if v is None else str(v))
    return out


async def render_new_model(request: Request, fields: dict, clone: str | None):
    server = server_of(request)
    choices = await in_thread(form_choices, server)
    values = field_values(fields)
    if not clone and "dataset" in request.query_params:   # a dataset page's "new model" link
        values["dataset"] = request.query_params["dataset"]
    return page(request, "new_model.html", title="New image classification model", nav="new-model",
                values=values, clone=clone, **choices)


class DrawRequest(BaseModel):
    prototxt: str = Field(max_length=4 * 1024 * 1024)
    phase: str = Field(default="train", description="train | test | all")
    rankdir: str = Field(default="TB", description="TB | LR | BT | RL")


def _draw_svg(body: DrawRequest) -> bytes:
    if body.rankdir not in ("TB", "LR", "BT", "RL"):
        raise ApiError(400, "rankdir must be TB, LR, BT or RL", field="rankdir")
    phases = {"train": caffe_pb2.TRAIN, "test": caffe_pb2.TEST, "all": None}
    if body.phase not in phases:
        raise ApiError(400, "phase must be train, test or all", field="phase")
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(body.prototxt, net)
    except text_format.ParseError as e:
        raise ApiError(400, f"The prototxt does not parse: {e}", field="prototxt") from None
    if len(net.layer) + len(net.layers) > MAX_DRAWN_LAYERS:
        raise ApiError(400, f"Nets of more than {MAX_DRAWN_LAYERS} layers are not drawn here "
                            "(use `brewnet draw`)", field="prototxt")
    try:
        return draw.draw_net(net, body.rankdir, ext="svg", phase=phases[body.phase])
    except draw.GraphvizNotFoundError:
        raise ApiError(503, "Graphviz's dot is not installed on the server (apt-get install graphviz)") from None
    except draw.GraphvizError as e:
        raise ApiError(400, f"Graphviz could not draw this net: {e}", field="prototxt") from None


@router.post("/models/network.svg")
async def network_svg(request: Request, body: DrawRequest):
    """The network of a prototxt as an SVG picture (pycaffe's ``caffe.draw``)."""
    svg = await in_thread(_draw_svg, body)
    # our own picture, shown inline: nothing in it may run or load anything
    return Response(svg, media_type="image/svg+xml",
                    headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})
