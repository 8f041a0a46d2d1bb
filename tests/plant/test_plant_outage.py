"""The plant through an outage: three stations, one hub, MQTT and forwarding both on, the
central PostgreSQL AND the broker stopped mid-run and started again.

Three `cellinspect run` processes (synthetic parts, free run) publish to one Mosquitto and
forward to one PostgreSQL and one `cellinspect hub` process, which subscribes to the broker
for its live events. A third-party `mosquitto_sub` (persistent session, QoS 1) reads every
result message. Afterwards:

- every result is central exactly once, in each station's order, its kept images on the hub
  with the bytes the station recorded;
- every result reached mosquitto_sub (at least once: a copy twice is allowed, docs/mqtt.md);
- the hub's GET /events streamed every result, once, with the station's ids.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from cellinspect.storage.models import ResultRow
from tests.plant.forward_rig import HubProcess, central_engine, central_rows, sha256, wait_for
from tests.plant.test_hub_events import EventReader
from tests.servers.mosquitto import MosquittoServer, Subscriber, mosquitto_fixture
from tests.servers.postgres import PostgresServer, postgres_fixture
from tests.station.runner import StationProcess, stored_results, write_station

pytestmark = pytest.mark.slow

postgres = postgres_fixture("module")
mosquitto = mosquitto_fixture()

STATIONS = ("cell-1", "cell-2", "cell-3")
LINE = {"cell-1": "line-1", "cell-2": "line-1", "cell-3": "line-2"}
PARTS = 40
MIN_DOWN_PARTS = 3  # parts each station judges with both servers away


@pytest.fixture
def central_url(postgres: PostgresServer) -> str:
    return postgres.url(postgres.create_database()).render_as_string(hide_password=False)


@pytest.fixture
def hub(
    tmp_path: Path, central_url: str, mosquitto: MosquittoServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[HubProcess]:
    """`cellinspect hub` with live events from the broker (options from its environment)."""
    monkeypatch.setenv("CELLINSPECT_HUB_MQTT_HOST", "127.0.0.1")
    monkeypatch.setenv("CELLINSPECT_HUB_MQTT_PORT", str(mosquitto.port))
    monkeypatch.setenv("CELLINSPECT_HUB_MQTT_CLIENT_ID", "hub-under-test")
    process = HubProcess(tmp_path / "hub", central_url)
    yield process
    process.close()


def _station(tmp_path: Path, station: str, hub: HubProcess, broker: MosquittoServer) -> Path:
    folder = tmp_path / station
    folder.mkdir()
    return write_station(
        folder / "station.yaml",
        station_id=station,
        site="plant-a",
        area="assembly",
        line=LINE[station],
        source={"type": "synthetic", "count": PARTS, "seed": STATIONS.index(station)},
        trigger={"mode": "free_run"},
        status_every_s=0.2,
        forward={"enabled": True, "hub_url": hub.url, "batch_size": 8, "interval_s": 0.2},
        mqtt={
            "enabled": True,
            "port": broker.port,
            "reconnect_min_s": 1,
            "reconnect_max_s": 1,
            "metrics_every_s": 5,
        },
    )


def _local_ids(data_dir: Path) -> list[str]:
    engine = create_engine(f"sqlite:///{data_dir / 'results.db'}")
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(ResultRow.result_id).order_by(ResultRow.id)))
    finally:
        engine.dispose()


def _latest_status(proc: StationProcess) -> dict[str, Any]:
    status: dict[str, Any] = [r for r in proc.records if "status" in r][-1]["status"]
    return status


def _wait_status(
    proc: StationProcess, done: Callable[[dict[str, Any]], bool], timeout: float = 60.0
) -> dict[str, Any]:
    """Guard only: the first status record (read in order, no sleeping) for which `done`."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        status = proc.wait_for("status", timeout=left).get("status")
        if isinstance(status, dict) and done(status):
            return status
    raise TimeoutError(f"status never matched in {timeout} s\n{proc.log_text()}")


def _settled(s: dict[str, Any]) -> bool:
    """Source ended and nothing waits: journal stored, outbox sent, forward backlog shipped."""
    links = s["links"]
    return bool(
        s["source_ended"]
        and links["journal"]["pending"] == 0
        and links["mqtt"]["backlog"] == 0
        and links["forward"]["backlog"] == 0
        and links["forward"]["state"] == "ok"
    )


def _sub_results(sub: Subscriber) -> dict[str, list[dict[str, Any]]]:
    """Per station, every result message mosquitto_sub printed (copies included)."""
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in STATIONS}
    for _, topic, payload in list(sub.messages):
        if topic.endswith("/result"):
            body = json.loads(payload)
            out[body["station_id"]].append(body)
    return out


