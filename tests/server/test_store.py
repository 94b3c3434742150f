"""store/db.py: URLs, SQLite settings, transactions, Alembic migrations (SQLite and PostgreSQL),
concurrent writers and a writer killed with SIGKILL."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from sqlalchemy import func, select, text

from brewnet.errors import BrewnetError
from brewnet.server import auth
from brewnet.server.errors import ApiError
from brewnet.server.store.db import Database, DatabaseError, mask_url, new_job_id, normalize_url
from brewnet.server.store.models import ApiToken, Job, User


def _job(jid: str, **kw) -> Job:
    return Job(id=jid, kind=kw.pop("kind", "model"), name=kw.pop("name", jid), status=kw.pop("status", "Done"),
               created=time.time(), **kw)


# ---- URLs -------------------------------------------------------------------------------------

@pytest.mark.parametrize("url, driver", [
    ("sqlite:////tmp/x.db", "sqlite"),
    ("sqlite+pysqlite:////tmp/x.db", "sqlite"),
    ("postgresql://u:pw@h/db", "postgresql+psycopg"),
    ("postgres://u:pw@h/db", "postgresql+psycopg"),
    ("postgresql+psycopg://u:pw@h:5433/db", "postgresql+psycopg"),
])
def test_normalize_url(url, driver):
    assert normalize_url(url).drivername == driver


@pytest.mark.parametrize("url", ["mysql://u:pw@h/db", "postgresql+psycopg2://u:pw@h/db", "nonsense", ""])
def test_bad_url_is_a_clear_error(url):
    with pytest.raises(DatabaseError) as e:
        Database(url)
    assert isinstance(e.value, BrewnetError)
    assert "sqlite:///PATH" in str(e.value) and "pw" not in str(e.value)


def test_password_is_masked():
    assert mask_url("postgresql://bob:hunter2@db.example/x") == "postgresql://bob:***@db.example/x"
    assert "hunter2" not in mask_url("weird://bob:hunter2@host:notaport/")


def test_unreachable_postgresql_names_the_url_without_password():
    # port 1 on loopback: refused at once, no network needed
    with pytest.raises(DatabaseError) as e:
        Database("postgresql://bob:hunter2@127.0.0.1:1/brewnet")
    msg = str(e.value)
    assert "postgresql+psycopg://bob:***@127.0.0.1:1/brewnet" in msg and "hunter2" not in msg


def test_sqlite_in_missing_folder(tmp_path):
    with pytest.raises(DatabaseError, match="does not exist"):
        Database(f"sqlite:///{tmp_path / 'nope' / 'x.db'}")


def test_str_and_display_url(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert str(db) == db.display_url == db.url == f"sqlite:///{tmp_path / 'x.db'}"
    finally:
        db.dispose()


def test_new_job_id():
    now = time.mktime((2024, 3, 5, 14, 7, 9, 0, 0, -1))
    jid = new_job_id(now)
    assert re.fullmatch(r"20240305-140709-[0-9a-f]{4}", jid)
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", new_job_id())
    assert len({new_job_id(now) for _ in range(50)}) > 1      # the random part varies


# ---- SQLite settings and transactions ------------------------------------------------------------

def test_sqlite_pragmas(db):
    with db.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10000


def test_session_commits_or_rolls_back(db):
    with db.session() as s:
        s.add(_job("a"))
    with pytest.raises(RuntimeError):
        with db.session() as s:
            s.add(_job("b"))
            s.flush()
            raise RuntimeError("boom")
    with db.session() as s:
        assert list(s.scalars(select(Job.id))) == ["a"]
    job = None
    with db.session() as s:
        job = s.get(Job, "a")
    assert job.name == "a"          # still readable after the session closed


def test_foreign_keys_are_enforced(db):
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        with db.session() as s:
            s.add(ApiToken(user_id=12345, name="", token_hash="0" * 64, prefix="x", created=0.0))


def test_concurrent_read_modify_write_loses_nothing(db):
    """Threads that read a counter and write it back: each transaction holds SQLite's write lock
    from its start (BEGIN IMMEDIATE), so no increment is lost and none fails with 'locked'."""
    with db.session() as s:
        s.add(_job("counter", queue_seq=0))
    errors = []

    def worker():
        try:
            for _ in range(25):
                with db.session() as s:
                    job = s.get(Job, "counter")
                    value = job.queue_seq
                    time.sleep(0.001)          # widen the window a lost update would need
                    job.queue_seq = value + 1
        except Exception as e:                 # reported below with the count
            errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with db.session() as s:
        assert s.get(Job, "counter").queue_seq == 100


# ---- migrations --------------------------------------------------------------------------------

HEAD = "0002_pid_start"


def _check_migrated(db: Database) -> None:
    assert db.current_revision() == db.head_revision() == HEAD
    assert db.schema_differences() == []


def _upgrade_keeps_a_job_of_0001(db: Database) -> None:
    """From the first schema with a job row in it (written by a brewnet of 0001, which knew no
    pid_start), up to the head: the row is kept, its pid_start NULL; a start time fits in it."""
    from alembic import command

    jid = f"old-{os.urandom(3).hex()}"
    with db.engine.begin() as conn:
        command.downgrade(db.alembic_config(conn), "0001_initial")
    assert db.current_revision() == "0001_initial"
    with db.engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO jobs (id, kind, name, group_name, notes, status, status_history, created, progress, "
            "resources, assigned, pid, spec, summary, resume_requested) VALUES (:id, 'model', 'old', '', '', "
            "'Running', '[]', 1.0, 0.5, '{}', '{}', 4242, '{}', '{}', false)"), {"id": jid})
    db.migrate()
    _check_migrated(db)
    with db.session() as s:
        job = s.get(Job, jid)
        assert (job.pid, job.pid_start, job.progress) == (4242, None, 0.5)
        job.pid_start = 2 ** 40                  # clock ticks after boot outgrow 32 bits
    with db.session() as s:
        assert s.get(Job, jid).pid_start == 2 ** 40
        s.delete(s.get(Job, jid))


def test_sqlite_migrate_matches_models_and_is_idempotent(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        assert db.current_revision() is None
        db.migrate()
        _check_migrated(db)
        with db.session() as s:
            s.add(_job("kept"))
        db.migrate()                           # again: nothing changes, nothing lost
        _check_migrated(db)
        with db.session() as s:
            assert s.get(Job, "kept") is not None
    finally:
        db.dispose()


def test_sqlite_upgrade_from_0001_keeps_jobs(db):
    _upgrade_keeps_a_job_of_0001(db)


def test_migrate_refuses_a_newer_schema(db):
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0042_from_the_future'"))
    with pytest.raises(DatabaseError, match="0042_from_the_future.*newer brewnet"):
        db.migrate()


def test_check_command(tmp_path, capsys):
    from brewnet.server.store.db import main

    url = f"sqlite:///{tmp_path / 'x.db'}"
    assert main(["check", url]) == 0
    assert "matches the models" in capsys.readouterr().out
    assert main(["upgrade", "mysql://x/y"]) == 2
    assert "unsupported database URL" in capsys.readouterr().err


def test_migrations_ship_inside_the_package():
    from brewnet.server.store import db as dbmod

    names = {p.name for p in dbmod.MIGRATIONS_DIR.iterdir()}
    assert {"alembic.ini", "env.py", "script.py.mako", "versions"} <= names
    assert (dbmod.MIGRATIONS_DIR / "versions" / "0001_initial.py").is_file()


# ---- a writer killed with SIGKILL ---------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    from brewnet.server.store.db import Database
    from brewnet.server.store.models import ApiToken, Job, User
    db = Database(sys.argv[1])
    n = int(sys.argv[2])
    while True:
        n += 1
        # one transaction: a counter, a job with a large JSON spec, a user and its token
        with db.session() as s:
            counter = s.get(Job, "counter")
            counter.queue_seq += 1
            counter.summary = {"count": counter.queue_seq}
            s.add(Job(id=f"job-{n:06d}", kind="model", name=f"job {n}", status="Done", created=time.time(),
                      spec={"n": n, "payload": "x" * 4000}, status_history=[["Done", n]] * 20))
            user = User(name=f"u{n}", password_hash=None, is_admin=False, created=time.time())
            s.add(user)
            s.flush()
            s.add(ApiToken(user_id=user.id, name=f"t{n}", token_hash=f"{n:064d}", prefix="p", created=0.0))
        print(n, flush=True)
""")


