"""A small synchronous WebDriver BiDi client for Debian's Firefox ESR, for the browser tests.

Debian ships ``firefox-esr`` but no geckodriver, and Playwright's Firefox is a patched build that
cannot be installed offline.  Firefox itself speaks WebDriver BiDi (W3C) when started with
``--remote-debugging-port``: it prints ``WebDriver BiDi listening on ws://127.0.0.1:<port>`` on
stderr, and a client opens a WebSocket to ``<that>/session`` and exchanges JSON messages:

    command   {"id": 1, "method": "browsingContext.navigate", "params": {...}}
    answer    {"type": "success", "id": 1, "result": {...}}
              {"type": "error", "id": 1, "error": "no such frame", "message": ..., "stacktrace": ...}
    event     {"type": "event", "method": "log.entryAdded", "params": {...}}

:class:`Firefox` starts the browser on a new throw-away profile and always stops it;
:class:`BiDi` is the connection: a reader thread matches answers to commands (each with a
timeout) and hands events to listeners, so console errors and requests are recorded as they
happen rather than only while a command is waiting.  Only the commands the tests use are wrapped
(:meth:`BiDi.command` sends any other).

Uses ``websockets`` (>= 13, its ``websockets.sync.client``).
"""
from __future__ import annotations

import base64
import collections
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

FIREFOX = os.environ.get("BREWNET_FIREFOX") or shutil.which("firefox-esr") or "/usr/bin/firefox-esr"
_LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")

# Keep a test browser quiet and offline: no updates, telemetry, remote settings, safe-browsing
# lists, captive-portal or connectivity checks, first-run pages.  (Firefox's remote agent also
# applies its own "recommended preferences" once it runs; these cover the start before that.)
PREFS: dict[str, Any] = {
    "remote.active-protocols": 1,                       # WebDriver BiDi only (no CDP)
    "app.normandy.enabled": False,
    "app.normandy.api_url": "",
    "app.update.auto": False,
    "app.update.disabledForTesting": True,
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.newtabpage.activity-stream.feeds.system.topstories": False,
    "browser.newtabpage.activity-stream.feeds.section.topstories": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.provider.mozilla.updateURL": "",
    "browser.search.update": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage": "about:blank",
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.tabs.warnOnClose": False,
    "browser.warnOnQuit": False,
    "captivedetect.canonicalURL": "",
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "extensions.autoDisableScopes": 0,
    "extensions.getAddons.cache.enabled": False,
    "extensions.update.enabled": False,
    "extensions.blocklist.enabled": False,
    "media.gmp-manager.url": "",
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "network.prefetch-next": False,
    "services.settings.server": "data:,#remote-settings-disabled/v1",
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.startup.max_resumed_crashes": -1,
    "datareporting.usage.uploadEnabled": False,
    "browser.topsites.contile.enabled": False,
    "browser.contentblocking.report.monitor.enabled": False,
    "identity.fxaccounts.enabled": False,
}


class BiDiError(RuntimeError):
    """A command the browser refused (its error code and message), or a broken connection."""

    def __init__(self, message: str, *, error: str = "", method: str = ""):
        super().__init__(message)
        self.error = error
        self.method = method


class BiDiTimeout(BiDiError, TimeoutError):
    """No answer (or no awaited condition) within the timeout."""


class _Pending:
    __slots__ = ("done", "message")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.message: dict | None = None


