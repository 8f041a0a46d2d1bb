"""Initial schema: results, models used, images, reviews and the review audit trail.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("result_id", sa.String(length=64), nullable=False),
        sa.Column("captured_wall", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("verdict", sa.String(length=16), nullable=False),
        sa.Column("defect_class", sa.String(length=128), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("part_id", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(length=256), nullable=False),
        sa.Column("recipe_name", sa.String(length=256), nullable=False),
        sa.Column("reviewed", sa.Boolean(), nullable=False),
        sa.Column("review_label", sa.String(length=16), nullable=True),
        sa.Column("result_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_results")),
        sa.UniqueConstraint("result_id", name=op.f("uq_results_result_id")),
    )
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.create_index("ix_results_captured_wall_id", ["captured_wall", "id"], unique=False)
        batch_op.create_index(batch_op.f("ix_results_defect_class"), ["defect_class"], unique=False)
        batch_op.create_index(batch_op.f("ix_results_part_id"), ["part_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_results_review_label"), ["review_label"], unique=False)
        batch_op.create_index(batch_op.f("ix_results_reviewed"), ["reviewed"], unique=False)
        batch_op.create_index(batch_op.f("ix_results_source"), ["source"], unique=False)
        batch_op.create_index(batch_op.f("ix_results_verdict"), ["verdict"], unique=False)

    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("result_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("relpath", sa.String(length=512), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("media_type", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_pk"],
            ["results.id"],
            name=op.f("fk_images_result_pk_results"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("result_pk", "kind", name="uq_images_result_pk_kind"),
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_images_result_pk"), ["result_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_images_sha256"), ["sha256"], unique=False)

    op.create_table(
        "result_models",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("result_pk", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_pk"],
            ["results.id"],
            name=op.f("fk_result_models_result_pk_results"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_result_models")),
    )
    with op.batch_alter_table("result_models", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_result_models_result_pk"), ["result_pk"], unique=False)
        batch_op.create_index("ix_result_models_version_name", ["version", "name"], unique=False)

    op.create_table(
        "review_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("result_pk", sa.Integer(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("defect_class", sa.String(length=128), nullable=True),
        sa.Column("reviewer", sa.String(length=128), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("previous_label", sa.String(length=16), nullable=True),
        sa.Column("previous_defect_class", sa.String(length=128), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_pk"],
            ["results.id"],
            name=op.f("fk_review_events_result_pk_results"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_review_events")),
    )
    with op.batch_alter_table("review_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_review_events_result_pk"), ["result_pk"], unique=False)

    op.create_table(
        "reviews",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("result_pk", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(length=16), nullable=False),
        sa.Column("defect_class", sa.String(length=128), nullable=True),
        sa.Column("reviewer", sa.String(length=128), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["result_pk"],
            ["results.id"],
            name=op.f("fk_reviews_result_pk_results"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.UniqueConstraint("result_pk", name=op.f("uq_reviews_result_pk")),
    )


def downgrade() -> None:
    op.drop_table("reviews")
    with op.batch_alter_table("review_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_review_events_result_pk"))

    op.drop_table("review_events")
    with op.batch_alter_table("result_models", schema=None) as batch_op:
        batch_op.drop_index("ix_result_models_version_name")
        batch_op.drop_index(batch_op.f("ix_result_models_result_pk"))

    op.drop_table("result_models")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_images_sha256"))
        batch_op.drop_index(batch_op.f("ix_images_result_pk"))

    op.drop_table("images")
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_results_verdict"))
        batch_op.drop_index(batch_op.f("ix_results_source"))
        batch_op.drop_index(batch_op.f("ix_results_reviewed"))
        batch_op.drop_index(batch_op.f("ix_results_review_label"))
        batch_op.drop_index(batch_op.f("ix_results_part_id"))
        batch_op.drop_index(batch_op.f("ix_results_defect_class"))
        batch_op.drop_index("ix_results_captured_wall_id")

    op.drop_table("results")
