"""The only module that imports pymodbus: a Modbus TCP server over a RegisterImage, and a client.

pymodbus is pinned to one minor series (3.16.x) because its server and datastore API changes
between minor releases; an upgrade touches this file only. The server keeps no registers of
its own that matter: every request runs the device `action` hook, which serves reads from the
:class:`RegisterImage` and routes writes through :meth:`RegisterImage.plc_write`.

Modbus has no authentication, so the server guards what it can: at most `max_connections`
clients at once, optionally only from `allowed_clients`, each refusal logged at a bounded
rate. pymodbus appends its last 20 frames as hex (about 1.4 KB) to every error it logs, such
as one per malformed frame; a filter on its logger drops that dump and bounds the rate, so a
noisy or hostile client cannot fill the station's log.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from typing import Any, cast

from pymodbus.client import ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.server import ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler
from pymodbus.simulator import DataType, SimData, SimDevice

from cellinspect.plc.errors import PlcError, PlcLinkError
from cellinspect.plc.register_image import PlcWriteRefusedError, RegisterImage

log = logging.getLogger(__name__)

_WRITE_CODES = {6, 16, 23}
_READ_HOLDING = 3
DEFAULT_MAX_CONNECTIONS = 4

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimit:
    """At most `burst` events per `window_s`; the rest are counted, to be reported later."""

    def __init__(
        self, burst: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst = burst
        self.window_s = window_s
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = -float("inf")
        self._in_window = 0
        self.suppressed = 0  # since the last allowed event
        self.suppressed_total = 0

    def allow(self) -> tuple[bool, int]:
        """(allowed?, events suppressed since the last allowed one: 0 unless allowed)."""
        with self._lock:
            now = self._clock()
            if now - self._window_start >= self.window_s:
                self._window_start, self._in_window = now, 0
            if self._in_window >= self.burst:
                self.suppressed += 1
                self.suppressed_total += 1
                return False, 0
            self._in_window += 1
            skipped, self.suppressed = self.suppressed, 0
            return True, skipped


_FRAME_DUMP = "\n>>>>> "


class PymodbusLogFilter(logging.Filter):
    """Bounds pymodbus's own log: no frame hex dump, warnings and errors at a limited rate.

    pymodbus logs through one logger ("pymodbus.logging") and appends its last frames as hex
    to each error; a client sending garbage would otherwise write ~1.4 KB per frame.
    """

    def __init__(self, limit: RateLimit | None = None) -> None:
        super().__init__()
        self.limit = limit or RateLimit(burst=5, window_s=60.0)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # debug output is only there when someone asked for it
        ok, skipped = self.limit.allow()
        if not ok:
            return False
        msg = record.getMessage().split(_FRAME_DUMP, 1)[0]
        if skipped:
            msg += f" ({skipped} similar pymodbus messages suppressed)"
        record.msg, record.args = msg, None
        return True


PYMODBUS_LOG_FILTER = PymodbusLogFilter()
logging.getLogger("pymodbus.logging").addFilter(PYMODBUS_LOG_FILTER)


def parse_networks(specs: Iterable[str]) -> tuple[IpNetwork, ...]:
    """IP addresses or networks ("10.0.0.5", "10.1.0.0/16", "fd00::/8"); ValueError if bad."""
    return tuple(ipaddress.ip_network(spec.strip(), strict=False) for spec in specs)


class ConnectionGuard:
    """Who may hold a Modbus connection: a connection count limit and an optional allow-list."""

    def __init__(
        self,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        allowed: Iterable[str] = (),
        limit: RateLimit | None = None,
    ) -> None:
        if max_connections is not None and max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections}")
        self.max_connections = max_connections
        self.allowed = parse_networks(allowed)
        self._limit = limit or RateLimit(burst=5, window_s=60.0)
        self._admit_log = RateLimit(burst=10, window_s=60.0)
        self._lock = threading.Lock()
        self._active: set[object] = set()
        self.refused = 0
        self.accepted = 0

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._active)

    def admit(self, conn: object, peer: str) -> str | None:
        """Take `conn` from `peer` ("host" part of its address); a reason when refused."""
        with self._lock:
            reason = self._refusal(peer)
            if reason is None:
                self._active.add(conn)
                self.accepted += 1
                open_now = len(self._active)
            else:
                self.refused += 1
        if reason is None:
            if self._admit_log.allow()[0]:
                log.info("modbus: client %s connected (%d open)", peer, open_now)
            return None
        ok, skipped = self._limit.allow()
        if ok:
            more = f" ({skipped} more refusals not logged)" if skipped else ""
            log.warning("modbus: refused connection from %s: %s%s", peer, reason, more)
        return reason

    def release(self, conn: object) -> None:
        with self._lock:
            self._active.discard(conn)

    def _refusal(self, peer: str) -> str | None:
        if self.allowed:
            try:
                addr = ipaddress.ip_address(peer.split("%", 1)[0])
            except ValueError:
                return "address not understood"
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                addr = addr.ipv4_mapped
            if not any(addr in net for net in self.allowed):
                return "not in modbus.allowed_clients"
        if self.max_connections is not None and len(self._active) >= self.max_connections:
            return f"{self.max_connections} connections already open (modbus.max_connections)"
        return None


class _GuardedHandler(ServerRequestHandler):
    """One client connection; closed at once when the guard refuses it."""

    def __init__(self, owner: _GuardedTcpServer) -> None:
        super().__init__(  # type: ignore[no-untyped-call]
            owner, owner.trace_packet, owner.trace_pdu, owner.trace_connect
        )
        self._owner = owner

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peername: Any = transport.get_extra_info("peername")
        host = str(peername[0]) if isinstance(peername, tuple) and peername else "?"
        if self._owner.guard.admit(self, host) is not None:
            self.close()
            return
        if self._owner.on_connect is not None:
            try:
                self._owner.on_connect(host)
            except Exception:
                log.exception("modbus: connection hook failed")

    def callback_disconnected(self, exc: Exception | None) -> None:
        self._owner.guard.release(self)
        super().callback_disconnected(exc)

    def close(self, reconnect: bool = False) -> None:
        self._owner.guard.release(self)
        super().close(reconnect)


class _GuardedTcpServer(ModbusTcpServer):
    """pymodbus's TCP server with each new connection checked by a :class:`ConnectionGuard`."""

    def __init__(
        self,
        device: SimDevice,
        address: tuple[str, int],
        guard: ConnectionGuard,
        on_connect: Callable[[str], None] | None,
    ) -> None:
        super().__init__(device, address=address)
        self.guard = guard
        self.on_connect = on_connect

    def callback_new_connection(self) -> _GuardedHandler:
        return _GuardedHandler(self)


