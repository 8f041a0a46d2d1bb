"""The station's Modbus register map: addresses, bits, codes and 32-bit packing, in one place.

Everything a PLC programmer wires against is defined here and nowhere else; the README table
is printed from these constants by :func:`register_map_markdown`, so the two cannot drift.
All registers are holding registers (function codes 3, 6, 16). 32-bit values use two
registers, high word first ("big-endian word order"), as most PLCs read DINTs.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from cellinspect.entities import Verdict

REGISTER_COUNT = 128
"""Registers 0..127 exist; anything else answers Modbus exception 2 (illegal address)."""

PLC_AREA_END = 100
"""The PLC may write registers 0..99 only; a write to the station area is refused."""


class Reg(enum.IntEnum):
    """Register addresses (0-based, as on the wire; a 4xxxx view adds 40001)."""

    # PLC to station
    CONTROL = 0
    COMMAND = 1
    COMMAND_ARG = 2
    PART_ID = 3  # u32, 3-4
    ENCODER = 5  # u32, 5-6
    PLC_HEARTBEAT = 7
    # Station to PLC
    STATUS = 100
    RECIPE = 101
    ERROR_CODE = 102
    ACQUISITION_ID = 103
    INSPECTION_ID = 104
    RESULT = 105
    DEFECT_CODE = 106
    PART_ID_ECHO = 107  # u32, 107-108
    ENCODER_ECHO = 109  # u32, 109-110
    PICK_X = 111  # i32, 111-112, 0.01 mm
    PICK_Y = 113  # i32, 113-114, 0.01 mm
    PICK_ANGLE = 115  # i16, 0.01 degree
    PROCESSING_MS = 116
    SCORE = 117  # x1000
    STATION_HEARTBEAT = 118
    BUFFERED = 119
    MISSED_TRIGGERS = 120
    HEALTH = 121  # camera health: 0 ok, 1 warn, 2 alarm (docs/health.md)
    HEALTH_FLAGS = 122  # bit per statistic at warn or alarm


PLC_BLOCK = (Reg.CONTROL, 8)
"""(start, count) of what the PLC writes each scan: control .. heartbeat."""

STATION_BLOCK = (Reg.STATUS, 21)
"""(start, count) of what the PLC reads each scan: status .. missed-trigger counter."""


class Control(enum.IntFlag):
    """Bits of HR0, written by the PLC."""

    TRIGGER_ENABLE = 1 << 0
    TRIGGER = 1 << 1
    BUFFER_ENABLE = 1 << 2
    RESULTS_ACK = 1 << 3
    EXECUTE_COMMAND = 1 << 4
    CLEAR_ERROR = 1 << 5
    SET_OFFLINE = 1 << 7


class Status(enum.IntFlag):
    """Bits of HR100, written by the station."""

    TRIGGER_READY = 1 << 0
    TRIGGER_ACK = 1 << 1
    BUSY = 1 << 2
    MISSED_TRIGGER = 1 << 3
    RESULTS_VALID = 1 << 4
    INSPECTION_COMPLETED = 1 << 5
    BUFFER_OVERRUN = 1 << 6
    COMMAND_EXECUTING = 1 << 7
    COMMAND_COMPLETED = 1 << 8
    COMMAND_FAILED = 1 << 9
    ERROR = 1 << 14
    ONLINE = 1 << 15


class Command(enum.IntEnum):
    """Values of HR1, run on a rising edge of Control.EXECUTE_COMMAND."""

    NONE = 0
    SELECT_RECIPE = 1


class ResultCode(enum.IntEnum):
    """Values of HR105. Anything but PASS must be treated as reject by the PLC."""

    NONE = 0
    PASS = 1
    FAIL = 2
    REVIEW = 3
    NO_RESULT = 4

    @classmethod
    def from_verdict(cls, verdict: Verdict) -> ResultCode:
        return {Verdict.PASS: cls.PASS, Verdict.FAIL: cls.FAIL, Verdict.REVIEW: cls.REVIEW}[verdict]

    @property
    def rejects(self) -> bool:
        """True for every code except PASS: the fail-safe reading of a result."""
        return self is not ResultCode.PASS


class ErrorCode(enum.IntEnum):
    """Values of HR102 while Status.ERROR is set (or after a failed command)."""

    NONE = 0
    PLC_HEARTBEAT_LOST = 1
    UNKNOWN_COMMAND = 2
    RECIPE_NOT_FOUND = 3
    COMMAND_REFUSED_BUSY = 4
    RECIPE_LOAD_FAILED = 5
    RECORD_FAILED = 6  # the result journal cannot be written (disk full): no verdicts go out


DEFECT_CODES: dict[str, int] = {
    "scratch": 1,
    "crack": 2,
    "dent": 3,
    "missing_hole": 4,
    "chipped_edge": 5,
    "stain": 6,
}
"""Stable codes for HR106; new classes get new numbers, existing numbers never change."""

DEFECT_NONE = 0
DEFECT_UNCLASSIFIED = 100  # not PASS, but no class (anomaly only) or a class not in the table
DEFECT_INSPECTION_ERROR = 250  # the inspector reported an error (model, preprocessing, ...)
DEFECT_ACQUISITION_FAILED = 251  # the camera delivered no frame
DEFECT_DEADLINE_MISSED = 252  # no verdict within the deadline (goes with NO_RESULT)


def defect_code(verdict: Verdict, defect_class: str | None, error: str | None) -> int:
    """HR106 for a result: 0 for PASS, the class's code, or one of the special codes."""
    if verdict is Verdict.PASS:
        return DEFECT_NONE
    if defect_class is not None and defect_class in DEFECT_CODES:
        return DEFECT_CODES[defect_class]
    if error is not None:
        return DEFECT_INSPECTION_ERROR
    return DEFECT_UNCLASSIFIED


