"""The only module that imports pymodbus: a Modbus TCP server over a RegisterImage, and a client.

pymodbus is pinned to one minor series (3.16.x) because its server and datastore API changes
between minor releases; an upgrade touches this file only. The server keeps no registers of
its own that matter: every request runs the device `action` hook, which serves reads from the
:class:`RegisterImage` and routes writes through :meth:`RegisterImage.plc_write`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import cast

from pymodbus.client import ModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from cellinspect.plc.errors import PlcError, PlcLinkError
from cellinspect.plc.register_image import PlcWriteRefusedError, RegisterImage

log = logging.getLogger(__name__)

_WRITE_CODES = {6, 16, 23}
_READ_HOLDING = 3


class ModbusServer:
    """A Modbus TCP server on its own thread and asyncio loop, serving one RegisterImage.

    Any unit id is answered (device id 0 in pymodbus means "all"). Only holding-register
    function codes are useful; others answer an exception. `port=0` picks a free port, read
    back from :attr:`port` after :meth:`start`.
    """

    def __init__(self, image: RegisterImage, host: str = "127.0.0.1", port: int = 502) -> None:
        self.image = image
        self.host = host
        self.port = port
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
        server = ModbusTcpServer(device, address=(self.host, self.port))
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
