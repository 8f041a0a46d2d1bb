"""The station runtime in-process, on the safety rules: every frame of a free-running camera
is a stored row (dropped ones with their reason), a PLC that connects without a heartbeat puts
the station in its safe state in any trigger mode, and switching supervision off is warned."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pymodbus.client import ModbusTcpClient

from cellinspect.entities import Frame, InspectedFrame, SourceItem, Verdict
from cellinspect.plc.registers import ErrorCode, Status
from cellinspect.sources.base import SourceState
from cellinspect.station.camera import SourceCamera
from cellinspect.station.config import load_station
from cellinspect.station.runtime import StationRuntime
from tests.conftest import ROOT
from tests.fakes import BlobInspector
from tests.station.runner import write_station


class _LiveSource:
    """A live camera that delivers `count` frames as fast as it can, once `go` is set."""

    name = "live-test"

    def __init__(self, count: int, go: threading.Event) -> None:
        self.count = count
        self.go = go
        self._closed = threading.Event()

    @property
    def state(self) -> SourceState:
        return SourceState.CLOSED if self._closed.is_set() else SourceState.OPEN

    def frames(self) -> Iterator[SourceItem]:
        self.go.wait(timeout=60)
        for i in range(self.count):
            if self._closed.is_set():
                return
            image = np.full((32, 32, 3), 120, dtype=np.uint8)
            yield Frame(image=image, frame_id=i, source=self.name, part_id=i + 1)

    def close(self) -> None:
        self._closed.set()


def poll(cond: object, what: str, tries: int = 10_000) -> None:
    for _ in range(tries):
        if cond():  # type: ignore[operator]
            return
        threading.Event().wait(0.005)
    raise AssertionError(f"never happened: {what}")


def free_run_station(tmp_path: Path, **modbus: object) -> Path:
    return write_station(
        tmp_path / "station.yaml",
        trigger={"mode": "free_run"},
        modbus={"enabled": bool(modbus), "host": "127.0.0.1", "port": 0, **modbus},
        store={"enabled": False},
    )


def test_every_dropped_free_run_frame_is_a_fail_safe_row(tmp_path: Path) -> None:
    go, gate = threading.Event(), threading.Event()
    source = _LiveSource(30, go)
    camera = SourceCamera(source, live=True, every_frame=True, queue_size=2).start()  # type: ignore[arg-type]
    rows: list[InspectedFrame] = []
    inspector = BlobInspector(gate)
    runtime = StationRuntime(
        load_station(free_run_station(tmp_path)),
        camera=camera,
        on_result=rows.append,
        exit_when_source_ends=True,
        inspector_factory=lambda _n: inspector,
    )
    with runtime:
        go.set()
        poll(lambda: inspector.started.is_set() and camera.ended, "first part held, source read")
        gate.set()  # the station fell behind while the first part was held
        assert runtime.wait(120), "the source should end"
    by_part = {r.result.part_id: r.result for r in rows}
    assert sorted(by_part) == list(range(1, 31)) and len(rows) == 30  # each frame once
    dropped = [r for r in by_part.values() if r.error and "fell behind" in r.error]
    assert len(dropped) == camera.dropped >= 1
    assert all(r.verdict is Verdict.FAIL and r.station_id == "test-station" for r in dropped)
    assert len(inspector.calls) == 30 - len(dropped)  # dropped frames were never inspected


def test_free_run_station_whose_plc_never_heartbeats_stores_every_frame_as_not_inspected(
    tmp_path: Path,
) -> None:
    go = threading.Event()
    camera = SourceCamera(_LiveSource(5, go), live=True, every_frame=True, queue_size=8).start()  # type: ignore[arg-type]
    rows: list[InspectedFrame] = []
    inspector = BlobInspector()
    runtime = StationRuntime(
        load_station(free_run_station(tmp_path, heartbeat_timeout_s=0.3)),
        camera=camera,
        on_result=rows.append,
        exit_when_source_ends=True,
        inspector_factory=lambda _n: inspector,
    )
    with runtime:
        assert runtime.modbus_port is not None
        client = ModbusTcpClient("127.0.0.1", port=runtime.modbus_port, timeout=2, retries=0)
        assert client.connect()
        try:
            regs: list[int] = []

            def in_error() -> bool:
                regs[:] = client.read_holding_registers(100, count=3, device_id=1).registers
                return bool(regs[0] & Status.ERROR)

            poll(in_error, "heartbeat lost although HR7 was never written")
            assert regs[2] == ErrorCode.PLC_HEARTBEAT_LOST
            go.set()
            assert runtime.wait(120), "the source should end"
        finally:
            client.close()
    assert inspector.calls == []  # in its safe state the station judges nothing
    assert sorted(r.result.part_id or 0 for r in rows) == [1, 2, 3, 4, 5]
    for r in rows:
        assert r.result.verdict is Verdict.FAIL
        assert r.result.error == "not inspected: station in error (PLC_HEARTBEAT_LOST)"


def test_supervision_switched_off_is_warned_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_station(
        tmp_path / "station.yaml",
        source={"type": "folder", "path": str(ROOT / "sample_images"), "pattern": "*.bmp"},
        trigger={"mode": "software"},
        modbus={"enabled": True, "host": "127.0.0.1", "port": 0, "heartbeat_timeout_s": None},
        store={"enabled": False},
    )
    with (
        caplog.at_level(logging.WARNING),
        StationRuntime(load_station(path), inspector_factory=lambda _n: BlobInspector()),
    ):
        pass
    assert any("heartbeat (HR7) is not supervised" in r.getMessage() for r in caplog.records)
