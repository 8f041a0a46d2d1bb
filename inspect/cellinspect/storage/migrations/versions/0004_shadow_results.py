"""shadow_results: a candidate model's verdicts on live parts (lifecycle/shadow.py), never outputs.

One row per live part offered to a shadow candidate: its verdict, score, defect class and
latency, or (verdict NULL) why it was skipped. `live_result_id` names the live result and is
not a foreign key: the live row reaches the database through the result writer, maybe later.

Revision ID: 0004_shadow_results
Revises: 0003_model_lifecycle
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_shadow_results"
down_revision: str | None = "0003_model_lifecycle"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "shadow_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("live_result_id", sa.String(length=64), nullable=False),
        sa.Column("slot", sa.String(length=128), nullable=False),
        sa.Column("candidate_version", sa.String(length=64), nullable=False),
        sa.Column("candidate_sha256", sa.String(length=64), nullable=False),
        sa.Column("recipe_name", sa.String(length=256), nullable=False),
        sa.Column("live_verdict", sa.String(length=16), nullable=False),
        sa.Column("live_score", sa.Float(), nullable=True),
        sa.Column("verdict", sa.String(length=16), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("defect_class", sa.String(length=128), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("skipped_reason", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shadow_results")),
    )
    op.create_index(
        op.f("ix_shadow_results_live_result_id"),
        "shadow_results",
        ["live_result_id"],
        unique=False,
    )
    op.create_index(
        "ix_shadow_results_slot_version",
        "shadow_results",
        ["slot", "candidate_version"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_shadow_results_slot_version", table_name="shadow_results")
    op.drop_index(op.f("ix_shadow_results_live_result_id"), table_name="shadow_results")
    op.drop_table("shadow_results")