def test_writer_killed_with_sigkill_leaves_a_consistent_sqlite_db(tmp_path):
    url = f"sqlite:///{tmp_path / 'kill.db'}"
    db = Database(url)
    db.migrate()
    with db.session() as s:
        s.add(_job("counter", queue_seq=0))
    db.dispose()
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    committed = 0
    for _round in range(3):        # three kills, each at whatever point the loop has reached
        p = subprocess.Popen([sys.executable, str(script), url, str(committed)], stdout=subprocess.PIPE, text=True)
        target = committed + 150
        last = committed
        for line in p.stdout:
            last = int(line)
            if last >= target:
                break
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        p.stdout.close()
        assert p.returncode == -signal.SIGKILL and last >= target

        db = Database(url)
        try:
            with db.engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
                assert conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []
            with db.session() as s:
                counter = s.get(Job, "counter")
                jobs = s.scalars(select(Job).where(Job.id != "counter").order_by(Job.id)).all()
                n_users = s.scalar(select(func.count()).select_from(User))
                n_tokens = s.scalar(select(func.count()).select_from(ApiToken))
            # every acknowledged commit is there; the killed transaction is wholly there or wholly not
            assert counter.queue_seq >= last
            assert counter.summary == {"count": counter.queue_seq}
            assert len(jobs) == n_users == n_tokens == counter.queue_seq
            assert [j.spec["n"] for j in jobs] == list(range(1, counter.queue_seq + 1))
            assert all(len(j.spec["payload"]) == 4000 and len(j.status_history) == 20 for j in jobs)
            committed = counter.queue_seq
        finally:
            db.dispose()


