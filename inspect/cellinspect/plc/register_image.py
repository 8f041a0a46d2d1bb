"""The station's register image: the one copy of the 128 holding registers, guarded by a lock.

The Modbus server only mirrors this image (reads copy it out, writes go through
:meth:`RegisterImage.plc_write`), so the handshake logic never sees pymodbus and a PLC write
plus the station's reaction to it happen under one lock: a PLC that reads right after its
write sees the station's answer, never a half-updated result block.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from cellinspect.plc.registers import PLC_AREA_END, REGISTER_COUNT, U16_MAX

PlcWriteListener = Callable[[int, Sequence[int], Sequence[int]], None]
"""Called under the lock after a PLC write: (address, old values, new values)."""


class PlcWriteRefusedError(ValueError):
    """A PLC write outside the PLC area (0..99) or with a value that is not a 16-bit word."""


class RegisterImage:
    """Fixed-size, thread-safe block of 16-bit registers."""

    def __init__(self, size: int = REGISTER_COUNT, plc_area_end: int = PLC_AREA_END) -> None:
        self.size = size
        self.plc_area_end = plc_area_end
        self._regs = [0] * size
        self.lock = threading.RLock()
        self._listeners: list[PlcWriteListener] = []
        self.plc_writes = 0
        self.plc_reads = 0

    def add_listener(self, listener: PlcWriteListener) -> None:
        with self.lock:
            self._listeners.append(listener)

    def snapshot(self) -> list[int]:
        """A copy of every register (what a Modbus read is served from)."""
        with self.lock:
            self.plc_reads += 1
            return list(self._regs)

    def read(self, address: int, count: int = 1) -> list[int]:
        self._check_range(address, count)
        with self.lock:
            return self._regs[address : address + count]

    def get(self, address: int) -> int:
        return self.read(address, 1)[0]

    def write(self, address: int, values: Sequence[int]) -> None:
        """Station-side write (no listener runs; the station is the writer)."""
        self._check_range(address, len(values))
        self._check_words(values)
        with self.lock:
            self._regs[address : address + len(values)] = list(values)

    def set(self, address: int, value: int) -> None:
        self.write(address, [value])

    def plc_write(self, address: int, values: Sequence[int]) -> None:
        """A write from the PLC: only the PLC area, then every listener under the same lock."""
        if address < 0 or address + len(values) > self.plc_area_end or not values:
            raise PlcWriteRefusedError(
                f"PLC write to registers {address}..{address + len(values) - 1}: "
                f"the PLC may write 0..{self.plc_area_end - 1} only"
            )
        self._check_words(values)
        with self.lock:
            old = self._regs[address : address + len(values)]
            self._regs[address : address + len(values)] = list(values)
            self.plc_writes += 1
            for listener in self._listeners:
                listener(address, old, list(values))

    def _check_range(self, address: int, count: int) -> None:
        if address < 0 or count < 1 or address + count > self.size:
            raise IndexError(
                f"registers {address}..{address + count - 1} outside 0..{self.size - 1}"
            )

    @staticmethod
    def _check_words(values: Sequence[int]) -> None:
        for v in values:
            if not isinstance(v, int) or not 0 <= v <= U16_MAX:
                raise PlcWriteRefusedError(f"register value must be an int in 0..65535, got {v!r}")
