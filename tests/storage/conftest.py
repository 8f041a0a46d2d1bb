"""Fixtures: station settings and a migrated store in a temporary folder.

Every store test runs on SQLite. Set CELLINSPECT_TEST_PG_URL (a SQLAlchemy URL of a
PostgreSQL server the tests may create databases on, e.g.
postgresql+psycopg://postgres@127.0.0.1:5432/postgres) to run them on PostgreSQL as well;
each test then gets a fresh database that is dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.sql_store import SqlResultStore

PG_URL = os.environ.get("CELLINSPECT_TEST_PG_URL")
BACKENDS = ["sqlite", *(["postgresql"] if PG_URL else [])]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'results.db'}"
        return
    assert PG_URL is not None
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"cellinspect_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(PG_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> StationSettings:
    return StationSettings(
        data_dir=tmp_path / "data", db_url=db_url, pass_sample_rate=0.0, disk_budget_mb=None
    )


@pytest.fixture
def store(settings: StationSettings) -> Iterator[SqlResultStore]:
    s = open_store(settings)
    yield s
    s.close()
