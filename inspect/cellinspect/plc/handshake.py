"""The station side of the PLC handshake as a state machine over the register image.

Pure logic, no threads: PLC writes arrive through :meth:`Handshake.on_plc_write` (called under
the image lock by the Modbus server), the station's worker reports through
:meth:`Handshake.complete_job`, and a watchdog calls :meth:`Handshake.tick`. Every method
leaves the registers consistent before it returns, so a PLC read never sees a half-posted
result. The sequence, as in the factory protocols of smart cameras:

1. PLC writes part id and encoder (HR3-6) and raises TRIGGER (HR0 bit 1).
2. If TRIGGER_READY, the station latches them, bumps the acquisition id and sets TRIGGER_ACK
   and BUSY; otherwise it sets MISSED_TRIGGER, bumps the missed-trigger counter (HR120) and
   reports the part id, encoder and why to `on_missed` (the station stores a fail-safe row).
3. PLC drops TRIGGER; the station drops TRIGGER_ACK.
4. The station posts the result block (HR105-117), bumps the inspection id, sets
   RESULTS_VALID and toggles INSPECTION_COMPLETED in one step, and drops BUSY.
5. PLC reads and raises RESULTS_ACK; the station drops RESULTS_VALID. PLC drops RESULTS_ACK;
   the station posts the next buffered result, if any.

The PLC heartbeat watchdog arms when the first Modbus client connects (:meth:`plc_connected`),
or at the first HR7 write if nothing reported a connection: a PLC that connects and never
writes a heartbeat is supervised like one whose heartbeat froze.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cellinspect.plc.register_image import RegisterImage
from cellinspect.plc.registers import (
    DEFECT_NONE,
    U16_MAX,
    Command,
    Control,
    ErrorCode,
    Reg,
    ResultCode,
    Status,
    clamp_u16,
    pack_i16,
    pack_i32,
    pack_u32,
    unpack_u32,
)

log = logging.getLogger(__name__)

BUFFER_CAPACITY = 8


class StationState(enum.StrEnum):
    """Lifecycle of the station's PLC interface."""

    OFFLINE = "offline"
    DISABLED = "disabled"  # online, but the PLC has not enabled triggers
    READY = "ready"
    BUSY = "busy"
    COMMAND = "command"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class TriggerJob:
    """What the station latched on an accepted trigger."""

    acquisition_id: int
    part_id: int
    encoder: int
    accepted_mono: float
    origin: str = "plc"  # plc | software | opcua | free_run: who asked for this job


@dataclass(frozen=True, slots=True)
class MissedTrigger:
    """A PLC trigger the station could not take: what the PLC had latched, and why not."""

    part_id: int
    encoder: int
    reason: str  # "missed trigger: station busy", ...
    missed_mono: float


@dataclass(frozen=True, slots=True)
class ResultBlock:
    """The result registers HR105-117 for one part, already in PLC units."""

    result: ResultCode
    part_id: int
    encoder: int
    defect_code: int = DEFECT_NONE
    pick_x_centi_mm: int = 0
    pick_y_centi_mm: int = 0
    pick_angle_centi_deg: int = 0
    processing_ms: float = 0.0
    score: float | None = None

    def words(self) -> list[int]:
        """HR105..117 in order."""
        return [
            int(self.result),
            clamp_u16(self.defect_code),
            *pack_u32(self.part_id),
            *pack_u32(self.encoder),
            *pack_i32(self.pick_x_centi_mm),
            *pack_i32(self.pick_y_centi_mm),
            pack_i16(self.pick_angle_centi_deg),
            clamp_u16(self.processing_ms),
            clamp_u16((self.score or 0.0) * 1000.0),
        ]


@dataclass(frozen=True, slots=True)
class PostedResult:
    """One result as the PLC could read it (for audits and tests)."""

    inspection_id: int
    block: ResultBlock
    posted_mono: float


@dataclass(slots=True)
class HandshakeCounters:
    accepted_triggers: int = 0
    missed_triggers: int = 0
    posted: int = 0
    buffered_max: int = 0
    overruns: int = 0
    discarded_in_error: int = 0
    heartbeat_losses: int = 0
    commands_ok: int = 0
    commands_failed: int = 0


