"""The web app of ``brewnet serve``: server-rendered pages on the data of ``/api/v1``.

    render.py          the Jinja environment and :func:`render.page` (the context every page gets)
    routers.py         :func:`routers.page_router` (read access on every route)
    static_routes.py   /static/<file> from ``static/`` and /static/vendor/plotly.min.js from the
                       installed ``plotly`` package (never copied into this repository)
    templates/         one template per page, ``base.html`` the layout
    static/            our own small scripts and styles (``app.js``, ``app.css``, one script per page)

Page modules (each with ``router = APIRouter(...)``, possibly without routes) are listed in
:data:`PAGE_ROUTERS`; the application includes them before DIGITS' routes.  DIGITS' own page URLs
(``/``, ``/datasets/<id>``, ``/models/<id>``, the ``new`` forms, classify one/many) stay in
``routes/digits.py``, which calls these modules' renderers (all ``async def f(request, ...)``
returning an HTMLResponse):

    home.render_home(request)                               /
    dataset_pages.render_new_dataset(request, fields, clone) /datasets/images/classification/new
    dataset_pages.render_dataset(request, job)               /datasets/<id>
    new_model_pages.render_new_model(request, fields, clone) /models/images/classification/new
    model_pages.render_model(request, job)                   /models/<id>
    inference_pages.render_inference_job(request, job)       /jobs/<id> of an inference job

(``fields``: the form fields of the job named by ``?clone=``, else {}; ``job``: the Job row.)
"""
from __future__ import annotations

#: modules of this package whose ``router`` the application includes (missing ones are skipped)
PAGE_ROUTERS = ("static_routes", "home", "account_pages", "dataset_pages", "new_model_pages", "model_pages",
                "inference_pages", "compare_pages", "generic_model_pages", "generic_dataset_pages")
