"""Fixtures: station settings and a migrated store in a temporary folder.

Every store test runs on SQLite, and on PostgreSQL as well (marked slow): on a private server
the session starts (tests/servers/postgres.py) where the server binaries are installed, or on
the server CELLINSPECT_TEST_PG_URL names (a SQLAlchemy URL of a server the tests may create
databases on, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/postgres). Each test then gets
a fresh database that is dropped afterwards. Without either the PostgreSQL cases are skipped
(failed with CELLINSPECT_REQUIRE_SERVERS=1).
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
from tests.servers.postgres import PostgresServer, require_postgres

PG_URL = os.environ.get("CELLINSPECT_TEST_PG_URL")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)]


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """CELLINSPECT_TEST_PG_URL, else a private server for the session (or skip)."""
    if PG_URL:
        yield PG_URL
        return
    with PostgresServer(require_postgres()) as server:
        yield server.url_string()


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'results.db'}"
        return
    pg_url: str = request.getfixturevalue("pg_admin_url")
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    name = f"cellinspect_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(pg_url).set(database=name).render_as_string(hide_password=False)
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
