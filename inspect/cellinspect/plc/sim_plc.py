"""The simulated PLC: a real Modbus TCP client with a fixed scan, a conveyor, and a reject gate.

Each scan reads the station block, runs the logic, and writes the PLC block, as a PLC's cyclic
I/O does. The photo-eye triggers the station for each part; a FIFO tracks every part by the
encoder count latched at its trigger to the reject gate, and the gate rejects unless the
station said PASS for that very part (matched by the part id echo) before it got there. A
missed trigger, a lost link, NO RESULT or a result that came too late all end in a reject.
It logs every part (truth, result, gate action) and counts what a line manager asks for.
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from cellinspect.plc.conveyor import BeltPart, ConveyorConfig, encoder_diff
from cellinspect.plc.errors import PlcLinkError
from cellinspect.plc.modbus_adapter import ModbusClient
from cellinspect.plc.registers import (
    PLC_BLOCK,
    STATION_BLOCK,
    U16_MAX,
    Control,
    Reg,
    ResultCode,
    Status,
    pack_u32,
    unpack_u32,
)

log = logging.getLogger(__name__)


class MissReason(enum.StrEnum):
    STATION_BUSY = "station_busy"  # the station answered with its missed-trigger counter
    TRIGGER_PENDING = "trigger_pending"  # the previous trigger handshake had not finished
    NO_ACK = "no_ack"  # no acknowledgement within the trigger timeout
    LINK_DOWN = "link_down"  # no Modbus connection when the part passed the eye


class FaultKind(enum.StrEnum):
    DISCONNECT = "disconnect"  # close the connection, no I/O, then reconnect
    HEARTBEAT_STALL = "heartbeat_stall"  # stay connected but stop the heartbeat


@dataclass(frozen=True, slots=True)
class LinkFault:
    """A fault injected from `start_s` after the run's start for `duration_s`."""

    kind: FaultKind
    start_s: float
    duration_s: float

    def active(self, elapsed_s: float) -> bool:
        return self.start_s <= elapsed_s < self.start_s + self.duration_s


@dataclass(frozen=True, slots=True)
class PlcConfig:
    scan_ms: float = 10.0
    trigger_timeout_ms: float = 100.0
    trigger_window_ms: float = 30.0
    buffer_results: bool = True
    reconnect_s: float = 0.1


@dataclass(slots=True)
class PartLog:
    """One part's story, from the photo-eye to the gate."""

    part_id: int
    label: str
    seen_mono: float | None = None
    trigger_encoder: int | None = None
    trigger_mono: float | None = None
    accepted: bool = False
    acquisition_id: int | None = None
    missed: MissReason | None = None
    result: ResultCode | None = None
    inspection_id: int | None = None
    result_mono: float | None = None
    late_result: ResultCode | None = None
    encoder_mismatch: bool = False
    gate_reject: bool | None = None
    gate_error_mm: float | None = None
    wrong_part_at_gate: bool = False

    @property
    def defective(self) -> bool:
        return self.label != "good"

    @property
    def latency_ms(self) -> float | None:
        if self.trigger_mono is None or self.result_mono is None:
            return None
        return (self.result_mono - self.trigger_mono) * 1000.0


@dataclass(slots=True)
class PlcCounters:
    parts_total: int = 0
    seen: int = 0
    gated: int = 0
    passed: int = 0
    rejected: int = 0
    correct_rejects: int = 0
    escapes: int = 0
    false_rejects: int = 0
    results: int = 0
    results_pass: int = 0
    results_fail: int = 0
    results_review: int = 0
    no_results: int = 0
    late_results: int = 0
    unmatched_results: int = 0
    missed_triggers: int = 0
    tracking_errors: int = 0
    link_errors: int = 0
    reconnects: int = 0
    station_errors: int = 0
    buffer_overruns: int = 0
    scan_overruns: int = 0
    scans: int = 0

    def copy(self) -> PlcCounters:
        return replace(self)


