"""The handshake state machine on its own: PLC writes in, registers out, with a fake clock."""

from __future__ import annotations

import pytest

from cellinspect.plc.handshake import (
    BUFFER_CAPACITY,
    Handshake,
    MissedTrigger,
    ResultBlock,
    StationState,
    TriggerJob,
)
from cellinspect.plc.register_image import RegisterImage
from cellinspect.plc.registers import (
    Command,
    Control,
    ErrorCode,
    Reg,
    ResultCode,
    Status,
    pack_u32,
    unpack_u32,
)

EN = Control.TRIGGER_ENABLE


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Rig:
    """A handshake with a PLC that writes registers the way the Modbus server would."""

    def __init__(self, timeout: float | None = 1.0) -> None:
        self.image = RegisterImage()
        self.clock = Clock()
        self.jobs: list[TriggerJob] = []
        self.commands: list[tuple[int, int]] = []
        self.missed: list[MissedTrigger] = []
        self.hs = Handshake(
            self.image,
            on_job=self.jobs.append,
            on_command=lambda c, a: self.commands.append((int(c), a)),
            heartbeat_timeout_s=timeout,
            clock=self.clock,
            on_missed=self.missed.append,
        )
        self.hb = 0

    def control(self, bits: Control) -> None:
        self.image.plc_write(Reg.CONTROL, [int(bits)])

    def trigger(self, part_id: int, encoder: int, extra: Control = EN) -> None:
        self.image.plc_write(
            Reg.CONTROL,
            [int(extra | Control.TRIGGER), 0, 0, *pack_u32(part_id), *pack_u32(encoder)],
        )

    def heartbeat(self) -> None:
        self.hb += 1
        self.image.plc_write(Reg.PLC_HEARTBEAT, [self.hb])

    @property
    def status(self) -> Status:
        return Status(self.image.get(Reg.STATUS))

    def block(self, part_id: int, code: ResultCode = ResultCode.PASS) -> ResultBlock:
        return ResultBlock(code, part_id, part_id * 10)


def test_initial_registers_are_online_not_ready_until_enabled() -> None:
    rig = Rig()
    assert rig.status == Status.ONLINE
    assert rig.hs.state is StationState.DISABLED
    rig.control(EN)
    assert rig.status == Status.ONLINE | Status.TRIGGER_READY
    assert rig.hs.state is StationState.READY


def test_trigger_latches_part_and_encoder_and_acks() -> None:
    rig = Rig()
    rig.control(EN)
    rig.trigger(0xDEADBEEF, 0x0001_0002)
    assert rig.jobs == [TriggerJob(1, 0xDEADBEEF, 0x0001_0002, 100.0)]
    assert rig.status == Status.ONLINE | Status.TRIGGER_ACK | Status.BUSY
    assert rig.image.get(Reg.ACQUISITION_ID) == 1
    rig.control(EN)  # PLC drops the trigger
    assert rig.status == Status.ONLINE | Status.BUSY


def test_result_posting_acks_and_completion_toggle() -> None:
    rig = Rig()
    rig.control(EN)
    rig.trigger(7, 70)
    rig.control(EN)
    assert rig.hs.complete_job(ResultBlock(ResultCode.FAIL, 7, 70, defect_code=2, score=0.75))
    s = rig.status
    assert s & Status.RESULTS_VALID and s & Status.INSPECTION_COMPLETED and s & Status.TRIGGER_READY
    assert not s & Status.BUSY
    regs = rig.image.read(Reg.RESULT, 13)
    assert regs[0] == ResultCode.FAIL and regs[1] == 2
    assert unpack_u32(regs[2:4]) == 7 and unpack_u32(regs[4:6]) == 70
    assert regs[12] == 750
    assert rig.image.get(Reg.INSPECTION_ID) == 1
    rig.control(EN | Control.RESULTS_ACK)
    assert not rig.status & Status.RESULTS_VALID
    assert rig.status & Status.INSPECTION_COMPLETED  # toggles per result, not per ack
    rig.control(EN)
    rig.trigger(8, 80)
    rig.control(EN)
    rig.hs.complete_job(rig.block(8))
    assert not rig.status & Status.INSPECTION_COMPLETED


