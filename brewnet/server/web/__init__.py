"""The web app of ``brewnet serve``: server-rendered pages on the data of ``/api/v1``.

    render.py          the Jinja environment and :func:`render.page` (the context every page gets)
    static_routes.py   /static/<file> from ``static/`` and /static/vendor/plotly.min.js from the
                       installed ``plotly`` package (never copied into this repository)
    templates/         one template per page, ``base.html`` the layout
    static/            our own small scripts and styles (``app.js``, ``app.css``, one script per page)

Page modules (each with ``router = APIRouter(...)``) are listed in :data:`PAGE_ROUTERS`; the
application includes them before DIGITS' routes.  DIGITS' own page URLs (``/``, ``/datasets/<id>``,
``/models/<id>``, the ``new`` forms, classify one/many) stay in ``routes/digits.py``, which renders
them through :func:`render.page`.
"""
from __future__ import annotations

#: modules of this package whose ``router`` the application includes (missing ones are skipped)
PAGE_ROUTERS = ("static_routes", "account_pages", "dataset_pages", "model_pages", "inference_pages",
                "compare_pages")
