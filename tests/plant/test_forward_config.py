"""The station file's `forward:` section and how the forwarder finds its secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellinspect.errors import ConfigError
from cellinspect.plant.forwarder import CursorFile, central_engine_url, forwarder_from
from cellinspect.settings import StationSettings
from cellinspect.station.config import ForwardConfig, StationInvalidError, parse_station
from cellinspect.storage.factory import open_store
from tests.conftest import ROOT

RECIPE = str(ROOT / "recipes" / "flange.yaml")


def test_forwarding_is_off_by_default_and_needs_a_store(tmp_path: Path) -> None:
    base = {"station_id": "s1", "recipes": {1: RECIPE}}
    assert parse_station(base, tmp_path / "s.yaml").forward.enabled is False
    with pytest.raises(StationInvalidError, match="forwarding needs store"):
        parse_station(
            {**base, "forward": {"enabled": True}, "store": {"enabled": False}},
            tmp_path / "s.yaml",
        )
    parsed = parse_station(
        {**base, "forward": {"enabled": True, "token_file": "hub-token"}}, tmp_path / "s.yaml"
    )
    assert parsed.forward.token_file == (tmp_path / "hub-token").resolve()


def test_the_central_url_comes_from_the_environment_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(StationSettings(data_dir=tmp_path / "data"))
    monkeypatch.delenv("CELLINSPECT_CENTRAL_DB_URL", raising=False)
    try:
        with pytest.raises(ConfigError, match="CELLINSPECT_CENTRAL_DB_URL"):
            forwarder_from(ForwardConfig(enabled=True), store, tmp_path / "data", "s1")
        url_file = tmp_path / "central-url"
        url_file.write_text(f"sqlite:///{tmp_path / 'central.db'}\n", encoding="utf-8")
        fw = forwarder_from(
            ForwardConfig(enabled=True, central_url_file=url_file), store, tmp_path / "data", "s1"
        )
        fw.close()
        monkeypatch.setenv("CELLINSPECT_CENTRAL_DB_URL", "postgresql+psycopg://u:secret@h/db")
        fw = forwarder_from(ForwardConfig(enabled=True), store, tmp_path / "data", "s1")
        assert "secret" not in fw.central_display
        fw.close()
    finally:
        store.close()


def test_a_postgresql_url_gets_a_connect_timeout_and_the_cursor_survives_a_rewrite(
    tmp_path: Path,
) -> None:
    assert "connect_timeout=10" in central_engine_url("postgresql+psycopg://u:p@h/db")
    assert "connect_timeout=3" in central_engine_url(
        "postgresql+psycopg://u:p@h/db?connect_timeout=3"
    )
    cursor = CursorFile(tmp_path / "forward.cursor")
    assert cursor.read() == 0
    cursor.write(41)
    cursor.write(42)
    assert cursor.read() == 42
    assert [p.name for p in tmp_path.iterdir()] == ["forward.cursor"]
    (tmp_path / "forward.cursor").write_text("garbage", encoding="ascii")
    with pytest.raises(ConfigError, match="not a forwarding cursor"):
        cursor.read()
