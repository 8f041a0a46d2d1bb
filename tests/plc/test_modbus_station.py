"""The station over real Modbus TCP, driven by an independent pymodbus client (not our adapter).

The client plays the PLC step by step and records every distinct state of the station block it
reads, so the test checks the order of register changes as a PLC would see them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import cast

import pytest
from pymodbus.client import ModbusTcpClient

from cellinspect.entities import InspectedFrame
from cellinspect.plc.registers import (
    DEFECT_ACQUISITION_FAILED,
    DEFECT_CODES,
    DEFECT_DEADLINE_MISSED,
    Control,
    ErrorCode,
    ResultCode,
    Status,
    pack_u32,
    unpack_u32,
)
from cellinspect.plc.robot import PlaneMapping
from cellinspect.plc.station_interface import StationConfig
from cellinspect.plc.vision_state import VisionState, VisionStateMachine
from tests.fakes import BlobInspector

from .conftest import MakeStation, Station

EN = int(Control.TRIGGER_ENABLE)
TRIG = int(Control.TRIGGER)
ACK = int(Control.RESULTS_ACK)
S = Status


class Plc:
    """Raw pymodbus client plus a recorder of distinct station-block states."""

    def __init__(self, port: int) -> None:
        self.client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        assert self.client.connect()
        self.trace: list[tuple[int, ...]] = []

    def write(self, address: int, values: list[int]) -> None:
        rr = self.client.write_registers(address, values, device_id=1)
        assert not rr.isError(), rr

    def read_block(self) -> list[int]:
        rr = self.client.read_holding_registers(100, count=21, device_id=1)
        assert not rr.isError(), rr
        regs = list(rr.registers)
        key = (regs[0], regs[3], regs[4], regs[5])  # status, acq id, insp id, result
        if not self.trace or self.trace[-1] != key:
            self.trace.append(key)
        return regs

    def status(self) -> Status:
        return Status(self.read_block()[0])

    def wait_for(self, cond: Callable[[list[int]], bool], polls: int = 2000) -> list[int]:
        for _ in range(polls):
            regs = self.read_block()
            if cond(regs):
                return regs
            threading.Event().wait(0.002)
        raise AssertionError(f"condition never met; trace {self.trace}")

    def trigger(self, part_id: int, encoder: int, extra: int = 0) -> None:
        self.write(0, [EN | TRIG | extra, 0, 0, *pack_u32(part_id), *pack_u32(encoder)])

    def close(self) -> None:
        self.client.close()


@pytest.fixture
def gated(make_station: MakeStation) -> Iterator[tuple[Station, Plc, threading.Event]]:
    gate = threading.Event()
    st = make_station(StationConfig(deadline_ms=5000), inspector=BlobInspector(gate))
    plc = Plc(st.port)
    yield st, plc, gate
    gate.set()
    plc.close()


def test_handshake_order_of_register_changes(
    gated: tuple[Station, Plc, threading.Event],
) -> None:
    st, plc, gate = gated
    assert plc.status() == S.ONLINE
    plc.write(0, [EN])
    assert plc.status() == S.ONLINE | S.TRIGGER_READY
    plc.trigger(2, 0xABCD_0123)  # part 2 of the sample folder is a 'scratch'
    assert plc.status() == S.ONLINE | S.TRIGGER_ACK | S.BUSY
    plc.write(0, [EN])
    assert plc.status() == S.ONLINE | S.BUSY
    assert st.inspector.started.wait(5)
    gate.set()
    regs = plc.wait_for(lambda r: bool(r[0] & S.RESULTS_VALID))
    # The whole block is there in the very read that first shows RESULTS_VALID.
    assert Status(regs[0]) == S.ONLINE | S.TRIGGER_READY | S.RESULTS_VALID | S.INSPECTION_COMPLETED
    assert regs[5] == ResultCode.FAIL and regs[6] == DEFECT_CODES["scratch"]
    assert unpack_u32(regs[7:9]) == 2 and unpack_u32(regs[9:11]) == 0xABCD_0123
    assert regs[16] > 0  # processing time in ms
    plc.write(0, [EN | ACK])
    assert plc.status() == S.ONLINE | S.TRIGGER_READY | S.INSPECTION_COMPLETED
    plc.write(0, [EN])
    plc.status()
    # status word, acquisition id, inspection id, result code, in the order the PLC saw them
    assert plc.trace == [
        (S.ONLINE, 0, 0, 0),
        (S.ONLINE | S.TRIGGER_READY, 0, 0, 0),
        (S.ONLINE | S.TRIGGER_ACK | S.BUSY, 1, 0, 0),
        (S.ONLINE | S.BUSY, 1, 0, 0),
        (S.ONLINE | S.TRIGGER_READY | S.RESULTS_VALID | S.INSPECTION_COMPLETED, 1, 1, 2),
        (S.ONLINE | S.TRIGGER_READY | S.INSPECTION_COMPLETED, 1, 1, 2),
    ]


def test_trigger_while_busy_is_a_missed_trigger(
    gated: tuple[Station, Plc, threading.Event],
) -> None:
    st, plc, gate = gated
    plc.write(0, [EN])
    plc.trigger(1, 100)
    plc.write(0, [EN])
    plc.trigger(3, 300)
    regs = plc.read_block()
    assert Status(regs[0]) & S.MISSED_TRIGGER and regs[20] == 1
    assert regs[3] == 1  # acquisition id unchanged: part 3 was not taken
    plc.write(0, [EN])
    gate.set()
    regs = plc.wait_for(lambda r: bool(r[0] & S.RESULTS_VALID))
    assert unpack_u32(regs[7:9]) == 1
    assert st.inspector.calls == [1]


def test_writes_to_the_station_area_are_refused(make_station: MakeStation) -> None:
    st = make_station()
    plc = Plc(st.port)
    try:
        rr = plc.client.write_registers(100, [0xFFFF], device_id=1)
        assert rr.isError()
        rr = plc.client.read_holding_registers(200, count=1, device_id=1)
        assert rr.isError()
        assert plc.status() == S.ONLINE
    finally:
        plc.close()


def test_lost_plc_heartbeat_puts_outputs_in_safe_state(make_station: MakeStation) -> None:
    st = make_station(StationConfig(heartbeat_timeout_s=0.3, tick_s=0.05))
    plc = Plc(st.port)
    try:
        plc.write(0, [EN, 0, 0, 0, 0, 0, 0, 1])
        plc.trigger(1, 10)
        plc.write(0, [EN])
        regs = plc.wait_for(lambda r: bool(r[0] & S.RESULTS_VALID))
        assert regs[5] == ResultCode.PASS
        regs = plc.wait_for(lambda r: bool(r[0] & S.ERROR))  # heartbeat frozen at 1
        assert not Status(regs[0]) & (S.RESULTS_VALID | S.TRIGGER_READY | S.TRIGGER_ACK)
        assert regs[2] == ErrorCode.PLC_HEARTBEAT_LOST
        assert regs[5:18] == [0] * 13
        plc.trigger(2, 20)
        assert plc.read_block()[20] == 1  # a trigger in error is a missed trigger
        plc.write(0, [EN, 0, 0, 0, 0, 0, 0, 2])  # heartbeat back
        plc.write(0, [EN | int(Control.CLEAR_ERROR)])
        regs = plc.read_block()
        assert Status(regs[0]) & S.TRIGGER_READY and not Status(regs[0]) & S.ERROR
    finally:
        plc.close()


def test_plc_disconnect_and_reconnect_keeps_the_handshake(make_station: MakeStation) -> None:
    st = make_station()
    plc = Plc(st.port)
    plc.write(0, [EN])
    plc.trigger(1, 10)
    plc.close()  # the PLC drops off with the trigger high and a result pending
    plc = Plc(st.port)
    try:
        regs = plc.wait_for(lambda r: bool(r[0] & S.RESULTS_VALID))
        assert unpack_u32(regs[7:9]) == 1
        plc.write(0, [EN | ACK])
        plc.write(0, [EN])
        plc.trigger(2, 20)
        plc.write(0, [EN])
        regs = plc.wait_for(lambda r: bool(r[0] & S.RESULTS_VALID))
        assert unpack_u32(regs[7:9]) == 2 and regs[5] == ResultCode.FAIL
        assert regs[3] == 2
    finally:
        plc.close()


def test_dropped_frame_posts_fail_safe(make_station: MakeStation) -> None:
    st = make_station(drop_parts=(1,))  # part 1 is 'good', but its frame is lost
    plc = Plc(st.port)
    try:
        plc.write(0, [EN])
        plc.trigger(1, 10)
        plc.write(0, [EN])
        regs = plc.wait_for(lambda r: bool(r[0] & S.RESULTS_VALID))
        assert regs[5] == ResultCode.FAIL and regs[6] == DEFECT_ACQUISITION_FAILED
        assert st.inspector.calls == []
        rec = st.station.records[0]
        assert rec.frame_dropped and rec.code is ResultCode.FAIL
    finally:
        plc.close()


def test_deadline_overrun_posts_no_result_and_stays_busy(make_station: MakeStation) -> None:
    gate = threading.Event()
    results: list[object] = []
    st = make_station(StationConfig(deadline_ms=50), inspector=BlobInspector(gate))
    st.station.on_result = results.append
    plc = Plc(st.port)
    try:
        plc.write(0, [EN])
        plc.trigger(1, 10)  # a good part: the inspector would say PASS, but too late
        plc.write(0, [EN])
        regs = plc.wait_for(lambda r: bool(r[0] & S.RESULTS_VALID))
        assert regs[5] == ResultCode.NO_RESULT and regs[6] == DEFECT_DEADLINE_MISSED
        assert Status(regs[0]) & S.BUSY  # the inspector is still on part 1
        plc.write(0, [EN | ACK])
        plc.write(0, [EN])
        plc.trigger(3, 30)
        assert plc.read_block()[20] == 1  # refused while the late inspection runs
        plc.write(0, [EN])
        gate.set()
        plc.wait_for(lambda r: bool(r[0] & S.TRIGGER_READY))
        regs = plc.read_block()
        assert not Status(regs[0]) & S.RESULTS_VALID  # the late verdict is never posted
        assert regs[4] == 1
        rec = st.station.records[0]
        assert rec.late and rec.code is ResultCode.NO_RESULT
        plc.wait_for(lambda r: len(results) == 2)  # part 1, late; part 3, missed
        by_part = {x.result.part_id: x.result for x in results}  # type: ignore[attr-defined]
        late = by_part[1]
        assert late.verdict.value == "fail" and "deadline" in (late.error or "")
        assert by_part[3].error == "missed trigger: station busy"
    finally:
        plc.close()


def test_select_recipe_command_over_modbus(make_station: MakeStation) -> None:
    st = make_station()
    loaded: list[int] = []

    def factory() -> BlobInspector:
        loaded.append(2)
        return BlobInspector()

    st.station.recipes = {2: factory}
    plc = Plc(st.port)
    try:
        plc.write(1, [1, 2])
        plc.write(0, [EN | int(Control.EXECUTE_COMMAND)])
        regs = plc.wait_for(lambda r: bool(r[0] & S.COMMAND_COMPLETED))
        assert regs[1] == 2 and loaded == [2]
        plc.write(0, [EN])
        plc.write(1, [1, 7])
        plc.write(0, [EN | int(Control.EXECUTE_COMMAND)])
        regs = plc.wait_for(lambda r: bool(r[0] & S.COMMAND_FAILED))
        assert regs[2] == ErrorCode.RECIPE_NOT_FOUND and regs[1] == 2
    finally:
        plc.close()


def test_stop_waits_for_a_recipe_load_in_progress(make_station: MakeStation) -> None:
    """A recipe load (onnxruntime in production) must not outlive stop() on its thread."""
    st = make_station()
    started, stopping = threading.Event(), threading.Event()
    finished: list[str] = []

    def slow_factory() -> BlobInspector:
        started.set()
        stopping.wait(timeout=30)  # released as stop() is called
        finished.append("loaded")
        return BlobInspector()

    st.station.recipes = {2: slow_factory}
    st.station.on_recipe = lambda *_: None
    plc = Plc(st.port)
    try:
        plc.write(1, [1, 2])
        plc.write(0, [EN | int(Control.EXECUTE_COMMAND)])
        assert started.wait(timeout=30)
    finally:
        plc.close()
    st.station.handshake.stop_triggers()
    stopper = threading.Thread(target=st.station.stop)
    stopper.start()
    stopping.set()
    stopper.join()
    command = st.station._command_thread
    assert command is not None and not command.is_alive()
    assert finished == ["loaded"]


def test_a_bug_in_the_job_path_posts_no_result_only_after_recording_it(
    make_station: MakeStation,
) -> None:
    """An exception after inspection (here the pick-pose estimator) must not post an unrecorded
    verdict: the fail-safe row with the error is recorded first, then NO RESULT is posted."""
    recorded: list[InspectedFrame] = []
    st = make_station()
    st.station.record = recorded.append

    def broken_estimator(image: object) -> None:
        raise RuntimeError("pose estimator bug")

    st.station.plane = cast(PlaneMapping, object())  # any plane: the estimator fails first
    st.station.estimator = broken_estimator
    plc = Plc(st.port)
    try:
        plc.write(0, [EN])
        plc.trigger(2, 20)  # a scratched part: rejected, so a pick pose is wanted
        plc.write(0, [EN])
        regs = plc.wait_for(lambda r: bool(r[0] & S.RESULTS_VALID))
        assert regs[5] == ResultCode.NO_RESULT
        assert [r.result.part_id for r in recorded] == [2]
        row = recorded[0].result
        assert row.verdict.value == "fail" and "pose estimator bug" in (row.error or "")
        plc.write(0, [EN | ACK])
        plc.write(0, [EN])
        plc.wait_for(lambda r: bool(r[0] & S.TRIGGER_READY))  # the line goes on
        plc.trigger(1, 10)  # a good part: no pick pose, judged as usual
        plc.write(0, [EN])
        regs = plc.wait_for(lambda r: bool(r[0] & S.RESULTS_VALID))
        assert regs[5] == ResultCode.PASS
        assert [r.result.part_id for r in recorded] == [2, 1]
    finally:
        plc.close()


def test_record_failure_puts_opcua_in_error_too(make_station: MakeStation) -> None:
    """Disk full on a PLC-triggered part: Modbus shows RECORD_FAILED and the OPC UA state
    machine (what `run` wires to `on_record_failed`) goes to Error with the reason."""

    def full_disk(inspected: InspectedFrame) -> None:
        raise OSError(28, "No space left on device")

    machine = VisionStateMachine(["1"])
    machine.select_mode_automatic()
    st = make_station()
    st.station.record = full_disk
    st.station.on_record_failed = machine.fail
    plc = Plc(st.port)
    try:
        plc.write(0, [EN])
        plc.trigger(1, 10)
        plc.write(0, [EN])
        regs = plc.wait_for(lambda r: bool(r[0] & S.ERROR))
        assert regs[2] == ErrorCode.RECORD_FAILED
        assert not regs[0] & S.RESULTS_VALID  # the unrecorded verdict was not posted
        assert machine.state is VisionState.ERROR
        assert machine.error.startswith("RECORD_FAILED") and "No space left" in machine.error
    finally:
        plc.close()