class BiDi:
    """One WebDriver BiDi connection (``ws://host:port/session``).

    >>> bidi = BiDi.connect("ws://127.0.0.1:9222")
    >>> bidi.new_session()
    >>> ctx = bidi.top_context()
    >>> bidi.navigate(ctx, "http://127.0.0.1:8000/")
    """

    def __init__(self, ws, timeout: float = 30.0, on_close: Callable[[], None] | None = None):
        self._ws = ws
        self._on_close = on_close
        self.timeout = timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._listeners: dict[str, list[Callable[[dict], None]]] = collections.defaultdict(list)
        self._closed: str | None = None        # why the connection ended, once it has
        self.listener_errors: list[str] = []   # a listener that raised (reported, never swallowed silently)
        self._reader = threading.Thread(target=self._read, name="bidi-reader", daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ connection

    @classmethod
    def connect(cls, ws_url: str, timeout: float = 30.0) -> "BiDi":
        """Connect to Firefox's BiDi endpoint (``ws_url`` as printed, ``/session`` is appended)."""
        import contextlib
        import inspect

        from websockets.sync.client import connect

        url = ws_url.rstrip("/") + "/session"
        # screenshots of long pages are several MB of base64: no frame size limit
        kw: dict[str, Any] = {"open_timeout": timeout, "max_size": None, "compression": None}
        if "legacy" in inspect.signature(connect).parameters:
            kw["legacy"] = False   # websockets >= 17: connect() is a context manager (older: the
            # connection it returns is one), so the same ``with`` form works with both
        stack = contextlib.ExitStack()
        try:
            ws = stack.enter_context(connect(url, **kw))
        except Exception as e:  # noqa: BLE001 -- any failure here is "could not connect"
            raise BiDiError(f"cannot open {url}: {type(e).__name__}: {e}") from e
        return cls(ws, timeout, on_close=stack.close)

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            for raw in self._ws:
                msg = json.loads(raw)
                if "id" in msg and msg.get("type") in ("success", "error"):
                    with self._lock:
                        pending = self._pending.pop(msg["id"], None)
                    if pending is not None:
                        pending.message = msg
                        pending.done.set()
                elif msg.get("type") == "event":
                    for fn in list(self._listeners.get(msg["method"], ())):
                        try:
                            fn(msg["params"])
                        except Exception as e:  # noqa: BLE001 -- kept and reported by the caller
                            self.listener_errors.append(f"{msg['method']} listener: {type(e).__name__}: {e}")
                elif msg.get("type") == "error":   # an error without id: the message was unparseable
                    self.listener_errors.append(f"browser: {msg.get('error')}: {msg.get('message')}")
            self._closed = "connection closed by the browser"
        except ConnectionClosed as e:
            self._closed = f"connection closed: {e}"
        except Exception as e:  # noqa: BLE001 -- the reader must end by failing every waiter
            self._closed = f"reader failed: {type(e).__name__}: {e}"
        finally:
            with self._lock:
                pending, self._pending = list(self._pending.values()), {}
            for p in pending:
                p.done.set()

    def close(self) -> None:
        try:
            (self._on_close or self._ws.close)()
        finally:
            self._reader.join(timeout=10)

    # ------------------------------------------------------------------ commands and events

    def command(self, method: str, params: dict | None = None, timeout: float | None = None) -> dict:
        """Send a command and return its ``result``; BiDiError when the browser refuses it,
        BiDiTimeout when no answer comes within ``timeout`` (default: the connection's)."""
        if self._closed:
            raise BiDiError(f"{method}: {self._closed}", method=method)
        cid = next(self._ids)
        pending = _Pending()
        with self._lock:
            self._pending[cid] = pending
        self._ws.send(json.dumps({"id": cid, "method": method, "params": params or {}}))
        wait = self.timeout if timeout is None else timeout
        if not pending.done.wait(wait):
            with self._lock:
                self._pending.pop(cid, None)
            raise BiDiTimeout(f"{method}: no answer within {wait:g} s", method=method)
        msg = pending.message
        if msg is None:
            raise BiDiError(f"{method}: {self._closed or 'connection closed'}", method=method)
        if msg["type"] == "error":
            raise BiDiError(f"{method}: {msg.get('error')}: {msg.get('message')}",
                            error=msg.get("error", ""), method=method)
        return msg["result"]

    def on(self, event: str, fn: Callable[[dict], None]) -> Callable[[], None]:
        """Call ``fn(params)`` (on the reader thread) for every ``event``; returns an unhook."""
        self._listeners[event].append(fn)
        return lambda: self._listeners[event].remove(fn)

    def subscribe(self, events: list[str], contexts: list[str] | None = None) -> str | None:
        """``session.subscribe``; returns the subscription id (None on browsers that give none)."""
        params: dict[str, Any] = {"events": events}
        if contexts:
            params["contexts"] = contexts
        return self.command("session.subscribe", params).get("subscription")

    # ------------------------------------------------------------------ session

    def new_session(self, capabilities: dict | None = None) -> dict:
        return self.command("session.new", {"capabilities": {"alwaysMatch": capabilities or {}}})

    def end_session(self) -> None:
        self.command("session.end", {}, timeout=10)

    # ------------------------------------------------------------------ browsing contexts

    def top_context(self) -> str:
        """The first top-level browsing context (the tab Firefox opened at start)."""
        tree = self.command("browsingContext.getTree", {"maxDepth": 0})["contexts"]
        if not tree:
            return self.command("browsingContext.create", {"type": "tab"})["context"]
        return tree[0]["context"]

    def new_tab(self) -> str:
        return self.command("browsingContext.create", {"type": "tab"})["context"]

    def close_context(self, context: str) -> None:
        self.command("browsingContext.close", {"context": context})

    def navigate(self, context: str, url: str, wait: str = "complete", timeout: float | None = None) -> dict:
        """Load ``url``; returns once the document reached ``wait`` ("none", "interactive", "complete")."""
        return self.command("browsingContext.navigate", {"context": context, "url": url, "wait": wait},
                            timeout=timeout)

    def set_viewport(self, context: str, width: int, height: int) -> None:
        self.command("browsingContext.setViewport",
                     {"context": context, "viewport": {"width": width, "height": height}})

    def screenshot(self, context: str, path: Path | str | None = None, full_page: bool = True) -> bytes:
        """A PNG of the viewport, or of the whole document with ``full_page``; written to ``path``
        when given."""
        params: dict[str, Any] = {"context": context}
        if full_page:
            params["origin"] = "document"
        png = base64.b64decode(self.command("browsingContext.captureScreenshot", params, timeout=60)["data"])
        if path is not None:
            Path(path).write_bytes(png)
        return png

    # ------------------------------------------------------------------ script

    def evaluate(self, context: str, expression: str, await_promise: bool = True) -> Any:
        """The value of a JavaScript expression in the page, as Python (see :func:`from_remote`);
        BiDiError with the page's exception text when it throws."""
        result = self.command("script.evaluate", {
            "expression": expression, "target": {"context": context},
            "awaitPromise": await_promise, "resultOwnership": "none"})
        return _script_result(result, expression)

    def call(self, context: str, function: str, *args: Any, await_promise: bool = True) -> Any:
        """``(function)(...args)`` in the page; ``args`` are JSON-like Python values."""
        result = self.command("script.callFunction", {
            "functionDeclaration": function, "target": {"context": context},
            "arguments": [to_remote(a) for a in args], "awaitPromise": await_promise,
            "resultOwnership": "none"})
        return _script_result(result, function)

    def wait_for(self, context: str, expression: str, timeout: float = 20.0, interval: float = 0.25) -> Any:
        """Poll ``expression`` until it is truthy; its value, or BiDiTimeout with the last one."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(context, expression)
            if value:
                return value
            if time.monotonic() >= deadline:
                raise BiDiTimeout(f"still {value!r} after {timeout:g} s: {expression}")
            time.sleep(interval)

    # ------------------------------------------------------------------ storage

    def set_cookie(self, name: str, value: str, origin: str, path: str = "/") -> None:
        """A cookie for ``origin`` (``http://host:port``), sent on every later request to it."""
        host = re.sub(r"^\w+://", "", origin).split("/")[0].rsplit(":", 1)[0]
        self.command("storage.setCookie", {
            "cookie": {"name": name, "value": {"type": "string", "value": value},
                       "domain": host, "path": path},
            "partition": {"type": "storageKey", "sourceOrigin": origin}})


def to_remote(value: Any) -> dict:
    """A Python value as a BiDi ``LocalValue``."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "boolean", "value": value}
    if isinstance(value, (int, float)):
        return {"type": "number", "value": value}
    if isinstance(value, str):
        return {"type": "string", "value": value}
    if isinstance(value, (list, tuple)):
        return {"type": "array", "value": [to_remote(v) for v in value]}
    if isinstance(value, dict):
        return {"type": "object", "value": [[str(k), to_remote(v)] for k, v in value.items()]}
    raise TypeError(f"cannot send a {type(value).__name__} to the page")


def from_remote(value: dict) -> Any:
    """A BiDi ``RemoteValue`` as Python: primitives, arrays and plain objects; anything else (a
    node, a function, ...) as its ``{"type": ...}`` description."""
    t = value.get("type")
    if t in ("undefined", "null"):
        return None
    if t in ("string", "boolean"):
        return value["value"]
    if t == "number":
        v = value["value"]
        return {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf"),
                "-0": -0.0}.get(v, v) if isinstance(v, str) else v
    if t == "bigint":
        return int(value["value"])
    if t in ("array", "set"):
        return [from_remote(v) for v in value.get("value", [])]
    if t in ("object", "map"):
        return {(k if isinstance(k, str) else json.dumps(from_remote(k))): from_remote(v)
                for k, v in value.get("value", [])}
    return {"type": t}


def _script_result(result: dict, source: str) -> Any:
    if result.get("type") == "exception":
        details = result.get("exceptionDetails", {})
        raise BiDiError(f"the page threw: {details.get('text')} (in: {source[:200]})", error="javascript")
    return from_remote(result["result"])


class Firefox:
    """A headless Firefox on a fresh profile with its BiDi server; :meth:`stop` always ends it.

    >>> with Firefox() as ff:
    ...     ff.bidi.new_session()
    """

    def __init__(self, binary: str = FIREFOX, start_timeout: float = 60.0, prefs: dict | None = None):
        self.binary = binary
        self.profile = Path(tempfile.mkdtemp(prefix="brewnet-firefox-"))
        self.stderr_tail: collections.deque[str] = collections.deque(maxlen=200)
        self.proc: subprocess.Popen | None = None
        self.bidi: BiDi | None = None
        self._write_prefs({**PREFS, **(prefs or {})})
        try:
            self._start(start_timeout)
        except BaseException:
            self.stop()
            raise

    def _write_prefs(self, prefs: dict) -> None:
        lines = [f"user_pref({json.dumps(k)}, {json.dumps(v)});" for k, v in prefs.items()]
        (self.profile / "user.js").write_text("\n".join(lines) + "\n")

    def _start(self, timeout: float) -> None:
        if not (os.path.isfile(self.binary) and os.access(self.binary, os.X_OK)):
            raise FileNotFoundError(f"no Firefox at {self.binary} (apt-get install firefox-esr)")
        env = {**os.environ, "MOZ_HEADLESS": "1", "MOZ_CRASHREPORTER_DISABLE": "1"}
        # port 0: Firefox picks a free one and says which on stderr
        self.proc = subprocess.Popen(
            [self.binary, "--headless", "--no-remote", "--profile", str(self.profile),
             "--remote-debugging-port=0", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env, start_new_session=True)   # its own process group: content processes go with it
        found: list[str] = []
        listening = threading.Event()

        def drain() -> None:   # read stderr to its end, or the pipe fills and Firefox blocks
            for raw in self.proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                self.stderr_tail.append(line)
                m = _LISTENING.search(line)
                if m and not found:
                    found.append(m.group(1))
                    listening.set()
            listening.set()
        threading.Thread(target=drain, name="firefox-stderr", daemon=True).start()
        if not listening.wait(timeout) or not found:
            code = self.proc.poll()
            state = f"exited with {code}" if code is not None else f"no BiDi server after {timeout:g} s"
            raise RuntimeError(f"Firefox {state}; its stderr:\n" + "\n".join(self.stderr_tail))
        self.ws_url = found[0]
        self.bidi = BiDi.connect(self.ws_url)

    def stop(self) -> None:
        """End the session, the connection and the process (its whole process group), and
        delete the profile; safe to call more than once."""
        if self.bidi is not None:
            try:
                self.bidi.end_session()
            except BiDiError:
                pass   # no session, or the browser already went
            try:
                self.bidi.close()
            except Exception:  # noqa: BLE001 -- closing a dead socket may raise; we stop anyway
                pass
            self.bidi = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)   # the group we created at start
                self.proc.wait(timeout=15)
        if self.proc is not None:
            try:   # content processes left behind by a crash share the group
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Firefox":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
