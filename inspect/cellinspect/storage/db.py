"""Engine creation: SQLite tuned for a station (WAL, foreign keys, durable commits), any URL else.

SQLite allows one writer at a time. A plain `BEGIN` takes the write lock only at the first
write, and a transaction that read first then fails at once with "database is locked" when
another writer got in between. Write paths therefore use `write_engine()`, whose transactions
start with `BEGIN IMMEDIATE` (wait for the lock up front, within the busy timeout); reads keep
plain `BEGIN`, so in WAL mode they never wait for the writer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.types import TypeDecorator

from cellinspect.settings import SqliteSync
from cellinspect.storage.errors import StoreError

_IMMEDIATE = "cellinspect_begin_immediate"
BUSY_TIMEOUT_S = 30.0


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()}: expected a timezone")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def make_engine(url: str, sqlite_sync: SqliteSync = SqliteSync.FULL) -> Engine:
    """Engine for a SQLAlchemy URL; for SQLite files the folder is created and pragmas set."""
    try:
        parsed = make_url(url)
    except ArgumentError as err:
        raise StoreError(f"db_url {url!r}: not a SQLAlchemy URL ({err})") from err
    if parsed.get_backend_name() != "sqlite":
        try:
            return create_engine(url, pool_pre_ping=True)
        except (ImportError, ArgumentError) as err:
            raise StoreError(
                f"db_url {parsed.render_as_string(hide_password=True)!r}: cannot load the "
                f"database driver ({err}); install it, e.g. 'pip install psycopg[binary]'"
            ) from err
    database = parsed.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        raise StoreError(
            f"db_url {url!r}: expected a SQLite file path (in-memory databases are not shared "
            "between the writer thread and the API)"
        )
    Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_S}
    )
    _install_sqlite_hooks(engine, sqlite_sync)
    return engine


def write_engine(engine: Engine) -> Engine:
    """The same pool, with transactions that take SQLite's write lock up front."""
    return engine.execution_options(**{_IMMEDIATE: True})


def _install_sqlite_hooks(engine: Engine, sqlite_sync: SqliteSync) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, emit BEGIN (the driver's implicit BEGIN is deferred).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={sqlite_sync.value.upper()}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
