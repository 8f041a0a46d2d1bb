"""The MQTT link alone against a real broker that checks passwords: alarms raised and
cleared, the retained state, a wrong password refused without the password in any log."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from cellinspect.plant.mqtt_config import MqttConfig
from cellinspect.plant.mqtt_link import MqttLink
from cellinspect.plant.mqtt_topics import StationIdentity
from tests.servers.mosquitto import MosquittoServer, mosquitto_fixture

PASSWORD = "s3cret-Plant-pw"
mosquitto = mosquitto_fixture(users={"cell-9": PASSWORD})
WHO = StationIdentity(station_id="cell-9", site="plant-b", area=None, line="l1")
BASE = "cellinspect/plant-b/_/l1/cell-9"
Message = tuple[bool, str, str]


def _link(tmp_path: Path, broker: MosquittoServer, password: str, alarms: list[str]) -> MqttLink:
    pw = tmp_path / "mqtt.pw"
    pw.write_text(password + "\n", encoding="utf-8")
    cfg = MqttConfig(
        enabled=True, port=broker.port, username="cell-9", password_file=pw, reconnect_max_s=1
    )
    return MqttLink(cfg, WHO, tmp_path / "outbox.sqlite", alarms=lambda: list(alarms))


def _kind(kind: str, **fields: object) -> Callable[[Message], bool]:
    def match(message: Message) -> bool:
        body = json.loads(message[2])
        return message[1] == f"{BASE}/{kind}" and all(body[k] == v for k, v in fields.items())

    return match


def test_alarms_are_raised_and_cleared_through_the_outbox(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    alarms: list[str] = []
    sub = mosquitto.subscribe(f"{BASE}/#", "-q", "1")
    link = _link(tmp_path, mosquitto, PASSWORD, alarms).start()
    try:
        sub.wait_for(_kind("state", state="online"))
        alarms.append("STORE_UNREACHABLE: the result store does not answer (3 pending)")
        _, _, raised = sub.wait_for(_kind("alarm", active=True))
        alarms.clear()
        _, _, cleared = sub.wait_for(_kind("alarm", active=False))
    finally:
        link.close()
        sub.close()
    up, down = json.loads(raised), json.loads(cleared)
    assert up["code"] == down["code"] == "STORE_UNREACHABLE"
    assert up["event_id"] != down["event_id"] and down["seq"] == up["seq"] + 1
    assert (up["site"], up["area"], up["line"], up["station_id"]) == (
        "plant-b",
        None,
        "l1",
        "cell-9",
    )
    assert link.snapshot()["backlog"] == 0 and link.state == "closed"
    assert any(_kind("state", state="offline")(m) for m in sub.messages)


def test_a_wrong_password_is_refused_and_never_logged(
    tmp_path: Path, mosquitto: MosquittoServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    link = _link(tmp_path, mosquitto, "not-the-password", []).start()
    try:
        end = time.monotonic() + 20
        while link.last_error is None and time.monotonic() < end:  # guard only
            time.sleep(0.05)
        assert link.state == "disconnected"
        assert link.last_error is not None and "refused" in link.last_error
    finally:
        link.close(drain_s=0)
    assert "not-the-password" not in caplog.text and PASSWORD not in caplog.text
    assert "refused" in caplog.text