# ---- PostgreSQL (env BREWNET_TEST_POSTGRES_URL; skipped without it) ------------------------------

@pytest.fixture
def pg_db(pg_url):
    db = Database(pg_url)
    db.migrate()
    yield db
    db.dispose()


def test_postgresql_migrate_matches_models_and_is_idempotent(pg_db):
    _check_migrated(pg_db)
    pg_db.migrate()
    _check_migrated(pg_db)


def test_postgresql_plain_url_uses_psycopg(pg_url):
    plain = pg_url.replace("postgresql+psycopg://", "postgresql://")
    db = Database(plain)
    try:
        assert db.engine.dialect.driver == "psycopg"
        assert "***" in str(db) and db._url.password not in str(db)
    finally:
        db.dispose()


def test_postgresql_migrate_refuses_a_newer_schema(pg_db):
    with pg_db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0042_from_the_future'"))
    try:
        with pytest.raises(DatabaseError, match="newer brewnet"):
            pg_db.migrate()
    finally:
        with pg_db.engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = :head"), {"head": HEAD})


def test_postgresql_upgrade_from_0001_keeps_jobs(pg_db):
    _upgrade_keeps_a_job_of_0001(pg_db)


def test_postgresql_store_roundtrip(pg_db):
    suffix = os.urandom(3).hex()
    name = f"pg{suffix}"
    with pg_db.session() as s:
        u = auth.create_user(s, name, "pw")
        token = auth.create_token(s, u)
        s.add(_job(f"pgjob-{suffix}", spec={"a": [1, 2]}, summary={"best": 0.5}))
    with pg_db.session() as s:
        with pytest.raises(ApiError) as e:
            auth.create_user(s, name, "pw")
        assert e.value.status == 409
        assert auth.user_for_token(s, token).name == name
        assert auth.authenticate_password(s, name, "pw") is not None
        assert s.get(Job, f"pgjob-{suffix}").spec == {"a": [1, 2]}
    with pg_db.session() as s:
        s.execute(User.__table__.delete().where(User.name == name))
    with pg_db.session() as s:
        assert auth.user_for_token(s, token) is None


def test_postgresql_concurrent_read_modify_write(pg_db):
    """Row locks (SELECT ... FOR UPDATE) keep concurrent increments on PostgreSQL."""
    jid = f"pgcounter-{os.urandom(3).hex()}"
    with pg_db.session() as s:
        s.add(_job(jid, queue_seq=0))
    errors = []

    def worker():
        try:
            for _ in range(20):
                with pg_db.session() as s:
                    job = s.get(Job, jid, with_for_update=True)
                    job.queue_seq += 1
        except Exception as e:
            errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with pg_db.session() as s:
        assert s.get(Job, jid).queue_seq == 80


def test_nested_sessions_are_refused_at_once(db):
    """A second session in the same thread would wait for the first one's SQLite write lock."""
    with db.session() as s:
        s.add(_job("outer"))
        with pytest.raises(RuntimeError, match="inside another db.session"):
            with db.session():
                pass
    with db.session() as s:                  # the outer one committed; sessions work again
        assert s.get(Job, "outer") is not None


def _migrate_concurrently(url: str, n: int = 3) -> list[str]:
    """n Database objects (as n servers starting at once) migrate one fresh database together."""
    dbs = [Database(url) for _ in range(n)]
    errors: list[str] = []
    barrier = threading.Barrier(n)

    def go(d):
        barrier.wait()
        try:
            d.migrate()
        except Exception as e:                 # reported by the caller's assertion
            errors.append(repr(e))

    threads = [threading.Thread(target=go, args=(d,)) for d in dbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        if not errors:
            _check_migrated(dbs[0])
    finally:
        for d in dbs:
            d.dispose()
    return errors


def test_sqlite_concurrent_first_migrations(tmp_path):
    assert _migrate_concurrently(f"sqlite:///{tmp_path / 'x.db'}") == []


def test_postgresql_concurrent_first_migrations(pg_url):
    """The advisory lock makes concurrent migrations take turns (else two CREATE TABLEs collide)."""
    from sqlalchemy import create_engine

    base = normalize_url(pg_url)
    name = f"{base.database}_race"
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        assert _migrate_concurrently(base.set(database=name).render_as_string(hide_password=False)) == []
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
