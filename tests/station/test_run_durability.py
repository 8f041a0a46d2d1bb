"""`cellinspect run` loses no verdict a PLC has read: kill -9 at any moment, a full disk.

The station is a real subprocess driven over Modbus TCP by the documented handshake
(`HandshakePlc`). kill -9 lands at a seeded moment while the PLC triggers, with the SQLite
database locked by the test (an exclusive transaction held open) for some seeds, so results
sit only in the journal; the station is then started again and stopped, and every verdict
the PLC read must be in the store exactly once. A full disk is RLIMIT_FSIZE in the child:
writes past the limit fail with EFBIG as they would with ENOSPC.
"""

from __future__ import annotations

import random
import resource
import sqlite3
import threading
from pathlib import Path

import pytest

from cellinspect.plc.registers import ErrorCode, Reg, Status
from cellinspect.settings import load_settings
from cellinspect.storage.factory import open_store
from tests.station.runner import StationProcess, stored_results
from tests.station.test_run_plc import (
    HandshakePlc,
    PlcRead,
    _reg,
    assert_same_verdict,
    by_part,
    plc_station,
)


class PlcLoop(threading.Thread):
    """Inspects parts 1, 2, 3, ... through the handshake until told to stop or the station
    goes away or into ERROR; `reads` holds every result block the PLC read."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.plc = HandshakePlc(port)
        self.reads: list[PlcRead] = []
        self.first_read = threading.Event()
        self.halt = threading.Event()
        self.error_code: ErrorCode | None = None
        self.ended_by: str | None = None

    def run(self) -> None:
        part = 0
        try:
            while not self.halt.is_set():
                part += 1
                inputs = self.plc.wait(
                    "TRIGGER_READY or ERROR",
                    lambda r: bool(Status(r[0]) & (Status.TRIGGER_READY | Status.ERROR)),
                )
                if Status(inputs[0]) & Status.ERROR:
                    self.error_code = ErrorCode(_reg(inputs, Reg.ERROR_CODE)[0])
                    self.ended_by = "error"
                    return
                self.plc.trigger(part)
                self.plc.drop_trigger()
                inputs = self.plc.wait(
                    "result or ERROR",
                    lambda r: bool(Status(r[0]) & (Status.RESULTS_VALID | Status.ERROR)),
                )
                if Status(inputs[0]) & Status.ERROR:
                    self.error_code = ErrorCode(_reg(inputs, Reg.ERROR_CODE)[0])
                    self.ended_by = "error"
                    return
                self.reads.append(self.plc.take_result())
                self.first_read.set()
        except Exception as err:  # the station was killed under the PLC's feet
            self.ended_by = f"{type(err).__name__}: {err}"
        finally:
            self.plc.close()


def restart_and_stop(station: Path) -> int:
    """The station's own start path replays the journal; a clean stop leaves it empty."""
    with StationProcess(station) as proc:
        proc.wait_running()
        return proc.stop()


@pytest.mark.parametrize(("seed", "db_locked"), [(1, True), (2, False), (3, True)])
def test_kill_9_loses_no_verdict_the_plc_read(tmp_path: Path, seed: int, db_locked: bool) -> None:
    station = plc_station(tmp_path)
    data = tmp_path / "data"
    rng = random.Random(seed)
    lock: sqlite3.Connection | None = None
    with StationProcess(station) as proc:
        proc.wait_running()
        if db_locked:  # the station migrated the database at start; now it stalls
            lock = sqlite3.connect(data / "results.db", timeout=30.0, isolation_level=None)
            lock.execute("BEGIN EXCLUSIVE")
        loop = PlcLoop(proc.port("modbus"))
        loop.start()
        assert loop.first_read.wait(120.0), proc.log_text()
        # The kill moment: a seeded number of further reads, then a seeded pause (mid-part).
        target = len(loop.reads) + rng.randint(1, 8)
        while len(loop.reads) < target and loop.is_alive():
            loop.first_read.clear()
            loop.first_read.wait(60.0)
        loop.halt.wait(rng.uniform(0.0, 0.3))
        proc.proc.kill()
        proc.proc.wait()
        loop.join(timeout=120.0)
    if lock is not None:
        lock.rollback()
        lock.close()
    reads = loop.reads
    assert reads, "the PLC read nothing before the kill"
    journal = data / "journal"
    assert any(journal.glob("results-*.jsonl")), "the killed station left no journal"
    if db_locked:  # locked before the first trigger: only the journal holds the verdicts
        assert stored_results(data) == []

    assert restart_and_stop(station) == 0
    stored = stored_results(data)
    parts = by_part(stored)  # no part twice
    assert len({s.result.result_id for s in stored}) == len(stored)
    for read in reads:
        assert read.part_id in parts, f"part {read.part_id}: the PLC read {read.code.name}"
        assert_same_verdict(read, parts[read.part_id])
    assert not any(journal.glob("results-*.jsonl"))  # replayed and committed: pruned


def _limit_file_size() -> None:
    """In the child: any file write past 160 KB fails (EFBIG), like a disk that filled up."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (160_000, 160_000))


def test_a_full_disk_stops_triggers_and_loses_no_read_verdict(tmp_path: Path) -> None:
    """The station records until the disk is full, then refuses triggers with RECORD_FAILED
    instead of judging parts it cannot record, and exits 3; every verdict read is stored
    exactly once after a restart with room again."""
    station = plc_station(tmp_path)
    data = tmp_path / "data"
    open_store(load_settings(None, data_dir=data)).close()  # migrated before the disk fills
    with StationProcess(station, preexec_fn=_limit_file_size) as proc:
        proc.wait_running()
        loop = PlcLoop(proc.port("modbus"))
        loop.run()  # in this thread: until the station refuses with ERROR
        assert loop.ended_by == "error", (loop.ended_by, proc.log_text())
        assert loop.error_code is ErrorCode.RECORD_FAILED
        code = proc.stop()
        stopped = proc.stopped()["status"]
    assert code == 3, proc.log_text()
    assert stopped["results_lost"] >= 1
    assert any(a.startswith("RECORD_FAILED") for a in stopped["alarms"]), stopped["alarms"]
    assert stopped["links"]["journal"]["state"] == "failed"
    assert loop.reads, "the disk filled before the PLC read anything"

    assert restart_and_stop(data.parent / "station.yaml") == 0
    parts = by_part(stored_results(data))
    for read in loop.reads:
        assert read.part_id in parts, f"part {read.part_id}: the PLC read {read.code.name}"
        assert_same_verdict(read, parts[read.part_id])
    assert len(parts) <= len(loop.reads) + 1  # at most the refused part besides (never read)
