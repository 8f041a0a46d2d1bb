"""The Modbus server's guards with real sockets and real pymodbus clients: connection limit,
allow-list, bounded logging of refusals and malformed frames, and heartbeat supervision that
starts with the first connection."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from collections.abc import Callable, Iterator

import pytest
from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ModbusException

from cellinspect.entities import InspectedFrame, Verdict
from cellinspect.plc import modbus_adapter
from cellinspect.plc.modbus_adapter import ModbusServer, RateLimit
from cellinspect.plc.register_image import RegisterImage
from cellinspect.plc.registers import Control, ErrorCode, Status, pack_u32
from cellinspect.plc.station_interface import StationConfig
from tests.fakes import BlobInspector

from .conftest import MakeStation

EN = int(Control.TRIGGER_ENABLE)
TRIG = int(Control.TRIGGER)


def poll(cond: Callable[[], bool], what: str, tries: int = 5000) -> None:
    """Wait for `cond` by polling (no clock in the assertion; the bound only stops a hang)."""
    for _ in range(tries):
        if cond():
            return
        threading.Event().wait(0.002)
    raise AssertionError(f"never happened: {what}")


def reads_ok(port: int) -> bool:
    """A real pymodbus client connects and reads the status block."""
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    try:
        if not client.connect():
            return False
        rr = client.read_holding_registers(100, count=5, device_id=1)
        return not rr.isError()
    except (ModbusException, OSError):  # refused: EOF or reset
        return False
    finally:
        client.close()


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server ends the connection without a word (EOF or reset)."""
    sock.settimeout(10.0)  # hang guard only
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ModbusServer]]:
    servers: list[ModbusServer] = []

    def make(**kwargs: object) -> ModbusServer:
        server = ModbusServer(RegisterImage(), host="127.0.0.1", port=0, **kwargs)  # type: ignore[arg-type]
        server.start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


def test_one_connection_over_the_limit_is_closed_and_its_slot_comes_back(
    server_factory: Callable[..., ModbusServer],
) -> None:
    server = server_factory(max_connections=2)
    held = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(2)]
    try:
        poll(lambda: server.guard.active == 2, "two connections admitted")
        extra = socket.create_connection(("127.0.0.1", server.port))
        assert closed_by_server(extra)
        extra.close()
        assert not reads_ok(server.port)  # a real client is refused the same way
        assert server.guard.refused == 2
        held.pop().close()
        poll(lambda: server.guard.active == 1, "a slot freed by a disconnect")
        assert reads_ok(server.port)
    finally:
        for s in held:
            s.close()


def test_a_client_outside_the_allow_list_is_refused(
    server_factory: Callable[..., ModbusServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cellinspect.plc.modbus_adapter")
    refused = server_factory(allowed_clients=["10.9.8.0/24", "fd00::/8"])
    for _ in range(20):
        sock = socket.create_connection(("127.0.0.1", refused.port))
        assert closed_by_server(sock)
        sock.close()
    assert refused.guard.refused == 20 and refused.guard.accepted == 0
    assert not reads_ok(refused.port)
    lines = [r.getMessage() for r in caplog.records if "refused connection" in r.getMessage()]
    assert 1 <= len(lines) <= 5  # rate-limited: 21 refusals, a handful of lines
    assert "127.0.0.1" in lines[0] and "allowed_clients" in lines[0]
    allowed = server_factory(allowed_clients=["127.0.0.0/8"])
    assert reads_ok(allowed.port)


def test_malformed_frames_are_logged_at_a_bounded_rate_without_hex_dumps(
    server_factory: Callable[..., ModbusServer],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(modbus_adapter.PYMODBUS_LOG_FILTER, "limit", RateLimit(5, 60.0))
    caplog.set_level(logging.WARNING)
    server = server_factory(max_connections=200)
    for i in range(100):
        # A read request with a bad MBAP protocol id (each different, so pymodbus's own
        # "Repeating...." folding does not apply), one connection each.
        with socket.create_connection(("127.0.0.1", server.port)) as sock:
            sock.sendall(struct.pack(">HHHBBHH", i, i + 1, 6, 1, 3, 100, 1))
    poll(lambda: server.guard.accepted == 100 and server.guard.active == 0, "all 100 handled")
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("pymodbus")]
    assert 1 <= len(lines) <= 10
    assert all(">>>>>" not in line and len(line) < 200 for line in lines)
    assert "Invalid Modbus protocol id" in lines[0]
    assert modbus_adapter.PYMODBUS_LOG_FILTER.limit.suppressed_total >= 90
    assert reads_ok(server.port)  # and the server still answers


def test_rate_limit_counts_what_it_suppresses() -> None:
    now = [0.0]
    limit = RateLimit(burst=2, window_s=10.0, clock=lambda: now[0])
    assert [limit.allow() for _ in range(4)] == [(True, 0), (True, 0), (False, 0), (False, 0)]
    now[0] = 10.0
    assert limit.allow() == (True, 2)
    assert limit.suppressed_total == 2


def test_a_plc_that_connects_and_never_heartbeats_is_supervised(
    make_station: MakeStation,
) -> None:
    st = make_station(
        StationConfig(heartbeat_timeout_s=0.3, tick_s=0.05), supervise_from_connect=True
    )
    client = ModbusTcpClient("127.0.0.1", port=st.port, timeout=2, retries=0)
    assert client.connect()
    try:
        assert client.write_registers(0, [EN], device_id=1).isError() is False
        status: list[int] = []

        def in_error() -> bool:
            status[:] = client.read_holding_registers(100, count=3, device_id=1).registers
            return bool(status[0] & Status.ERROR)

        poll(in_error, "heartbeat loss without any HR7 write")
        assert status[2] == ErrorCode.PLC_HEARTBEAT_LOST
        assert not status[0] & Status.TRIGGER_READY
        assert st.station.handshake.refusal() == "station in error (PLC_HEARTBEAT_LOST)"
    finally:
        client.close()


def test_a_missed_trigger_is_a_stored_fail_safe_row(make_station: MakeStation) -> None:
    gate = threading.Event()
    rows: list[InspectedFrame] = []
    st = make_station(
        StationConfig(deadline_ms=5000, station_id="cell-9"),
        inspector=BlobInspector(gate),
        on_result=rows.append,
    )
    client = ModbusTcpClient("127.0.0.1", port=st.port, timeout=2, retries=0)
    assert client.connect()
    try:
        client.write_registers(0, [EN, 0, 0, *pack_u32(1), *pack_u32(100)], device_id=1)
        client.write_registers(0, [EN | TRIG], device_id=1)
        client.write_registers(0, [EN, 0, 0, *pack_u32(3), *pack_u32(300)], device_id=1)
        client.write_registers(0, [EN | TRIG], device_id=1)  # part 1 still inspecting
        poll(lambda: any(r.result.part_id == 3 for r in rows), "a row for the missed part")
        gate.set()
        poll(lambda: any(r.result.part_id == 1 for r in rows), "part 1's own result")
    finally:
        gate.set()
        client.close()
    missed = next(r.result for r in rows if r.result.part_id == 3)
    assert missed.verdict is Verdict.FAIL
    assert missed.reasons == ("missed trigger: station busy",)
    assert missed.error == "missed trigger: station busy"
    assert (missed.encoder, missed.station_id) == (300, "cell-9")
    assert st.station.handshake.counters.missed_triggers == 1
    assert st.inspector.calls == [1]  # the missed part was never inspected
