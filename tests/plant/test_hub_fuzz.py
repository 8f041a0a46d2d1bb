"""The hub's own route under the OpenAPI fuzzer: no generated request gets a 5xx.

The hub app is the station app plus PUT /hub/images/{sha256}; the station's routes are
fuzzed in tests/api/test_openapi_fuzz.py, this one here with the same helper and tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from cellinspect.plant.hub import create_hub_app
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result
from tests.api.helpers import TOKEN, auth_as, write_users_file
from tests.api.test_openapi_fuzz import fuzz, load

HUB_OPERATIONS = [("PUT", "/hub/images/{sha256}")]


@pytest.fixture
def hub_app(tmp_path: Path) -> Iterator[FastAPI]:
    settings = StationSettings(
        data_dir=tmp_path / "hub",
        api_token=TOKEN,
        users_file=write_users_file(tmp_path / "users.yaml"),
        disk_budget_mb=None,
        max_upload_mb=0.25,
    )
    store = open_store(settings)
    store.add_many([synthetic_frame(synthetic_result(1), with_images=False)])
    yield create_hub_app(settings, store)
    store.close()


def test_the_hub_adds_only_its_ingest_route(hub_app: FastAPI) -> None:
    found = {
        (op.ok().method.upper(), op.ok().path)  # type: ignore[union-attr]
        for op in load(hub_app).get_all_operations()
    }
    assert set(HUB_OPERATIONS) <= found
    assert {p for _, p in found if p.startswith("/hub")} == {"/hub/images/{sha256}"}


@pytest.mark.parametrize(("method", "path"), HUB_OPERATIONS)
def test_no_server_errors_on_the_hub_route(hub_app: FastAPI, method: str, path: str) -> None:
    fuzz(hub_app, method, path)
    fuzz(hub_app, method, path, examples=8, headers=auth_as("vic"))

    def refused(case: Any, response: Any) -> None:
        assert response.status_code in (400, 401, 422), response.text[:200]

    fuzz(hub_app, method, path, examples=8, check=refused, headers={})