def test_three_stations_through_a_database_and_broker_outage(
    tmp_path: Path,
    postgres: PostgresServer,
    mosquitto: MosquittoServer,
    central_url: str,
    hub: HubProcess,
) -> None:
    env = {"CELLINSPECT_CENTRAL_DB_URL": central_url, "CELLINSPECT_HUB_TOKEN": hub.token}
    sub = mosquitto.subscribe("cellinspect/+/+/+/+/result", "-c", "-i", "line-consumer", "-q", "1")
    live = EventReader(hub.url, hub.viewer_token)
    central = central_engine(central_url)
    procs: dict[str, StationProcess] = {}
    try:
        assert live.connected.wait(20)
        for s in STATIONS:
            procs[s] = StationProcess(_station(tmp_path, s, hub, mosquitto), env=env)
        for proc in procs.values():
            proc.wait_running()
        wait_for(
            "a result of every station at the consumer",
            lambda: all(_sub_results(sub)[s] for s in STATIONS),
        )

        # Both the central database and the broker go away; the stations keep judging.
        postgres.stop("immediate")
        mosquitto.stop()
        at_stop = {s: _latest_status(p)["parts"] for s, p in procs.items()}
        assert all(n < PARTS for n in at_stop.values()), f"not mid-run: {at_stop}"
        for s, proc in procs.items():
            down = _wait_status(
                proc,
                lambda st, n=at_stop[s]: (
                    st["parts"] >= n + MIN_DOWN_PARTS
                    and st["links"]["mqtt"]["state"] == "disconnected"
                    and st["links"]["forward"]["state"] == "failing"
                ),
            )
            assert down["links"]["mqtt"]["backlog"] > 0 and down["links"]["forward"]["backlog"] > 0
        postgres.restart()
        mosquitto.start()

        for proc in procs.values():
            _wait_status(proc, _settled, timeout=90)
        # A status line's forward backlog is the forwarder's last pass: the last stored row can
        # be newer than that pass, so wait for it centrally (a lost row still times out here).
        wait_for(
            "every station's last row centrally",
            lambda: len(central_rows(central)) >= len(STATIONS) * PARTS,
            timeout=60,
        )

        # Central: all, once, in each station's order, with the images the station kept.
        rows = central_rows(central)
        ids = [rid for rid, _ in rows]
        assert len(ids) == len(set(ids)) == len(STATIONS) * PARTS
        kept_images = 0
        for s in STATIONS:
            data = tmp_path / s / "data"
            assert [rid for rid, st in rows if st == s] == _local_ids(data)
            for stored in stored_results(data):
                for kind, image in stored.images.items():
                    body = hub.get(f"/results/{stored.result.result_id}/{kind.value}")
                    assert sha256(body) == image.sha256
                    kept_images += 1
        assert kept_images > 0

        # mosquitto_sub: every result, of the right station, in outbox order (first copies).
        wait_for(
            "every result at the consumer",
            lambda: all(
                {b["result_id"] for b in _sub_results(sub)[s]}
                >= set(_local_ids(tmp_path / s / "data"))
                for s in STATIONS
            ),
            timeout=30,
        )
        got = _sub_results(sub)
        for s in STATIONS:
            local = _local_ids(tmp_path / s / "data")
            first: dict[str, dict[str, Any]] = {}
            for body in got[s]:
                first.setdefault(body["result_id"], body)
            assert set(first) == set(local)  # none missing, none of another station
            by_seq = sorted(first.values(), key=lambda b: b["seq"])
            assert [b["result_id"] for b in by_seq] == local
            assert {(b["site"], b["area"], b["line"]) for b in by_seq} == {
                ("plant-a", "assembly", LINE[s])
            }

        # The hub's live stream: every result once, with the station's ids.
        wait_for(
            "every result on the hub's /events",
            lambda: len(live.of("result")) >= len(STATIONS) * PARTS,
            timeout=30,
        )
        streamed = live.of("result")
        assert len(streamed) == len({e["id"] for e in streamed}) == len(STATIONS) * PARTS
        for s in STATIONS:
            mine = [e for e in streamed if e["station_id"] == s]
            assert {e["id"] for e in mine} == set(_local_ids(tmp_path / s / "data"))
            assert {(e["site"], e["area"], e["line"]) for e in mine} == {
                ("plant-a", "assembly", LINE[s])
            }
        states = {(e["station_id"], e["state"]) for e in live.of("state")}
        assert {(s, "online") for s in STATIONS} <= states

        for proc in procs.values():
            assert proc.stop() == 0, proc.log_text()
        assert postgres.password not in hub.log() and hub.token not in hub.log()
    finally:
        if not postgres.running:  # a failure mid-outage must not leave the next test without it
            postgres.restart()
        for proc in procs.values():
            proc.__exit__()
        live.close()
        sub.close()
        central.dispose()
