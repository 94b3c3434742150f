"""What a request reaches of the running application: :func:`server_of`, its
:class:`~brewnet.server.service.Server` (the routes and the web pages both start from it)."""
from __future__ import annotations

from starlette.requests import Request


def server_of(request: Request):
    """The :class:`~brewnet.server.service.Server` of the running application."""
    return request.app.state.server