@pytest.mark.parametrize(
    ("setup", "why"),
    [
        (lambda r: None, "busy with the previous part"),
        (lambda r: r.control(EN | Control.SET_OFFLINE), "offline"),
        (lambda r: r.hs.enter_safe_state(ErrorCode.RECIPE_LOAD_FAILED), "in error"),
    ],
)
def test_trigger_when_not_ready_is_a_missed_trigger(setup: object, why: str) -> None:
    rig = Rig()
    rig.control(EN)
    rig.trigger(1, 10)
    rig.control(EN)
    if why != "busy with the previous part":
        rig.hs.complete_job(rig.block(1))
        setup(rig)  # type: ignore[operator]
    rig.trigger(2, 20, extra=EN | (Control.SET_OFFLINE if why == "offline" else Control(0)))
    assert len(rig.jobs) == 1, why
    assert rig.status & Status.MISSED_TRIGGER
    assert rig.image.get(Reg.MISSED_TRIGGERS) == 1
    assert rig.hs.counters.missed_triggers == 1


def test_missed_trigger_bit_clears_on_next_accepted_trigger() -> None:
    rig = Rig()
    rig.control(EN)
    rig.trigger(1, 10)
    rig.control(EN)
    rig.trigger(2, 20)  # busy: missed
    rig.control(EN)
    rig.hs.complete_job(rig.block(1))
    rig.trigger(3, 30)
    assert not rig.status & Status.MISSED_TRIGGER
    assert rig.image.get(Reg.MISSED_TRIGGERS) == 1  # the counter keeps the history


def test_held_trigger_is_not_a_second_trigger() -> None:
    rig = Rig()
    rig.control(EN)
    rig.trigger(1, 10)
    rig.trigger(1, 10)  # written again while high: no edge
    assert len(rig.jobs) == 1 and rig.hs.counters.missed_triggers == 0


def _post_unacked(rig: Rig, count: int, enable_buffer: bool) -> list[bool]:
    base = EN | (Control.BUFFER_ENABLE if enable_buffer else Control(0))
    rig.control(base)
    kept = []
    for pid in range(1, count + 1):
        rig.trigger(pid, pid * 10, extra=base)
        rig.control(base)
        kept.append(rig.hs.complete_job(rig.block(pid)))
    return kept


def test_buffering_holds_eight_then_reports_overrun() -> None:
    rig = Rig()
    kept = _post_unacked(rig, 1 + BUFFER_CAPACITY + 1, enable_buffer=True)
    assert kept == [True] * (1 + BUFFER_CAPACITY) + [False]
    assert rig.image.get(Reg.BUFFERED) == BUFFER_CAPACITY
    assert rig.status & Status.BUFFER_OVERRUN
    base = EN | Control.BUFFER_ENABLE
    seen = []
    for _ in range(1 + BUFFER_CAPACITY):
        assert rig.status & Status.RESULTS_VALID
        seen.append(unpack_u32(rig.image.read(Reg.PART_ID_ECHO, 2)))
        rig.control(base | Control.RESULTS_ACK)
        assert not rig.status & Status.RESULTS_VALID
        rig.control(base)
    assert seen == list(range(1, 2 + BUFFER_CAPACITY))  # in order; part 10 was the overrun
    assert not rig.status & Status.RESULTS_VALID and rig.image.get(Reg.BUFFERED) == 0


def test_without_buffering_an_unacked_result_is_overwritten_and_flagged() -> None:
    rig = Rig()
    kept = _post_unacked(rig, 2, enable_buffer=False)
    assert kept == [True, True]
    assert unpack_u32(rig.image.read(Reg.PART_ID_ECHO, 2)) == 2
    assert rig.status & Status.BUFFER_OVERRUN
    assert rig.image.get(Reg.INSPECTION_ID) == 2