@dataclass(slots=True)
class _Outputs:
    control: Control = Control.TRIGGER_ENABLE
    part_id: int = 0
    encoder: int = 0
    heartbeat: int = 0

    def words(self) -> list[int]:
        return [
            int(self.control),
            0,
            0,
            *pack_u32(self.part_id),
            *pack_u32(self.encoder),
            self.heartbeat,
        ]


@dataclass(slots=True)
class _Trigger:
    part: PartLog
    mono: float
    acq_before: int
    missed_before: int


@dataclass(slots=True)
class _Tracked:
    part: PartLog
    belt: BeltPart
    index: int  # position in belt order
    latch: int  # encoder count at trigger (or when seen, if not triggered)


class SimPlc:
    """Runs the cell's PLC program until every part has passed the gate (or stop())."""

    def __init__(
        self,
        host: str,
        port: int,
        parts: Sequence[BeltPart],
        conveyor: ConveyorConfig,
        config: PlcConfig | None = None,
        faults: Sequence[LinkFault] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = ModbusClient(host, port, timeout_s=0.5)
        self.parts = sorted(parts, key=lambda p: -p.start_mm)
        self.conveyor = conveyor
        self.config = config or PlcConfig()
        self.faults = list(faults)
        self._clock = clock
        self.logs: dict[int, PartLog] = {p.part_id: PartLog(p.part_id, p.label) for p in parts}
        self.counters = PlcCounters(parts_total=len(parts))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._out = _Outputs()
        self._next_part = 0
        self._eye: deque[_Tracked] = deque()  # seen by the photo-eye, trigger not yet raised
        self._fifo: deque[_Tracked] = deque()  # between eye and gate, in belt order
        self._trigger: _Trigger | None = None
        self._connected_once = False
        self._written_control = Control(0)  # HR0 as the station last received it
        self._acq_seen = 0
        self._missed_seen = 0
        self._last_connect_try = -1e9
        self._t0 = 0.0
        self.error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_safely, name="sim-plc", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """True when the run has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def done(self) -> bool:
        with self._lock:
            return self.counters.gated >= len(self.parts)

    def snapshot(self) -> PlcCounters:
        with self._lock:
            return self.counters.copy()

    def _run_safely(self) -> None:
        try:
            self.run()
        except BaseException as err:  # surfaced to the caller by line.run
            log.exception("sim PLC stopped by an error")
            self.error = err
        finally:
            self.client.close()

    def run(self) -> None:
        """The scan loop (blocking)."""
        period = self.config.scan_ms / 1000.0
        self._t0 = self._clock()
        next_scan = self._t0
        self._out.control = Control.TRIGGER_ENABLE
        if self.config.buffer_results:
            self._out.control |= Control.BUFFER_ENABLE
        while not self._stop.is_set() and not self.done:
            self.scan()
            next_scan += period
            delay = next_scan - self._clock()
            if delay > 0:
                time.sleep(delay)
            else:
                with self._lock:
                    self.counters.scan_overruns += 1
                next_scan = self._clock()

    # ------------------------------------------------------------------ one scan

    def scan(self) -> None:
        now = self._clock()
        elapsed = now - self._t0
        enc = self.conveyor.encoder(elapsed)
        travel = self.conveyor.travel_mm(elapsed)
        with self._lock:
            self.counters.scans += 1
        inputs = self._read_inputs(elapsed)
        if inputs is not None:
            self._acq_seen = self._reg(inputs, Reg.ACQUISITION_ID)[0]
            self._missed_seen = self._reg(inputs, Reg.MISSED_TRIGGERS)[0]
            self._results(inputs, now)
            self._trigger_handshake(inputs, now)
            self._errors(inputs)
        self._photo_eye(now, enc, travel, link_up=inputs is not None)
        self._gate(now, enc, travel)
        if inputs is not None:
            if not any(
                f.kind is FaultKind.HEARTBEAT_STALL and f.active(elapsed) for f in self.faults
            ):
                self._out.heartbeat = (self._out.heartbeat + 1) & U16_MAX
            self._write_outputs()

    def _read_inputs(self, elapsed: float) -> list[int] | None:
        if any(f.kind is FaultKind.DISCONNECT and f.active(elapsed) for f in self.faults):
            if self.client.connected:
                self.client.close()
            return None
        if not self.client.connected:
            if self._clock() - self._last_connect_try < self.config.reconnect_s:
                return None
            self._last_connect_try = self._clock()
            try:
                self.client.connect()
            except PlcLinkError:
                with self._lock:
                    self.counters.link_errors += 1
                return None
            if self._connected_once:
                with self._lock:
                    self.counters.reconnects += 1
            self._connected_once = True
        try:
            return self.client.read(*STATION_BLOCK)
        except PlcLinkError as err:
            log.warning("sim PLC: %s", err)
            with self._lock:
                self.counters.link_errors += 1
            return None

    def _write_outputs(self) -> None:
        try:
            self.client.write(PLC_BLOCK[0], self._out.words())
            self._written_control = self._out.control
        except PlcLinkError as err:
            log.warning("sim PLC: %s", err)
            with self._lock:
                self.counters.link_errors += 1

    @staticmethod
    def _reg(inputs: list[int], reg: Reg, count: int = 1) -> list[int]:
        i = reg - STATION_BLOCK[0]
        return inputs[i : i + count]

    def _results(self, inputs: list[int], now: float) -> None:
        status = Status(inputs[0])
        if status & Status.BUFFER_OVERRUN:
            with self._lock:
                self.counters.buffer_overruns += 1
        if self._out.control & Control.RESULTS_ACK:
            if not status & Status.RESULTS_VALID:
                self._out.control &= ~Control.RESULTS_ACK
            return
        if not status & Status.RESULTS_VALID:
            return
        code = ResultCode(self._reg(inputs, Reg.RESULT)[0])
        part_id = unpack_u32(self._reg(inputs, Reg.PART_ID_ECHO, 2))
        encoder = unpack_u32(self._reg(inputs, Reg.ENCODER_ECHO, 2))
        insp_id = self._reg(inputs, Reg.INSPECTION_ID)[0]
        self._accept_result(part_id, encoder, code, insp_id, now)
        self._out.control |= Control.RESULTS_ACK

    def _accept_result(
        self, part_id: int, encoder: int, code: ResultCode, insp_id: int, now: float
    ) -> None:
        with self._lock:
            c = self.counters
            c.results += 1
            if code is ResultCode.PASS:
                c.results_pass += 1
            elif code is ResultCode.FAIL:
                c.results_fail += 1
            elif code is ResultCode.REVIEW:
                c.results_review += 1
            elif code is ResultCode.NO_RESULT:
                c.no_results += 1
            part = self.logs.get(part_id)
            if part is None or part.trigger_encoder is None:
                c.unmatched_results += 1
                log.warning("sim PLC: result for unknown part %d (code %s)", part_id, code.name)
                return
            if part.trigger_encoder != encoder:
                part.encoder_mismatch = True
                c.tracking_errors += 1
            if part.gate_reject is not None:
                part.late_result = code
                c.late_results += 1
                return
            if part.result is not None:
                c.unmatched_results += 1  # a second result for one part: keep the first
                return
            part.result = code
            part.inspection_id = insp_id
            part.result_mono = now

    def _trigger_handshake(self, inputs: list[int], now: float) -> None:
        trig = self._trigger
        if trig is None:
            return
        status = Status(inputs[0])
        if status & Status.TRIGGER_ACK and self._acq_seen != trig.acq_before:
            trig.part.accepted = True
            trig.part.acquisition_id = self._acq_seen
        elif self._missed_seen != trig.missed_before:
            self._miss(trig.part, MissReason.STATION_BUSY)
        elif (now - trig.mono) * 1000.0 > self.config.trigger_timeout_ms:
            self._miss(trig.part, MissReason.NO_ACK)
        else:
            return
        self._out.control &= ~Control.TRIGGER
        self._trigger = None

    def _errors(self, inputs: list[int]) -> None:
        status = Status(inputs[0])
        pulse = bool(status & Status.ERROR) and not self._out.control & Control.CLEAR_ERROR
        if pulse:
            with self._lock:
                self.counters.station_errors += 1
            self._out.control |= Control.CLEAR_ERROR
        else:
            self._out.control &= ~Control.CLEAR_ERROR

    def _miss(self, part: PartLog, reason: MissReason) -> None:
        part.missed = reason
        with self._lock:
            self.counters.missed_triggers += 1

    def _photo_eye(self, now: float, enc: int, travel: float, link_up: bool) -> None:
        while self._next_part < len(self.parts):
            belt = self.parts[self._next_part]
            if belt.position(travel) < 0.0:
                break
            self._next_part += 1
            part = self.logs[belt.part_id]
            part.seen_mono = now
            # The photo-eye input latches the encoder in hardware at the crossing itself.
            latch = self.conveyor.encoder_at(-belt.start_mm)
            tracked = _Tracked(part, belt, self._next_part - 1, latch)
            self._eye.append(tracked)
            self._fifo.append(tracked)
            with self._lock:
                self.counters.seen += 1
        # One trigger per scan at most, with the trigger low for at least one write between.
        while self._eye:
            tracked = self._eye[0]
            part = tracked.part
            assert part.seen_mono is not None
            if (now - part.seen_mono) * 1000.0 > self.config.trigger_window_ms:
                self._eye.popleft()
                self._miss(part, MissReason.TRIGGER_PENDING if link_up else MissReason.LINK_DOWN)
                continue
            if not link_up or self._trigger is not None or self._out.control & Control.TRIGGER:
                return
            if self._written_control & Control.TRIGGER:
                return  # the station must see TRIGGER low before the next rising edge
            self._eye.popleft()
            part.trigger_encoder = tracked.latch
            part.trigger_mono = now
            self._out.part_id = part.part_id
            self._out.encoder = tracked.latch
            self._out.control |= Control.TRIGGER
            self._trigger = _Trigger(part, now, self._acq_seen, self._missed_seen)
            return

    def _gate(self, now: float, enc: int, travel: float) -> None:
        """Decide each part one scan before it reaches the gate (the output is then armed
        on an encoder compare, as a PLC's high-speed output would be)."""
        gate_counts = self.conveyor.gate_counts
        lookahead = round(
            self.conveyor.speed_mm_s * self.config.scan_ms / 1000.0 * self.conveyor.counts_per_mm
        )
        while self._fifo and encoder_diff(enc + lookahead, self._fifo[0].latch) >= gate_counts:
            tracked = self._fifo.popleft()
            part = tracked.part
            if self._trigger is not None and self._trigger.part is part:
                self._miss(part, MissReason.NO_ACK)
                self._out.control &= ~Control.TRIGGER
                self._trigger = None
            reject = part.result is None or part.result.rejects
            part.gate_reject = reject
            at_gate = self.conveyor.travel_at(tracked.latch) + self.conveyor.gate_mm
            part.gate_error_mm = tracked.belt.position(at_gate) - self.conveyor.gate_mm
            wrong_part = self._nearest_to_gate(tracked.index, at_gate) != tracked.index
            part.wrong_part_at_gate = wrong_part
            with self._lock:
                c = self.counters
                c.gated += 1
                if wrong_part:
                    c.tracking_errors += 1
                if reject:
                    c.rejected += 1
                    if part.defective:
                        c.correct_rejects += 1
                    else:
                        c.false_rejects += 1
                else:
                    c.passed += 1
                    if part.defective:
                        c.escapes += 1

    def _nearest_to_gate(self, index: int, travel: float) -> int:
        """Index of the part physically nearest the gate among `index` and its neighbours."""
        gate = self.conveyor.gate_mm
        candidates = [i for i in (index - 1, index, index + 1) if 0 <= i < len(self.parts)]
        return min(candidates, key=lambda i: abs(self.parts[i].position(travel) - gate))
