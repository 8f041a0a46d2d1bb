"""The store as the API, the writer and the export see it, so tests can swap in a fake."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

from cellinspect.entities import InspectedFrame
from cellinspect.storage.records import (
    AuditEntry,
    ExportCandidate,
    ImageKind,
    Page,
    ResultFilter,
    Review,
    ReviewInput,
    ReviewUndo,
    Stats,
    StoredImage,
    StoredResult,
)


class ResultStore(Protocol):
    """Results, their images and their QA reviews. Every method is safe from any thread."""

    def add_many(self, frames: Sequence[InspectedFrame]) -> list[str]:
        """Store results (one transaction); returns the ids that were new. Idempotent by id."""
        ...

    def get(self, result_id: str) -> StoredResult:
        """Raises ResultNotFoundError."""
        ...

    def query(self, filters: ResultFilter, limit: int = 50, cursor: str | None = None) -> Page:
        """Newest first; raises ValueError for a cursor this store did not hand out."""
        ...

    def set_review(self, result_id: str, review: ReviewInput) -> Review:
        """Label a result and append the change to its audit trail."""
        ...

    def undo_review(
        self,
        result_id: str,
        by: str,
        *,
        any_reviewer: bool = False,
        expected_revision: int | None = None,
    ) -> ReviewUndo:
        """Take back the label in effect, restoring the one before it; recorded in the trail.

        Raises NothingToUndoError, ReviewOwnerError (the label is someone else's and not
        `any_reviewer`) and ReviewConflictError (`expected_revision` moved on).
        """
        ...

    def audit_trail(self, result_id: str) -> list[AuditEntry]: ...

    def image_file(self, result_id: str, kind: ImageKind) -> tuple[Path, StoredImage]:
        """The file on disk of a kept image; raises ResultNotFoundError when there is none."""
        ...

    def stats(
        self,
        since: datetime | None,
        until: datetime | None,
        bucket_s: int = 3600,
        station_id: str | None = None,
    ) -> Stats:
        """Yield, Pareto and timeline of the results captured in [since, until), of one
        station when `station_id` is given (the hub's store holds many)."""
        ...

    def defect_classes(self) -> list[str]:
        """Classes seen in results and reviews, sorted."""
        ...

    def export_candidates(self, include_unreviewed: bool) -> Iterator[ExportCandidate]:
        """Reviewed results (and, if asked, unreviewed ones), oldest first."""
        ...

    def ping(self) -> None:
        """Raises StoreError when the database cannot be reached."""
        ...

    def close(self) -> None: ...
