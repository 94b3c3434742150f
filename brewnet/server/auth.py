"""Users, passwords, API tokens and login sessions (the store's side of authentication).

- Passwords: argon2id through argon2-cffi's ``PasswordHasher`` with its defaults; the PHC string
  (``$argon2id$v=19$m=...``) is stored, so stronger defaults later rehash at the next login.
- API tokens: ``bnt_<43 url-safe characters>`` (32 random bytes), shown once; the table keeps only
  their SHA-256 (a token is random enough that a fast hash is the right one: a stolen table gives
  nothing to guess) and ``prefix`` (8 characters after ``bnt_``) to tell them apart in lists.
- Login sessions: the cookie holds 32 random bytes; the table's id is their SHA-256, so a read of
  the table cannot be replayed as a cookie.  Each session has its own random CSRF token.

Every function takes an open ORM session (``with db.session() as s:``) and leaves committing to it;
the queries themselves are the job store's (:class:`~brewnet.server.store.jobstore.JobStore`).
Bad input raises ApiError (400 bad name/password, 409 existing user).
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .errors import ApiError
from .store.jobstore import JobStore
from .store.models import NAME_PATTERN, ApiToken, LoginSession, User

TOKEN_PREFIX = "bnt_"
MAX_NAME_LENGTH = 64          # users.name is String(64)
MAX_TOKEN_NAME_LENGTH = 128   # api_tokens.name is String(128)
MAX_PASSWORD_LENGTH = 1024    # argon2 hashes anything; a megabyte "password" is an attack, not a secret
# last_used is a write per request: keep it to once a minute per token (SQLite has one writer)
LAST_USED_RESOLUTION_S = 60.0

_hasher = PasswordHasher()
# verified against when the user does not exist, so a wrong name costs as long as a wrong password
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))
_NAME_RE = re.compile(NAME_PATTERN)


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


# ---- passwords ------------------------------------------------------------------------------

def hash_password(pw: str) -> str:
    """The argon2id PHC string of ``pw``."""
    return _hasher.hash(pw)


def verify_password(hash: str | None, pw: str) -> bool:
    """True when ``pw`` matches ``hash``; False on a mismatch, a malformed hash or no hash (never raises)."""
    if not isinstance(hash, str) or not isinstance(pw, str):
        return False
    try:
        return _hasher.verify(hash, pw)
    except (VerificationError, InvalidHashError):
        return False


def rehash_if_needed(user: User, pw: str) -> bool:
    """After a successful login: store a new hash when the hasher's parameters changed.  True if it did."""
    if user.password_hash and _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(pw)
        return True
    return False


def validate_password(pw: object) -> str:
    """``pw`` if it is an acceptable password, else ApiError(400) naming the field ``password``."""
    if not isinstance(pw, str) or pw == "":
        raise ApiError(400, "Password must not be empty", field="password")
    if len(pw) > MAX_PASSWORD_LENGTH:
        raise ApiError(400, f"Password is longer than {MAX_PASSWORD_LENGTH} characters", field="password")
    return pw


def set_password(user: User, pw: str) -> None:
    """Give ``user`` a new password (validated and hashed)."""
    user.password_hash = hash_password(validate_password(pw))


# ---- users ----------------------------------------------------------------------------------

def validate_username(name: object) -> str:
    """``name`` if it is a DIGITS user name (``^[a-z][a-z0-9._-]*$``, ≤ 64 characters), else ApiError(400)."""
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ApiError(400, f"Invalid username {name!r:.80}: it must start with a lowercase letter and contain "
                            "only lowercase letters, digits, '.', '_' and '-'", field="username")
    if len(name) > MAX_NAME_LENGTH:
        raise ApiError(400, f"Invalid username: longer than {MAX_NAME_LENGTH} characters", field="username")
    return name


def get_user(session: Session, name: str) -> User | None:
    """The user called ``name``, or None."""
    return JobStore.user_named(session, name)


def create_user(session: Session, name: str, password: str | None, is_admin: bool = False) -> User:
    """Add a user (``password`` None: a passwordless DIGITS local-mode user).  409 if the name exists."""
    validate_username(name)
    pw_hash = None if password is None else hash_password(validate_password(password))
    if get_user(session, name) is not None:
        raise ApiError(409, f"User '{name}' already exists", field="username")
    user = User(name=name, password_hash=pw_hash, is_admin=bool(is_admin), created=time.time())
    try:
        # a savepoint: a concurrent creation of the same name fails here without spoiling the
        # caller's transaction
        JobStore.add_user(session, user)
    except IntegrityError:
        raise ApiError(409, f"User '{name}' already exists", field="username") from None
    return user


def ensure_local_user(session: Session, name: str) -> User:
    """DIGITS' local mode (``POST /login`` with only a name): the user, created passwordless if new.

    A user that has a password must log in with it: ApiError(401).
    """
    validate_username(name)
    user = get_user(session, name)
    if user is None:
        try:
            return create_user(session, name, None)
        except ApiError as e:
            if e.status != 409:
                raise
            user = get_user(session, name)   # created meanwhile by another request
    if user.password_hash is not None:
        raise ApiError(401, f"User '{name}' has a password: log in with it")
    return user


