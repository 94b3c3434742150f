"""brewnet serve: the DIGITS server (web app, DIGITS' REST routes and /api/v1) in one command.

    brewnet serve [--host 127.0.0.1] [--port 5000] [--jobs DIR] [--data-root DIR ...] [--db URL]
                  [--allow-python-layers [DIR]] [--cpu-slots N] [--gpus 0,1]
    brewnet serve [--jobs DIR | --db URL] --add-user NAME [--admin] [--password-file F]
    brewnet serve [--jobs DIR | --db URL] --create-token NAME [--token-name N] [--token-days D]

Jobs live in ``--jobs`` (default ./brewnet-jobs), one directory each; the database is an SQLite
file there unless ``--db`` names another (``postgresql://user:pw@host/db``).  Server-side paths
in forms (dataset folders, list files) are accepted only under a ``--data-root``.  A ``--host``
other than loopback needs a user with a password (``--add-user``): without one the server
refuses to start.  ``--add-user`` and ``--create-token`` do their job on the database and exit.
Python layers run the user's code on the server and are refused unless ``--allow-python-layers``
is given: then a model job may carry its own Python layer file (DIGITS' ``python_layer_*`` fields;
kept in the job's folder and importable by that job alone, as ``digits_python_layers``), and
with DIR every job may also import the modules in DIR.
"""
from __future__ import annotations

import sys
from pathlib import Path

from ..errors import BrewnetError
from .shared_flags import flag


