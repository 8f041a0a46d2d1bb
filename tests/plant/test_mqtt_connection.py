"""The shared MQTT connection state: one warning per outage, whoever retries how often.

First with paho's own reason codes fed in the order paho gives them, then end to end: a
station link started while the broker is down retries many times and warns once, connects
when the broker comes, and a second outage is a second warning and a second outage count.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from cellinspect.plant.mqtt_config import MqttConfig
from cellinspect.plant.mqtt_connection import CANNOT_CONNECT, MqttConnection
from cellinspect.plant.mqtt_link import MqttLink
from cellinspect.plant.mqtt_topics import StationIdentity
from tests.plant.forward_rig import wait_for
from tests.servers.mosquitto import MosquittoServer, mosquitto_fixture

mosquitto = mosquitto_fixture()
log = logging.getLogger("tests.mqtt_connection")


def _reason(name: str) -> ReasonCode:
    return ReasonCode(PacketTypes.CONNACK, name)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == log.name and r.levelno == logging.WARNING
    ]


def test_an_outage_is_one_warning_and_one_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=log.name)
    conn = MqttConnection(MqttConfig(enabled=True, port=1884), log, "MQTT", "waiting")
    subscribed: list[bool] = []
    for _ in range(5):  # the broker is not there yet: paho retries
        conn.connect_failed()
    assert _warnings(caplog) == [f"MQTT: 127.0.0.1:1884 {CANNOT_CONNECT}"]
    assert (conn.outages, conn.connects, conn.connected) == (1, 0, False)

    assert conn.answered(_reason("Success"), lambda: subscribed.append(conn.connected))
    assert subscribed == [False]  # the caller's work runs before the link counts as up
    assert conn.connected and conn.last_error is None and conn.connects == 1

    conn.disconnected(_reason("Unspecified error"))
    for _ in range(3):
        conn.connect_failed()
    assert not conn.connected and conn.outages == 2
    assert _warnings(caplog)[1:] == ["MQTT: disconnected: Unspecified error; waiting"]

    for _ in range(3):  # the broker is back but refuses: said once per distinct reason
        assert not conn.answered(_reason("Not authorized"), lambda: subscribed.append(True))
    assert not conn.answered(_reason("Bad user name or password"), subscribed.clear)
    assert _warnings(caplog)[2:] == [
        "MQTT: broker 127.0.0.1:1884 connect refused: Not authorized",
        "MQTT: broker 127.0.0.1:1884 connect refused: Bad user name or password",
    ]
    assert subscribed == [False] and conn.outages == 2

    conn.answered(_reason("Success"), lambda: None)
    conn.stopping()
    conn.disconnected(_reason("Unspecified error"))
    assert len(_warnings(caplog)) == 4 and conn.reconnects == 1 and conn.outages == 2


def test_a_station_retrying_against_an_absent_broker_warns_once(
    tmp_path: Path, mosquitto: MosquittoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="cellinspect.plant.mqtt_link")
    mosquitto.stop()
    cfg = MqttConfig(enabled=True, port=mosquitto.port, reconnect_min_s=1, reconnect_max_s=1)
    link = MqttLink(cfg, StationIdentity("cell-7"), tmp_path / "outbox.sqlite").start()
    try:
        time.sleep(3.5)  # at least three attempts a second apart
        assert link.snapshot()["outages"] == 1 and link.state == "disconnected"
        mosquitto.start()
        wait_for("the link to connect", lambda: link.state == "connected", timeout=20)
        mosquitto.stop()
        wait_for("the link to see the broker gone", lambda: link.state == "disconnected")
        time.sleep(2.5)
        snap = link.snapshot()
    finally:
        link.close(drain_s=0)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warnings if CANNOT_CONNECT in w]) == 1, warnings
    assert len([w for w in warnings if "disconnected" in w]) == 1, warnings
    assert snap["outages"] == 2 and snap["connects"] == 1, snap
