"""GET /stats: the figures for the seeded results, time ranges, and one station of many."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cellinspect.api import create_app
from cellinspect.entities import Verdict
from cellinspect.plant.hub import create_hub_app
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import EPOCH, synthetic_frame, synthetic_result

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


# Two stations' results stored in one central store (the hub's), as their forwarders leave them.
TWO_STATIONS = {
    "cell-1": [(Verdict.FAIL, "scratch")] * 3 + [(Verdict.FAIL, "crack"), (Verdict.PASS, None)],
    "cell-2": [(Verdict.FAIL, "dent"), (Verdict.REVIEW, "dent")] + [(Verdict.PASS, None)] * 3,
}


def _two_station_store(settings: StationSettings) -> SqlResultStore:
    store = open_store(settings)
    store.add_many(
        [
            synthetic_frame(
                synthetic_result(
                    i,
                    verdict,
                    defect_class=cls,
                    prefix=f"{station}-",
                    station_id=station,
                    captured=EPOCH + timedelta(minutes=i),
                )
            )
            for station, parts in TWO_STATIONS.items()
            for i, (verdict, cls) in enumerate(parts)
        ]
    )
    return store


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[TestClient]:
    settings = StationSettings(data_dir=tmp_path / "hub", pass_sample_rate=0.0, disk_budget_mb=None)
    store = _two_station_store(settings)
    with TestClient(create_hub_app(settings, store)) as c:
        yield c
    store.close()


def test_the_hub_gives_one_stations_figures(hub: TestClient) -> None:
    everything = hub.get("/stats").json()
    assert everything["total"] == 10
    totals = 0
    for station, parts in TWO_STATIONS.items():
        body = hub.get("/stats", params={"station_id": station}).json()
        listed = hub.get("/results", params={"station_id": station, "limit": 100}).json()
        assert body["total"] == len(parts) == len(listed["items"])
        verdicts = Counter(v.value for v, _ in parts)
        assert body["by_verdict"] == {v: verdicts.get(v, 0) for v in ("pass", "fail", "review")}
        rejects = Counter(c for v, c in parts if v is not Verdict.PASS and c)
        assert {p["defect_class"]: p["count"] for p in body["pareto"]} == rejects
        totals += body["total"]
    assert totals == everything["total"]
    one = hub.get("/stats", params={"station_id": "cell-1"}).json()
    assert [p["defect_class"] for p in one["pareto"]] == ["scratch", "crack"]
    assert one["yield_rate"] == pytest.approx(1 / 5)


def test_the_station_filter_combines_with_the_time_range(hub: TestClient) -> None:
    since = (EPOCH + timedelta(minutes=3)).isoformat()
    body = hub.get("/stats", params={"station_id": "cell-2", "since": since}).json()
    assert body["total"] == 2 and body["by_verdict"]["pass"] == 2  # cell-2's last two parts
    nobody = hub.get("/stats", params={"station_id": "cell-9"}).json()
    assert (nobody["total"], nobody["pareto"], nobody["timeline"]) == (0, [], [])


def test_a_station_filters_to_its_own_id_or_nothing(tmp_path: Path) -> None:
    """A station's own store holds only its rows: its id gives all, another id nothing."""
    settings = StationSettings(data_dir=tmp_path / "st", pass_sample_rate=0.0, disk_budget_mb=None)
    store = open_store(settings)
    store.add_many(
        [
            synthetic_frame(synthetic_result(i, v, defect_class="dent", station_id="cell-1"))
            for i, v in enumerate([Verdict.PASS, Verdict.FAIL, Verdict.FAIL])
        ]
    )
    try:
        with TestClient(create_app(settings, store)) as c:
            own = c.get("/stats", params={"station_id": "cell-1"}).json()
            assert own == c.get("/stats").json() and own["total"] == 3
            assert c.get("/stats", params={"station_id": "cell-2"}).json()["total"] == 0
            too_long = c.get("/stats", params={"station_id": "x" * 129})
            assert too_long.status_code == 422 and "station_id" in too_long.text
    finally:
        store.close()
