"""The fault suite: the real station (`cellinspect run` subprocess), one injected fault a case.

Each case drives the station over Modbus TCP the way a PLC does (`HandshakePlc`, `PlcLoop`
from tests/station) and then checks the four figures of docs/benchmarks/faults.md:

- results lost 0: every result block the PLC read is in the store (after a restart where the
  station was killed), same part, same verdict;
- duplicates 0: no part id and no result id stored twice;
- defective passed 0: no stored PASS for a part the synthetic source rendered as defective
  (ground truth: `rendered_catalog(...).labels`; the PLC's part id names the part rendered),
  and no PASS at all for a part that was not inspected;
- error clear: the Modbus error code, result code, stored reason or alarm the case expects.

Waits are bounded guards against a hang; nothing is asserted about how long anything took.
"""

from __future__ import annotations

import json
import random
import resource
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from cellinspect.entities import Verdict
from cellinspect.plc.modbus_adapter import ModbusClient
from cellinspect.plc.registers import Control, ErrorCode, Reg, ResultCode, Status
from cellinspect.plc.sim_camera import rendered_catalog
from cellinspect.settings import load_settings
from cellinspect.storage.factory import open_store
from cellinspect.storage.records import StoredResult
from tests.servers.postgres import PostgresServer, postgres_fixture
from tests.station.plc_loop import PlcLoop, restart_and_stop
from tests.station.runner import StationProcess, stored_results
from tests.station.test_run_plc import (
    DEFECT_RATE,
    PART_COUNT,
    RECIPE_1,
    SAMPLE,
    SEED,
    HandshakePlc,
    PlcRead,
    _reg,
    assert_same_verdict,
    by_part,
    hot_folder_station,
    plc_station,
)

LABELS = rendered_catalog(PART_COUNT, SEED, DEFECT_RATE).labels
GUARD_S = 60.0


# --------------------------------------------------------------------------- the figures


def figures(reads: list[PlcRead], stored: list[StoredResult]) -> dict[str, int]:
    """results lost, duplicates, defective passed: what docs/benchmarks/faults.md tabulates."""
    part_ids = [s.result.part_id for s in stored]
    result_ids = [s.result.result_id for s in stored]
    duplicates = (len(part_ids) - len(set(part_ids))) + (len(result_ids) - len(set(result_ids)))
    parts = {s.result.part_id: s for s in stored}
    lost = 0
    for read in reads:
        kept = parts.get(read.part_id)
        if kept is None:
            lost += 1
            continue
        assert_same_verdict(read, kept)
    defective_passed = sum(
        1
        for s in stored
        if s.result.verdict is Verdict.PASS
        and (
            s.result.part_id is None
            or not 1 <= s.result.part_id <= PART_COUNT
            or LABELS[s.result.part_id - 1] != "good"
            or s.result.error is not None
        )
    )
    return {"lost": lost, "duplicates": duplicates, "defective_passed": defective_passed}


def assert_clean(reads: list[PlcRead], stored: list[StoredResult]) -> None:
    assert figures(reads, stored) == {"lost": 0, "duplicates": 0, "defective_passed": 0}


def wait_error(plc: HandshakePlc) -> ErrorCode:
    inputs = plc.wait("ERROR", lambda r: bool(Status(r[0]) & Status.ERROR))
    return ErrorCode(_reg(inputs, Reg.ERROR_CODE)[0])


def recipe_copy(folder: Path, name: str, **runtime: Any) -> Path:
    """The flange recipe with absolute paths and `runtime` keys replaced."""
    data = yaml.safe_load(RECIPE_1.read_text(encoding="utf-8"))
    base = RECIPE_1.parent

    def absolute(value: str) -> str:
        return str((base / value).resolve())

    data["name"] = name
    data["source"]["path"] = absolute(data["source"]["path"])
    for key in ("calibration", "plane_calibration", "handeye_calibration"):
        data[key] = absolute(data[key])
    for model in data["models"]:
        model["path"] = absolute(model["path"])
    data.setdefault("runtime", {}).update(runtime)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def put(inbox: Path, name: str, data: bytes) -> None:
    tmp = inbox / f".{name}.tmp"
    tmp.write_bytes(data)
    tmp.rename(inbox / name)


