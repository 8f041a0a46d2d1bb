"""Fixtures: a store with reviewed, unreviewed and duplicate-image results."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.sql_store import SqlResultStore


@pytest.fixture
def settings(tmp_path: Path) -> StationSettings:
    return StationSettings(data_dir=tmp_path / "data", pass_sample_rate=1.0, disk_budget_mb=None)


@pytest.fixture
def store(settings: StationSettings) -> Iterator[SqlResultStore]:
    s = open_store(settings)
    yield s
    s.close()
