"""POST /results/{id}/review/undo: roles, whose label, nothing to undo, the audit keeps all."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from cellinspect.storage.sql_store import SqlResultStore

from .helpers import AUTH, NO_AUTH, auth_as

ANN, BOB, ADA, VIC, OTTO = (auth_as(n) for n in ("ann", "bob", "ada", "vic", "otto"))
URL = "/results/r000005/review"


def label(client: TestClient, body: dict[str, Any], headers: dict[str, str]) -> int:
    response = client.put(URL, json=body, headers=headers)
    assert response.status_code == 200, response.text
    revision: int = response.json()["revision"]
    return revision


def undo(client: TestClient, headers: dict[str, str], **params: Any) -> Any:
    return client.post(f"{URL}/undo", headers=headers, params=params)


def test_undo_restores_the_previous_label_and_records_it(
    client: TestClient, store: SqlResultStore
) -> None:
    label(client, {"label": "defect", "defect_class": "dent", "comment": "deep"}, ANN)
    label(client, {"label": "good"}, ANN)
    response = undo(client, ANN)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["undone_revision"], body["revision"]) == (2, 3)
    assert body["review"]["label"] == "defect" and body["review"]["defect_class"] == "dent"
    assert body["review"]["comment"] == "deep" and body["review"]["revision"] == 3
    review = store.get("r000005").review
    assert review is not None and (review.label.value, review.defect_class) == ("defect", "dent")
    trail = client.get(f"{URL.removesuffix('/review')}/audit").json()["entries"]
    assert [
        (e["revision"], e["label"], e["reviewer"], e["previous_label"], e["undoes"]) for e in trail
    ] == [
        (1, "defect", "ann", None, None),
        (2, "good", "ann", "defect", None),
        (3, "defect", "ann", "good", 2),
    ]


def test_undoing_the_first_label_leaves_the_result_unreviewed(
    client: TestClient, store: SqlResultStore
) -> None:
    label(client, {"label": "good"}, ANN)
    response = undo(client, ANN)
    assert response.status_code == 200, response.text
    assert response.json()["review"] is None
    assert store.get("r000005").review is None
    unreviewed = client.get("/results", params={"reviewed": "false", "limit": 50}).json()
    assert "r000005" in [i["id"] for i in unreviewed["items"]]
    # The trail keeps the label and its undo; the next label continues the revisions.
    assert label(client, {"label": "defect", "defect_class": "crack"}, BOB) == 3
    trail = client.get("/results/r000005/audit").json()["entries"]
    assert [(e["label"], e["undoes"]) for e in trail] == [
        ("good", None),
        (None, 1),
        ("defect", None),
    ]


def test_nothing_to_undo_is_404(client: TestClient) -> None:
    response = undo(client, ANN)
    assert response.status_code == 404
    assert "no label to undo" in response.json()["message"]
    label(client, {"label": "good"}, ANN)
    assert undo(client, ANN).status_code == 200
    assert undo(client, ANN).status_code == 404  # undone back to nothing
    assert client.post("/results/nope/review/undo", headers=ANN).status_code == 404


@pytest.mark.parametrize(("headers", "status"), [(VIC, 403), (OTTO, 403), (NO_AUTH, 401)])
def test_roles_that_may_not_review_may_not_undo(
    client: TestClient, store: SqlResultStore, headers: dict[str, str], status: int
) -> None:
    label(client, {"label": "good"}, ANN)
    response = undo(client, headers)
    assert response.status_code == status
    review = store.get("r000005").review
    assert review is not None and review.revision == 1
    assert len(store.audit_trail("r000005")) == 1


def test_another_qa_users_label_cannot_be_undone_but_an_admin_may(
    client: TestClient, store: SqlResultStore
) -> None:
    label(client, {"label": "defect", "defect_class": "dent"}, ANN)
    label(client, {"label": "good"}, BOB)
    refused = undo(client, ANN)
    assert refused.status_code == 403
    assert "'bob'" in refused.json()["message"]
    review = store.get("r000005").review
    assert review is not None and (review.label.value, review.reviewer) == ("good", "bob")
    assert len(store.audit_trail("r000005")) == 2
    for admin in (ADA, AUTH):  # a user with role admin, and the legacy admin token
        response = undo(client, admin)
        assert response.status_code == 200, response.text
    assert store.get("r000005").review is None
    trail = store.audit_trail("r000005")
    assert [(e.reviewer, e.undoes) for e in trail[2:]] == [("ada", 2), ("api-token", 1)]


def test_a_stale_undo_is_409(client: TestClient, store: SqlResultStore) -> None:
    label(client, {"label": "good"}, ANN)
    label(client, {"label": "defect", "defect_class": "dent"}, ANN)
    response = undo(client, ANN, expected_revision=1)
    assert response.status_code == 409
    assert "revision 2" in response.json()["message"]
    assert undo(client, ANN, expected_revision=2).status_code == 200
    review = store.get("r000005").review
    assert review is not None and review.label.value == "good"
