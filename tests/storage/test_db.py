"""Engine creation refuses URLs the store cannot work with, with messages that say why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects import postgresql, sqlite

from cellinspect.storage.db import UtcDateTime, make_engine
from cellinspect.storage.errors import StoreError


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("", "not a SQLAlchemy URL"),
        ("not a url", "not a SQLAlchemy URL"),
        ("sqlite://", "expected a SQLite file path"),
        ("sqlite:///:memory:", "expected a SQLite file path"),
        ("postgresql+nodriver://user:secret@localhost/db", "cannot load the database driver"),
    ],
)
def test_bad_urls_are_refused(url: str, expected: str) -> None:
    with pytest.raises(StoreError, match=expected):
        make_engine(url)


def test_driver_errors_hide_the_password() -> None:
    with pytest.raises(StoreError) as info:
        make_engine("postgresql+nodriver://user:secret@localhost/db")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("dialect", [sqlite.dialect(), postgresql.dialect()])  # type: ignore[no-untyped-call]
def test_utc_datetime_normalises_zones(dialect: object) -> None:
    t = UtcDateTime()
    local = datetime(2026, 1, 5, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    bound = t.process_bind_param(local, dialect)
    assert bound is not None
    back = t.process_result_value(bound, dialect)
    assert back == local
    assert back is not None and back.tzinfo is not None
    assert back.utcoffset() == timedelta(0)
    assert t.process_bind_param(None, dialect) is None


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="naive datetime"):
        UtcDateTime().process_bind_param(datetime(2026, 1, 5), sqlite.dialect())
    assert UtcDateTime().process_result_value(datetime(2026, 1, 5), sqlite.dialect()) == datetime(
        2026, 1, 5, tzinfo=UTC
    )
