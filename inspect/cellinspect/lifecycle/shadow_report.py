"""The shadow report: how a candidate's verdicts compare with the live model's on the same parts.

Counts come from `shadow_results` joined with the live results and their current QA label:

- compared: parts the candidate judged (skipped parts are counted in `skipped`, by reason);
- agreed: compared parts where the candidate's verdict equals the live verdict as posted;
- reviewed: compared parts whose live result carries a QA label (`good` or `defect`);
- an escape: QA says `defect` and the verdict was PASS;
- a false reject: QA says `good` and the verdict was FAIL.

REVIEW is neither: the part is held for a person, so it cannot escape, and it is not a
machine reject (a REVIEW verdict on a good part costs inspection time, which the
disagreement list shows). The promotion gate reads `reviewed` and
`escapes_candidate <= escapes_live`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
from sqlalchemy import Engine, and_, exists, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from cellinspect.entities import Verdict
from cellinspect.storage.errors import StoreError
from cellinspect.storage.models import ImageRow, ResultRow, ReviewRow, ShadowResultRow
from cellinspect.storage.records import ImageKind, ReviewLabel


class HasEngine(Protocol):
    """A store that exposes its SQLAlchemy engine (SqlResultStore)."""

    @property
    def engine(self) -> Engine: ...


@dataclass(frozen=True, slots=True)
class Disagreement:
    """A part where candidate and live model gave different verdicts."""

    live_result_id: str
    live_verdict: Verdict
    candidate_verdict: Verdict
    live_score: float | None
    candidate_score: float | None
    qa_label: ReviewLabel | None
    image_url: str | None  # the live image as the API serves it; None when it was not kept


@dataclass(frozen=True, slots=True)
class ShadowReport:
    """Agreement, QA outcomes and latency of candidate `version` in model `slot`."""

    slot: str
    version: str
    compared: int
    agreed: int
    reviewed: int
    escapes_live: int
    escapes_candidate: int
    false_rejects_live: int
    false_rejects_candidate: int
    skipped: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    candidate_sha256: tuple[str, ...] = ()
    skipped_by_reason: dict[str, int] = field(default_factory=dict)
    disagreements: tuple[Disagreement, ...] = ()
    # QA-good parts compared, and how many each model held back (FAIL or REVIEW): a candidate
    # that sends good parts to REVIEW costs the line as a false reject does.
    good_reviewed: int = 0
    held_good_live: int = 0
    held_good_candidate: int = 0

    @property
    def agreement(self) -> float | None:
        """agreed / compared, None before any part was compared."""
        return self.agreed / self.compared if self.compared else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["agreement"] = self.agreement
        data["candidate_sha256"] = list(self.candidate_sha256)
        data["disagreements"] = [
            {
                **asdict(d),
                "live_verdict": d.live_verdict.value,
                "candidate_verdict": d.candidate_verdict.value,
                "qa_label": None if d.qa_label is None else d.qa_label.value,
            }
            for d in self.disagreements
        ]
        return data


def image_url(result_id: str) -> str:
    """The API route of a result's kept image (api/routers/results.py)."""
    return f"/results/{result_id}/image"


def _escape(label: ReviewLabel | None, verdict: Verdict) -> bool:
    return label is ReviewLabel.DEFECT and verdict is Verdict.PASS


def _false_reject(label: ReviewLabel | None, verdict: Verdict) -> bool:
    return label is ReviewLabel.GOOD and verdict is Verdict.FAIL


def _held_good(label: ReviewLabel | None, verdict: Verdict) -> bool:
    return label is ReviewLabel.GOOD and verdict is not Verdict.PASS


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def shadow_report(engine_or_store: Engine | HasEngine, slot: str, version: str) -> ShadowReport:
    """Read the shadow rows of `slot`/`version` and the live results' QA labels; StoreError."""
    engine = engine_or_store if isinstance(engine_or_store, Engine) else engine_or_store.engine
    has_image = exists().where(
        and_(ImageRow.result_pk == ResultRow.id, ImageRow.kind == ImageKind.IMAGE.value)
    )
    query = (
        select(ShadowResultRow, ReviewRow.label, has_image.label("has_image"))
        .outerjoin(ResultRow, ResultRow.result_id == ShadowResultRow.live_result_id)
        .outerjoin(ReviewRow, ReviewRow.result_pk == ResultRow.id)
        .where(ShadowResultRow.slot == slot, ShadowResultRow.candidate_version == version)
        .order_by(ShadowResultRow.id)
    )
    try:
        with Session(engine) as session:
            rows = session.execute(query).all()
    except SQLAlchemyError as err:
        raise StoreError(f"cannot read the shadow results of {slot}@{version}: {err}") from err
    counts = dict.fromkeys(
        ("compared", "agreed", "reviewed", "el", "ec", "fl", "fc", "good", "hl", "hc"),
        0,
    )
    skipped: dict[str, int] = {}
    shas: list[str] = []
    latencies: list[float] = []
    disagreements: list[Disagreement] = []
    for shadow, raw_label, kept_image in rows:
        if shadow.candidate_sha256 not in shas:
            shas.append(shadow.candidate_sha256)
        if shadow.verdict is None:
            reason = shadow.skipped_reason or "unknown"
            skipped[reason] = skipped.get(reason, 0) + 1
            continue
        live, cand = Verdict(shadow.live_verdict), Verdict(shadow.verdict)
        label = None if raw_label is None else ReviewLabel(raw_label)
        counts["compared"] += 1
        counts["agreed"] += live is cand
        counts["reviewed"] += label is not None
        counts["el"] += _escape(label, live)
        counts["ec"] += _escape(label, cand)
        counts["fl"] += _false_reject(label, live)
        counts["fc"] += _false_reject(label, cand)
        counts["good"] += label is ReviewLabel.GOOD
        counts["hl"] += _held_good(label, live)
        counts["hc"] += _held_good(label, cand)
        if shadow.latency_ms is not None:
            latencies.append(shadow.latency_ms)
        if live is not cand:
            disagreements.append(
                Disagreement(
                    live_result_id=shadow.live_result_id,
                    live_verdict=live,
                    candidate_verdict=cand,
                    live_score=shadow.live_score,
                    candidate_score=shadow.score,
                    qa_label=label,
                    image_url=image_url(shadow.live_result_id) if kept_image else None,
                )
            )
    return ShadowReport(
        slot=slot,
        version=version,
        compared=counts["compared"],
        agreed=counts["agreed"],
        reviewed=counts["reviewed"],
        escapes_live=counts["el"],
        escapes_candidate=counts["ec"],
        false_rejects_live=counts["fl"],
        false_rejects_candidate=counts["fc"],
        skipped=sum(skipped.values()),
        latency_p50_ms=_percentile(latencies, 50),
        latency_p99_ms=_percentile(latencies, 99),
        candidate_sha256=tuple(shas),
        skipped_by_reason=skipped,
        disagreements=tuple(disagreements),
        good_reviewed=counts["good"],
        held_good_live=counts["hl"],
        held_good_candidate=counts["hc"],
    )
