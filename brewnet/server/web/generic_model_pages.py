"""The New Image Model page of generic models (DIGITS' /models/images/generic/new[/<extension_id>])
and the large graph page; routes/generic_models.py calls the renderers.

The form is the classification form's template (new_model.html, the same look and live checks:
the network tabs, lint as you type, the solver fields and the learning-rate preview) posting to
``/models/images/generic[/<extension_id>].json``; its datasets are the generic ones (of the
extension's kind), and the standard networks are brewnet's generic networks, each row shown only
for the dataset kinds it fits.  ``GET /models/images/generic/networks/<name>``: a standard generic
network's prototxt (the form's "Customize").
"""
from __future__ import annotations

from fastapi import Request

from ..app_state import server_of
from ..digits.generic_model_files import network_kinds, standard_network_text, standard_networks
from ..errors import ApiError
from ..jobs.progress import read_plan
from ..threads import in_thread
from .new_model_pages import field_values, form_choices
from .render import page
from .routers import page_router

router = page_router()


def _context(server, extension_id: str | None) -> dict:
    choices = form_choices(server)
    networks = standard_networks()
    kinds = network_kinds()
    choices.update(datasets=server.generic_datasets(extension_id), models=server.generic_models(),
                   networks=networks, network_kinds=kinds, default_network=next(iter(networks), ""))
    return choices


async def render_new_generic_model(request: Request, fields: dict, clone: str | None, extension_id: str | None):
    server = server_of(request)
    choices = await in_thread(_context, server, extension_id)
    values = field_values(fields)
    if not clone and "dataset" in request.query_params:
        values["dataset"] = request.query_params["dataset"]
    action = "/models/images/generic" + (f"/{extension_id}" if extension_id else "") + ".json"
    new_dataset = f"/datasets/generic/new/{extension_id}" if extension_id else "/datasets/images/generic/new"
    return page(request, "new_model.html", title="New Image Model", nav="new-model", values=values, clone=clone,
                form_action=action, generic=True, networks_url="/models/images/generic/networks/",
                new_dataset_url=new_dataset, **choices)


async def render_large_graph(request: Request, job):
    server = server_of(request)
    plan = await in_thread(read_plan, server.job_dir(job.id))
    return page(request, "generic_large_graph.html", title=f"{job.name}: training", nav="", job=job, plan=plan)


@router.get("/models/images/generic/networks/{name}")
async def generic_network(request: Request, name: str):
    """A standard generic network's prototxt ``{"name", "prototxt"}`` (404 for an unknown one)."""
    try:
        text = await in_thread(standard_network_text, name)
    except KeyError:
        raise ApiError(404, f"Unknown network {name!r}", field="network") from None
    return {"name": name, "prototxt": text}
