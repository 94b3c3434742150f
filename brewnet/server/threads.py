"""Blocking work off the event loop: :func:`in_thread`, the one way the server's async code
(routes, pages, security, events) runs database, file and decoding work in anyio's thread pool."""
from __future__ import annotations

import anyio


async def in_thread(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` in the thread pool (database, files, decoding; SQLite may wait
    for another writer's lock)."""
    return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))
