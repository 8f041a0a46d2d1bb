"""Fixtures: a seeded store in a temporary folder, a rule-based inspector, an API client."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from cellinspect.api import create_app
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.records import ReviewInput, ReviewLabel
from cellinspect.storage.sql_store import SqlResultStore
from cellinspect.storage.synthetic import synthetic_frame, synthetic_result

from .helpers import AUTH, SEED, TOKEN, RuleInspector, write_users_file

with warnings.catch_warnings():
    # Starlette 1.x suggests httpx2 for its test client; httpx works the same here.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture
def settings(tmp_path: Path) -> StationSettings:
    return StationSettings(
        data_dir=tmp_path / "data",
        api_token=TOKEN,
        users_file=write_users_file(tmp_path / "users.yaml"),
        pass_sample_rate=0.0,
        disk_budget_mb=None,
        max_upload_mb=0.25,
        max_image_pixels=1_000_000,
        defect_classes=["scratch", "crack", "dent", "porosity"],
    )


@pytest.fixture
def store(settings: StationSettings) -> Iterator[SqlResultStore]:
    s = open_store(settings)
    s.add_many(
        [
            synthetic_frame(synthetic_result(i, v, defect_class=c, model_version=mv, part_id=p))
            for i, v, c, mv, p in SEED
        ]
    )
    s.set_review("r000001", ReviewInput(ReviewLabel.DEFECT, "ann", "scratch"))
    yield s
    s.close()


@pytest.fixture
def inspector() -> RuleInspector:
    return RuleInspector()


@pytest.fixture
def client(
    settings: StationSettings, store: SqlResultStore, inspector: RuleInspector
) -> Iterator[TestClient]:
    """A client that sends the admin token unless a test says otherwise (reads need one)."""
    app = create_app(settings, store, inspector)
    with TestClient(app, headers=AUTH) as c:
        yield c
