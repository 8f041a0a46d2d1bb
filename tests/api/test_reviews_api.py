"""PUT /results/{id}/review: token required, reviewer from the token, label rules, audit trail."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from cellinspect.api import create_app
from cellinspect.settings import StationSettings
from cellinspect.storage.sql_store import SqlResultStore

from .helpers import AUTH, NO_AUTH, TOKEN, auth_as

GOOD = {"label": "good"}
ANN = auth_as("ann")


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        (NO_AUTH, 401, "missing API token"),
        ({"Authorization": "Bearer wrong"}, 401, "invalid API token"),
        ({**NO_AUTH, "X-API-Token": "wrong"}, 401, "invalid API token"),
        ({"Authorization": f"Basic {TOKEN}"}, 401, "missing API token"),
        ({"Authorization": "Bearer "}, 401, "missing API token"),
    ],
)
def test_changes_need_the_token(
    client: TestClient, store: SqlResultStore, headers: dict[str, str], status: int, message: str
) -> None:
    response = client.put("/results/r000005/review", json=GOOD, headers=headers)
    assert response.status_code == status
    assert message in response.json()["message"]
    assert response.headers.get("www-authenticate") == "Bearer"
    assert store.get("r000005").review is None


@pytest.mark.parametrize(
    ("headers", "reviewer"),
    [
        (ANN, "ann"),
        ({**NO_AUTH, "X-API-Token": ANN["Authorization"].removeprefix("Bearer ")}, "ann"),
        (AUTH, "api-token"),  # the legacy single token: an admin named api-token
        ({**NO_AUTH, "X-API-Token": TOKEN}, "api-token"),
    ],
)
def test_either_header_carries_the_token_and_names_the_reviewer(
    client: TestClient, store: SqlResultStore, headers: dict[str, str], reviewer: str
) -> None:
    response = client.put("/results/r000005/review", json=GOOD, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json()["reviewer"] == reviewer
    review = store.get("r000005").review
    assert review is not None and review.reviewer == reviewer


def test_a_reviewer_field_naming_someone_else_is_refused(
    client: TestClient, store: SqlResultStore
) -> None:
    """One QA user cannot label as another: the token decides who reviewed."""
    response = client.put("/results/r000005/review", json={**GOOD, "reviewer": "bob"}, headers=ANN)
    assert response.status_code == 422
    assert "signed-in user ('ann'" in response.json()["message"]
    assert store.get("r000005").review is None
    same = client.put("/results/r000005/review", json={**GOOD, "reviewer": "ann"}, headers=ANN)
    assert same.status_code == 200  # older clients that name their own user keep working


def test_a_station_without_token_refuses_every_change(tmp_path: Any, store: SqlResultStore) -> None:
    settings = StationSettings(data_dir=tmp_path / "other")
    with TestClient(create_app(settings, store)) as c:
        response = c.put("/results/r000005/review", json=GOOD, headers=AUTH)
        assert response.status_code == 403
        message = response.json()["message"]
        assert "read-only" in message and "cellinspect users add" in message
        assert c.post("/exports", headers=AUTH).status_code == 403
        assert c.get("/results").status_code == 200  # reads stay open: nothing to sign in with


def test_every_change_is_in_the_audit_trail(client: TestClient) -> None:
    first = client.put(
        "/results/r000005/review",
        json={"label": "good", "comment": "burr, not a dent"},
        headers=ANN,
    )
    second = client.put(
        "/results/r000005/review",
        json={"label": "defect", "defect_class": "dent"},
        headers=auth_as("bob"),
    )
    assert (first.json()["revision"], second.json()["revision"]) == (1, 2)
    trail = client.get("/results/r000005/audit").json()
    assert trail["id"] == "r000005"
    assert [
        (e["revision"], e["label"], e["defect_class"], e["reviewer"], e["previous_label"])
        for e in trail["entries"]
    ] == [(1, "good", None, "ann", None), (2, "defect", "dent", "bob", "good")]
    assert trail["entries"][0]["comment"] == "burr, not a dent"
    assert client.get("/results/r000005").json()["review"]["label"] == "defect"
    assert client.get("/results", params={"reviewed": "true"}).json()["items"][0]["id"] in {
        "r000005",
        "r000001",
    }


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "body.label"),
        ({"label": "defect", "reviewer": "ann"}, "needs a defect_class"),
        ({"label": "good", "reviewer": "ann", "defect_class": "dent"}, "takes no defect_class"),
        ({"label": "maybe", "reviewer": "ann"}, "body.label"),
        ({"label": "good", "reviewer": ""}, "reviewer is the signed-in user"),
        ({"label": "good", "reviewer": "   "}, "reviewer is the signed-in user"),
        ({"label": "good", "reviewer": "a" * 129}, "body.reviewer"),
        ({"label": "good", "reviewer": "ann", "comment": "x" * 2001}, "body.comment"),
        ({"label": "good", "reviewer": "ann", "extra": 1}, "body.extra"),
        ({"label": "good", "reviewer": "a\x00n"}, "NUL"),
        ({"label": "good", "reviewer": "ann", "expected_revision": -1}, "expected_revision"),
    ],
)
def test_invalid_reviews_are_422(client: TestClient, body: dict[str, Any], message: str) -> None:
    response = client.put("/results/r000005/review", json=body, headers=ANN)
    assert response.status_code == 422
    assert message in response.json()["message"]


def test_non_json_body_is_422(client: TestClient) -> None:
    response = client.put(
        "/results/r000005/review",
        content=b"label=good",
        headers={**AUTH, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 422


def test_unknown_result_is_404(client: TestClient) -> None:
    response = client.put("/results/nope/review", json=GOOD, headers=ANN)
    assert response.status_code == 404


def test_stale_revision_is_409(client: TestClient) -> None:
    body = {**GOOD, "expected_revision": 0}
    assert client.put("/results/r000005/review", json=body, headers=AUTH).status_code == 200
    response = client.put("/results/r000005/review", json=body, headers=AUTH)
    assert response.status_code == 409
    assert "revision 1" in response.json()["message"]
