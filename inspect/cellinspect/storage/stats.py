"""Figures for `GET /stats`, computed from plain rows so they can be checked by hand."""

from __future__ import annotations

import math
from array import array
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


class ParetoCounter:
    """Rejects (FAIL and REVIEW) by the model's defect class, most frequent first."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def add(self, r: StatRow) -> None:
        if r.verdict != Verdict.PASS.value:
            self.counts[r.defect_class or UNCLASSIFIED] += 1

    def result(self) -> list[ParetoRow]:
        total = sum(self.counts.values())
        out: list[ParetoRow] = []
        running = 0
        for cls, n in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0])):
            running += n
            out.append(ParetoRow(cls, n, n / total, running / total))
        return out


class AgreementCounter:
    """How the reviewers' labels compare with the station's verdicts."""

    def __init__(self) -> None:
        self.reviewed = self.agreed = self.overruled = self.false_rejects = 0
        self.escapes = self.corrections = self.resolved_defect = self.resolved_good = 0

    def add(self, r: StatRow) -> None:
        if r.label is None:
            return
        self.reviewed += 1
        is_defect = r.label == ReviewLabel.DEFECT.value
        if r.verdict == Verdict.REVIEW.value:
            self.resolved_defect += is_defect
            self.resolved_good += not is_defect
        elif r.verdict == Verdict.FAIL.value:
            if is_defect:
                self.agreed += 1
                self.corrections += r.defect_class is not None and r.label_class != r.defect_class
            else:
                self.overruled += 1
                self.false_rejects += 1
        elif is_defect:
            self.overruled += 1
            self.escapes += 1
        else:
            self.agreed += 1

    def result(self) -> ReviewAgreement:
        return ReviewAgreement(
            reviewed=self.reviewed,
            agreed=self.agreed,
            overruled=self.overruled,
            false_rejects=self.false_rejects,
            escapes=self.escapes,
            class_corrections=self.corrections,
            review_resolved_defect=self.resolved_defect,
            review_resolved_good=self.resolved_good,
        )


class TimelineCounter:
    """Count, verdicts, throughput and latency p50/p99 per fixed-width UTC time bucket.

    Latencies are kept as packed doubles (8 bytes each), so a day of a fast line is tens of MB,
    not the gigabyte that Python objects per row would take.
    """

    def __init__(self, bucket_s: int) -> None:
        if bucket_s <= 0:
            raise ValueError(f"bucket_s must be > 0, got {bucket_s}")
        self.bucket_s = bucket_s
        self.counts: dict[int, Counter[str]] = defaultdict(Counter)
        self.latencies: dict[int, array[float]] = defaultdict(lambda: array("d"))

    def add(self, r: StatRow) -> None:
        key = int(r.captured_wall.timestamp()) // self.bucket_s
        self.counts[key][r.verdict] += 1
        if r.latency_ms is not None:
            self.latencies[key].append(r.latency_ms)

    def result(self) -> list[TimeBucket]:
        out = []
        for key in sorted(self.counts):
            total = sum(self.counts[key].values())
            latencies = list(self.latencies.get(key, ()))
            out.append(
                TimeBucket(
                    start=datetime.fromtimestamp(key * self.bucket_s, UTC),
                    count=total,
                    by_verdict=dict(self.counts[key]),
                    per_minute=total * 60.0 / self.bucket_s,
                    latency_p50_ms=percentile(latencies, 50),
                    latency_p99_ms=percentile(latencies, 99),
                )
            )
        return out


def pareto(rows: Iterable[StatRow]) -> list[ParetoRow]:
    counter = ParetoCounter()
    for r in rows:
        counter.add(r)
    return counter.result()


def agreement(rows: Iterable[StatRow]) -> ReviewAgreement:
    counter = AgreementCounter()
    for r in rows:
        counter.add(r)
    return counter.result()


def timeline(rows: Iterable[StatRow], bucket_s: int) -> list[TimeBucket]:
    counter = TimelineCounter(bucket_s)
    for r in rows:
        counter.add(r)
    return counter.result()


def compute_stats(
    rows: Iterable[StatRow], since: datetime | None, until: datetime | None, bucket_s: int
) -> Stats:
    """All figures in one pass over `rows`, which may be a stream straight from the database."""
    by_verdict = {v.value: 0 for v in Verdict}
    total = 0
    counters = (ParetoCounter(), AgreementCounter(), TimelineCounter(bucket_s))
    for r in rows:
        total += 1
        by_verdict[r.verdict] = by_verdict.get(r.verdict, 0) + 1
        for counter in counters:
            counter.add(r)
    pareto_counter, agreement_counter, timeline_counter = counters
    return Stats(
        since=since,
        until=until,
        bucket_s=bucket_s,
        total=total,
        by_verdict=by_verdict,
        pareto=pareto_counter.result(),
        timeline=timeline_counter.result(),
        review=agreement_counter.result(),
    )
