"""jobs.pid_start: the start time of a job's step process (``/proc/<pid>/stat`` field 22), so a
recycled pid is never taken for the step.  Rows of older versions keep NULL there.

Revision ID: 0002_pid_start
Revises: 0001_initial
Create Date: 2026-12-07
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_pid_start"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a nullable column: ALTER TABLE ADD COLUMN on both SQLite and PostgreSQL, no table copy
    op.add_column("jobs", sa.Column("pid_start", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("pid_start")
