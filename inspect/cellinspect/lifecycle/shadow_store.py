"""Shadow rows: one record per live part offered to a candidate, and the writer of the table.

Kept apart from the result store on purpose: a shadow verdict is never a line result, so it
never goes through the result writer, the journal, the API's result routes or any output.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import sessionmaker

from cellinspect.entities import Verdict
from cellinspect.storage.db import write_engine
from cellinspect.storage.errors import StoreError
from cellinspect.storage.models import ShadowResultRow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShadowRecord:
    """The candidate's verdict on one live part, or (verdict None) why it was not judged."""

    live_result_id: str
    slot: str
    candidate_version: str
    candidate_sha256: str
    recipe_name: str
    live_verdict: Verdict
    live_score: float | None
    verdict: Verdict | None
    score: float | None
    defect_class: str | None
    error: str | None
    latency_ms: float | None
    skipped_reason: str | None
    created_at: datetime

    def __post_init__(self) -> None:
        if (self.verdict is None) == (self.skipped_reason is None):
            raise ValueError(
                f"shadow record for {self.live_result_id}: exactly one of verdict and "
                f"skipped_reason must be set, got {self.verdict} and {self.skipped_reason!r}"
            )


def _row(record: ShadowRecord) -> ShadowResultRow:
    return ShadowResultRow(
        live_result_id=record.live_result_id,
        slot=record.slot,
        candidate_version=record.candidate_version,
        candidate_sha256=record.candidate_sha256,
        recipe_name=record.recipe_name,
        live_verdict=record.live_verdict.value,
        live_score=record.live_score,
        verdict=None if record.verdict is None else record.verdict.value,
        score=record.score,
        defect_class=record.defect_class,
        error=record.error,
        latency_ms=record.latency_ms,
        skipped_reason=record.skipped_reason,
        created_at=record.created_at,
    )


class ShadowStore:
    """Inserts shadow records into `shadow_results` (migration 0004_shadow_results)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._session = sessionmaker(write_engine(engine), expire_on_commit=False)

    def add_many(self, records: Sequence[ShadowRecord]) -> None:
        """One transaction for the batch; StoreError (nothing written) when it fails."""
        if not records:
            return
        try:
            with self._session() as session, session.begin():
                session.add_all([_row(r) for r in records])
        except SQLAlchemyError as err:
            raise StoreError(f"cannot store {len(records)} shadow results: {err}") from err
