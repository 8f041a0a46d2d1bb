"""The hub's live events: stations' MQTT messages reach GET /events on the hub.

A real Mosquitto, the hub app served by uvicorn over a store, and two stations' real MQTT
links (the station's own publisher, outbox and all). A malformed message on a station topic
is dropped with one warning for its topic and the stream goes on; a result a station sends
twice (a resend after a reconnect) reaches the stream once.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import subprocess
import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cellinspect.api.events import EventBroker
from cellinspect.api.server import ApiServerThread
from cellinspect.entities import Verdict
from cellinspect.plant.hub import create_hub_app, start_hub_events
from cellinspect.plant.hub_events import HubEvents, MalformedMessageError, hub_event
from cellinspect.plant.mqtt_config import MqttConfig
from cellinspect.plant.mqtt_link import MqttLink
from cellinspect.plant.mqtt_topics import StationIdentity, Topics, result_payload
from cellinspect.settings import StationSettings
from cellinspect.storage.factory import open_store
from cellinspect.storage.synthetic import synthetic_result
from tests.plant.forward_rig import scrape, wait_for
from tests.servers.mosquitto import MosquittoServer, mosquitto_fixture

mosquitto = mosquitto_fixture()

A = StationIdentity("cell-1", site="plant-a", area="assembly", line="line-3")
B = StationIdentity("cell-2", site="plant-a", area="assembly", line="line-4")


def _cfg(broker: MosquittoServer, **extra: Any) -> MqttConfig:
    return MqttConfig(enabled=True, port=broker.port, reconnect_min_s=1, reconnect_max_s=1, **extra)


class EventReader:
    """GET /events on a server, read in a thread: (kind, data) of each event, in order."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.connected = threading.Event()
        where = urllib.parse.urlsplit(url)
        self._conn = http.client.HTTPConnection(where.hostname or "", where.port, timeout=60)
        auth = {"Authorization": f"Bearer {token}"} if token else {}
        self._conn.request("GET", "/events", headers=auth)
        self._reply = self._conn.getresponse()
        assert self._reply.status == 200, self._reply.status
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        kind = ""
        try:
            for raw in self._reply:
                line = raw.decode().rstrip("\n")
                if line.startswith(": connected"):
                    self.connected.set()
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    self.events.append((kind, json.loads(line[6:])))
        except (OSError, ValueError, AttributeError):
            return  # the stream closed (by the server, or by close() here)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.events if k == kind]

    def close(self) -> None:
        """Shut the socket down first: a plain close waits for the blocked reader."""
        if self._conn.sock is not None:
            with contextlib.suppress(OSError):
                self._conn.sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self._conn.close()


@pytest.fixture
def hub(tmp_path: Path, mosquitto: MosquittoServer) -> Iterator[tuple[str, HubEvents]]:
    settings = StationSettings(data_dir=tmp_path / "hub", disk_budget_mb=None)
    store = open_store(settings)
    app = create_hub_app(settings, store)
    server = ApiServerThread(app, port=0).start()
    events = start_hub_events(app, _cfg(mosquitto, client_id="test-hub"))
    try:
        assert events.wait_connected(20), events.snapshot()
        yield server.url, events
    finally:
        events.close()
        app.state.services.events.close()  # ends open streams, or the stop waits for them
        server.stop()
        store.close()


def _link(tmp_path: Path, broker: MosquittoServer, who: StationIdentity) -> MqttLink:
    return MqttLink(_cfg(broker), who, tmp_path / f"{who.station_id}-outbox.sqlite").start()


