"""The job store: every query of jobs, users, API tokens and login sessions (as MLflow's tracking
store is to its runs), over one :class:`~brewnet.server.store.db.Database` (SQLite or PostgreSQL).

Two kinds of method:

- job methods (``get_job``, ``list_jobs``, ``job_ids``, ``add_job``, ``update_job``,
  ``delete_job`` ...) open their own transaction and return detached rows, readable after it;
- in-transaction methods take the caller's open session (``with store.transaction() as s:``),
  for work that must be one transaction: the scheduler's recovery, and authentication
  (:mod:`brewnet.server.auth`, whose functions take a session).

The store knows rows, not rules: job states and queue policy are the caller's (passed in as
values), so this package imports nothing else of the server.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterable, TypeVar

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .db import Database
from .models import ApiToken, Job, LoginSession, User

T = TypeVar("T")


class JobStore:
    """Queries of the server's database (see the module docstring)."""

    def __init__(self, db: Database):
        self.db = db

    def transaction(self) -> contextlib.AbstractContextManager[Session]:
        """One transaction (``Database.session``): committed at the block's end, rolled back if it raises."""
        return self.db.session()

    # ------------------------------------------------------------------ jobs, one transaction each

    def get_job(self, job_id: str) -> Job | None:
        """The job ``job_id`` (detached), or None."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is not None:
                s.expunge(job)
        return job

    def list_jobs(self, kind: str | None = None) -> list[Job]:
        """Every job (of ``kind``), newest first."""
        with self.db.session() as s:
            q = select(Job).order_by(Job.created.desc(), Job.id.desc())
            if kind is not None:
                q = q.where(Job.kind == kind)
            jobs = list(s.execute(q).scalars().all())
            s.expunge_all()
        return jobs

    def job_ids(self, kind: str, statuses: Iterable[str], dataset_id: str | None = None) -> list[str]:
        """Ids of the jobs of ``kind`` in one of ``statuses`` (and of ``dataset_id`` when given)."""
        q = select(Job.id).where(Job.kind == kind, Job.status.in_(list(statuses)))
        if dataset_id is not None:
            q = q.where(Job.dataset_id == dataset_id)
        with self.db.session() as s:
            return list(s.execute(q).scalars().all())

    def jobs_of_dataset(self, kind: str, dataset_id: str) -> list[Job]:
        """The jobs of ``kind`` that use the dataset ``dataset_id``, oldest first."""
        with self.db.session() as s:
            rows = list(s.execute(select(Job).where(Job.kind == kind, Job.dataset_id == dataset_id)
                                  .order_by(Job.created)).scalars().all())
            s.expunge_all()
        return rows

    def children(self, kind: str, parent_id: str) -> list[Job]:
        """The jobs of ``kind`` made from ``parent_id`` (a model's inference jobs)."""
        with self.db.session() as s:
            rows = list(s.execute(select(Job).where(Job.kind == kind, Job.parent_id == parent_id))
                        .scalars().all())
            s.expunge_all()
        return rows

    def queue(self, status: str) -> list[tuple[str, str, str]]:
        """``(id, name, kind)`` of the jobs in ``status`` (Waiting), in queue order."""
        with self.db.session() as s:
            rows = s.execute(select(Job.id, Job.name, Job.kind).where(Job.status == status)
                             .order_by(Job.queue_seq, Job.created, Job.id)).all()
        return [(r.id, r.name, r.kind) for r in rows]

    def queue_with_datasets(self, status: str, model_kind: str
                            ) -> list[tuple[str, str, str | None, str | None, dict]]:
        """The jobs in ``status`` in queue order, as ``(id, kind, dataset_id, dataset status,
        resources)``; the dataset's status only for jobs of ``model_kind`` ("missing" when the
        dataset's row is gone)."""
        with self.db.session() as s:
            rows = s.execute(select(Job).where(Job.status == status)
                             .order_by(Job.queue_seq, Job.created, Job.id)).scalars().all()
            out = []
            for job in rows:
                ds_status = None
                if job.kind == model_kind and job.dataset_id:
                    ds = s.get(Job, job.dataset_id)
                    ds_status = ds.status if ds is not None else "missing"
                out.append((job.id, job.kind, job.dataset_id, ds_status, dict(job.resources or {})))
        return out

    def add_job(self, job: Job, before_commit: Callable[[Job], None] | None = None) -> None:
        """Insert ``job``; ``before_commit(job)`` runs once the row is flushed, inside the
        transaction (a job.json written there: a crash leaves the file, never a row without it)."""
        with self.db.session() as s:
            s.add(job)
            s.flush()
            if before_commit is not None:
                before_commit(job)
            s.expunge(job)

    def update_job(self, job_id: str, mutate: Callable[[Job, Session], T],
                   before_commit: Callable[[Job, T], None] | None = None) -> tuple[Job | None, T | None]:
        """One transaction: load the job, ``mutate(job, session)``, flush, ``before_commit(job,
        result)``, commit.  Returns (the detached job, or None when there is no such job;
        mutate's result)."""
        with self.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                return None, None
            result = mutate(job, s)
            s.flush()
            if before_commit is not None:
                before_commit(job, result)
            s.expunge(job)
        return job, result

    def delete_jobs(self, job_ids: Iterable[str]) -> None:
        """Delete the rows of ``job_ids`` (unknown ids are skipped), one transaction."""
        with self.db.session() as s:
            for job_id in job_ids:
                row = s.get(Job, job_id)
                if row is not None:
                    s.delete(row)

    def delete_job(self, job_id: str) -> None:
        """Delete the row of ``job_id`` (nothing happens for an unknown one)."""
        self.delete_jobs([job_id])

    # ------------------------------------------------------------------ jobs, in the caller's transaction

    @staticmethod
    def all_jobs(s: Session, *, queue_order: bool = False) -> list[Job]:
        """Every job; in queue order (queue_seq, created, id) when asked."""
        q = select(Job)
        if queue_order:
            q = q.order_by(Job.queue_seq, Job.created, Job.id)
        return list(s.execute(q).scalars().all())

    @staticmethod
    def delete_row(s: Session, row: object) -> None:
        """Delete a row of the open transaction: a job, a user (its tokens and logins cascade), a login."""
        s.delete(row)

    @staticmethod
    def add_row(s: Session, row: object) -> None:
        """Insert a row (a job re-imported from its job.json) into the open transaction."""
        s.add(row)

    @staticmethod
    def next_queue_seq(s: Session) -> int:
        """The queue position after the last one (atomic within the transaction)."""
        m = s.execute(select(func.max(Job.queue_seq))).scalar()
        return (m or 0) + 1

    # -------------------------------------------------------------- users, tokens, logins (in the caller's transaction)

    @staticmethod
    def user_named(s: Session, name: str) -> User | None:
        """The user called ``name``, or None."""
        return s.scalar(select(User).where(User.name == name))

    @staticmethod
    def user_by_id(s: Session, user_id: int) -> User | None:
        return s.get(User, user_id)

    @staticmethod
    def users(s: Session) -> list[User]:
        """Every user, by name."""
        return list(s.scalars(select(User).order_by(User.name)))

    @staticmethod
    def add_user(s: Session, user: User) -> None:
        """Insert ``user`` in a savepoint: a concurrent creation of the same name raises
        IntegrityError here without spoiling the caller's transaction."""
        with s.begin_nested():
            s.add(user)

    @staticmethod
    def count_users_with_password(s: Session) -> int:
        return s.scalar(select(func.count()).select_from(User).where(User.password_hash.is_not(None)))

    @staticmethod
    def add_token(s: Session, token: ApiToken) -> None:
        s.add(token)
        s.flush()

    @staticmethod
    def token_by_hash(s: Session, token_hash: str) -> ApiToken | None:
        return s.scalar(select(ApiToken).where(ApiToken.token_hash == token_hash))

    @staticmethod
    def tokens_of(s: Session, user_id: int) -> list[ApiToken]:
        """A user's tokens, oldest first."""
        return list(s.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)))

    @staticmethod
    def delete_token(s: Session, user_id: int, token_id: int) -> bool:
        """Delete the token ``token_id`` of ``user_id``; False when it has none such."""
        result = s.execute(delete(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user_id))
        return result.rowcount > 0

    @staticmethod
    def add_login(s: Session, login: LoginSession, purge_before: float) -> None:
        """Insert a login session; those expired at ``purge_before`` are deleted meanwhile."""
        s.execute(delete(LoginSession).where(LoginSession.expires <= purge_before))
        s.add(login)
        s.flush()

    @staticmethod
    def login(s: Session, login_id: str) -> LoginSession | None:
        return s.get(LoginSession, login_id)

    @staticmethod
    def delete_login(s: Session, login_id: str) -> None:
        s.execute(delete(LoginSession).where(LoginSession.id == login_id))

