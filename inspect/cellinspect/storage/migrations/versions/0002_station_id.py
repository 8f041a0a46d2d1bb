"""Results carry the station that judged them: station_id (indexed), line and site.

All three are nullable: rows stored before this revision keep NULL, and their result JSON
reads back with station_id None.

Revision ID: 0002_station_id
Revises: 0001_initial
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_station_id"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("station_id", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("line", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("site", sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f("ix_results_station_id"), ["station_id"], unique=False)


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+), not a batch: a batch rebuilds the
    # table, and on SQLite with foreign keys on, dropping the old `results` cascades into
    # images, reviews and the audit trail and empties them.
    op.drop_index(op.f("ix_results_station_id"), table_name="results")
    op.drop_column("results", "site")
    op.drop_column("results", "line")
    op.drop_column("results", "station_id")