# --------------------------------------------------------------------------- kill -9


@pytest.mark.parametrize(
    ("seed", "db_locked"),
    [(1, True), (2, False), (3, True), (11, False), (12, True), (13, False)],
)
def test_kill_9_at_a_random_point(tmp_path: Path, seed: int, db_locked: bool) -> None:
    """kill -9 after a seeded number of parts plus a seeded pause (often mid-part)."""
    station = plc_station(tmp_path)
    data = tmp_path / "data"
    rng = random.Random(seed)
    lock: sqlite3.Connection | None = None
    with StationProcess(station) as proc:
        proc.wait_running()
        if db_locked:
            lock = sqlite3.connect(data / "results.db", timeout=30.0, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
        loop = PlcLoop(proc.port("modbus"))
        loop.start()
        assert loop.first_read.wait(120.0), proc.log_text()
        target = len(loop.reads) + rng.randint(1, 10)
        while len(loop.reads) < target and loop.is_alive():
            loop.first_read.clear()
            loop.first_read.wait(GUARD_S)
        loop.halt.wait(rng.uniform(0.0, 0.4))
        proc.proc.kill()
        proc.proc.wait()
        loop.join(timeout=120.0)
    if lock is not None:
        lock.rollback()
        lock.close()
    assert loop.reads, "the PLC read nothing before the kill"
    assert loop.ended_by is not None and loop.ended_by != "error"  # the link went, no code
    journal = data / "journal"
    assert any(journal.glob("results-*.jsonl")), "the killed station left no journal"
    if db_locked:  # locked before the first trigger: only the journal holds the verdicts
        assert stored_results(data) == []
    assert restart_and_stop(station) == 0
    assert_clean(loop.reads, stored_results(data))
    assert not any(journal.glob("results-*.jsonl"))  # replayed and committed: pruned


# --------------------------------------------------------------------------- storage


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (160_000, 160_000))


def test_disk_full(tmp_path: Path) -> None:
    """RLIMIT_FSIZE 160 KB in the child (EFBIG as ENOSPC): RECORD_FAILED, exit 3."""
    station = plc_station(tmp_path)
    data = tmp_path / "data"
    open_store(load_settings(None, data_dir=data)).close()
    with StationProcess(station, preexec_fn=_limit_file_size) as proc:
        proc.wait_running()
        loop = PlcLoop(proc.port("modbus"))
        loop.run()
        code = proc.stop()
        stopped = proc.stopped()["status"]
    assert loop.ended_by == "error" and loop.error_code is ErrorCode.RECORD_FAILED
    assert code == 3
    assert stopped["results_lost"] >= 1
    assert any(a.startswith("RECORD_FAILED") for a in stopped["alarms"])
    assert stopped["links"]["journal"]["state"] == "failed"
    assert loop.reads, "the disk filled before the PLC read anything"
    assert restart_and_stop(station) == 0
    stored = stored_results(data)
    assert_clean(loop.reads, stored)
    assert len(stored) <= len(loop.reads) + 1  # at most the refused part besides (never read)