def test_results_state_and_alarms_of_every_station_stream_from_the_hub(
    tmp_path: Path,
    mosquitto: MosquittoServer,
    hub: tuple[str, HubEvents],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="cellinspect.plant.hub_events")
    url, events = hub
    reader = EventReader(url)
    links = {who.station_id: _link(tmp_path, mosquitto, who) for who in (A, B)}
    try:
        assert reader.connected.wait(10)
        sent: dict[str, list[str]] = {"cell-1": [], "cell-2": []}
        for i in range(6):
            for who in (A, B):
                verdict = Verdict.FAIL if i % 2 else Verdict.PASS
                r = synthetic_result(
                    i,
                    verdict,
                    defect_class="dent" if i % 2 else None,
                    prefix=f"{who.station_id}-",
                    station_id=who.station_id,
                    part_id=100 + i,
                )
                links[who.station_id].result(r)
                sent[who.station_id].append(r.result_id)
            if i == 2:  # junk on station topics, between good messages
                base = Topics.of("cellinspect", A).base
                _pub(mosquitto, f"{base}/result", "not json at all")
                _pub(mosquitto, f"{base}/result", '{"schema": 1, "kind": "result"}')
                _pub(mosquitto, f"{base}/alarm", "[1, 2]")
        # A station resending a result it already sent (its PUBACK was lost) is passed on once.
        again = synthetic_result(0, Verdict.PASS, prefix="cell-1-", station_id="cell-1")
        _pub(mosquitto, Topics.of("cellinspect", A).result, json.dumps(result_payload(again, A)))
        _pub(
            mosquitto,
            Topics.of("cellinspect", B).alarm,
            json.dumps(
                {
                    "schema": 1,
                    "kind": "alarm",
                    "event_id": "e-1",
                    **B.ids(),
                    "code": "STORE_SLOW",
                    "text": "STORE_SLOW: commits take 3 s",
                    "active": True,
                    "at": "2026-01-01T00:00:00+00:00",
                }
            ),
        )
        total = len(sent["cell-1"]) + len(sent["cell-2"])
        wait_for("every result on the hub's stream", lambda: len(reader.of("result")) >= total)
        wait_for("the alarm on the stream", lambda: bool(reader.of("alarm")))

        results = reader.of("result")
        for station, ids in sent.items():
            mine = [e for e in results if e["station_id"] == station]
            assert [e["id"] for e in mine] == ids  # all, once, in the station's order
            who = A if station == "cell-1" else B
            for e in mine:
                assert (e["site"], e["area"], e["line"]) == (who.site, who.area, who.line)
                assert e["verdict"] in ("pass", "fail")
                assert e["seq"] is not None
        fails = [e for e in results if e["verdict"] == "fail"]
        assert fails and all(e["defect_class"] == "dent" for e in fails)
        assert {e["part_id"] for e in results} == {100 + i for i in range(6)}

        states = reader.of("state")
        assert {(s["station_id"], s["state"]) for s in states} >= {
            ("cell-1", "online"),
            ("cell-2", "online"),
        }
        (alarm,) = reader.of("alarm")
        assert (alarm["station_id"], alarm["line"], alarm["code"], alarm["active"]) == (
            "cell-2",
            "line-4",
            "STORE_SLOW",
            True,
        )

        # The junk: dropped and counted, one warning per topic, no payload in the log.
        snap = events.snapshot()
        assert snap["dropped"] == 3 and snap["duplicates"] == 1, snap
        warnings = [
            r.getMessage()
            for r in caplog.records
            if r.name.endswith("hub_events") and "malformed" in r.getMessage()
        ]
        assert len(warnings) == 2, warnings  # result topic once, alarm topic once
        assert any("not UTF-8 JSON" in w for w in warnings)
        assert not any("not json at all" in w for w in warnings)

        # The same counts on the hub's GET /metrics (a real scrape).
        wait_for("the stream to catch up", lambda: len(reader.events) == events.published)
        seen = scrape(url)
        republished = len(reader.events)
        assert seen["cellinspect_hub_mqtt_republished_total"] == republished
        assert seen["cellinspect_hub_mqtt_received_total"] == republished + 3 + 1
        assert seen['cellinspect_hub_mqtt_dropped_total{reason="malformed"}'] == 3
        assert seen['cellinspect_hub_mqtt_dropped_total{reason="duplicate"}'] == 1
        assert seen["cellinspect_hub_mqtt_reconnects_total"] == 0
        assert seen['cellinspect_hub_mqtt_link_state{state="connected"}'] == 1

        # The stations' clean stop: 'offline' for each, live on the hub.
        for link in links.values():
            link.close(drain_s=2)
        wait_for(
            "offline states",
            lambda: (
                {s["station_id"] for s in reader.of("state") if s["state"] == "offline"}
                >= {"cell-1", "cell-2"}
            ),
            timeout=20,
        )
    finally:
        for link in links.values():
            link.close(drain_s=2)
        reader.close()


