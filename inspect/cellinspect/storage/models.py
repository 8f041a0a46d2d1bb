"""Tables: results (filter columns + the full result JSON), models used, images, reviews, audit.

Changing a table here needs a new Alembic revision in storage/migrations/versions/; a test
compares the migrated schema with these models.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from cellinspect.storage.db import UtcDateTime

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class ResultRow(Base):
    __tablename__ = "results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    result_id: Mapped[str] = mapped_column(String(64), unique=True)
    captured_wall: Mapped[datetime] = mapped_column(UtcDateTime())
    stored_at: Mapped[datetime] = mapped_column(UtcDateTime())
    verdict: Mapped[str] = mapped_column(String(16), index=True)
    defect_class: Mapped[str | None] = mapped_column(String(128), index=True)
    score: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    part_id: Mapped[int | None] = mapped_column(BigInteger, index=True)
    source: Mapped[str] = mapped_column(String(256), index=True)
    station_id: Mapped[str | None] = mapped_column(String(128), index=True)
    line: Mapped[str | None] = mapped_column(String(128))
    site: Mapped[str | None] = mapped_column(String(128))
    recipe_name: Mapped[str] = mapped_column(String(256))
    reviewed: Mapped[bool] = mapped_column(Boolean, default=False, index=True)
    review_label: Mapped[str | None] = mapped_column(String(16), index=True)
    result_json: Mapped[str] = mapped_column(Text)

    models: Mapped[list[ResultModelRow]] = relationship(
        back_populates="result", cascade="all, delete-orphan", lazy="selectin"
    )
    images: Mapped[list[ImageRow]] = relationship(
        back_populates="result", cascade="all, delete-orphan", lazy="selectin"
    )
    review: Mapped[ReviewRow | None] = relationship(
        back_populates="result", cascade="all, delete-orphan", lazy="selectin"
    )

    __table_args__ = (Index("ix_results_captured_wall_id", "captured_wall", "id"),)


class ResultModelRow(Base):
    """One model used for a result, so `model_version` filters by an index, not a LIKE."""

    __tablename__ = "result_models"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    result_pk: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128))
    version: Mapped[str] = mapped_column(String(64))

    result: Mapped[ResultRow] = relationship(back_populates="models")

    __table_args__ = (Index("ix_result_models_version_name", "version", "name"),)


class ImageRow(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    result_pk: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    relpath: Mapped[str] = mapped_column(String(512))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    media_type: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    result: Mapped[ResultRow] = relationship(back_populates="images")

    __table_args__ = (UniqueConstraint("result_pk", "kind", name="uq_images_result_pk_kind"),)


class ReviewRow(Base):
    """The current label of a result (one row per reviewed result)."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    result_pk: Mapped[int] = mapped_column(
        ForeignKey("results.id", ondelete="CASCADE"), unique=True
    )
    label: Mapped[str] = mapped_column(String(16))
    defect_class: Mapped[str | None] = mapped_column(String(128))
    reviewer: Mapped[str] = mapped_column(String(128))
    comment: Mapped[str] = mapped_column(Text, default="")
    revision: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    result: Mapped[ResultRow] = relationship(back_populates="review")


class ReviewEventRow(Base):
    """Audit trail: every label change, never updated or deleted by the application."""

    __tablename__ = "review_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    result_pk: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), index=True)
    revision: Mapped[int] = mapped_column(Integer)
    label: Mapped[str] = mapped_column(String(16))
    defect_class: Mapped[str | None] = mapped_column(String(128))
    reviewer: Mapped[str] = mapped_column(String(128))
    comment: Mapped[str] = mapped_column(Text, default="")
    previous_label: Mapped[str | None] = mapped_column(String(16))
    previous_defect_class: Mapped[str | None] = mapped_column(String(128))
    at: Mapped[datetime] = mapped_column(UtcDateTime())


class ShadowResultRow(Base):
    """A candidate model's verdict on a live part (lifecycle/shadow.py), or why it was skipped.

    Never a line result: nothing reads this table but the shadow report. `live_result_id` is
    not a foreign key, since the live row reaches the database through the writer, maybe later.
    """

    __tablename__ = "shadow_results"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    live_result_id: Mapped[str] = mapped_column(String(64), index=True)
    slot: Mapped[str] = mapped_column(String(128))
    candidate_version: Mapped[str] = mapped_column(String(64))
    candidate_sha256: Mapped[str] = mapped_column(String(64))
    recipe_name: Mapped[str] = mapped_column(String(256))
    live_verdict: Mapped[str] = mapped_column(String(16))
    live_score: Mapped[float | None] = mapped_column(Float)
    verdict: Mapped[str | None] = mapped_column(String(16))
    score: Mapped[float | None] = mapped_column(Float)
    defect_class: Mapped[str | None] = mapped_column(String(128))
    error: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    skipped_reason: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (Index("ix_shadow_results_slot_version", "slot", "candidate_version"),)


class ModelVersionRow(Base):
    """One model package registered for a recipe slot (lifecycle/registry.py).

    `state` is candidate, shadow, live or retired; at most one version per slot is live.
    `package_dir` is the registry's own verified copy, so a later edit of the source
    folder cannot change what was registered.
    """

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    slot: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(String(64))
    package_dir: Mapped[str] = mapped_column(String(1024))
    source: Mapped[str] = mapped_column(String(1024))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime())
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime())

    __table_args__ = (UniqueConstraint("slot", "version", name="uq_model_versions_slot_version"),)


class ModelEventRow(Base):
    """Lifecycle audit: who moved which version of a slot from what state to what, and why.

    Append-only; the order of `id` is the order of the changes (rollback reads it).
    """

    __tablename__ = "model_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    slot: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UtcDateTime())
