"""The server's settings: what ``brewnet serve`` was given, and the limits it enforces."""
from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost' (the only binds that need no authentication)."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass
class ServerConfig:
    jobs_dir: Path                          # every job's directory lives here (uploads too)
    host: str = "127.0.0.1"
    port: int = 5000
    data_roots: list[Path] = dataclasses.field(default_factory=list)  # server paths allowed in forms
    db_url: str | None = None               # None: sqlite:///<jobs_dir>/brewnet.sqlite3
    # Python layers: None/False refuses them; True allows a job's own uploaded file; a folder
    # also allows the modules in it (brewnet serve --allow-python-layers [DIR])
    allow_python_layers: Path | bool | None = None
    cpu_slots: int = 1                      # CPU jobs that may run at once
    gpus: list[int] = dataclasses.field(default_factory=list)  # GPU indices the scheduler hands out
    server_name: str = ""
    # limits
    max_upload_bytes: int = 64 * 1024 * 1024       # one uploaded file
    max_field_bytes: int = 1024 * 1024             # one text form field (a prototxt fits)
    max_form_fields: int = 1000
    session_hours: float = 24 * 7
    # set by serve when started for tests: a faster scheduler tick
    poll_interval_s: float = 0.25

    def __post_init__(self):
        self.jobs_dir = Path(self.jobs_dir).resolve()
        self.data_roots = [Path(p).resolve() for p in self.data_roots]
        if self.allow_python_layers is not None and not isinstance(self.allow_python_layers, bool):
            self.allow_python_layers = Path(self.allow_python_layers).resolve()

    @property
    def python_layers_allowed(self) -> bool:
        return self.allow_python_layers not in (None, False)

    @property
    def python_layer_folder(self) -> Path | None:
        """The folder of Python layer modules every job may import (None: none)."""
        return self.allow_python_layers if isinstance(self.allow_python_layers, Path) else None

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.jobs_dir / 'brewnet.sqlite3'}"

    @property
    def local_mode_possible(self) -> bool:
        """Loopback bind: DIGITS' username-only login is allowed while no user has a password."""
        return is_loopback(self.host)

    def ensure_dirs(self) -> None:
        os.makedirs(self.jobs_dir, exist_ok=True)
