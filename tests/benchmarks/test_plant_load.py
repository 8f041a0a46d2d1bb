"""benchmarks/plant_load.py: one station for 3 s through the real forwarder and MQTT link.

Every offered result must be central exactly once and on the broker; the report has the
fields the docs quote. The figures themselves are not asserted (a shared CI machine).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import plant_load
from tests.servers.mosquitto import require_mosquitto
from tests.servers.postgres import require_postgres

pytestmark = pytest.mark.slow


def test_one_station_arrives_exactly_once(tmp_path: Path) -> None:
    require_postgres()
    require_mosquitto()
    out = tmp_path / "plant_load.json"
    doc = plant_load.main(
        ["--stations", "1", "--rate", "10", "--seconds", "3", "--reject", "0.3", "--out", str(out)]
    )
    assert json.loads(out.read_text()) == json.loads(json.dumps(doc, default=str))
    (run,) = doc["runs"]
    assert run["offered"] == 30
    assert run["arrived"] == 30
    assert run["duplicates"] == 0
    assert run["mqtt_received"] == 30
    assert run["rejects"] > 0
    assert run["images_sent"] == 2 * run["rejects"]  # image and overlay
    assert run["api_requests"] > 0 and run["api_errors"] == 0
    for key in (
        "ingest_rate",
        "lag_p50_s",
        "lag_p99_s",
        "mqtt_lag_p50_s",
        "mqtt_lag_p99_s",
        "api_p50_ms",
        "api_p99_ms",
        "sustained",
    ):
        assert key in run
    assert run["lag_p50_s"] is not None and run["lag_p99_s"] >= run["lag_p50_s"]
    assert run["notes"] == []


def test_refuses_a_remote_target() -> None:
    with pytest.raises(SystemExit):
        plant_load.parse(["--central-url", "postgresql+psycopg://u:p@10.0.0.5/db"])
    with pytest.raises(SystemExit):
        plant_load.parse(["--hub-url", "http://example.com:8000", "--hub-token", "x"])
    assert plant_load.is_loopback("127.0.0.1") and plant_load.is_loopback("::1")
    assert not plant_load.is_loopback("192.168.1.10")
    with pytest.raises(SystemExit):
        plant_load.parse(["--stations", "500"])
