"""Request and response bodies of the API (separate from the domain dataclasses on purpose)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from cellinspect.entities import InspectionResult, Verdict
from cellinspect.export.dataset import ExportReport, ManifestFormat
from cellinspect.storage.records import (
    AuditEntry,
    ImageKind,
    Review,
    ReviewLabel,
    Stats,
    StoredResult,
)
from cellinspect.storage.writer import SubmitOutcome


def clean_text(value: str) -> str:
    """Refuse text a database cannot store (NUL, lone surrogates) with a clear message."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError("must be valid Unicode text") from err
    return value


def utc_datetime(value: datetime) -> datetime:
    """Naive times are taken as UTC; times that cannot be expressed in UTC are refused."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError as err:
        raise ValueError(f"{value.isoformat()} is out of range once converted to UTC") from err


def display_name(path: str | None) -> str | None:
    """A file name kept only as a label: no folders (no server paths), no control characters."""
    if not path:
        return None
    base = path.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in base if ch.isprintable())[:200]
    return cleaned or None


def display_source(source: str) -> str:
    """A source named without server folders or URL passwords: folder:/srv/in -> folder:in."""
    if "://" in source:
        return _URL_PASSWORD.sub(r"\1***@", source)
    kind, sep, where = source.partition(":")
    if sep and ("/" in where or "\\" in where):
        return f"{kind}:{display_name(where.rstrip('/').rstrip(chr(92))) or ''}"
    return source


_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)[^@\s]+@")

Text = Annotated[str, AfterValidator(clean_text)]
UtcDatetime = Annotated[datetime, AfterValidator(utc_datetime)]


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorOut(_Out):
    error: str = Field(description="Machine-readable kind of error, e.g. not_found.")
    message: str = Field(description="What went wrong, for a person.")
    details: list[dict[str, Any]] | None = Field(default=None, description="Per-field problems.")


# --------------------------------------------------------------------------- results


class ModelOut(_Out):
    name: str
    version: str
    sha256: str


class RoiOut(_Out):
    roi: str
    verdict: Verdict
    reasons: list[str]
    defect_class: str | None
    scores: dict[str, float | None]


class ReviewOut(_Out):
    label: ReviewLabel
    defect_class: str | None
    reviewer: str
    comment: str
    revision: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, review: Review) -> ReviewOut:
        return cls(
            label=review.label,
            defect_class=review.defect_class,
            reviewer=review.reviewer,
            comment=review.comment,
            revision=review.revision,
            created_at=review.created_at,
            updated_at=review.updated_at,
        )


class ResultOut(_Out):
    id: str
    verdict: Verdict
    defect_class: str | None
    reasons: list[str]
    score: float | None
    captured_wall: datetime
    part_id: int | None
    encoder: int | None
    frame_id: int
    source: str = Field(description="Where the frame came from, e.g. folder:incoming (no paths).")
    station_id: str | None = Field(description="The station that judged the part (None: unknown).")
    line: str | None = Field(description="The production line of that station, if known.")
    site: str | None = Field(description="The site (plant) of that station, if known.")
    path: str | None = Field(description="The image's file name (no folders), if it had one.")
    recipe_name: str
    recipe_sha256: str
    error: str | None
    models: list[ModelOut]
    rois: list[RoiOut]
    timings_ms: dict[str, float | None]
    stored_at: datetime | None = Field(description="None until the writer has committed it.")
    review: ReviewOut | None
    image_url: str | None = Field(description="The kept frame (None: not kept).")
    overlay_url: str | None = Field(description="The kept heatmap overlay (None: not kept).")

    @classmethod
    def of(
        cls,
        r: InspectionResult,
        stored: StoredResult | None = None,
        kinds: set[ImageKind] | None = None,
    ) -> ResultOut:
        kept = set(stored.images) if stored is not None else (kinds or set())
        return cls(
            id=r.result_id,
            verdict=r.verdict,
            defect_class=r.defect_class,
            reasons=list(r.reasons),
            score=_finite(r.score),
            captured_wall=r.captured_wall,
            part_id=r.part_id,
            encoder=r.encoder,
            frame_id=r.frame_id,
            source=display_source(r.source),
            station_id=r.station_id,
            line=r.line,
            site=r.site,
            path=display_name(r.path),
            recipe_name=r.recipe_name,
            recipe_sha256=r.recipe_sha256,
            error=r.error,
            models=[ModelOut(name=m.name, version=m.version, sha256=m.sha256) for m in r.models],
            rois=[
                RoiOut(
                    roi=x.roi,
                    verdict=x.verdict,
                    reasons=list(x.reasons),
                    defect_class=x.defect_class,
                    scores={k: _finite(v) for k, v in x.scores.items()},
                )
                for x in r.rois
            ],
            timings_ms={k: _finite(v) for k, v in r.timings_ms.items()},
            stored_at=None if stored is None else stored.stored_at,
            review=None if stored is None or stored.review is None else ReviewOut.of(stored.review),
            image_url=f"/results/{r.result_id}/image" if ImageKind.IMAGE in kept else None,
            overlay_url=f"/results/{r.result_id}/overlay" if ImageKind.OVERLAY in kept else None,
        )


class ResultPageOut(_Out):
    items: list[ResultOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; None: last.")


class InspectionOut(_Out):
    result: ResultOut
    stored: SubmitOutcome = Field(
        description="queued: being committed; spilled: in the spill file; dropped: not kept."
    )


# --------------------------------------------------------------------------- reviews


class ReviewIn(_In):
    label: ReviewLabel = Field(
        description="defect: confirmed defect (needs defect_class); good: false reject."
    )
    defect_class: Annotated[Text, Field(min_length=1, max_length=128)] | None = Field(
        default=None, description="Class of a confirmed defect."
    )
    reviewer: Annotated[Text, Field(max_length=128)] | None = Field(
        default=None,
        description="Not needed: the reviewer is the user of the token. If given, it must be "
        "that user's name (422 otherwise).",
    )
    comment: Annotated[Text, Field(max_length=2000)] = Field(default="", description="Free text.")
    expected_revision: int | None = Field(
        default=None,
        ge=0,
        le=2**31,
        description="Revision this change is based on (0: unreviewed); 409 when it moved on.",
    )

    @model_validator(mode="after")
    def _label_fits_class(self) -> ReviewIn:
        if self.label is ReviewLabel.DEFECT and not self.defect_class:
            raise ValueError("label 'defect' needs a defect_class")
        if self.label is ReviewLabel.GOOD and self.defect_class:
            raise ValueError("label 'good' (false reject) takes no defect_class")
        return self


class AuditEntryOut(_Out):
    revision: int
    label: ReviewLabel | None = Field(
        description="The label this change put in effect; null: an undo left none."
    )
    defect_class: str | None
    reviewer: str
    comment: str
    at: datetime
    previous_label: ReviewLabel | None
    previous_defect_class: str | None
    undoes: int | None = Field(
        default=None, description="On an undo: the revision it took back (its previous_label)."
    )

    @classmethod
    def of(cls, e: AuditEntry) -> AuditEntryOut:
        return cls(
            revision=e.revision,
            label=e.label,
            defect_class=e.defect_class,
            reviewer=e.reviewer,
            comment=e.comment,
            at=e.at,
            previous_label=e.previous_label,
            previous_defect_class=e.previous_defect_class,
            undoes=e.undoes,
        )


class AuditOut(_Out):
    id: str
    entries: list[AuditEntryOut]


class DefectClassesOut(_Out):
    classes: list[str] = Field(description="Configured classes first (keys 1-9), then seen ones.")


# --------------------------------------------------------------------------- stats


class ParetoOut(_Out):
    defect_class: str
    count: int
    share: float
    cumulative_share: float


class BucketOut(_Out):
    start: datetime
    count: int
    by_verdict: dict[str, int]
    per_minute: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None


class AgreementOut(_Out):
    reviewed: int
    agreed: int
    overruled: int
    false_rejects: int
    escapes: int
    class_corrections: int
    review_resolved_defect: int
    review_resolved_good: int
    agreement_rate: float | None = Field(description="agreed / (agreed + overruled).")


class StatsOut(_Out):
    since: datetime | None
    until: datetime | None
    bucket_s: int
    total: int
    by_verdict: dict[str, int]
    yield_rate: float | None = Field(description="PASS / total.")
    pareto: list[ParetoOut]
    timeline: list[BucketOut]
    review: AgreementOut

    @classmethod
    def of(cls, s: Stats) -> StatsOut:
        a = s.review
        return cls(
            since=s.since,
            until=s.until,
            bucket_s=s.bucket_s,
            total=s.total,
            by_verdict=s.by_verdict,
            yield_rate=s.yield_rate,
            pareto=[
                ParetoOut(
                    defect_class=p.defect_class,
                    count=p.count,
                    share=p.share,
                    cumulative_share=p.cumulative_share,
                )
                for p in s.pareto
            ],
            timeline=[
                BucketOut(
                    start=b.start,
                    count=b.count,
                    by_verdict=b.by_verdict,
                    per_minute=b.per_minute,
                    latency_p50_ms=_finite(b.latency_p50_ms),
                    latency_p99_ms=_finite(b.latency_p99_ms),
                )
                for b in s.timeline
            ],
            review=AgreementOut(
                reviewed=a.reviewed,
                agreed=a.agreed,
                overruled=a.overruled,
                false_rejects=a.false_rejects,
                escapes=a.escapes,
                class_corrections=a.class_corrections,
                review_resolved_defect=a.review_resolved_defect,
                review_resolved_good=a.review_resolved_good,
                agreement_rate=a.agreement_rate,
            ),
        )


# --------------------------------------------------------------------------- export, health


class ExportIn(_In):
    include_unreviewed_above: float | None = Field(
        default=None,
        strict=True,
        ge=0.0,
        le=1.0,
        description="Also export unreviewed results the model scored at least this high.",
    )
    manifest_format: ManifestFormat = Field(default=ManifestFormat.CSV, description="csv|jsonl")


class ExportOut(_Out):
    name: str = Field(description="Folder name under the station's export directory.")
    written: int
    by_label: dict[str, int]
    skipped: dict[str, int]
    manifest: str = Field(description="Manifest path relative to the export directory.")

    @classmethod
    def of(cls, name: str, report: ExportReport) -> ExportOut:
        return cls(
            name=name,
            written=report.written,
            by_label=report.by_label,
            skipped=report.skipped,
            manifest=f"{name}/{report.manifest.name}",
        )


class WriterOut(_Out):
    running: bool
    queue_depth: int
    queue_size: int
    written: int
    spilled: int
    dropped: int
    failed_batches: int


class HealthOut(_Out):
    status: Literal["ok", "degraded"]
    version: str
    database: str
    recipe: str | None = Field(description="Loaded recipe (None: POST /inspections is off).")
    writer: WriterOut | None
