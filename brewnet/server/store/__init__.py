"""The server's database: users, API tokens, login sessions and the index of jobs.

``jobstore.py`` holds :class:`JobStore`, the one interface every query of jobs, users, tokens and
login sessions goes through (in the manner of MLflow's tracking store); ``db.py`` the
:class:`Database` (engine, one transaction per ``session()``, migrations); ``models.py`` the
SQLAlchemy 2 ORM models.  An embedded SQLite file by default, PostgreSQL by URL; the schema is
created and upgraded by Alembic migrations kept inside this package (``store/migrations``).  A
job's directory (``job.json`` and its files) stays the truth for the job; the database indexes it
and holds what only the server knows (owners, queue order, sessions).

This package imports nothing else of the server: every other part of it may import the store.
"""
from .jobstore import JobStore  # noqa: F401
from .models import ApiToken, Base, Job, LoginSession, User  # noqa: F401
