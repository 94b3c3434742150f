"""The server's database: an engine, transactional sessions and the Alembic migrations.

``Database(url)`` takes ``sqlite:///path`` (the default: a file in the jobs directory) or
``postgresql://user:pw@host/db`` (run through psycopg 3; ``postgresql+psycopg://`` is the same).

Every change is one transaction: ``with db.session() as s:`` commits when the block ends and rolls
back when it raises, so a process killed at any moment (even SIGKILL) leaves either all of a
block's changes or none of them.  On SQLite this relies on its journal (WAL here), on PostgreSQL
on the server's own transactions.

SQLite specifics, because several threads of the server write to one file:
- WAL journal: a commit appends to the log and a crash mid-commit leaves the previous state;
  readers from elsewhere (a backup, the sqlite3 shell) neither block nor are blocked by the server.
- ``busy_timeout`` 10 s: a writer waits for the lock instead of failing at once.
- every transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock at its start, so a
  block that reads and then writes (the queue's next position, a counter) is atomic, and SQLite
  never has to refuse a reader-turned-writer with "database is locked" (which the busy timeout
  cannot retry).  Transactions are short, so serialising them costs little.
- ``foreign_keys=ON``: SQLite ignores foreign keys (and ON DELETE CASCADE) unless asked.

So: never open a session while another one is open (it would wait for the first one's lock,
which cannot be released meanwhile).  In one thread (the event loop included) a nested
``db.session()`` raises RuntimeError at once instead of hanging for the busy timeout; across
threads, keep transactions short and never hold one across an ``await``.

Command line (developers)::

    python -m brewnet.server.store.db upgrade URL     # migrate URL to the newest schema
    python -m brewnet.server.store.db check URL       # migrate, then compare with the models
    python -m brewnet.server.store.db revision URL -m "message"   # autogenerate a new migration
"""
from __future__ import annotations

import argparse
import contextlib
import re
import secrets
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import URL, create_engine, event, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from brewnet.errors import BrewnetError

from .models import Base

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_S = 10.0
POSTGRES_CONNECT_TIMEOUT_S = 10
# any constant: PostgreSQL advisory lock that makes two servers migrating at once take turns
_MIGRATION_LOCK_KEY = 0x62726577


class DatabaseError(BrewnetError):
    """The database URL is wrong, the server cannot be reached, or its schema is not ours."""


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; ``postgresql://`` (and ``postgres://``) become ``postgresql+psycopg://``.

    Raises DatabaseError for a URL that does not parse or names another kind of database.
    """
    try:
        u = make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError) as e:
        raise DatabaseError(f"bad database URL {mask_url(str(url))!r}: {e}; "
                            "use sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB") from None
    backend, _, driver = u.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql" and driver in ("", "psycopg"):
        return u.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return u.set(drivername="sqlite")
    raise DatabaseError(f"unsupported database URL {u.render_as_string(hide_password=True)!r}: brewnet "
                        "stores into sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB (psycopg 3)")


def mask_url(url: str | URL) -> str:
    """The URL with its password replaced by ``***`` (for messages and logs)."""
    try:
        u = make_url(url) if isinstance(url, str) else url
    except (ArgumentError, ValueError):
        # unparsable: still never print what may be a password (``user:secret@``)
        s = str(url)
        scheme, sep, rest = s.partition("://")
        if sep and "@" in rest:
            creds, _, host = rest.rpartition("@")
            user = creds.partition(":")[0]
            return f"{scheme}://{user}:***@{host}"
        return s
    return u.render_as_string(hide_password=True)


def new_job_id(now: float | None = None) -> str:
    """A job id ``YYYYMMDD-HHMMSS-xxxx`` (local time, as DIGITS named them; 4 random hex digits)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(2)}"


