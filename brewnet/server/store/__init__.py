"""The server's database: users, API tokens, login sessions and the index of jobs.

SQLAlchemy 2 ORM; an embedded SQLite file by default, PostgreSQL by URL; the schema is created
and upgraded by Alembic migrations kept inside this package (``store/migrations``).  A job's
directory (``job.json`` and its files) stays the truth for the job; the database indexes it and
holds what only the server knows (owners, queue order, sessions).
"""
from .models import ApiToken, Base, Job, LoginSession, User  # noqa: F401