def authenticate_password(session: Session, name: str, pw: str) -> User | None:
    """The user when ``name`` and ``pw`` match (the hash upgraded if needed), else None."""
    user = get_user(session, name) if isinstance(name, str) else None
    if user is None or user.password_hash is None:
        verify_password(_DUMMY_HASH, pw if isinstance(pw, str) else "")   # same time as a wrong password
        return None
    if not verify_password(user.password_hash, pw):
        return None
    rehash_if_needed(user, pw)
    return user


def users_with_passwords(session: Session) -> int:
    """How many users have a password (0: DIGITS' local mode is allowed on loopback)."""
    return JobStore.count_users_with_password(session)


# ---- API tokens -----------------------------------------------------------------------------

def create_token(session: Session, user: User, name: str = "", ttl_days: float | None = None) -> str:
    """A new API token for ``user``; the returned ``bnt_...`` string is the only copy of it.

    ``ttl_days`` None: never expires.
    """
    if not isinstance(name, str) or len(name) > MAX_TOKEN_NAME_LENGTH:
        raise ApiError(400, f"Token name must be text of at most {MAX_TOKEN_NAME_LENGTH} characters", field="name")
    if ttl_days is not None and not (isinstance(ttl_days, (int, float)) and 0 < ttl_days < float("inf")):
        raise ApiError(400, f"Token lifetime must be a positive number of days, not {ttl_days!r}", field="ttl_days")
    now = time.time()
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    JobStore.add_token(session, ApiToken(user_id=user.id, name=name, token_hash=_sha256(token),
                                         prefix=token[len(TOKEN_PREFIX):len(TOKEN_PREFIX) + 8], created=now,
                                         expires=None if ttl_days is None else now + ttl_days * 86400.0,
                                         last_used=None))
    return token


def token_row(session: Session, token: object) -> ApiToken | None:
    """The stored row of ``token`` (found by its hash); None for what is not one of ours."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 256:
        return None
    return JobStore.token_by_hash(session, _sha256(token))


def user_for_token(session: Session, token: str) -> User | None:
    """The user of a valid token (and its ``last_used`` updated, to the minute); None if unknown or expired."""
    row = token_row(session, token)
    now = time.time()
    if row is None or (row.expires is not None and row.expires <= now):
        return None
    if row.last_used is None or now - row.last_used >= LAST_USED_RESOLUTION_S:
        row.last_used = now
    return JobStore.user_by_id(session, row.user_id)


def list_tokens(session: Session, user: User) -> list[ApiToken]:
    """``user``'s tokens, oldest first (hashes only: the tokens themselves are not kept)."""
    return JobStore.tokens_of(session, user.id)


def revoke_token(session: Session, user: User, token_id: int) -> bool:
    """Delete ``user``'s token ``token_id``; False if ``user`` has no such token."""
    return JobStore.delete_token(session, user.id, token_id)


# ---- login sessions -------------------------------------------------------------------------

def create_login_session(session: Session, user: User, hours: float) -> tuple[str, str]:
    """A login of ``hours``: returns (cookie value, CSRF token).  Expired sessions are purged meanwhile."""
    if not (isinstance(hours, (int, float)) and 0 < hours < float("inf")):
        raise ApiError(400, f"Session lifetime must be a positive number of hours, not {hours!r}")
    now = time.time()
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    JobStore.add_login(session, LoginSession(id=_sha256(cookie), user_id=user.id, csrf_token=csrf, created=now,
                                             expires=now + hours * 3600.0), purge_before=now)
    return cookie, csrf


def user_for_session(session: Session, cookie_value: str) -> tuple[User, LoginSession] | None:
    """(user, login session) of a valid cookie; None if unknown or expired (an expired one is deleted)."""
    if not isinstance(cookie_value, str) or not cookie_value or len(cookie_value) > 256:
        return None
    row = JobStore.login(session, _sha256(cookie_value))
    if row is None:
        return None
    if row.expires <= time.time():
        JobStore.delete_row(session, row)
        return None
    user = JobStore.user_by_id(session, row.user_id)
    return None if user is None else (user, row)


def check_csrf(login: LoginSession, token: object) -> bool:
    """True when ``token`` is the login session's CSRF token (compared in constant time)."""
    return isinstance(token, str) and hmac.compare_digest(token.encode(), login.csrf_token.encode())


def end_login_session(session: Session, cookie_value: str) -> None:
    """Log out: forget the session of this cookie (nothing happens for an unknown one)."""
    if isinstance(cookie_value, str) and cookie_value:
        JobStore.delete_login(session, _sha256(cookie_value))


def list_users(session: Session) -> list[User]:
    """Every user, by name."""
    return JobStore.users(session)


def delete_user(session: Session, user: User) -> None:
    """Remove ``user`` (their tokens and login sessions go with them)."""
    JobStore.delete_row(session, user)