def test_the_hub_resubscribes_after_a_broker_restart(
    tmp_path: Path, mosquitto: MosquittoServer, hub: tuple[str, HubEvents]
) -> None:
    url, events = hub
    reader = EventReader(url)
    link = _link(tmp_path, mosquitto, A)
    try:
        assert reader.connected.wait(10)
        link.result(synthetic_result(0, Verdict.PASS, prefix="cell-1-", station_id="cell-1"))
        wait_for("the first result", lambda: len(reader.of("result")) == 1)
        mosquitto.stop()
        wait_for("the hub to see the broker gone", lambda: events.state == "disconnected")
        link.result(synthetic_result(1, Verdict.FAIL, prefix="cell-1-", station_id="cell-1"))
        mosquitto.start()
        wait_for(
            "the result judged while the broker was away", lambda: len(reader.of("result")) == 2
        )
        assert [e["id"] for e in reader.of("result")] == ["cell-1-000000", "cell-1-000001"]
        assert events.snapshot()["connects"] >= 2
        wait_for("the stream to catch up", lambda: len(reader.events) == events.published)
        seen = scrape(url)
        assert seen["cellinspect_hub_mqtt_reconnects_total"] == events.conn.connects - 1 >= 1
        assert seen["cellinspect_hub_mqtt_outages_total"] == events.conn.outages >= 1
        assert seen["cellinspect_hub_mqtt_republished_total"] == len(reader.events)
    finally:
        link.close(drain_s=2)
        reader.close()


def _pub(broker: MosquittoServer, topic: str, payload: str) -> None:
    where = ["-h", "127.0.0.1", "-p", str(broker.port)]
    subprocess.run(
        ["mosquitto_pub", *where, "-q", "1", "-t", topic, "-m", payload],
        check=True,
        timeout=20,
    )


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("other/plant-a/x/l/c/result", b"{}", "not a station topic"),
        ("cellinspect/plant-a/x/l/c/metrics", b"{}", "not one of"),
        ("cellinspect/plant-a/x/l/c/result", b"\xff\xfe", "not UTF-8 JSON"),
        ("cellinspect/plant-a/x/l/c/result", b'"text"', "not a JSON object"),
        ("cellinspect/plant-a/x/l/c/result", b'{"schema": 2, "kind": "result"}', "schema"),
        ("cellinspect/plant-a/x/l/c/state", b'{"schema": 1, "kind": "result"}', "kind"),
        (
            "cellinspect/plant-a/x/l/c/result",
            b'{"schema": 1, "kind": "result", "station_id": "c", "verdict": "pass"}',
            "'result_id'",
        ),
        (
            "cellinspect/plant-a/x/l/c/alarm",
            b'{"schema": 1, "kind": "alarm", "station_id": "c", "event_id": "e", "code": "X",'
            b' "active": "yes"}',
            "'active'",
        ),
    ],
)
def test_a_message_that_is_not_a_stations_says_why(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedMessageError, match=reason):
        hub_event(topic, payload, "cellinspect")


def test_a_result_message_becomes_the_short_live_form() -> None:
    r = synthetic_result(4, Verdict.FAIL, defect_class="dent", score=0.8, station_id="cell-1")
    body = {**result_payload(r, A), "seq": 9}
    kind, data = hub_event(
        f"{Topics.of('cellinspect', A).result}", json.dumps(body).encode(), "cellinspect"
    )
    assert kind == "result"
    assert data["id"] == r.result_id and data["seq"] == 9 and data["area"] == "assembly"
    assert data["score"] == pytest.approx(r.score)
    assert data["captured_wall"] == r.captured_wall.isoformat()


def test_bad_hub_mqtt_options_name_the_option(tmp_path: Path) -> None:
    from cellinspect.cli.hub import hub_mqtt_config
    from cellinspect.errors import ConfigError

    with pytest.raises(ConfigError, match=r"hub --mqtt-\* options: port"):
        hub_mqtt_config("broker", 70000, "cellinspect", None, None, None, None)
    with pytest.raises(ConfigError, match="password_file needs username"):
        hub_mqtt_config("broker", 1883, "cellinspect", None, tmp_path / "pw", None, None)
    with pytest.raises(ConfigError, match="topic_prefix"):
        hub_mqtt_config("broker", 1883, "plant/#", None, None, None, None)
    with pytest.raises(ConfigError, match="cannot read the MQTT password file"):
        HubEvents(
            hub_mqtt_config("b", 1883, "p", "hub", tmp_path / "pw", None, None), EventBroker()
        )
    (tmp_path / "pw").write_text("s3cret\n", encoding="utf-8")
    cfg = hub_mqtt_config("b", 8883, "plant", "hub", tmp_path / "pw", tmp_path / "ca.pem", None)
    assert cfg.tls is not None and cfg.tls.ca == (tmp_path / "ca.pem").resolve()
    with pytest.raises(ConfigError, match=r"ca\.pem: cannot load the MQTT TLS files"):
        HubEvents(cfg, EventBroker())
    plain = hub_mqtt_config("b", 1883, "plant/", "hub", tmp_path / "pw", None, "hub-1")
    events = HubEvents(plain, EventBroker())
    assert events.filters == [f"plant/+/+/+/+/{kind}" for kind in ("result", "state", "alarm")]
