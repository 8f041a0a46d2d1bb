"""GET /stats: the figures for the seeded results, and time ranges."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from .helpers import AUTH


def test_stats_of_the_seed(client: TestClient) -> None:
    body = client.get("/stats", params={"bucket_s": 60}).json()
    assert body["total"] == 6
    assert body["by_verdict"] == {"pass": 2, "fail": 3, "review": 1}
    assert body["yield_rate"] == pytest.approx(2 / 6)
    assert [(p["defect_class"], p["count"]) for p in body["pareto"]] == [
        ("crack", 2),
        ("dent", 1),
        ("scratch", 1),
    ]
    assert body["pareto"][0]["share"] == pytest.approx(0.5)
    assert len(body["timeline"]) == 1
    bucket = body["timeline"][0]
    assert bucket["count"] == 6
    assert bucket["per_minute"] == 6.0
    assert bucket["latency_p50_ms"] == 12.0
    assert body["review"]["reviewed"] == 1
    assert body["review"]["agreed"] == 1
    assert body["review"]["agreement_rate"] == 1.0


def test_overruled_reviews_lower_the_agreement(client: TestClient) -> None:
    for rid in ("r000003", "r000005"):
        response = client.put(f"/results/{rid}/review", json={"label": "good"}, headers=AUTH)
        assert response.status_code == 200
    review = client.get("/stats").json()["review"]
    assert (review["agreed"], review["overruled"], review["false_rejects"]) == (1, 2, 2)
    assert review["agreement_rate"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    ("params", "total"),
    [
        ({"since": "2026-01-05T08:00:04Z"}, 2),
        ({"until": "2026-01-05T08:00:01Z"}, 1),
        ({"since": "2027-01-01T00:00:00Z"}, 0),
    ],
)
def test_time_range(client: TestClient, params: dict[str, str], total: int) -> None:
    assert client.get("/stats", params=params).json()["total"] == total


@pytest.mark.parametrize(
    "params",
    [
        {"bucket_s": 1},
        {"bucket_s": 10**9},
        {"since": "2026-01-06T00:00:00Z", "until": "2026-01-05T00:00:00Z"},
    ],
)
def test_bad_stats_queries(client: TestClient, params: dict[str, str]) -> None:
    assert client.get("/stats", params=params).status_code == 422
