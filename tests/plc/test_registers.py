"""Register map helpers: 32-bit packing, codes, the documented table, the register image."""

from __future__ import annotations

import pytest

from cellinspect.entities import Verdict
from cellinspect.plc.handshake import ResultBlock
from cellinspect.plc.register_image import PlcWriteRefusedError, RegisterImage
from cellinspect.plc.registers import (
    DEFECT_CODES,
    DEFECT_INSPECTION_ERROR,
    DEFECT_NONE,
    DEFECT_UNCLASSIFIED,
    REGISTER_DOCS,
    STATION_BLOCK,
    Control,
    Reg,
    ResultCode,
    Status,
    defect_code,
    pack_i16,
    pack_i32,
    pack_u32,
    register_map_markdown,
    unpack_i16,
    unpack_i32,
    unpack_u32,
)


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (0, (0, 0)),
        (1, (0, 1)),
        (0x10000, (1, 0)),
        (0xFFFF_FFFF, (0xFFFF, 0xFFFF)),
        (0x1234_5678, (0x1234, 0x5678)),
    ],
)
def test_u32_is_high_word_first(value: int, words: tuple[int, int]) -> None:
    assert pack_u32(value) == words
    assert unpack_u32(list(words)) == value


@pytest.mark.parametrize("value", [0, 1, -1, 12345, -12345, 2**31 - 1, -(2**31)])
def test_i32_round_trips_in_twos_complement(value: int) -> None:
    assert unpack_i32(list(pack_i32(value))) == value


@pytest.mark.parametrize("value", [0, 1, -1, 18000, -18000, 32767, -32768])
def test_i16_round_trips(value: int) -> None:
    assert unpack_i16(pack_i16(value)) == value


@pytest.mark.parametrize(
    ("fn", "arg"),
    [
        (pack_u32, -1),
        (pack_u32, 2**32),
        (pack_i32, 2**31),
        (pack_i32, -(2**31) - 1),
        (pack_i16, 40000),
        (unpack_u32, [1]),
        (unpack_u32, [1, 2, 3]),
        (unpack_u32, [70000, 0]),
        (unpack_u32, []),
    ],
)
def test_out_of_range_values_are_refused(fn: object, arg: object) -> None:
    with pytest.raises(ValueError, match=r"range|expected"):
        fn(arg)  # type: ignore[operator]


@pytest.mark.parametrize(
    ("verdict", "cls", "error", "code"),
    [
        (Verdict.PASS, None, None, DEFECT_NONE),
        (Verdict.PASS, "scratch", None, DEFECT_NONE),
        (Verdict.FAIL, "scratch", None, DEFECT_CODES["scratch"]),
        (Verdict.REVIEW, "stain", None, DEFECT_CODES["stain"]),
        (Verdict.FAIL, None, None, DEFECT_UNCLASSIFIED),
        (Verdict.FAIL, "warped", None, DEFECT_UNCLASSIFIED),
        (Verdict.FAIL, None, "model failed", DEFECT_INSPECTION_ERROR),
    ],
)
def test_defect_codes(verdict: Verdict, cls: str | None, error: str | None, code: int) -> None:
    assert defect_code(verdict, cls, error) == code


def test_defect_code_table_is_stable() -> None:
    # Codes are part of the PLC interface: changing one breaks PLC programs in the field.
    assert DEFECT_CODES == {
        "scratch": 1,
        "crack": 2,
        "dent": 3,
        "missing_hole": 4,
        "chipped_edge": 5,
        "stain": 6,
    }


@pytest.mark.parametrize(
    ("verdict", "code"),
    [
        (Verdict.PASS, ResultCode.PASS),
        (Verdict.FAIL, ResultCode.FAIL),
        (Verdict.REVIEW, ResultCode.REVIEW),
    ],
)
def test_result_codes_from_verdicts(verdict: Verdict, code: ResultCode) -> None:
    assert ResultCode.from_verdict(verdict) is code
    assert code.rejects is (verdict is not Verdict.PASS)


def test_every_code_but_pass_rejects() -> None:
    assert [c for c in ResultCode if not c.rejects] == [ResultCode.PASS]


def test_bits_match_the_documented_positions() -> None:
    assert [c.bit_length() - 1 for c in Control] == [0, 1, 2, 3, 4, 5, 7]
    assert [s.bit_length() - 1 for s in Status] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14, 15]


def test_docs_cover_every_register_without_overlap() -> None:
    covered: list[int] = []
    for d in REGISTER_DOCS:
        covered += range(d.address, d.address + d.width)
    assert len(covered) == len(set(covered))
    assert {int(r) for r in Reg} <= set(covered)
    start, count = STATION_BLOCK
    assert set(range(start, start + count)) <= set(covered)
    table = register_map_markdown()
    assert "| 111-112 | 2 | pick x |" in table and "| 15 | online |" in table


def test_result_block_words_land_on_the_documented_registers() -> None:
    block = ResultBlock(
        ResultCode.REVIEW, 0x0102_0304, 0xFFFF_FFFF, 5, -150, 2000, -9000, 12.4, 1.2345
    )
    words = block.words()
    assert len(words) == Reg.SCORE - Reg.RESULT + 1
    i = Reg.RESULT
    assert words[Reg.RESULT - i] == 3 and words[Reg.DEFECT_CODE - i] == 5
    assert unpack_u32(words[Reg.PART_ID_ECHO - i : Reg.PART_ID_ECHO - i + 2]) == 0x0102_0304
    assert unpack_i32(words[Reg.PICK_X - i : Reg.PICK_X - i + 2]) == -150
    assert unpack_i16(words[Reg.PICK_ANGLE - i]) == -9000
    assert words[Reg.PROCESSING_MS - i] == 12 and words[Reg.SCORE - i] == 1234


@pytest.mark.parametrize(
    ("address", "values"),
    [(100, [1]), (99, [1, 2]), (-1, [0]), (0, []), (0, [70000]), (0, [-1])],
)
def test_register_image_refuses_plc_writes_outside_its_area(
    address: int, values: list[int]
) -> None:
    image = RegisterImage()
    with pytest.raises(PlcWriteRefusedError):
        image.plc_write(address, values)
    assert image.snapshot() == [0] * image.size


def test_register_image_tells_listeners_old_and_new_values() -> None:
    image = RegisterImage()
    seen: list[tuple[int, list[int], list[int]]] = []
    image.add_listener(lambda a, o, n: seen.append((a, list(o), list(n))))
    image.plc_write(3, [1, 2])
    image.plc_write(3, [5, 2])
    image.write(100, [9])  # station writes do not notify
    assert seen == [(3, [0, 0], [1, 2]), (3, [1, 2], [5, 2])]
    assert image.read(3, 2) == [5, 2] and image.get(100) == 9
    with pytest.raises(IndexError):
        image.read(127, 2)
