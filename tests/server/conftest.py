"""Fixtures shared by the server's tests: a migrated SQLite database, and a PostgreSQL URL.

``pg_url`` needs env ``BREWNET_TEST_POSTGRES_URL`` (a role allowed to create databases; CI's
``scripts/ci_postgres.sh`` prints one); without it the tests that use it are skipped and say why.
It creates one fresh database, with a random name, for the whole test session and drops it after.
"""
from __future__ import annotations

import os
import secrets

import pytest

POSTGRES_ENV = "BREWNET_TEST_POSTGRES_URL"


@pytest.fixture
def db(tmp_path):
    """A Database on a new SQLite file in ``tmp_path``, migrated to the newest schema."""
    from brewnet.server.store.db import Database

    d = Database(f"sqlite:///{tmp_path / 'brewnet.sqlite3'}")
    d.migrate()
    yield d
    d.dispose()


@pytest.fixture(scope="session")
def pg_url():
    """URL of an empty PostgreSQL database made for this test session (dropped at its end)."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set (CI sets it from scripts/ci_postgres.sh)")
    from sqlalchemy import create_engine, text

    from brewnet.server.store.db import normalize_url

    admin_url = normalize_url(base)
    name = f"brewnet_test_{secrets.token_hex(6)}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")   # CREATE DATABASE refuses transactions
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            # WITH (FORCE): a connection a failed test left open must not keep the database alive
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