class ModbusServer:
    """A Modbus TCP server on its own thread and asyncio loop, serving one RegisterImage.

    Any unit id is answered (device id 0 in pymodbus means "all"). Only holding-register
    function codes are useful; others answer an exception. `port=0` picks a free port, read
    back from :attr:`port` after :meth:`start`. `on_connect(host)` runs on the server's
    thread for each admitted client (the station arms its heartbeat watchdog there).
    """

    def __init__(
        self,
        image: RegisterImage,
        host: str = "127.0.0.1",
        port: int = 502,
        *,
        max_connections: int | None = DEFAULT_MAX_CONNECTIONS,
        allowed_clients: Iterable[str] = (),
        on_connect: Callable[[str], None] | None = None,
    ) -> None:
        self.image = image
        self.host = host
        self.port = port
        self.guard = ConnectionGuard(max_connections, allowed_clients)
        self.on_connect = on_connect
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: ModbusTcpServer | None = None

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        if function_code not in _WRITE_CODES and function_code != _READ_HOLDING:
            return ExcCodes.ILLEGAL_FUNCTION
        if values is not None and function_code in _WRITE_CODES:
            try:
                self.image.plc_write(address, [int(v) for v in values])
            except PlcWriteRefusedError as err:
                log.warning("modbus: refused write: %s", err)
                return ExcCodes.ILLEGAL_ADDRESS
        snap = self.image.snapshot()
        registers[start_address : start_address + len(snap)] = snap
        return None

    async def _start(self) -> int:
        device = SimDevice(
            id=0,
            simdata=[SimData(0, count=self.image.size, values=0, datatype=DataType.REGISTERS)],
            action=self._action,
        )
        server = _GuardedTcpServer(device, (self.host, self.port), self.guard, self.on_connect)
        await server.serve_forever(background=True)
        self._server = server
        sockets = cast(asyncio.Server, server.transport).sockets
        return int(sockets[0].getsockname()[1])

    def start(self) -> int:
        """Bind and serve in the background; returns the bound port."""
        if self._thread is not None:
            raise PlcError(f"modbus server on {self.host}:{self.port} already started")
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="modbus-server", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self.port = asyncio.run_coroutine_threadsafe(self._start(), loop).result(timeout=10)
        except (OSError, RuntimeError, TimeoutError) as err:
            self.stop()
            raise PlcError(
                f"modbus server: cannot listen on {self.host}:{self.port}: {err}"
            ) from err
        log.info("modbus server listening on %s:%d", self.host, self.port)
        return self.port

    def stop(self) -> None:
        """Close the listener and every connection; idempotent."""
        loop, thread, server = self._loop, self._thread, self._server
        self._loop = self._thread = self._server = None
        if loop is None or thread is None:
            return
        if server is not None:
            fut: Future[None] = asyncio.run_coroutine_threadsafe(
                server.shutdown(),  # type: ignore[no-untyped-call]
                loop,
            )
            try:
                fut.result(timeout=5)
            except (RuntimeError, TimeoutError) as err:
                log.warning("modbus server: shutdown did not finish cleanly: %s", err)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=5)
        loop.close()

    def __enter__(self) -> ModbusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ModbusClient:
    """A blocking Modbus TCP client for the simulated PLC: holding registers only.

    Every failure (refused connection, timeout, exception response) raises
    :class:`PlcLinkError`; the caller decides when to reconnect.
    """

    def __init__(self, host: str, port: int, timeout_s: float = 0.5, device_id: int = 1) -> None:
        self.host = host
        self.port = port
        self.device_id = device_id
        self._client = ModbusTcpClient(host, port=port, timeout=timeout_s, retries=0)

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    def connect(self) -> None:
        try:
            ok = self._client.connect()  # type: ignore[no-untyped-call]
        except (ModbusException, OSError) as err:
            raise PlcLinkError(f"modbus {self.host}:{self.port}: cannot connect: {err}") from err
        if not ok:
            raise PlcLinkError(f"modbus {self.host}:{self.port}: connection refused")

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    def read(self, address: int, count: int) -> list[int]:
        try:
            rr = self._client.read_holding_registers(address, count=count, device_id=self.device_id)
        except (ModbusException, OSError) as err:
            self._client.close()  # type: ignore[no-untyped-call]
            raise PlcLinkError(
                f"modbus {self.host}:{self.port}: read {address}+{count} failed: {err}"
            ) from err
        if rr.isError():
            raise PlcLinkError(
                f"modbus {self.host}:{self.port}: read {address}+{count} answered {rr}"
            )
        return list(rr.registers)

    def write(self, address: int, values: Sequence[int]) -> None:
        try:
            rr = self._client.write_registers(address, list(values), device_id=self.device_id)
        except (ModbusException, OSError) as err:
            self._client.close()  # type: ignore[no-untyped-call]
            raise PlcLinkError(
                f"modbus {self.host}:{self.port}: write {address}+{len(values)} failed: {err}"
            ) from err
        if rr.isError():
            raise PlcLinkError(
                f"modbus {self.host}:{self.port}: write {address}+{len(values)} answered {rr}"
            )

    def __enter__(self) -> ModbusClient:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