# --------------------------------------------------------------------------- packing

U16_MAX = 0xFFFF
U32_MAX = 0xFFFF_FFFF


def pack_u32(value: int) -> tuple[int, int]:
    """An unsigned 32-bit value as (high word, low word)."""
    if not 0 <= value <= U32_MAX:
        raise ValueError(f"u32 out of range: expected 0..{U32_MAX}, got {value}")
    return (value >> 16) & U16_MAX, value & U16_MAX


def unpack_u32(words: Sequence[int]) -> int:
    """(high word, low word) to an unsigned 32-bit value."""
    _check_words(words, 2)
    return (words[0] << 16) | words[1]


def pack_i32(value: int) -> tuple[int, int]:
    """A signed 32-bit value in two's complement as (high word, low word)."""
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"i32 out of range: expected -2^31..2^31-1, got {value}")
    return pack_u32(value & U32_MAX)


def unpack_i32(words: Sequence[int]) -> int:
    raw = unpack_u32(words)
    return raw - (1 << 32) if raw & 0x8000_0000 else raw


def pack_i16(value: int) -> int:
    if not -(2**15) <= value < 2**15:
        raise ValueError(f"i16 out of range: expected -32768..32767, got {value}")
    return value & U16_MAX


def unpack_i16(word: int) -> int:
    _check_words([word], 1)
    return word - (1 << 16) if word & 0x8000 else word


def clamp_u16(value: float) -> int:
    """Round and clamp to 0..65535 (times and scores saturate instead of wrapping)."""
    return max(0, min(U16_MAX, round(value)))


def _check_words(words: Sequence[int], count: int) -> None:
    if len(words) != count:
        raise ValueError(f"expected {count} registers, got {len(words)}")
    for w in words:
        if not 0 <= w <= U16_MAX:
            raise ValueError(f"register value out of range 0..65535: {w}")


# --------------------------------------------------------------------------- documentation


@dataclass(frozen=True, slots=True)
class RegisterDoc:
    address: int
    width: int
    name: str
    direction: str
    kind: str
    meaning: str


