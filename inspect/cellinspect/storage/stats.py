"""Figures for `GET /stats`, computed from plain rows so they can be checked by hand."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cellinspect.entities import Verdict
from cellinspect.storage.records import (
    ParetoRow,
    ReviewAgreement,
    ReviewLabel,
    Stats,
    TimeBucket,
)

UNCLASSIFIED = "unclassified"


@dataclass(frozen=True, slots=True)
class StatRow:
    """The columns of one result that the statistics need."""

    captured_wall: datetime
    verdict: str
    defect_class: str | None
    latency_ms: float | None
    label: str | None
    label_class: str | None


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in [0, 100]) of unsorted values; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def pareto(rows: Iterable[StatRow]) -> list[ParetoRow]:
    """Rejects (FAIL and REVIEW) by the model's defect class, most frequent first."""
    counts = Counter(
        r.defect_class or UNCLASSIFIED for r in rows if r.verdict != Verdict.PASS.value
    )
    total = sum(counts.values())
    out: list[ParetoRow] = []
    running = 0
    for cls, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        running += n
        out.append(ParetoRow(cls, n, n / total, running / total))
    return out


def agreement(rows: Iterable[StatRow]) -> ReviewAgreement:
    reviewed = agreed = overruled = false_rejects = escapes = corrections = 0
    resolved_defect = resolved_good = 0
    for r in rows:
        if r.label is None:
            continue
        reviewed += 1
        is_defect = r.label == ReviewLabel.DEFECT.value
        if r.verdict == Verdict.REVIEW.value:
            resolved_defect += is_defect
            resolved_good += not is_defect
        elif r.verdict == Verdict.FAIL.value:
            if is_defect:
                agreed += 1
                corrections += r.defect_class is not None and r.label_class != r.defect_class
            else:
                overruled += 1
                false_rejects += 1
        elif is_defect:
            overruled += 1
            escapes += 1
        else:
            agreed += 1
    return ReviewAgreement(
        reviewed=reviewed,
        agreed=agreed,
        overruled=overruled,
        false_rejects=false_rejects,
        escapes=escapes,
        class_corrections=corrections,
        review_resolved_defect=resolved_defect,
        review_resolved_good=resolved_good,
    )


def timeline(rows: Iterable[StatRow], bucket_s: int) -> list[TimeBucket]:
    """Count, verdicts, throughput and latency p50/p99 per fixed-width UTC time bucket."""
    if bucket_s <= 0:
        raise ValueError(f"bucket_s must be > 0, got {bucket_s}")
    counts: dict[int, Counter[str]] = defaultdict(Counter)
    latencies: dict[int, list[float]] = defaultdict(list)
    for r in rows:
        key = int(r.captured_wall.timestamp()) // bucket_s
        counts[key][r.verdict] += 1
        if r.latency_ms is not None:
            latencies[key].append(r.latency_ms)
    out = []
    for key in sorted(counts):
        total = sum(counts[key].values())
        out.append(
            TimeBucket(
                start=datetime.fromtimestamp(key * bucket_s, UTC),
                count=total,
                by_verdict=dict(counts[key]),
                per_minute=total * 60.0 / bucket_s,
                latency_p50_ms=percentile(latencies[key], 50),
                latency_p99_ms=percentile(latencies[key], 99),
            )
        )
    return out


def compute_stats(
    rows: list[StatRow], since: datetime | None, until: datetime | None, bucket_s: int
) -> Stats:
    by_verdict = {v.value: 0 for v in Verdict}
    for r in rows:
        by_verdict[r.verdict] = by_verdict.get(r.verdict, 0) + 1
    return Stats(
        since=since,
        until=until,
        bucket_s=bucket_s,
        total=len(rows),
        by_verdict=by_verdict,
        pareto=pareto(rows),
        timeline=timeline(rows, bucket_s),
        review=agreement(rows),
    )
