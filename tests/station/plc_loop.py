"""A simulated PLC loop over Modbus for `cellinspect run` subprocess tests, and a restart.

`PlcLoop` triggers parts with the documented handshake (`HandshakePlc`) until the station
goes away or refuses with ERROR, recording every verdict it read; `restart_and_stop` starts
the station again (its start path replays the journal) and stops it. The kill -9 and
full-disk cases that use them are in tests/faults/test_station_faults.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

from cellinspect.plc.registers import ErrorCode, Reg, Status
from tests.station.runner import StationProcess
from tests.station.test_run_plc import (
    HandshakePlc,
    PlcRead,
    _reg,
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