def test_db_locked(tmp_path: Path) -> None:
    """An exclusive lock on results.db while parts run: verdicts wait in the journal."""
    station = plc_station(tmp_path)
    data = tmp_path / "data"
    with StationProcess(station) as proc:
        proc.wait_running()
        lock = sqlite3.connect(data / "results.db", timeout=30.0, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        plc = HandshakePlc(proc.port("modbus"))
        try:
            reads = [plc.inspect(pid) for pid in range(1, 9)]
            lock.rollback()  # the database comes back while the station runs
            lock.close()
            reads += [plc.inspect(pid) for pid in range(9, 13)]
        finally:
            plc.close()
        assert proc.stop() == 0, proc.log_text()
        stopped = proc.stopped()["status"]
    assert stopped["links"]["store"]["dropped"] == 0
    assert stopped["results_lost"] == 0
    stored = stored_results(data)
    assert len(stored) == len(reads)
    assert_clean(reads, stored)


# --------------------------------------------------------------------------- the PLC link


def test_plc_disconnect_mid_part_and_reconnect(tmp_path: Path) -> None:
    """The PLC drops its socket after a trigger; a new connection reads the posted result."""
    station = plc_station(tmp_path)
    with StationProcess(station) as proc:
        proc.wait_running()
        port = proc.port("modbus")
        plc = HandshakePlc(port)
        reads = [plc.inspect(pid) for pid in (1, 2, 3)]
        before = plc.inspection_id
        plc.trigger(4)
        plc.client.close()  # mid-part: the trigger is still high, the result not read
        plc = HandshakePlc(port)
        try:
            plc.inspection_id = before
            plc.drop_trigger()
            reads.append(plc.take_result())
            reads += [plc.inspect(pid) for pid in (5, 6)]
        finally:
            plc.close()
        assert proc.stop() == 0, proc.log_text()
    assert [r.part_id for r in reads] == [1, 2, 3, 4, 5, 6]
    stored = stored_results(tmp_path / "data")
    assert len(stored) == len(reads)
    assert_clean(reads, stored)


def test_no_heartbeat(tmp_path: Path) -> None:
    """A PLC that connects and never writes HR7: PLC_HEARTBEAT_LOST, nothing inspected."""
    station = plc_station(
        tmp_path,
        modbus={"enabled": True, "host": "127.0.0.1", "port": 0, "heartbeat_timeout_s": 0.5},
    )
    with StationProcess(station) as proc:
        proc.wait_running()
        plc = HandshakePlc(proc.port("modbus"))
        try:
            assert wait_error(plc) is ErrorCode.PLC_HEARTBEAT_LOST
            assert not plc.status() & Status.TRIGGER_READY
            plc.client.write(Reg.PART_ID, [0, 1, 0, 0])
            plc.set(Control.TRIGGER)  # a PLC that ignores the error and triggers anyway
            plc.wait("missed trigger", lambda r: _reg(r, Reg.MISSED_TRIGGERS)[0] >= 1)
            assert not plc.status() & Status.RESULTS_VALID
        finally:
            plc.close()
        assert proc.stop() == 0, proc.log_text()
        stopped = proc.stopped()["status"]
    # The error shows on Modbus (ERROR + HR102 = 1, asserted above) and as a status alarm.
    stored = stored_results(tmp_path / "data")
    assert any(a.startswith("PLC_HEARTBEAT_LOST") for a in stopped["alarms"]), stopped
    assert stopped["parts"] == 0
    assert all(s.result.verdict is not Verdict.PASS for s in stored)
    assert all(s.result.error for s in stored)  # a missed-trigger row at most, never judged
    assert_clean([], stored)


class Heartbeat(threading.Thread):
    """Writes HR7 +1 every 50 ms over its own connection until frozen."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.client = ModbusClient("127.0.0.1", port, timeout_s=5.0)
        self.client.connect()
        self.freeze = threading.Event()

    def run(self) -> None:
        beat = 0
        try:
            while not self.freeze.wait(0.05):
                beat = (beat + 1) & 0xFFFF
                self.client.write(Reg.PLC_HEARTBEAT, [beat])
        finally:
            self.client.close()


def test_heartbeat_freezes_mid_run(tmp_path: Path) -> None:
    """Heartbeat written while parts run, then frozen: PLC_HEARTBEAT_LOST, no more parts."""
    station = plc_station(
        tmp_path,
        modbus={"enabled": True, "host": "127.0.0.1", "port": 0, "heartbeat_timeout_s": 2.0},
    )
    with StationProcess(station) as proc:
        proc.wait_running()
        port = proc.port("modbus")
        heart = Heartbeat(port)
        heart.start()
        plc = HandshakePlc(port)
        try:
            reads = [plc.inspect(pid) for pid in range(1, 7)]
            heart.freeze.set()
            heart.join(timeout=GUARD_S)
            assert wait_error(plc) is ErrorCode.PLC_HEARTBEAT_LOST
        finally:
            heart.freeze.set()
            plc.close()
        assert proc.stop() == 0, proc.log_text()
        stopped = proc.stopped()["status"]
    # The error shows on Modbus (ERROR + HR102 = 1, asserted above); the status alarms do
    # not list it (see docs/benchmarks/faults.md).
    stored = stored_results(tmp_path / "data")
    assert len(stored) == len(reads) == stopped["parts"]
    assert_clean(reads, stored)


# --------------------------------------------------------------------------- camera and decisions


def test_camera_drop_and_reconnect(tmp_path: Path) -> None:
    """A hot folder that delivers nothing (camera gone): frame timeout, fail-safe posted and
    stored; frames again: the next part is inspected."""
    station, inbox = hot_folder_station(tmp_path, frame_timeout_ms=1500)
    with StationProcess(station) as proc:
        proc.wait_running()
        plc = HandshakePlc(proc.port("modbus"))
        try:
            plc.trigger(1)
            plc.drop_trigger()
            put(inbox, "a.bmp", SAMPLE.read_bytes())
            first = plc.take_result()
            plc.trigger(2)  # nothing arrives: the camera dropped out
            plc.drop_trigger()
            lost_frame = plc.take_result()
            plc.trigger(3)  # and came back
            plc.drop_trigger()
            put(inbox, "b.bmp", SAMPLE.read_bytes())
            back = plc.take_result()
        finally:
            plc.close()
        assert proc.stop() == 0, proc.log_text()
    assert first.code is not ResultCode.NO_RESULT and back.code is not ResultCode.NO_RESULT
    assert lost_frame.code is ResultCode.NO_RESULT
    parts = by_part(stored_results(tmp_path / "data"))
    assert parts.keys() == {1, 2, 3}
    for read in (first, lost_frame, back):
        assert_same_verdict(read, parts[read.part_id])
    timed_out = parts[2].result
    # The frame timeout (1.5 s) outlasts the recipe's 500 ms deadline: NO RESULT to the PLC.
    assert timed_out.verdict is not Verdict.PASS and "NO RESULT" in (timed_out.error or "")
    assert parts[1].result.error is None and parts[3].result.error is None


def test_corrupt_images(tmp_path: Path) -> None:
    """A truncated BMP and a text file named .bmp: fail-safe rows, never PASS."""
    station, inbox = hot_folder_station(tmp_path, frame_timeout_ms=30_000)
    sample = SAMPLE.read_bytes()
    with StationProcess(station) as proc:
        proc.wait_running()
        plc = HandshakePlc(proc.port("modbus"))
        reads: list[PlcRead] = []
        try:
            for pid, name, data in (
                (1, "a.bmp", sample[: len(sample) // 3]),
                (2, "b.bmp", b"not an image at all\n"),
                (3, "c.bmp", sample),
            ):
                plc.trigger(pid)
                plc.drop_trigger()
                put(inbox, name, data)
                reads.append(plc.take_result())
        finally:
            plc.close()
        assert proc.stop() == 0, proc.log_text()
    parts = by_part(stored_results(tmp_path / "data"))
    assert parts.keys() == {1, 2, 3}
    for read in reads:
        assert_same_verdict(read, parts[read.part_id])
    for pid in (1, 2):
        assert reads[pid - 1].code is not ResultCode.PASS
        assert parts[pid].result.verdict is not Verdict.PASS and parts[pid].result.error
    assert parts[3].result.error is None


def test_deadline_overrun(tmp_path: Path) -> None:
    """runtime.deadline_ms 1: the PLC gets NO RESULT; the store keeps a non-PASS row."""
    recipe = recipe_copy(tmp_path, "flange-1ms", deadline_ms=1)
    station = plc_station(tmp_path, recipes={1: recipe})
    with StationProcess(station) as proc:
        proc.wait_running()
        plc = HandshakePlc(proc.port("modbus"))
        try:
            reads = [plc.inspect(pid) for pid in range(1, 5)]
        finally:
            plc.close()
        assert proc.stop() == 0, proc.log_text()
    assert all(r.code is ResultCode.NO_RESULT for r in reads), reads
    stored = stored_results(tmp_path / "data")
    assert len(stored) == len(reads)
    assert_clean(reads, stored)  # assert_same_verdict: NO RESULT in the stored error


# --------------------------------------------------------------------------- database server


postgres = postgres_fixture("function")


def wait_reads(loop: PlcLoop, count: int) -> None:
    """Until the PLC has read `count` results (or its loop ended)."""
    while len(loop.reads) < count and loop.is_alive():
        loop.first_read.clear()
        loop.first_read.wait(GUARD_S)


def wait_store_state(proc: StationProcess, state: str) -> dict[str, Any]:
    """The next status record whose store link is in `state`."""
    while True:
        status = proc.wait_for("status", timeout=GUARD_S)["status"]
        if status["links"]["store"]["state"] == state:
            return dict(status)


def test_db_server_down(
    tmp_path: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The station stores into PostgreSQL (password in CELLINSPECT_DB_URL); the server is
    crashed (`pg_ctl stop -m immediate`) while the PLC keeps triggering, then restarted. The
    journal keeps every verdict meanwhile; the writer backs off and replays it once back."""
    monkeypatch.setenv("CELLINSPECT_DB_URL", postgres.url_string(postgres.create_database()))
    station = plc_station(tmp_path)
    data = tmp_path / "data"
    with StationProcess(station) as proc:
        proc.wait_running()
        loop = PlcLoop(proc.port("modbus"))
        loop.start()
        wait_reads(loop, 15)
        postgres.stop("immediate")
        before_stop = len(loop.reads)
        outage = proc.wait_for(msg="result store unreachable", timeout=GUARD_S)
        failing = wait_store_state(proc, "failing")
        wait_reads(loop, before_stop + 40)  # parts judged with the server down
        postgres.restart()
        at_restart = len(loop.reads)
        wait_store_state(proc, "ok")
        wait_reads(loop, at_restart + 15)
        loop.halt.set()
        loop.join(timeout=GUARD_S)
        code = proc.stop()
        stopped = proc.stopped()["status"]
        log_lines = [json.dumps(r) for r in proc.records] + proc.other_lines
    assert loop.ended_by is None, loop.ended_by  # the PLC saw no error: nothing to clear
    assert at_restart - before_stop >= 40
    assert code == 0, "\n".join(log_lines[-40:])
    assert outage["level"] == "error"
    assert failing["links"]["store"]["deferred"] >= 1
    assert any(a.startswith("STORE_UNREACHABLE") for a in failing["alarms"])
    assert not any(a.startswith("STORE_UNREACHABLE") for a in stopped["alarms"])
    store_link = stopped["links"]["store"]
    assert (store_link["state"], store_link["dropped"], store_link["spilled"]) == ("ok", 0, 0)
    assert store_link["replayed"] >= 1  # the parts judged while the server was down
    assert stopped["results_lost"] == 0 and stopped["links"]["journal"]["pending"] == 0
    assert not any(postgres.password in line for line in log_lines)  # no secret logged
    assert not (data / "results.db").exists()  # every result went to the server
    assert not any((data / "journal").glob("results-*.jsonl"))  # replayed and pruned
    stored = stored_results(data)  # CELLINSPECT_DB_URL: read back from the server
    assert len(stored) >= len(loop.reads)
    assert_clean(loop.reads, stored)
