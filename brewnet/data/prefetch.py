"""Prefetching: a background thread prepares the next batches while the net trains.

A *source* is any object with ``next_batch() -> tuple[np.ndarray, ...]`` and ``close()``.
The :class:`Prefetcher` calls it on a daemon thread and keeps up to ``depth`` finished batches
(Caffe's ``data_param.prefetch``, default 4) in a queue, as torch tensors — in pinned memory when
CUDA is available, so the copy to the GPU can be asynchronous.  The batch sequence is exactly the
one the source would give when called directly (all randomness is drawn on the one thread), so a
seeded run repeats whatever the timing.  An error in the thread is raised by the next ``get``.

The thread holds only the source, never the layer: when the layer is garbage-collected, a
finalizer stops the thread and closes the source.
"""
from __future__ import annotations

import queue
import threading
import weakref

import numpy as np
import torch

_STOP = object()


def _to_tensors(batch, pin: bool):
    out = []
    for a in batch:
        t = torch.from_numpy(np.ascontiguousarray(a))
        if pin:
            t = t.pin_memory()
        out.append(t)
    return tuple(out)


class Prefetcher:
    def __init__(self, source, depth: int = 4, pin: bool | None = None, name: str = "brewnet-prefetch"):
        self.source = source
        self.depth = max(1, int(depth))
        self.pin = torch.cuda.is_available() if pin is None else pin
        self.queue: queue.Queue = queue.Queue(maxsize=self.depth)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=_worker, args=(source, self.queue, self.stop_event, self.pin),
                                       name=name, daemon=True)
        self.thread.start()
        self.waits = 0  # times get() found the queue empty (the step waited for data)

    def get(self):
        try:
            item = self.queue.get_nowait()
        except queue.Empty:
            self.waits += 1
            item = self.queue.get()
        if isinstance(item, BaseException):
            self.stop()
            raise item
        return item

    def stop(self) -> None:
        stop_prefetcher(self.stop_event, self.queue, self.thread, self.source)


def stop_prefetcher(stop_event, q, thread, source) -> None:
    stop_event.set()
    try:  # unblock a put()
        while True:
            q.get_nowait()
    except queue.Empty:
        pass
    if thread.is_alive() and thread is not threading.current_thread():
        thread.join(timeout=5)
    try:
        source.close()
    except Exception:
        pass


def _worker(source, q: queue.Queue, stop_event: threading.Event, pin: bool) -> None:
    while not stop_event.is_set():
        try:
            item = _to_tensors(source.next_batch(), pin)
        except BaseException as e:  # handed to the consumer
            item = e
        while not stop_event.is_set():
            try:
                q.put(item, timeout=0.1)
                break
            except queue.Full:
                continue
        if isinstance(item, BaseException):
            return


def attach(owner, source, depth: int = 4, pin: bool | None = None, name: str = "brewnet-prefetch") -> Prefetcher:
    """Start a Prefetcher for ``owner`` (a layer) that stops when ``owner`` is collected."""
    p = Prefetcher(source, depth, pin, name)
    weakref.finalize(owner, stop_prefetcher, p.stop_event, p.queue, p.thread, p.source)
    return p
