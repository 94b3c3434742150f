"""auth.py: user names, argon2 passwords, API tokens and login sessions on a migrated SQLite store."""
from __future__ import annotations

import hashlib
import time

import pytest
from sqlalchemy import select

from brewnet.server import auth
from brewnet.server.errors import ApiError
from brewnet.server.store.models import ApiToken, LoginSession, User


def _status(excinfo) -> int:
    return excinfo.value.status


# ---- user names and users ---------------------------------------------------------------------

@pytest.mark.parametrize("name", ["alice", "a", "bob.smith", "x_1-2", "z" * 64])
def test_valid_usernames(name):
    assert auth.validate_username(name) == name


@pytest.mark.parametrize("name", ["", "Alice", "1abc", "_abc", "a b", "bob\n", "ab/cd", "é", "z" * 65, None, 3])
def test_invalid_usernames_are_400(name):
    with pytest.raises(ApiError) as e:
        auth.validate_username(name)
    assert _status(e) == 400 and e.value.field == "username"


def test_create_user_and_duplicate_is_409(db):
    with db.session() as s:
        u = auth.create_user(s, "alice", "correct horse", is_admin=True)
        assert u.id is not None and u.is_admin and u.password_hash.startswith("$argon2id$")
    with db.session() as s:
        with pytest.raises(ApiError) as e:
            auth.create_user(s, "alice", "other")
        assert _status(e) == 409
        # the caller's transaction is still usable after the refusal
        auth.create_user(s, "bob", None)
    with db.session() as s:
        assert sorted(s.scalars(select(User.name))) == ["alice", "bob"]
        assert auth.users_with_passwords(s) == 1


def test_create_user_bad_name_or_password_is_400(db):
    with db.session() as s:
        for name, pw, field in (("Bad Name", "pw", "username"), ("carol", "", "password"),
                                ("carol", "x" * (auth.MAX_PASSWORD_LENGTH + 1), "password")):
            with pytest.raises(ApiError) as e:
                auth.create_user(s, name, pw)
            assert _status(e) == 400 and e.value.field == field
        assert s.scalar(select(User).where(User.name == "carol")) is None


def test_concurrent_duplicate_insert_is_409_not_integrity_error(db, monkeypatch):
    """The name check and the insert are separate statements: a row that appears in between
    (another process's insert) still gives 409, through the unique index."""
    with db.session() as s:
        assert auth.get_user(s, "dave") is None
        # simulate the race: the row exists, but the check is bypassed
        s.add(User(name="dave", password_hash=None, is_admin=False, created=time.time()))
        s.flush()
        with monkeypatch.context() as m:
            m.setattr(auth, "get_user", lambda session, name: None)
            with pytest.raises(ApiError) as e:
                auth.create_user(s, "dave", "pw")
        assert _status(e) == 409
    with db.session() as s:
        assert s.scalar(select(User).where(User.name == "dave")) is not None


# ---- passwords --------------------------------------------------------------------------------

def test_password_hash_is_argon2_and_verifies():
    h = auth.hash_password("s3cret")
    assert h.startswith("$argon2id$v=19$") and "s3cret" not in h
    assert auth.hash_password("s3cret") != h          # salted
    assert auth.verify_password(h, "s3cret") is True
    assert auth.verify_password(h, "s3cret ") is False
    assert auth.verify_password(h, "") is False


@pytest.mark.parametrize("bad_hash", ["", "not a hash", "$argon2id$v=19$garbage", None])
def test_verify_password_never_raises(bad_hash):
    assert auth.verify_password(bad_hash, "pw") is False


def test_authenticate_password(db):
    with db.session() as s:
        auth.create_user(s, "alice", "right")
        auth.create_user(s, "local", None)
    with db.session() as s:
        assert auth.authenticate_password(s, "alice", "right").name == "alice"
        assert auth.authenticate_password(s, "alice", "wrong") is None
        assert auth.authenticate_password(s, "nobody", "right") is None
        assert auth.authenticate_password(s, "local", "") is None      # passwordless: no password login


def test_rehash_if_needed(db):
    from argon2 import PasswordHasher

    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    with db.session() as s:
        u = auth.create_user(s, "alice", "pw")
        u.password_hash = weak
    with db.session() as s:
        assert auth.authenticate_password(s, "alice", "pw") is not None
    with db.session() as s:
        new = auth.get_user(s, "alice").password_hash
        assert new != weak and auth.verify_password(new, "pw")
        assert auth.rehash_if_needed(auth.get_user(s, "alice"), "pw") is False


def test_set_password(db):
    with db.session() as s:
        u = auth.create_user(s, "alice", None)
        auth.set_password(u, "new one")
    with db.session() as s:
        assert auth.authenticate_password(s, "alice", "new one") is not None
        with pytest.raises(ApiError):
            auth.set_password(auth.get_user(s, "alice"), "")


def test_ensure_local_user(db):
    with db.session() as s:
        u = auth.ensure_local_user(s, "dana")
        assert u.password_hash is None
    with db.session() as s:
        assert auth.ensure_local_user(s, "dana").id == u.id       # the same user again
        auth.create_user(s, "eve", "pw")
    with db.session() as s:
        with pytest.raises(ApiError) as e:
            auth.ensure_local_user(s, "eve")                     # has a password: must use it
        assert _status(e) == 401
        with pytest.raises(ApiError) as e:
            auth.ensure_local_user(s, "Not Valid")
        assert _status(e) == 400
        assert auth.users_with_passwords(s) == 1


# ---- API tokens ---------------------------------------------------------------------------------

