"""ORM models.  Times are Unix seconds (float); JSON columns hold plain dicts and lists."""
from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAME_PATTERN = r"^[a-z][a-z0-9._-]*$"   # DIGITS' user names


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)  # argon2 PHC string
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[float] = mapped_column(Float)


class ApiToken(Base):
    """``Authorization: Bearer <token>``.  Only the SHA-256 of the token is stored."""
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    prefix: Mapped[str] = mapped_column(String(16))       # first characters, to tell tokens apart
    created: Mapped[float] = mapped_column(Float)
    expires: Mapped[float | None] = mapped_column(Float, nullable=True)
    last_used: Mapped[float | None] = mapped_column(Float, nullable=True)


class LoginSession(Base):
    """A browser login: the cookie holds a random value, the table its SHA-256."""
    __tablename__ = "login_sessions"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float)


class Job(Base):
    """The index of one job; ``<jobs_dir>/<id>/job.json`` mirrors it (written atomically)."""
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)    # YYYYMMDD-HHMMSS-xxxx
    kind: Mapped[str] = mapped_column(String(16), index=True)        # dataset | model | inference
    name: Mapped[str] = mapped_column(String(256))
    group_name: Mapped[str] = mapped_column(String(256), default="")
    notes: Mapped[str] = mapped_column(Text, default="")
    owner: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_history: Mapped[list] = mapped_column(JSON, default=list)   # [[status, time], ...]
    created: Mapped[float] = mapped_column(Float)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)       # 0..1
    queue_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)  # order in the queue
    dataset_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    parent_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # model of an inference job, clone source
    resources: Mapped[dict] = mapped_column(JSON, default=dict)       # wanted: {"cpu": 1, "gpu_count": 0, "gpus": []}
    assigned: Mapped[dict] = mapped_column(JSON, default=dict)        # given while running: {"gpus": [0]}
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # the step's start time (/proc/<pid>/stat field 22, clock ticks after boot): with the pid and
    # the job's directory, what identifies its process; None in rows of older brewnets
    pid_start: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    spec: Mapped[dict] = mapped_column(JSON, default=dict)            # the job's settings (form fields, resolved)
    summary: Mapped[dict] = mapped_column(JSON, default=dict)         # results: counts, snapshots, best val, ...
    resume_requested: Mapped[bool] = mapped_column(Boolean, default=False)
