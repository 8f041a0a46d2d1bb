"""A station publishes to a real Mosquitto broker; the third-party mosquitto_sub reads it.

Every stored result arrives (de-duplicated by result_id: delivery is at least once), in
outbox order, whatever happens in between: the broker stopped mid-run and restarted, the
broker down while the station judges, the station killed with SIGKILL and restarted. The
retained state topic says "online" while the station runs and "offline" after it: at a
clean stop by the station itself, after a SIGKILL by the broker (the last will).
"""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from pathlib import Path
from typing import Any

from cellinspect.entities import Verdict
from cellinspect.storage.journal import ResultJournal
from cellinspect.storage.synthetic import synthetic_result
from tests.servers.mosquitto import MosquittoServer, Subscriber, mosquitto_fixture
from tests.station.runner import StationProcess, stored_results, write_station

mosquitto = mosquitto_fixture()

BASE = "cellinspect/plant-a/assembly/line-3/cell-7"
Message = tuple[bool, str, str]


def _station(tmp_path: Path, broker: MosquittoServer, count: int = 5000) -> Path:
    return write_station(
        tmp_path / "station.yaml",
        station_id="cell-7",
        site="plant-a",
        area="assembly",
        line="line-3",
        source={"type": "synthetic", "count": count, "seed": 3, "defect_rate": 0.3},
        trigger={"mode": "free_run"},
        status_every_s=0.2,
        mqtt={
            "enabled": True,
            "port": broker.port,
            "reconnect_min_s": 1,
            "reconnect_max_s": 1,
            "metrics_every_s": 0.5,
        },
    )


def _is(kind: str, **fields: Any) -> Any:
    def match(message: Message) -> bool:
        _, topic, payload = message
        if topic != f"{BASE}/{kind}":
            return False
        body = json.loads(payload)
        return all(body.get(k) == v for k, v in fields.items())

    return match


def _results(sub: Subscriber) -> list[dict[str, Any]]:
    """Result messages as a consumer keeps them: the first copy of each result_id."""
    seen: dict[str, dict[str, Any]] = {}
    for _, topic, payload in sub.messages:
        if topic == f"{BASE}/result":
            body = json.loads(payload)
            seen.setdefault(body["result_id"], body)
    return list(seen.values())


def _wait_all(sub: Subscriber, ids: set[str]) -> None:
    """Guard only: returns once every id has been seen (the asserts come after)."""
    if ids <= {r["result_id"] for r in _results(sub)}:
        return
    sub.wait_for(lambda _: ids <= {r["result_id"] for r in _results(sub)}, timeout=30)


def _check_complete_and_ordered(sub: Subscriber, data_dir: Path) -> list[dict[str, Any]]:
    stored = stored_results(data_dir)
    ids = {s.result.result_id for s in stored}
    _wait_all(sub, ids)
    got = _results(sub)
    assert [r["result_id"] for r in got if r["result_id"] not in ids] == []
    assert {r["result_id"] for r in got} == ids and len(got) == len(stored)
    # In outbox order without a gap (no alarm came in between in these runs).
    assert [r["seq"] for r in got] == list(range(got[0]["seq"], got[0]["seq"] + len(got)))
    by_id = {s.result.result_id: s.result for s in stored}
    for body in got:
        kept = by_id[body["result_id"]]
        assert body["verdict"] == kept.verdict.value and body["frame_id"] == kept.frame_id
        assert (body["site"], body["area"], body["line"], body["station_id"]) == (
            "plant-a",
            "assembly",
            "line-3",
            "cell-7",
        )
        assert body["schema"] == 1 and body["kind"] == "result"
    return got


def _retained_state(broker: MosquittoServer) -> Message:
    fresh = broker.subscribe(f"{BASE}/state", "-C", "1", "-W", "20")
    try:
        return fresh.wait_for(lambda m: True, timeout=25)
    finally:
        fresh.close()


def _wait_status(proc: StationProcess, done: Any, timeout: float = 40.0) -> dict[str, Any]:
    """Guard only: the first status record (from now on) for which `done(status)` holds."""
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        status = proc.wait_for("status", timeout=left).get("status")
        if isinstance(status, dict) and done(status):
            return status
    raise TimeoutError(f"status never matched in {timeout} s\n{proc.log_text()}")


