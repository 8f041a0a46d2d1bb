"""POST /exports writes into the station's export folder, named by the server."""

from __future__ import annotations

import csv

from fastapi.testclient import TestClient

from cellinspect.settings import StationSettings

from .helpers import AUTH, NO_AUTH


def test_export_writes_reviewed_results(client: TestClient, settings: StationSettings) -> None:
    client.put("/results/r000003/review", json={"label": "good"}, headers=AUTH)
    response = client.post("/exports", json={"manifest_format": "csv"}, headers=AUTH)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["written"] == 2
    assert body["by_label"] == {"good": 1, "scratch": 1}
    out = settings.resolved_export_dir / body["name"]
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert {r["result_id"]: r["label"] for r in rows} == {"r000001": "scratch", "r000003": "good"}
    assert (out / "scratch" / "r000001.png").is_file()
    assert body["manifest"] == f"{body['name']}/manifest.csv"


def test_export_with_confident_unreviewed(client: TestClient) -> None:
    response = client.post(
        "/exports",
        json={"include_unreviewed_above": 0.5, "manifest_format": "jsonl"},
        headers=AUTH,
    )
    assert response.status_code == 201
    # r1 reviewed; r3 (crack) and r5 (dent) FAIL with class score 0.5 >= 0.5.
    assert response.json()["by_label"] == {"crack": 1, "dent": 1, "scratch": 1}


def test_export_needs_the_token_and_checks_the_body(client: TestClient) -> None:
    assert client.post("/exports", headers=NO_AUTH).status_code == 401
    bad = client.post("/exports", json={"include_unreviewed_above": 2}, headers=AUTH)
    assert bad.status_code == 422
    sneaky = client.post("/exports", json={"out_dir": "/etc"}, headers=AUTH)
    assert sneaky.status_code == 422
    assert "out_dir" in sneaky.json()["message"]
