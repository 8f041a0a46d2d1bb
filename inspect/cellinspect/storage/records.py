"""What the store hands out and takes in: frozen dataclasses, independent of the database."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from cellinspect.entities import InspectionResult, Verdict


class ImageKind(enum.StrEnum):
    """The pictures kept for a result."""

    IMAGE = "image"
    OVERLAY = "overlay"


class ReviewLabel(enum.StrEnum):
    """What QA says the part really is.

    `defect` on a FAIL/REVIEW result confirms the reject; `good` on it is a false reject.
    On a PASS result (a spot check) `defect` is an escape.
    """

    DEFECT = "defect"
    GOOD = "good"


@dataclass(frozen=True, slots=True)
class ResultFilter:
    """Filters of `GET /results`; empty tuples and None mean 'any'."""

    verdicts: tuple[Verdict, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    defect_classes: tuple[str, ...] = ()
    reviewed: bool | None = None
    label: ReviewLabel | None = None
    model_version: str | None = None
    part_id: int | None = None
    source: str | None = None
    station_id: str | None = None


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One image file as recorded: path relative to the image root, size and content hash."""

    kind: ImageKind
    relpath: str
    size_bytes: int
    sha256: str
    media_type: str


@dataclass(frozen=True, slots=True)
class ReviewInput:
    """A QA label as submitted."""

    label: ReviewLabel
    reviewer: str
    defect_class: str | None = None
    comment: str = ""
    expected_revision: int | None = None


@dataclass(frozen=True, slots=True)
class Review:
    """The current QA label of a result; `revision` counts the changes (1 = first label)."""

    result_id: str
    label: ReviewLabel
    defect_class: str | None
    reviewer: str
    comment: str
    revision: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change of a result's label, kept for ever (the audit trail).

    An undo is an entry too: `undoes` names the revision it took back, `label` is the label it
    restored (None: unlabelled again) and `reviewer` who undid it.
    """

    result_id: str
    revision: int
    label: ReviewLabel | None
    defect_class: str | None
    reviewer: str
    comment: str
    at: datetime
    previous_label: ReviewLabel | None
    previous_defect_class: str | None
    undoes: int | None = None


@dataclass(frozen=True, slots=True)
class ReviewUndo:
    """What an undo did: the revision taken back, the audit revision recording it, and the
    label now in effect (None: the result is unreviewed again)."""

    result_id: str
    undone_revision: int
    revision: int
    review: Review | None


@dataclass(frozen=True, slots=True)
class StoredResult:
    """A result as stored, with its review and the images still on disk."""

    result: InspectionResult
    stored_at: datetime
    review: Review | None = None
    images: dict[ImageKind, StoredImage] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Page:
    """One page of results, newest first; `next_cursor` is None on the last page."""

    items: list[StoredResult]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ParetoRow:
    defect_class: str
    count: int
    share: float
    cumulative_share: float


@dataclass(frozen=True, slots=True)
class TimeBucket:
    start: datetime
    count: int
    by_verdict: dict[str, int]
    per_minute: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None


@dataclass(frozen=True, slots=True)
class ReviewAgreement:
    """How QA's labels compare with the model's verdicts.

    `agreed`: FAIL confirmed as defect or PASS confirmed good; `overruled`: FAIL labelled good
    (false reject) or PASS labelled defect (escape). REVIEW results are the model asking, so
    they count in `review_resolved_*`, not in the agreement rate. `class_corrections`: a
    confirmed defect whose class differs from the model's.
    """

    reviewed: int
    agreed: int
    overruled: int
    false_rejects: int
    escapes: int
    class_corrections: int
    review_resolved_defect: int
    review_resolved_good: int

    @property
    def agreement_rate(self) -> float | None:
        judged = self.agreed + self.overruled
        return None if judged == 0 else self.agreed / judged


@dataclass(frozen=True, slots=True)
class Stats:
    since: datetime | None
    until: datetime | None
    bucket_s: int
    total: int
    by_verdict: dict[str, int]
    pareto: list[ParetoRow]
    timeline: list[TimeBucket]
    review: ReviewAgreement

    @property
    def yield_rate(self) -> float | None:
        """Share of PASS among all results (first-pass yield as the model sees it)."""
        return None if self.total == 0 else self.by_verdict.get(Verdict.PASS.value, 0) / self.total


@dataclass(frozen=True, slots=True)
class ExportCandidate:
    """A result that may go into a training set, with the image file to copy."""

    result: InspectionResult
    review: Review | None
    image: StoredImage | None