REGISTER_DOCS: tuple[RegisterDoc, ...] = (
    RegisterDoc(0, 1, "control", "PLC→station", "bits", "see control bits"),
    RegisterDoc(1, 1, "command", "PLC→station", "u16", "1 = select recipe (HR2 = number)"),
    RegisterDoc(2, 1, "command argument", "PLC→station", "u16", "recipe number"),
    RegisterDoc(3, 2, "part id", "PLC→station", "u32", "latched on trigger"),
    RegisterDoc(5, 2, "encoder at trigger", "PLC→station", "u32", "latched on trigger"),
    RegisterDoc(
        7, 1, "PLC heartbeat", "PLC→station", "u16", "change it every scan; 1 s frozen = lost"
    ),
    RegisterDoc(100, 1, "status", "station→PLC", "bits", "see status bits"),
    RegisterDoc(101, 1, "current recipe", "station→PLC", "u16", "recipe number in use"),
    RegisterDoc(102, 1, "error code", "station→PLC", "u16", "see error codes"),
    RegisterDoc(103, 1, "acquisition id", "station→PLC", "u16", "+1 per accepted trigger"),
    RegisterDoc(104, 1, "inspection id", "station→PLC", "u16", "+1 per posted result"),
    RegisterDoc(105, 1, "result", "station→PLC", "u16", "1 pass, 2 fail, 3 review, 4 no result"),
    RegisterDoc(106, 1, "defect class code", "station→PLC", "u16", "see defect codes"),
    RegisterDoc(107, 2, "part id echo", "station→PLC", "u32", "part id latched at trigger"),
    RegisterDoc(109, 2, "encoder echo", "station→PLC", "u32", "encoder latched at trigger"),
    RegisterDoc(
        111, 2, "pick x", "station→PLC", "i32", "robot base frame (recipe hand-eye), 0.01 mm"
    ),
    RegisterDoc(
        113, 2, "pick y", "station→PLC", "i32", "robot base frame (recipe hand-eye), 0.01 mm"
    ),
    RegisterDoc(115, 1, "pick angle", "station→PLC", "i16", "0.01 degree"),
    RegisterDoc(116, 1, "processing time", "station→PLC", "u16", "ms, trigger to result"),
    RegisterDoc(117, 1, "score", "station→PLC", "u16", "highest anomaly score x1000"),
    RegisterDoc(118, 1, "station heartbeat", "station→PLC", "u16", "+1 every 100 ms"),
    RegisterDoc(119, 1, "results buffered", "station→PLC", "u16", "results waiting behind HR105"),
    RegisterDoc(120, 1, "missed triggers", "station→PLC", "u16", "counter, wraps at 65536"),
    RegisterDoc(121, 1, "camera health", "station→PLC", "u16", "0 ok, 1 warn, 2 alarm"),
    RegisterDoc(
        122,
        1,
        "health flags",
        "station→PLC",
        "bits",
        "at warn or alarm: 0 focus, 1 brightness, 2 contrast, 3 noise, 4 clipping, 5 position, "
        "6 score drift, 7 score shift",
    ),
)


def register_map_markdown() -> str:
    """The register table, the bit tables and the code tables as Markdown for the README."""
    lines = [
        "| HR | words | name | direction | type | meaning |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for d in REGISTER_DOCS:
        addr = str(d.address) if d.width == 1 else f"{d.address}-{d.address + d.width - 1}"
        lines.append(f"| {addr} | {d.width} | {d.name} | {d.direction} | {d.kind} | {d.meaning} |")
    lines += ["", "| HR0 bit | control (PLC→station) |", "| --- | --- |"]
    lines += [f"| {_bit(f)} | {_name(f)} |" for f in Control]
    lines += ["", "| HR100 bit | status (station→PLC) |", "| --- | --- |"]
    lines += [f"| {_bit(f)} | {_name(f)} |" for f in Status]
    lines += ["", "| HR102 | error |", "| --- | --- |"]
    lines += [f"| {e.value} | {_name(e)} |" for e in ErrorCode]
    lines += ["", "| HR106 | defect class |", "| --- | --- |", f"| {DEFECT_NONE} | none (pass) |"]
    lines += [f"| {code} | {name} |" for name, code in DEFECT_CODES.items()]
    lines += [
        f"| {DEFECT_UNCLASSIFIED} | unclassified (not pass, no class in this table) |",
        f"| {DEFECT_INSPECTION_ERROR} | inspection error |",
        f"| {DEFECT_ACQUISITION_FAILED} | acquisition failed (no frame) |",
        f"| {DEFECT_DEADLINE_MISSED} | deadline missed (result 4) |",
    ]
    return "\n".join(lines)


def _bit(flag: enum.IntFlag) -> int:
    return int(flag).bit_length() - 1


def _name(member: enum.Enum) -> str:
    return member.name.lower().replace("_", " ") if member.name else str(member.value)
