"""GET /results with filters and cursor pagination, one result, its images, JSON errors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from cellinspect.entities import Verdict
from cellinspect.storage.records import ImageKind
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"][-1] for item in response.json()["items"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["5", "4", "3", "2", "1", "0"]),
        ({"verdict": "fail"}, ["5", "3", "1"]),
        ({"verdict": ["fail", "review"]}, ["5", "3", "2", "1"]),
        ({"defect_class": "crack"}, ["3", "2"]),
        ({"defect_class": ["crack", "dent"]}, ["5", "3", "2"]),
        ({"reviewed": "true"}, ["1"]),
        ({"reviewed": "false", "verdict": "fail"}, ["5", "3"]),
        ({"label": "defect"}, ["1"]),
        ({"model_version": "2.0"}, ["5", "4", "3"]),
        ({"model_version": "classifier@1.0"}, ["2", "1", "0"]),
        ({"part_id": 103}, ["3"]),
        ({"since": "2026-01-05T08:00:03Z"}, ["5", "4", "3"]),
        ({"since": "2026-01-05T09:00:03+01:00"}, ["5", "4", "3"]),
        ({"since": "2026-01-05T08:00:03"}, ["5", "4", "3"]),  # naive = UTC
        ({"until": "2026-01-05T08:00:02Z"}, ["1", "0"]),
        ({"source": "elsewhere"}, []),
    ],
)
def test_filters(client: TestClient, params: dict[str, Any], expected: list[str]) -> None:
    assert ids(client.get("/results", params=params)) == expected


def test_cursor_pagination_through_the_api(client: TestClient) -> None:
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 4}
    while True:
        body = client.get("/results", params=params).json()
        seen += [item["id"] for item in body["items"]]
        if body["next_cursor"] is None:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == [f"r00000{i}" for i in (5, 4, 3, 2, 1, 0)]


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"limit": 0}, "query.limit"),
        ({"limit": 501}, "query.limit"),
        ({"limit": "many"}, "query.limit"),
        ({"verdict": "maybe"}, "query.verdict"),
        ({"reviewed": "perhaps"}, "query.reviewed"),
        ({"since": "yesterday"}, "query.since"),
        ({"since": "9999-12-31T23:59:59-05:00"}, "out of range"),
        ({"part_id": 2**64}, "query.part_id"),
        ({"cursor": "not-a-cursor"}, "not one this API handed out"),
        ({"source": "a\x00b"}, "NUL"),
        ({"station_id": "s" * 129}, "query.station_id"),
        ({"station_id": "a\x00b"}, "NUL"),
    ],
)
def test_bad_queries_are_422_with_the_field(
    client: TestClient, params: dict[str, Any], where: str
) -> None:
    response = client.get("/results", params=params)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "unprocessable_entity"
    assert where in body["message"]


def test_one_result_in_full(client: TestClient) -> None:
    body = client.get("/results/r000001").json()
    assert body["verdict"] == "fail"
    assert body["defect_class"] == "scratch"
    assert body["review"]["label"] == "defect"
    assert body["review"]["reviewer"] == "ann"
    assert body["image_url"] == "/results/r000001/image"
    assert body["overlay_url"] == "/results/r000001/overlay"
    assert [m["name"] for m in body["models"]] == ["anomaly", "classifier"]
    assert body["rois"][0]["scores"]["anomaly:anomaly"] == 0.5
    assert body["stored_at"] is not None
    assert (body["station_id"], body["line"], body["site"]) == (None, None, None)


def test_station_filter_and_fields(client: TestClient, store: SqlResultStore) -> None:
    store.add_many(
        [
            synthetic_frame(
                replace(
                    synthetic_result(10 + i, Verdict.FAIL, defect_class="dent", station_id=st),
                    line="line-2" if st else None,
                    site="plant-north" if st else None,
                )
            )
            for i, st in enumerate(["st-1", "st-2", "st-1", None])
        ]
    )
    response = client.get("/results", params={"station_id": "st-1"})
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    assert [i["id"] for i in items] == ["r000012", "r000010"]
    assert {(i["station_id"], i["line"], i["site"]) for i in items} == {
        ("st-1", "line-2", "plant-north")
    }
    assert ids(client.get("/results", params={"station_id": "st-2", "verdict": "fail"})) == ["1"]
    assert ids(client.get("/results", params={"station_id": "st-9"})) == []
    assert len(client.get("/results", params={"limit": 100}).json()["items"]) == 10
    one = client.get("/results/r000011").json()
    assert (one["station_id"], one["line"], one["site"]) == ("st-2", "line-2", "plant-north")


@pytest.mark.parametrize("path", ["/results/nope", "/results/nope/image", "/results/nope/audit"])
def test_unknown_ids_are_404_json(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "no result with id 'nope'"}


@pytest.mark.parametrize("kind", list(ImageKind))
def test_images_are_served_from_the_store(
    client: TestClient, store: SqlResultStore, kind: ImageKind
) -> None:
    response = client.get(f"/results/r000003/{kind.value}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    path, _ = store.image_file("r000003", kind)
    assert response.content == path.read_bytes()


def test_pass_without_kept_images_has_no_urls(client: TestClient) -> None:
    body = client.get("/results/r000000").json()
    assert body["image_url"] is None and body["overlay_url"] is None
    response = client.get("/results/r000000/overlay")
    assert response.status_code == 404
    assert "has no overlay kept" in response.json()["message"]


def test_path_tricks_never_reach_the_file_system(client: TestClient) -> None:
    for path in ["/results/..%2F..%2Fetc%2Fpasswd/image", "/results/%2e%2e/image"]:
        response = client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/json"


def test_unknown_route_and_method_are_json(client: TestClient) -> None:
    missing = client.get("/nothing-here")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"
    wrong = client.delete("/results")
    assert wrong.status_code == 405
    assert wrong.json()["error"] == "method_not_allowed"


def test_defect_classes_put_configured_ones_first(client: TestClient) -> None:
    body = client.get("/defect-classes").json()
    assert body["classes"] == ["scratch", "crack", "dent", "porosity"]


def test_openapi_documents_every_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) >= {
        "/inspections",
        "/results",
        "/results/{result_id}",
        "/results/{result_id}/image",
        "/results/{result_id}/overlay",
        "/results/{result_id}/review",
        "/results/{result_id}/audit",
        "/stats",
        "/exports",
        "/events",
        "/health",
        "/metrics",
        "/defect-classes",
    }
    assert client.get("/docs").status_code == 200