def test_result_waits_while_plc_still_holds_ack() -> None:
    rig = Rig()
    rig.control(EN)
    rig.trigger(1, 10)
    rig.control(EN)
    rig.hs.complete_job(rig.block(1))
    rig.control(EN | Control.RESULTS_ACK)
    rig.trigger(2, 20, extra=EN | Control.RESULTS_ACK)
    rig.control(EN | Control.RESULTS_ACK)
    rig.hs.complete_job(rig.block(2))
    assert not rig.status & Status.RESULTS_VALID  # held until ACK falls: a clean edge
    rig.control(EN)
    assert rig.status & Status.RESULTS_VALID
    assert unpack_u32(rig.image.read(Reg.PART_ID_ECHO, 2)) == 2
    assert not rig.status & Status.BUFFER_OVERRUN


def test_heartbeat_loss_puts_outputs_in_safe_state() -> None:
    rig = Rig(timeout=1.0)
    rig.control(EN)
    rig.heartbeat()
    rig.trigger(1, 10)
    rig.control(EN)
    rig.hs.complete_job(ResultBlock(ResultCode.PASS, 1, 10))
    assert rig.status & Status.RESULTS_VALID
    rig.clock.now += 0.5
    rig.hs.tick()
    assert not rig.status & Status.ERROR
    rig.clock.now += 1.0
    rig.hs.tick()
    s = rig.status
    assert s & Status.ERROR
    assert not s & (Status.RESULTS_VALID | Status.TRIGGER_READY | Status.TRIGGER_ACK)
    assert rig.image.get(Reg.ERROR_CODE) == ErrorCode.PLC_HEARTBEAT_LOST
    assert rig.image.read(Reg.RESULT, 13) == [0] * 13
    assert rig.hs.state is StationState.ERROR


def test_results_finished_during_safe_state_are_discarded() -> None:
    rig = Rig(timeout=1.0)
    rig.control(EN)
    rig.heartbeat()
    rig.trigger(1, 10)
    rig.clock.now += 2.0
    rig.hs.tick()
    assert not rig.hs.complete_job(rig.block(1))
    assert not rig.status & Status.RESULTS_VALID
    assert rig.hs.counters.discarded_in_error == 1


def test_clear_error_needs_a_live_heartbeat() -> None:
    rig = Rig(timeout=1.0)
    rig.control(EN)
    rig.heartbeat()
    rig.clock.now += 2.0
    rig.hs.tick()
    rig.control(EN | Control.CLEAR_ERROR)
    assert rig.status & Status.ERROR  # heartbeat still dead
    rig.control(EN)
    rig.heartbeat()
    rig.control(EN | Control.CLEAR_ERROR)
    assert not rig.status & Status.ERROR
    assert rig.status & Status.TRIGGER_READY
    assert rig.image.get(Reg.ERROR_CODE) == ErrorCode.NONE


def test_watchdog_is_not_armed_before_a_connection_or_heartbeat() -> None:
    rig = Rig(timeout=1.0)
    rig.clock.now += 60.0
    rig.hs.tick()
    assert not rig.status & Status.ERROR
    assert not rig.hs.supervised


def test_a_connection_arms_the_watchdog_without_any_heartbeat() -> None:
    rig = Rig(timeout=1.0)
    rig.hs.plc_connected()
    assert rig.hs.supervised
    rig.clock.now += 0.6
    rig.hs.plc_connected()  # a reconnect does not restart the clock
    rig.clock.now += 0.6
    rig.hs.tick()
    assert rig.status & Status.ERROR
    assert rig.image.get(Reg.ERROR_CODE) == ErrorCode.PLC_HEARTBEAT_LOST
    assert rig.hs.refusal() == "station in error (PLC_HEARTBEAT_LOST)"