class Handshake:
    """Registers in, registers out; the worker and watchdog call in, never the other way."""

    def __init__(
        self,
        image: RegisterImage,
        on_job: Callable[[TriggerJob], None],
        on_command: Callable[[Command | int, int], None] | None = None,
        heartbeat_timeout_s: float | None = 1.0,
        recipe_number: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_missed: Callable[[MissedTrigger], None] | None = None,
    ) -> None:
        self.image = image
        self._on_job = on_job
        self._on_command = on_command
        self._on_missed = on_missed
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self._clock = clock
        self.recipe_number = recipe_number
        self.counters = HandshakeCounters()
        self.posted_log: deque[PostedResult] = deque(maxlen=100_000)
        self._control = Control(0)
        self._online = True
        self._error = ErrorCode.NONE
        self._error_bit = False
        self._busy = False
        self._trigger_ack = False
        self._results_valid = False
        self._completed = False
        self._overrun = False
        self._missed = False
        self._cmd_executing = False
        self._cmd_completed = False
        self._cmd_failed = False
        self._accepting = True
        self._acq_id = 0
        self._insp_id = 0
        self._missed_count = 0
        self._station_heartbeat = 0
        self._buffer: deque[ResultBlock] = deque()
        self._last_plc_heartbeat: float | None = None  # None: watchdog not armed yet
        with image.lock:
            self._publish()
        image.add_listener(self.on_plc_write)

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> StationState:
        with self.image.lock:
            if self._error_bit:
                return StationState.ERROR
            if not self._online:
                return StationState.OFFLINE
            if self._cmd_executing:
                return StationState.COMMAND
            if self._busy:
                return StationState.BUSY
            if not self._control & Control.TRIGGER_ENABLE:
                return StationState.DISABLED
            return StationState.READY

    @property
    def trigger_ready(self) -> bool:
        return self.station_ready and bool(self._control & Control.TRIGGER_ENABLE)

    @property
    def station_ready(self) -> bool:
        """Free for a job whoever asks: online, no error, not busy, no command, not stopping."""
        return (
            self._accepting
            and self._online
            and not self._error_bit
            and not self._busy
            and not self._trigger_ack
            and not self._cmd_executing
        )

    def status_word(self) -> Status:
        bits = Status(0)
        for on, flag in (
            (self.trigger_ready, Status.TRIGGER_READY),
            (self._trigger_ack, Status.TRIGGER_ACK),
            (self._busy, Status.BUSY),
            (self._missed, Status.MISSED_TRIGGER),
            (self._results_valid, Status.RESULTS_VALID),
            (self._completed, Status.INSPECTION_COMPLETED),
            (self._overrun, Status.BUFFER_OVERRUN),
            (self._cmd_executing, Status.COMMAND_EXECUTING),
            (self._cmd_completed, Status.COMMAND_COMPLETED),
            (self._cmd_failed, Status.COMMAND_FAILED),
            (self._error_bit, Status.ERROR),
            (self._online, Status.ONLINE),
        ):
            if on:
                bits |= flag
        return bits

    def _publish(self) -> None:
        self.image.write(
            Reg.STATUS,
            [
                int(self.status_word()),
                self.recipe_number & U16_MAX,
                int(self._error),
                self._acq_id & U16_MAX,
                self._insp_id & U16_MAX,
            ],
        )
        self.image.write(Reg.STATION_HEARTBEAT, [self._station_heartbeat])
        self.image.write(Reg.BUFFERED, [len(self._buffer), self._missed_count & U16_MAX])

    # ------------------------------------------------------------------ PLC side

    def on_plc_write(self, address: int, old: Sequence[int], new: Sequence[int]) -> None:
        """Edge detection on HR0 and heartbeat tracking on HR7 (runs under the image lock)."""
        end = address + len(new)
        if address <= Reg.PLC_HEARTBEAT < end:
            i = Reg.PLC_HEARTBEAT - address
            if old[i] != new[i] or self._last_plc_heartbeat is None:
                self._last_plc_heartbeat = self._clock()
        if address <= Reg.CONTROL < end:
            self._on_control(Control(new[Reg.CONTROL - address] & 0xFF))
        self._publish()

    def _on_control(self, control: Control) -> None:
        prev, self._control = self._control, control

        def rising(bit: Control) -> bool:
            return bool(control & bit) and not prev & bit

        def falling(bit: Control) -> bool:
            return bool(prev & bit) and not control & bit

        self._online = not control & Control.SET_OFFLINE
        if rising(Control.CLEAR_ERROR):
            self._clear_error()
        if rising(Control.RESULTS_ACK) and self._results_valid:
            self._results_valid = False
        if falling(Control.RESULTS_ACK):
            self._post_next_buffered()
        if falling(Control.EXECUTE_COMMAND):
            self._cmd_completed = self._cmd_failed = False
        if rising(Control.EXECUTE_COMMAND):
            self._start_command()
        if falling(Control.TRIGGER):
            self._trigger_ack = False
        if rising(Control.TRIGGER):
            self._on_trigger()

    def _on_trigger(self) -> None:
        regs = self.image.read(Reg.PART_ID, 4)
        if not self.trigger_ready:
            self._missed = True
            self._missed_count += 1
            self.counters.missed_triggers += 1
            missed = MissedTrigger(
                part_id=unpack_u32(regs[0:2]),
                encoder=unpack_u32(regs[2:4]),
                reason=f"missed trigger: {self._not_ready_reason()}",
                missed_mono=self._clock(),
            )
            if self._on_missed is not None:
                try:
                    self._on_missed(missed)
                except Exception:  # the PLC's write must still be answered
                    log.exception("handshake: recording %s failed", missed)
            return
        self._acq_id = (self._acq_id + 1) & U16_MAX
        job = TriggerJob(
            acquisition_id=self._acq_id,
            part_id=unpack_u32(regs[0:2]),
            encoder=unpack_u32(regs[2:4]),
            accepted_mono=self._clock(),
        )
        self._missed = False
        self._busy = True
        self._trigger_ack = True
        self.counters.accepted_triggers += 1
        self._on_job(job)

    def refusal(self) -> str | None:
        """Why no trigger can be taken until something changes (error, stopping); else None.

        Busy, a command or SET_OFFLINE pass by themselves; an error needs CLEAR_ERROR.
        """
        with self.image.lock:
            if self._error_bit:
                return f"station in error ({self._error.name})"
            if not self._accepting:
                return "station stopping"
            return None

    def _not_ready_reason(self) -> str:
        """Why TRIGGER_READY is off, in the words a stored result carries."""
        if self._error_bit:
            return f"station in error ({self._error.name})"
        if not self._online:
            return "station offline (SET_OFFLINE)"
        if not self._accepting:
            return "station stopping"
        if self._cmd_executing:
            return "command executing"
        if self._busy or self._trigger_ack:
            return "station busy"
        return "triggers not enabled (TRIGGER_ENABLE off)"

    def accept_station_trigger(self, part_id: int, encoder: int, origin: str) -> TriggerJob | None:
        """A trigger from the station's side (free run, API, OPC UA); None when not ready.

        Same bookkeeping as a PLC trigger (acquisition id, BUSY), without TRIGGER_ACK: no PLC
        bit is waiting for it. The PLC's TRIGGER_ENABLE is not required, since the PLC is
        not the one triggering; SET_OFFLINE, ERROR, a command or BUSY still refuse it.
        """
        with self.image.lock:
            if not self.station_ready:
                return None
            self._acq_id = (self._acq_id + 1) & U16_MAX
            job = TriggerJob(
                acquisition_id=self._acq_id,
                part_id=part_id,
                encoder=encoder,
                accepted_mono=self._clock(),
                origin=origin,
            )
            self._busy = True
            self.counters.accepted_triggers += 1
            self._publish()
        self._on_job(job)
        return job

    def stop_triggers(self) -> None:
        """Shutting down: refuse every new trigger (PLC ones count as missed) from now on."""
        with self.image.lock:
            self._accepting = False
            self._publish()

    def begin_station_command(self) -> ErrorCode:
        """A command from the station's side (API, OPC UA): the same rule as a PLC command."""
        with self.image.lock:
            if self._busy or self._cmd_executing or self._error_bit or not self._accepting:
                return ErrorCode.COMMAND_REFUSED_BUSY
            self._cmd_executing = True
            self._cmd_completed = self._cmd_failed = False
            self._publish()
            return ErrorCode.NONE

    @property
    def busy(self) -> bool:
        with self.image.lock:
            return self._busy or self._cmd_executing

    def _start_command(self) -> None:
        command, arg = self.image.read(Reg.COMMAND, 2)
        if self._busy or self._cmd_executing or self._error_bit or not self._accepting:
            self._fail_command(ErrorCode.COMMAND_REFUSED_BUSY)
            return
        if command not in {c.value for c in Command} or command == Command.NONE:
            self._fail_command(ErrorCode.UNKNOWN_COMMAND)
            return
        if self._on_command is None:
            self._fail_command(ErrorCode.UNKNOWN_COMMAND)
            return
        self._cmd_executing = True
        self._cmd_completed = self._cmd_failed = False
        self._on_command(Command(command), arg)

    def _fail_command(self, code: ErrorCode) -> None:
        self._cmd_failed = True
        self._cmd_completed = False
        self._error = code
        self.counters.commands_failed += 1

    # ------------------------------------------------------------------ station side

    def complete_command(
        self, error: ErrorCode = ErrorCode.NONE, recipe: int | None = None
    ) -> None:
        """The command worker is done: COMMAND_COMPLETED or COMMAND_FAILED with the code."""
        with self.image.lock:
            self._cmd_executing = False
            if error is ErrorCode.NONE:
                self._cmd_completed = True
                self._cmd_failed = False
                if not self._error_bit:
                    self._error = ErrorCode.NONE
                self.counters.commands_ok += 1
                if recipe is not None:
                    self.recipe_number = recipe
            else:
                self._fail_command(error)
            self._publish()

    def complete_job(self, block: ResultBlock | None, still_busy: bool = False) -> bool:
        """Post (or buffer) a result and, unless `still_busy`, take new triggers again.

        `block` None only releases BUSY (the result was already posted at the deadline).
        Returns False when the result was discarded (station in error, or buffer overrun).
        """
        with self.image.lock:
            kept = True
            if block is not None:
                kept = self._deliver(block)
            if not still_busy:
                self._busy = False
            self._publish()
            return kept

    def _deliver(self, block: ResultBlock) -> bool:
        if self._error_bit:
            self.counters.discarded_in_error += 1
            return False
        slot_free = not self._results_valid and not self._control & Control.RESULTS_ACK
        if slot_free and not self._buffer:
            self._post(block)
            return True
        if self._control & Control.BUFFER_ENABLE or not self._results_valid:
            if len(self._buffer) >= BUFFER_CAPACITY:
                self._overrun = True
                self.counters.overruns += 1
                return False
            self._buffer.append(block)
            self.counters.buffered_max = max(self.counters.buffered_max, len(self._buffer))
            return True
        # No buffering and the previous result is still unacknowledged: it is overwritten.
        self._overrun = True
        self.counters.overruns += 1
        self._post(block)
        return True

    def _post_next_buffered(self) -> None:
        if self._buffer and not self._results_valid and not self._error_bit:
            self._post(self._buffer.popleft())

    def _post(self, block: ResultBlock) -> None:
        self._insp_id = (self._insp_id + 1) & U16_MAX
        self.image.write(Reg.RESULT, block.words())
        self._results_valid = True
        self._completed = not self._completed
        self.counters.posted += 1
        self.posted_log.append(PostedResult(self._insp_id, block, self._clock()))

    # ------------------------------------------------------------------ watchdog and errors

    def plc_connected(self) -> None:
        """A Modbus client connected: arm the watchdog, so a silent PLC is supervised too.

        Only the first connection starts the clock; a reconnect does not reset it, so a
        client that keeps reconnecting without a heartbeat still times out.
        """
        with self.image.lock:
            if self._last_plc_heartbeat is None:
                self._last_plc_heartbeat = self._clock()

    @property
    def plc_heartbeat_age_s(self) -> float | None:
        """Seconds since the PLC heartbeat last changed (or a client connected); None before."""
        with self.image.lock:
            last = self._last_plc_heartbeat
        return None if last is None else self._clock() - last

    @property
    def supervised(self) -> bool:
        """True once the watchdog is armed (a client connected or a heartbeat came)."""
        with self.image.lock:
            return self.heartbeat_timeout_s is not None and self._last_plc_heartbeat is not None

    def tick(self) -> None:
        """Station heartbeat +1; PLC heartbeat watchdog (armed at the first connection)."""
        with self.image.lock:
            self._station_heartbeat = (self._station_heartbeat + 1) & U16_MAX
            if (
                self.heartbeat_timeout_s is not None
                and self._last_plc_heartbeat is not None
                and not self._error_bit
                and self._clock() - self._last_plc_heartbeat > self.heartbeat_timeout_s
            ):
                self.counters.heartbeat_losses += 1
                self.enter_safe_state(ErrorCode.PLC_HEARTBEAT_LOST)
            self._publish()

    @property
    def active_error(self) -> ErrorCode | None:
        """The error that holds the station in its safe state (what HR102 shows), or None."""
        with self.image.lock:
            return self._error if self._error_bit else None

    def enter_safe_state(self, code: ErrorCode) -> None:
        """Outputs to safe: no result valid, no trigger ready, result block zeroed, ERROR set."""
        with self.image.lock:
            self._error_bit = True
            self._error = code
            self._results_valid = False
            self._trigger_ack = False
            self.counters.discarded_in_error += len(self._buffer)
            self._buffer.clear()
            self.image.write(Reg.RESULT, [0] * 13)
            self._publish()

    def _clear_error(self) -> None:
        alive = (
            self.heartbeat_timeout_s is None
            or self._last_plc_heartbeat is None
            or self._clock() - self._last_plc_heartbeat <= self.heartbeat_timeout_s
        )
        if self._error_bit and not alive:
            return
        self._error_bit = False
        self._error = ErrorCode.NONE
        self._overrun = False
        self._missed = False

    @property
    def buffered(self) -> int:
        with self.image.lock:
            return len(self._buffer)
