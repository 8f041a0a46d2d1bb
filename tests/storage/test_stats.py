"""Statistics from plain rows: percentiles, Pareto, agreement, timeline buckets."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest

from cellinspect.storage.stats import (
    StatRow,
    agreement,
    compute_stats,
    pareto,
    percentile,
    timeline,
)
from cellinspect.storage.synthetic import EPOCH


def row(
    verdict: str,
    cls: str | None = None,
    label: str | None = None,
    label_class: str | None = None,
    seconds: int = 0,
    latency: float | None = 10.0,
) -> StatRow:
    return StatRow(EPOCH + timedelta(seconds=seconds), verdict, cls, latency, label, label_class)


@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([], 50, None),
        ([5.0], 99, 5.0),
        ([3.0, 1.0, 2.0], 50, 2.0),
        ([float(i) for i in range(1, 101)], 99, 99.0),
        ([float(i) for i in range(1, 101)], 100, 100.0),
        ([1.0, 2.0], 0, 1.0),
    ],
)
def test_percentile(values: list[float], q: float, expected: float | None) -> None:
    assert percentile(values, q) == expected


def test_pareto_counts_rejects_by_class_most_first() -> None:
    rows = [row("fail", "a"), row("fail", "b"), row("review", "b"), row("fail"), row("pass")]
    got = [(p.defect_class, p.count, round(p.cumulative_share, 2)) for p in pareto(rows)]
    assert got == [("b", 2, 0.5), ("a", 1, 0.75), ("unclassified", 1, 1.0)]
    assert pareto([]) == []


def test_agreement_table() -> None:
    rows = [
        row("fail", "a", "defect", "a"),  # agreed
        row("fail", "a", "defect", "b"),  # agreed, class corrected
        row("fail", "a", "good"),  # false reject
        row("pass", None, "good"),  # agreed
        row("pass", None, "defect", "a"),  # escape
        row("review", "a", "defect", "a"),  # resolved as defect
        row("review", "a", "good"),  # resolved as good
        row("fail", "a"),  # not reviewed
    ]
    a = agreement(rows)
    assert (a.reviewed, a.agreed, a.overruled) == (7, 3, 2)
    assert (a.false_rejects, a.escapes, a.class_corrections) == (1, 1, 1)
    assert (a.review_resolved_defect, a.review_resolved_good) == (1, 1)
    assert a.agreement_rate == pytest.approx(0.6)
    assert agreement([]).agreement_rate is None


def test_timeline_buckets_and_latency() -> None:
    rows = [row("pass", seconds=s, latency=float(s)) for s in range(0, 120)]
    rows.append(row("fail", "a", seconds=130, latency=None))
    buckets = timeline(rows, 60)
    assert [b.count for b in buckets] == [60, 60, 1]
    assert buckets[0].start == EPOCH
    assert buckets[0].per_minute == 60.0
    assert buckets[0].latency_p50_ms == 29.0
    assert buckets[1].latency_p99_ms == 119.0
    assert buckets[2].latency_p50_ms is None
    assert buckets[2].by_verdict == {"fail": 1}
    with pytest.raises(ValueError, match="bucket_s"):
        timeline(rows, 0)


def test_compute_stats_takes_one_pass_over_a_stream() -> None:
    rows = [
        row("fail", "a", label="defect", label_class="b", seconds=5, latency=12.0),
        row("pass", seconds=70, latency=8.0),
        row("review", "b", label="good", seconds=75, latency=None),
        row("pass", label="defect", seconds=3600),
    ]
    consumed: list[int] = []

    def stream() -> Iterator[StatRow]:
        for i, r in enumerate(rows):
            consumed.append(i)
            yield r

    stats = compute_stats(stream(), None, None, 60)
    assert consumed == [0, 1, 2, 3], "each row is read exactly once"
    assert stats.total == 4
    assert stats.by_verdict == {"pass": 2, "fail": 1, "review": 1}
    assert stats.pareto == pareto(rows)
    assert stats.timeline == timeline(rows, 60)
    assert stats.review == agreement(rows)
    assert [b.count for b in stats.timeline] == [1, 2, 1]
    assert stats.review.escapes == 1 and stats.review.class_corrections == 1