def test_a_frozen_heartbeat_after_connecting_is_lost_too() -> None:
    rig = Rig(timeout=1.0)
    rig.hs.plc_connected()
    for _ in range(4):  # the PLC writes HR7 every 0.5 s, always the same value
        rig.clock.now += 0.5
        rig.image.plc_write(Reg.PLC_HEARTBEAT, [0])
        rig.hs.tick()
    assert rig.status & Status.ERROR


def test_without_a_timeout_a_connection_supervises_nothing() -> None:
    rig = Rig(timeout=None)
    rig.hs.plc_connected()
    rig.clock.now += 600.0
    rig.hs.tick()
    assert not rig.status & Status.ERROR and not rig.hs.supervised


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda r: None, "missed trigger: station busy"),
        (
            lambda r: r.hs.enter_safe_state(ErrorCode.PLC_HEARTBEAT_LOST),
            "missed trigger: station in error (PLC_HEARTBEAT_LOST)",
        ),
        (lambda r: r.hs.stop_triggers(), "missed trigger: station stopping"),
    ],
)
def test_a_missed_trigger_reports_part_encoder_and_reason(setup: object, reason: str) -> None:
    rig = Rig()
    rig.control(EN)
    rig.trigger(1, 10)
    rig.control(EN)
    if "busy" not in reason:
        rig.hs.complete_job(rig.block(1))
        setup(rig)  # type: ignore[operator]
    rig.trigger(7, 70)
    assert [(m.part_id, m.encoder, m.reason) for m in rig.missed] == [(7, 70, reason)]


def test_station_heartbeat_counts_ticks_and_wraps() -> None:
    rig = Rig(timeout=None)
    for _ in range(3):
        rig.hs.tick()
    assert rig.image.get(Reg.STATION_HEARTBEAT) == 3


def _command(rig: Rig, command: int, arg: int) -> None:
    rig.image.plc_write(Reg.COMMAND, [command, arg])
    rig.control(EN | Control.EXECUTE_COMMAND)


def test_select_recipe_command_runs_and_completes() -> None:
    rig = Rig()
    _command(rig, Command.SELECT_RECIPE, 3)
    assert rig.commands == [(1, 3)]
    assert rig.status & Status.COMMAND_EXECUTING and not rig.status & Status.TRIGGER_READY
    rig.hs.complete_command(ErrorCode.NONE, recipe=3)
    assert rig.status & Status.COMMAND_COMPLETED and not rig.status & Status.COMMAND_EXECUTING
    assert rig.image.get(Reg.RECIPE) == 3
    rig.control(EN)
    assert not rig.status & (Status.COMMAND_COMPLETED | Status.COMMAND_FAILED)


@pytest.mark.parametrize(
    ("command", "busy", "code"),
    [
        (99, False, ErrorCode.UNKNOWN_COMMAND),
        (0, False, ErrorCode.UNKNOWN_COMMAND),
        (Command.SELECT_RECIPE, True, ErrorCode.COMMAND_REFUSED_BUSY),
    ],
)
def test_bad_or_untimely_commands_fail(command: int, busy: bool, code: ErrorCode) -> None:
    rig = Rig()
    if busy:
        rig.control(EN)
        rig.trigger(1, 10)
        rig.control(EN)
    _command(rig, int(command), 1)
    assert rig.status & Status.COMMAND_FAILED
    assert rig.image.get(Reg.ERROR_CODE) == code
    assert rig.commands == []


def test_failed_recipe_load_reports_its_code() -> None:
    rig = Rig()
    _command(rig, Command.SELECT_RECIPE, 9)
    rig.hs.complete_command(ErrorCode.RECIPE_NOT_FOUND)
    assert rig.status & Status.COMMAND_FAILED
    assert rig.image.get(Reg.ERROR_CODE) == ErrorCode.RECIPE_NOT_FOUND
    assert rig.image.get(Reg.RECIPE) == 1