def test_every_result_arrives_once_in_order_across_a_broker_restart(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    # A persistent session (-c) at QoS 1: what the broker takes while this consumer is away
    # (the broker restarting) waits for it, as for a plant consumer.
    sub = mosquitto.subscribe("cellinspect/#", "-c", "-i", "plant-consumer", "-q", "1")
    try:
        with StationProcess(_station(tmp_path, mosquitto, count=40)) as proc:
            proc.wait_running()
            sub.wait_for(_is("state", state="online"))
            sub.wait_for(_is("result"))
            sub.wait_for(_is("metrics"))
            mosquitto.stop()
            parts = proc.wait_parts(1)["parts"]
            down = proc.wait_parts(parts + 8)  # judged while the broker is away
            assert down["links"]["mqtt"]["state"] == "disconnected"
            assert down["links"]["mqtt"]["backlog"] > 0
            mosquitto.start()
            sub.wait_for(_is("state", state="online"), timeout=40)
            # Idle: every part judged, published and stored (the journal holds none back).
            idle = _wait_status(
                proc,
                lambda s: (
                    s["source_ended"]
                    and s["links"]["mqtt"]["backlog"] == 0
                    and s["links"]["journal"]["pending"] == 0
                ),
            )
            proc.proc.send_signal(signal.SIGKILL)
            proc.wait_exit()
        # The broker's last will for the killed station, retained for anyone who asks later.
        sub.wait_for(_is("state", state="offline"))
        got = _check_complete_and_ordered(sub, tmp_path / "data")
        assert len(got) == idle["parts"] == idle["links"]["mqtt"]["sent"], idle
    finally:
        sub.close()
    retained, _, payload = _retained_state(mosquitto)
    assert retained and json.loads(payload)["state"] == "offline"


def test_nothing_is_lost_when_the_station_is_killed_with_the_broker_down(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    mosquitto.stop()  # the plant network is down: the station judges and records anyway
    station = _station(tmp_path, mosquitto)
    with StationProcess(station) as proc:
        proc.wait_running()
        proc.wait_parts(8)
        proc.proc.send_signal(signal.SIGKILL)
        proc.wait_exit()

    mosquitto.start()
    sub = mosquitto.subscribe("cellinspect/#", "-q", "1")
    try:
        # The next run sends what the killed one had judged, then its own parts.
        _station(tmp_path, mosquitto, count=3)
        with StationProcess(station, "--until-source-ends") as proc:
            assert proc.wait_exit(60) == 0, proc.log_text()
        got = _check_complete_and_ordered(sub, tmp_path / "data")
        assert len(got) >= 8 + 3
        sub.wait_for(_is("state", state="offline"))  # said by the station at its clean stop
    finally:
        sub.close()
    retained, _, payload = _retained_state(mosquitto)
    assert retained and json.loads(payload)["state"] == "offline"


def test_a_result_only_in_the_journal_is_published_at_the_next_start(
    tmp_path: Path, mosquitto: MosquittoServer
) -> None:
    # What a kill -9 between the journal append and the outbox leaves: a journaled result
    # that neither the store nor the outbox has.
    journal = ResultJournal(tmp_path / "data" / "journal")
    journal.open()
    crashed = synthetic_result(0, Verdict.FAIL, defect_class="dent", station_id="cell-7")
    journal.append(dataclasses.replace(crashed, line="line-3", site="plant-a"))
    journal.close()

    sub = mosquitto.subscribe("cellinspect/#", "-q", "1")
    try:
        with StationProcess(_station(tmp_path, mosquitto, count=3), "--until-source-ends") as proc:
            assert proc.wait_exit(60) == 0, proc.log_text()
        got = _check_complete_and_ordered(sub, tmp_path / "data")
    finally:
        sub.close()
    assert got[0]["result_id"] == crashed.result_id  # recovered before the new parts
    assert len(got) == 1 + proc.stopped()["status"]["parts"]
