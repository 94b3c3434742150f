"""Reading a request's form: text fields in memory, uploaded files streamed to disk under the
jobs directory, every size limit of :class:`~brewnet.server.config.ServerConfig` enforced while
the body arrives.

Starlette's own ``request.form()`` spools files above 1 MB into the system's temporary folder and
has no limit on a file's size.  Here an upload is written, chunk by chunk, into a fresh
``<jobs_dir>/.upload-XXXX/`` folder (the service then moves it into its job's directory), so an
upload never lands outside the jobs directory, and a file above ``max_upload_bytes`` stops the
request at once with a 413 and leaves nothing behind.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from starlette.datastructures import FormData
from starlette.requests import Request

from .errors import ApiError

UPLOAD_PREFIX = ".upload-"


@dataclass
class Upload:
    """One uploaded file, saved at ``path`` (inside the form's temporary folder)."""
    field: str
    filename: str        # the client's name, reduced to a safe base name; "" when the client
                         # sent none (a browser's unfilled file input: no name, no bytes)
    path: Path
    size: int
    content_type: str = ""


@dataclass
class ParsedForm:
    """A request's form: text fields (every value kept, in order) and uploaded files."""
    items: list[tuple[str, str]] = field(default_factory=list)
    files: dict[str, Upload] = field(default_factory=dict)
    tmpdir: Path | None = None

    def get(self, name: str, default: str | None = None) -> str | None:
        """The last value sent for ``name`` (WTForms reads a single field's last value)."""
        for k, v in reversed(self.items):
            if k == name:
                return v
        return default

    def getlist(self, name: str) -> list[str]:
        """Every value sent for ``name``, in order (``job_ids[]``)."""
        return [v for k, v in self.items if k == name]

    def to_fields(self) -> dict[str, str | list[str]]:
        """Every field: its value, or the list of its values when it was sent more than once
        (DIGITS' sweeps repeat ``learning_rate`` / ``batch_size``; ``select_gpus`` is a multiple
        select).  The forms' readers take either."""
        out: dict[str, str | list[str]] = {}
        for k, v in self.items:
            if k not in out:
                out[k] = v
            elif isinstance(out[k], list):
                out[k].append(v)
            else:
                out[k] = [out[k], v]
        return out

    def to_dict(self) -> dict[str, str]:
        """One value per field (the last one)."""
        out: dict[str, str] = {}
        for k, v in self.items:
            out[k] = v
        return out

    def upload_paths(self) -> dict[str, Path]:
        """field -> saved file path, for the fields that carried a non-empty file."""
        return {k: u.path for k, u in self.files.items() if u.size > 0 or u.filename}

    def cleanup(self) -> None:
        """Remove the temporary folder and whatever is still in it (moved files are gone)."""
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None


_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_filename(name: str, fallback: str = "upload") -> str:
    """A client's file name reduced to a base name of safe characters (no folders, no leading
    dot), never empty."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _SAFE.sub("_", base).lstrip(".")[:120]
    return base or fallback


def _too_large(what: str, limit: int) -> ApiError:
    return ApiError(413, f"{what} is larger than the limit of {limit} bytes", field=what)


class _Collector:
    """State of one multipart parse (python-multipart callbacks)."""

    def __init__(self, config, tmp_parent: Path):
        self.config = config
        self.tmp_parent = tmp_parent
        self.form = ParsedForm()
        self.header_name = b""
        self.header_value = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.name = ""
        self.filename: str | None = None
        self.data = bytearray()
        self.fh = None
        self.size = 0
        self.n_fields = 0
        self.n_files = 0
        self.error: ApiError | None = None

    # python-multipart calls these synchronously while we feed it chunks
    def on_part_begin(self) -> None:
        self.headers, self.name, self.filename = [], "", None
        self.data, self.fh, self.size = bytearray(), None, 0

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers.append((self.header_name.lower(), self.header_value))
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        disposition = b""
        ctype = b""
        for k, v in self.headers:
            if k == b"content-disposition":
                disposition = v
            elif k == b"content-type":
                ctype = v
        _, options = parse_options_header(disposition)
        if b"name" not in options:
            raise ApiError(400, 'a multipart part has no Content-Disposition "name"')
        self.name = options[b"name"].decode("utf-8", "replace")
        if b"filename" in options:
            self.n_files += 1
            if self.n_files > self.config.max_form_fields:
                raise ApiError(413, f"too many files (the limit is {self.config.max_form_fields})")
            self.filename = options[b"filename"].decode("utf-8", "replace")
            if self.form.tmpdir is None:
                self.form.tmpdir = Path(tempfile.mkdtemp(prefix=UPLOAD_PREFIX, dir=self.tmp_parent))
            path = self.form.tmpdir / f"{self.n_files:03d}_{safe_filename(self.filename)}"
            self.fh = open(path, "wb")
            # an unfilled <input type=file> arrives as filename="" with no bytes: no upload
            shown = safe_filename(self.filename) if self.filename.strip() else ""
            self.form.files[self.name] = Upload(self.name, shown, path, 0,
                                                ctype.decode("latin-1"))
        else:
            self.n_fields += 1
            if self.n_fields > self.config.max_form_fields:
                raise ApiError(413, f"too many form fields (the limit is {self.config.max_form_fields})")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        self.size += len(chunk)
        if self.fh is not None:
            if self.size > self.config.max_upload_bytes:
                raise _too_large(self.name, self.config.max_upload_bytes)
            self.fh.write(chunk)
        else:
            if self.size > self.config.max_field_bytes:
                raise _too_large(self.name, self.config.max_field_bytes)
            self.data.extend(chunk)

    def on_part_end(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
            self.form.files[self.name].size = self.size
        else:
            self.form.items.append((self.name, self.data.decode("utf-8", "replace")))

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None


async def _parse_multipart(request: Request, config) -> ParsedForm:
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        raise ApiError(400, "multipart body without a boundary")
    col = _Collector(config, Path(config.jobs_dir))
    callbacks = {k: getattr(col, k) for k in (
        "on_part_begin", "on_part_data", "on_part_end", "on_header_field", "on_header_value",
        "on_header_end", "on_headers_finished")}
    parser = MultipartParser(boundary, callbacks)
    try:
        async for chunk in request.stream():
            parser.write(chunk)
        parser.finalize()
    except ApiError:
        col.close()
        col.form.cleanup()
        raise
    except Exception as e:  # noqa: BLE001 - python-multipart's parse errors, a cut connection
        col.close()
        col.form.cleanup()
        raise ApiError(400, f"malformed multipart body: {e}") from None
    col.close()
    return col.form


async def _parse_urlencoded(request: Request, config) -> ParsedForm:
    from urllib.parse import parse_qsl

    # the whole body is fields: each at most max_field_bytes, at most max_form_fields of them
    limit = config.max_field_bytes + 64 * 1024
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > limit:
            raise ApiError(413, f"form body is larger than the limit of {limit} bytes")
    try:
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True,
                          max_num_fields=config.max_form_fields)
    except ValueError:
        raise ApiError(413, f"too many form fields (the limit is {config.max_form_fields})") from None
    for k, v in pairs:
        if len(v.encode("utf-8")) > config.max_field_bytes:
            raise _too_large(k, config.max_field_bytes)
    return ParsedForm(items=list(pairs))


async def read_form(request: Request, config) -> ParsedForm:
    """The request's form (multipart, urlencoded, or none for other bodies), with uploads saved
    under ``<jobs_dir>/.upload-XXXX/``; the caller calls :meth:`ParsedForm.cleanup` when done
    (after moving what it keeps).  Starlette's ``request.form()`` then answers the same text
    fields, so dependencies that read a field (DIGITS' ``username``) see them.

    Raises ApiError 413 for a file above ``max_upload_bytes``, a field above
    ``max_field_bytes`` or more than ``max_form_fields`` fields; 400 for a malformed body."""
    cached = getattr(request.state, "brewnet_form", None)
    if cached is not None:
        return cached
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith("multipart/form-data"):
        form = await _parse_multipart(request, config)
    elif ctype.startswith("application/x-www-form-urlencoded"):
        form = await _parse_urlencoded(request, config)
    else:
        form = ParsedForm()
    request.state.brewnet_form = form
    # Starlette caches the parsed form here; the body stream is spent, so give it ours
    request._form = FormData(form.items)  # noqa: SLF001 - the documented cache of Request.form()
    return form


def clean_stale_folders(jobs_dir: str | os.PathLike, prefixes: tuple[str, ...] = (UPLOAD_PREFIX,)) -> None:
    """Remove the ``.upload-*`` (and other ``prefixes``) folders a killed server left in the
    jobs directory."""
    root = Path(jobs_dir)
    if not root.is_dir():
        return
    for p in root.iterdir():
        if p.name.startswith(prefixes) and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