def test_token_create_and_lookup(db):
    with db.session() as s:
        u = auth.create_user(s, "alice", "pw")
        token = auth.create_token(s, u, name="ci")
    assert token.startswith("bnt_") and len(token) == 4 + 43
    with db.session() as s:
        row = s.scalar(select(ApiToken))
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
        assert row.prefix == token[4:12] and row.name == "ci" and row.expires is None
        assert row.last_used is None
        assert token not in (row.token_hash, row.prefix)
    with db.session() as s:
        assert auth.user_for_token(s, token).name == "alice"
    with db.session() as s:
        first_use = s.scalar(select(ApiToken.last_used))
        assert first_use is not None and first_use <= time.time()
        for bad in ("", "bnt_", token + "x", token[:-1], "Bearer " + token, token.replace("bnt_", "xyz_"), None):
            assert auth.user_for_token(s, bad) is None


def test_token_last_used_updates_after_resolution(db):
    with db.session() as s:
        u = auth.create_user(s, "alice", "pw")
        token = auth.create_token(s, u)
    with db.session() as s:
        auth.user_for_token(s, token)
        s.scalar(select(ApiToken)).last_used = 1000.0     # an old use
    with db.session() as s:
        auth.user_for_token(s, token)
    with db.session() as s:
        assert s.scalar(select(ApiToken.last_used)) > 1000.0 + auth.LAST_USED_RESOLUTION_S


def test_token_expired(db):
    with db.session() as s:
        u = auth.create_user(s, "alice", "pw")
        token = auth.create_token(s, u, ttl_days=1)
        row = s.scalar(select(ApiToken))
        assert row.expires == pytest.approx(row.created + 86400.0)
    with db.session() as s:
        assert auth.user_for_token(s, token) is not None
        s.scalar(select(ApiToken)).expires = time.time() - 1.0
    with db.session() as s:
        assert auth.user_for_token(s, token) is None


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf"), "7"])
def test_token_bad_ttl_is_400(db, ttl):
    with db.session() as s:
        u = auth.create_user(s, "alice", "pw")
        with pytest.raises(ApiError) as e:
            auth.create_token(s, u, ttl_days=ttl)
        assert _status(e) == 400


def test_token_revoked(db):
    with db.session() as s:
        alice = auth.create_user(s, "alice", "pw")
        bob = auth.create_user(s, "bob", "pw")
        t1 = auth.create_token(s, alice, name="one")
        t2 = auth.create_token(s, alice, name="two")
    with db.session() as s:
        ids = [t.id for t in auth.list_tokens(s, alice)]
        assert [t.name for t in auth.list_tokens(s, alice)] == ["one", "two"]
        assert auth.revoke_token(s, bob, ids[0]) is False     # not bob's token
        assert auth.revoke_token(s, alice, ids[0]) is True
        assert auth.revoke_token(s, alice, ids[0]) is False   # already gone
    with db.session() as s:
        assert auth.user_for_token(s, t1) is None
        assert auth.user_for_token(s, t2).name == "alice"


def test_deleting_a_user_deletes_its_tokens_and_sessions(db):
    """ON DELETE CASCADE works only with SQLite's foreign_keys=ON, which the Database sets."""
    with db.session() as s:
        u = auth.create_user(s, "alice", "pw")
        token = auth.create_token(s, u)
        auth.create_login_session(s, u, hours=1)
    with db.session() as s:
        s.execute(User.__table__.delete())
    with db.session() as s:
        assert s.scalar(select(ApiToken)) is None and s.scalar(select(LoginSession)) is None
        assert auth.user_for_token(s, token) is None


# ---- login sessions ----------------------------------------------------------------------------

def test_login_session_roundtrip(db):
    with db.session() as s:
        u = auth.create_user(s, "alice", "pw")
        cookie, csrf = auth.create_login_session(s, u, hours=2)
    assert cookie != csrf and len(cookie) >= 43 and len(csrf) >= 43
    with db.session() as s:
        row = s.scalar(select(LoginSession))
        assert row.id == hashlib.sha256(cookie.encode()).hexdigest() and row.csrf_token == csrf
        assert row.expires - row.created == pytest.approx(7200.0)
        user, login = auth.user_for_session(s, cookie)
        assert user.name == "alice" and login.id == row.id
        assert auth.check_csrf(login, csrf) and not auth.check_csrf(login, csrf[:-1] + "x")
        assert not auth.check_csrf(login, None)
        assert auth.user_for_session(s, row.id) is None     # the stored hash is not a cookie
        assert auth.user_for_session(s, "") is None and auth.user_for_session(s, None) is None
    with db.session() as s:
        auth.end_login_session(s, cookie)
        auth.end_login_session(s, cookie)                    # twice: no error
    with db.session() as s:
        assert auth.user_for_session(s, cookie) is None


def test_login_session_expired_is_none_and_deleted(db):
    with db.session() as s:
        u = auth.create_user(s, "alice", "pw")
        cookie, _ = auth.create_login_session(s, u, hours=1)
        s.scalar(select(LoginSession)).expires = time.time() - 1.0
    with db.session() as s:
        assert auth.user_for_session(s, cookie) is None
    with db.session() as s:
        assert s.scalar(select(LoginSession)) is None


def test_new_login_purges_expired_sessions(db):
    with db.session() as s:
        u = auth.create_user(s, "alice", "pw")
        old, _ = auth.create_login_session(s, u, hours=1)
        s.scalar(select(LoginSession)).expires = time.time() - 1.0
    with db.session() as s:
        new, _ = auth.create_login_session(s, u, hours=1)
    with db.session() as s:
        assert list(s.scalars(select(LoginSession.id))) == [hashlib.sha256(new.encode()).hexdigest()]
    with db.session() as s:
        with pytest.raises(ApiError):
            auth.create_login_session(s, u, hours=0)