class Database:
    """One database: its engine, sessions (one transaction each) and schema migrations."""

    def __init__(self, url: str):
        self._url = normalize_url(url)
        self.url = self._url.render_as_string(hide_password=True)   # masked: safe to print
        self.dialect = self._url.get_backend_name()                  # "sqlite" | "postgresql"
        if self.dialect == "sqlite":
            self.engine = self._sqlite_engine()
        else:
            self.engine = create_engine(self._url, pool_pre_ping=True,
                                        connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S})
        self._maker = sessionmaker(self.engine, expire_on_commit=False)
        self._local = threading.local()          # .open: this thread is inside session()
        # connect now: a wrong host, password or folder is reported at start, not at the first request
        try:
            with self.engine.connect():
                pass
        except (DBAPIError, SQLAlchemyError, OSError) as e:
            self.engine.dispose()
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            raise DatabaseError(f"cannot open the database {self.url}: {reason}") from None

    @property
    def display_url(self) -> str:
        """The URL with the password masked."""
        return self.url

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Database({self.url!r})"

    def _sqlite_engine(self) -> Engine:
        path = self._url.database
        memory = path in (None, "", ":memory:")
        if not memory:
            folder = Path(path).expanduser().resolve().parent
            if not folder.is_dir():
                raise DatabaseError(f"cannot open the database {self.url}: folder {folder} does not exist")
        kwargs = {}
        if memory:
            # one shared connection, or each thread would see its own empty database
            kwargs["poolclass"] = StaticPool
        engine = create_engine(self._url, connect_args={"check_same_thread": False,
                                                         "timeout": SQLITE_BUSY_TIMEOUT_S}, **kwargs)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):
            # let SQLAlchemy, not the sqlite3 module, decide where transactions begin (the
            # module's own implicit BEGIN comes only before INSERT/UPDATE, after the reads)
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            # PRAGMAs outside any transaction: journal_mode and foreign_keys are ignored inside one
            if not memory:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed when the block ends, rolled back if it raises.

        Objects stay readable after the block (``expire_on_commit=False``).  Sessions do not nest
        (RuntimeError): on SQLite the inner one would wait for the outer one's write lock.
        """
        if getattr(self._local, "open", False):
            raise RuntimeError("db.session() opened inside another db.session() of the same thread: "
                               "the inner transaction would wait for the outer one's lock; pass the open "
                               "session down instead (or finish the first one before an await)")
        self._local.open = True
        s = self._maker()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()
            self._local.open = False

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    # ---- migrations -------------------------------------------------------------------------

    def alembic_config(self, connection: Connection | None = None):
        """Alembic's Config for this database: scripts inside the package, our own connection."""
        cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        # configparser interpolates '%': a password containing it must be doubled
        cfg.set_main_option("sqlalchemy.url",
                            self._url.render_as_string(hide_password=False).replace("%", "%%"))
        if connection is not None:
            # env.py runs on this connection, so SQLite's PRAGMAs and BEGIN IMMEDIATE apply
            cfg.attributes["connection"] = connection
        return cfg

    def current_revision(self) -> str | None:
        """The schema revision stored in the database (None: no brewnet schema yet)."""
        with self.engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def head_revision(self) -> str:
        """The newest schema revision this brewnet knows."""
        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()

    def migrate(self) -> None:
        """Create or upgrade the schema to the newest revision (a no-op when it is already there).

        One transaction: an interrupted upgrade leaves the previous schema.  A database written by
        a newer brewnet (a revision unknown here) is refused with a DatabaseError.
        """
        with self.engine.begin() as conn:
            if self.dialect == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK_KEY})
            cfg = self.alembic_config(conn)
            script = ScriptDirectory.from_config(cfg)
            for rev in MigrationContext.configure(conn).get_current_heads():
                try:
                    known = script.get_revision(rev) is not None
                except CommandError:
                    known = False
                if not known:
                    raise DatabaseError(
                        f"the database {self.url} has schema revision {rev!r}, which this brewnet "
                        f"does not know (its newest is {script.get_current_head()!r}): it was made by "
                        "a newer brewnet; upgrade brewnet or use another --db")
            command.upgrade(cfg, "head")

    def schema_differences(self) -> list:
        """What differs between the database's tables and the models (Alembic's diff; [] = same)."""
        with self.engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, Base.metadata)


def main(argv: list[str] | None = None) -> int:
    """``python -m brewnet.server.store.db upgrade|check|revision URL``."""
    p = argparse.ArgumentParser(prog="python -m brewnet.server.store.db", description=__doc__.split("\n")[0])
    p.add_argument("action", choices=["upgrade", "check", "revision"])
    p.add_argument("url")
    p.add_argument("-m", "--message", default="schema change", help="revision: its message")
    a = p.parse_args(argv)
    try:
        db = Database(a.url)
        db.migrate()
        if a.action == "check":
            diff = db.schema_differences()
            for d in diff:
                print(d)
            print(f"{db.url}: revision {db.current_revision()}, "
                  + ("matches the models" if not diff else f"{len(diff)} difference(s) with the models"))
            return 1 if diff else 0
        if a.action == "revision":
            # numbered like the first one: 0002_<message>, 0003_<message>, ...
            number = int(db.head_revision().split("_", 1)[0]) + 1
            slug = re.sub(r"[^a-z0-9]+", "_", a.message.lower()).strip("_")[:40] or "change"
            with db.engine.begin() as conn:
                command.revision(db.alembic_config(conn), message=a.message, autogenerate=True,
                                 rev_id=f"{number:04d}_{slug}")
        print(f"{db.url}: revision {db.current_revision()}")
        return 0
    except BrewnetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
