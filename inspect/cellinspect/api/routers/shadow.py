"""GET /models/{slot}/shadow/{version}/report: a shadow candidate against the live model."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from cellinspect.api.deps import AUTH_RESPONSES, ReadDep, StoreDep
from cellinspect.api.schemas import ErrorOut, Text
from cellinspect.entities import Verdict
from cellinspect.lifecycle.shadow_report import Disagreement, ShadowReport, shadow_report
from cellinspect.storage.records import ReviewLabel

router = APIRouter(tags=["models"], dependencies=[ReadDep], responses=AUTH_RESPONSES)

Slot = Annotated[Text, Path(min_length=1, max_length=128, description="Model slot (recipe name).")]
Version = Annotated[Text, Path(min_length=1, max_length=64, description="Candidate version.")]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class DisagreementOut(_Out):
    live_result_id: str
    live_verdict: Verdict
    candidate_verdict: Verdict
    live_score: float | None
    candidate_score: float | None
    qa_label: ReviewLabel | None = Field(description="The live result's QA label, if reviewed.")
    image_url: str | None = Field(description="The live result's image; null if not kept.")

    @classmethod
    def of(cls, d: Disagreement) -> DisagreementOut:
        return cls(
            live_result_id=d.live_result_id,
            live_verdict=d.live_verdict,
            candidate_verdict=d.candidate_verdict,
            live_score=d.live_score,
            candidate_score=d.candidate_score,
            qa_label=d.qa_label,
            image_url=d.image_url,
        )


class ShadowReportOut(_Out):
    slot: str
    version: str
    candidate_sha256: list[str] = Field(description="Package hashes the rows were judged with.")
    compared: int = Field(description="Parts the candidate judged.")
    agreed: int = Field(description="Compared parts with the live verdict.")
    agreement: float | None = Field(description="agreed / compared.")
    reviewed: int = Field(description="Compared parts with a QA label.")
    escapes_live: int = Field(description="QA defect, live verdict PASS.")
    escapes_candidate: int = Field(description="QA defect, candidate verdict PASS.")
    false_rejects_live: int = Field(description="QA good, live verdict FAIL.")
    false_rejects_candidate: int = Field(description="QA good, candidate verdict FAIL.")
    skipped: int = Field(description="Parts not judged (no time, queue full, stopped).")
    skipped_by_reason: dict[str, int]
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    disagreements: list[DisagreementOut]

    @classmethod
    def of(cls, r: ShadowReport) -> ShadowReportOut:
        return cls(
            slot=r.slot,
            version=r.version,
            candidate_sha256=list(r.candidate_sha256),
            compared=r.compared,
            agreed=r.agreed,
            agreement=r.agreement,
            reviewed=r.reviewed,
            escapes_live=r.escapes_live,
            escapes_candidate=r.escapes_candidate,
            false_rejects_live=r.false_rejects_live,
            false_rejects_candidate=r.false_rejects_candidate,
            skipped=r.skipped,
            skipped_by_reason=r.skipped_by_reason,
            latency_p50_ms=r.latency_p50_ms,
            latency_p99_ms=r.latency_p99_ms,
            disagreements=[DisagreementOut.of(d) for d in r.disagreements],
        )


_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No shadow results for this slot and version."},
    503: {"model": ErrorOut, "description": "The store cannot be read."},
}


@router.get(
    "/models/{slot}/shadow/{version}/report",
    response_model=ShadowReportOut,
    responses=_RESPONSES,
    summary="How a shadow candidate's verdicts compare with the live model's",
)
async def get_shadow_report(store: StoreDep, slot: Slot, version: Version) -> ShadowReportOut:
    engine = getattr(store, "engine", None)
    if not isinstance(engine, Engine):
        raise HTTPException(503, "this store keeps no shadow results (no SQL database)")
    report = await run_in_threadpool(shadow_report, engine, slot, version)
    if report.compared == 0 and report.skipped == 0:
        raise HTTPException(404, f"no shadow results for model slot {slot!r} version {version!r}")
    return ShadowReportOut.of(report)
