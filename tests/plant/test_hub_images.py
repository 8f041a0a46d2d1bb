"""The hub's image ingest: authenticated, hash-checked, content-addressed, idempotent."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest
from fastapi.testclient import TestClient

from cellinspect.plant.hub import create_hub_app
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.records import ImageKind
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_image, synthetic_result
from cellinspect.users import Role, add_user


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[tuple[TestClient, SqlResultStore, dict[str, str]]]:
    settings = StationSettings(data_dir=tmp_path / "hub", disk_budget_mb=None)
    users = settings.resolved_users_file
    tokens = {
        "station": add_user(users, "station-a", Role.OPERATOR),
        "viewer": add_user(users, "watcher", Role.VIEWER),
    }
    store = open_store(settings)
    store.add_many([synthetic_frame(synthetic_result(1), with_images=False)])
    with TestClient(create_hub_app(settings, store)) as client:
        yield client, store, tokens
    store.close()


def _png(seed: str) -> bytes:
    ok, encoded = cv2.imencode(".png", synthetic_image(seed))
    assert ok
    return bytes(encoded.tobytes())


def _put(client: TestClient, body: bytes, token: str | None, **params: str) -> int:
    sha = params.pop("sha", hashlib.sha256(body).hexdigest())
    headers = {"Content-Type": params.pop("media_type", "image/png")}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    reply = client.put(
        f"/hub/images/{sha}",
        params={"result_id": "r000001", "kind": "image", **params},
        content=body,
        headers=headers,
    )
    return int(reply.status_code)


def test_a_station_image_is_kept_once_by_its_hash_and_served(
    hub: tuple[TestClient, SqlResultStore, dict[str, str]],
) -> None:
    client, store, tokens = hub
    body = _png("a")
    sha = hashlib.sha256(body).hexdigest()
    assert _put(client, body, tokens["station"]) == 201
    assert _put(client, body, tokens["station"]) == 200  # a resent batch changes nothing
    served = client.get("/results/r000001/image", headers={"X-API-Token": tokens["viewer"]})
    assert served.status_code == 200
    assert hashlib.sha256(served.content).hexdigest() == sha
    path, record = store.image_file("r000001", ImageKind.IMAGE)
    assert record.sha256 == sha
    assert path == store.images.path_of(f"cas/{sha[:2]}/{sha}.png")


def test_the_hub_refuses_what_it_cannot_trust(
    hub: tuple[TestClient, SqlResultStore, dict[str, str]],
) -> None:
    client, store, tokens = hub
    body = _png("b")
    station = tokens["station"]
    assert _put(client, body, None) == 401
    assert _put(client, body, tokens["viewer"]) == 403
    assert _put(client, body, station, sha="0" * 64) == 422  # body does not match its hash
    assert _put(client, body, station, media_type="text/html") == 422
    assert _put(client, body, station, result_id="r999999") == 404  # row not forwarded yet
    assert _put(client, body, station) == 201
    assert _put(client, _png("other"), station) == 422  # a different image for the same kind
    assert not list((store.images.root / "cas").rglob(".tmp-*"))