def add_arguments(p) -> None:
    flag(p, "host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    flag(p, "port", type=int, default=5000, help="port (default 5000, DIGITS' own)")
    flag(p, "jobs", default="brewnet-jobs", metavar="DIR",
         help="the jobs directory (default ./brewnet-jobs; created if missing)")
    flag(p, "data-root", action="append", default=[], metavar="DIR",
         help="a folder whose server paths forms may name (dataset folders, list files); repeatable")
    flag(p, "db", metavar="URL", help="database URL (default: sqlite file brewnet.sqlite3 in the jobs "
                                      "directory; postgresql://user:password@host/name)")
    flag(p, "allow-python-layers", metavar="DIR", nargs="?", const=True, default=None,
         help="allow Python layers (refused otherwise): a model job's own uploaded Python layer file, "
              "and with DIR also the modules in DIR")
    flag(p, "cpu-slots", type=int, default=1, metavar="N", help="CPU jobs that may run at once (default 1)")
    flag(p, "gpus", default="", metavar="LIST", help="GPU indices the scheduler hands out, e.g. 0,1 (default none)")
    flag(p, "server-name", default="", help="a name shown in index.json (DIGITS' server_name)")
    flag(p, "add-user", metavar="NAME", help="create user NAME (password from --password-file or stdin) and exit")
    flag(p, "admin", action="store_true", help="with --add-user: the user is an administrator")
    flag(p, "password-file", metavar="F", help="with --add-user: read the password from the first line of F")
    flag(p, "create-token", metavar="NAME", help="print a new API token of user NAME and exit")
    flag(p, "token-name", default="", help="with --create-token: a label for the token")
    flag(p, "token-days", type=float, metavar="D", help="with --create-token: expire after D days (default never)")


def _gpus(text: str) -> list[int]:
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit():
            raise BrewnetError(f"--gpus: {part!r} is not a GPU index (give e.g. 0,1)")
        out.append(int(part))
    if len(set(out)) != len(out):
        raise BrewnetError(f"--gpus: an index is repeated in {text!r}")
    return out


def _config(args):
    from ..server.config import ServerConfig

    roots = []
    for r in args.data_root:
        p = Path(r).expanduser()
        if not p.is_dir():
            raise BrewnetError(f"--data-root {r}: not a folder")
        roots.append(p)
    if isinstance(args.allow_python_layers, str) and not Path(args.allow_python_layers).is_dir():
        raise BrewnetError(f"--allow-python-layers {args.allow_python_layers}: not a folder")
    if args.cpu_slots < 0:
        raise BrewnetError(f"--cpu-slots must be 0 or more, got {args.cpu_slots}")
    if not 0 < args.port < 65536:
        raise BrewnetError(f"--port must be 1..65535, got {args.port}")
    return ServerConfig(jobs_dir=Path(args.jobs).expanduser(), host=args.host, port=args.port,
                        data_roots=roots, db_url=args.db or None,
                        allow_python_layers=args.allow_python_layers or None,
                        cpu_slots=args.cpu_slots, gpus=_gpus(args.gpus), server_name=args.server_name)


def _read_password(args) -> str:
    if args.password_file:
        text = Path(args.password_file).read_text(encoding="utf-8")
        pw = text.splitlines()[0] if text else ""
    elif sys.stdin.isatty():
        import getpass

        pw = getpass.getpass(f"password for {args.add_user}: ")
        if getpass.getpass("again: ") != pw:
            raise BrewnetError("the two passwords differ")
    else:
        pw = sys.stdin.readline().rstrip("\r\n")
    if not pw:
        raise BrewnetError("an empty password: give one on stdin or with --password-file")
    return pw


def _open_db(config):
    from ..server.store.db import Database

    config.ensure_dirs()
    db = Database(config.database_url)
    db.migrate()
    return db


def _user_admin(args, config) -> int:
    """--add-user / --create-token: on the database, then exit."""
    from ..server import auth
    from ..server.errors import ApiError

    db = _open_db(config)
    try:
        with db.session() as s:
            if args.add_user:
                pw = _read_password(args)
                user = auth.create_user(s, args.add_user, pw, is_admin=bool(args.admin))
                print(f"user {user.name} created" + (" (administrator)" if user.is_admin else ""))
            if args.create_token:
                user = auth.get_user(s, args.create_token)
                if user is None:
                    raise BrewnetError(f"--create-token: no user named {args.create_token!r}")
                token = auth.create_token(s, user, name=args.token_name, ttl_days=args.token_days)
                print(token)
    except ApiError as e:
        raise BrewnetError(e.message) from None
    finally:
        db.dispose()
    return 0


def _require_server_stack() -> None:
    """One clear line instead of a traceback when brewnet was installed without its server's
    packages (``pip install brewnet`` is the engine alone; ``brewnet[server]`` adds them)."""
    try:
        import uvicorn  # noqa: F401  (imported for real where it serves)

        from ..server import app  # noqa: F401  (imports the whole stack: FastAPI, SQLAlchemy, ...)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if not missing or missing == "brewnet":
            raise
        raise BrewnetError(f"the server needs packages this install lacks ({missing} is missing): "
                           "pip install 'brewnet[server]'") from None


def run(args) -> int:
    import logging

    _require_server_stack()
    logging.getLogger("alembic").setLevel(logging.WARNING)   # its per-migration chatter
    config = _config(args)
    if args.add_user or args.create_token:
        return _user_admin(args, config)
    if args.admin or args.password_file:
        raise BrewnetError("--admin and --password-file go with --add-user")

    import uvicorn

    from ..server import auth
    from ..server.app import create_app

    # refuse an unauthenticated public bind here, with one clear line, before anything listens
    # (the application's start-up checks it again through security.refuse_insecure_bind)
    db = _open_db(config)
    try:
        if not config.local_mode_possible:
            with db.session() as s:
                if auth.users_with_passwords(s) == 0:
                    raise BrewnetError(
                        f"--host {config.host} is reachable from other machines and no user has a "
                        "password: add one first (brewnet serve --add-user NAME), or serve on 127.0.0.1")
    finally:
        db.dispose()
    app = create_app(config)
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"brewnet serve: http://{host}:{config.port}/  (jobs in {config.jobs_dir}, "
          f"database {config.database_url if not args.db else 'from --db'})", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="info",
                                           timeout_graceful_shutdown=5, lifespan="on"))
    server.run()
    # uvicorn leaves started = False when the socket could not be bound or the start-up failed
    return 0 if server.started else 1
