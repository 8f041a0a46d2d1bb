"""Decoding real encoded files: good formats, colour conversions, and every way a file breaks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from cellinspect.errors import FrameReadError
from cellinspect.sources.decode import (
    decode_image_bytes,
    decode_image_file,
    sniff_format,
    to_bgr8,
)

from .helpers import encode, make_image, write_bytes

IMAGE = make_image()


@pytest.mark.parametrize("ext", [".png", ".bmp", ".tiff"])
def test_lossless_formats_decode_exactly(tmp_path: Path, ext: str) -> None:
    path = write_bytes(tmp_path / f"part{ext}", encode(IMAGE, ext))
    out = decode_image_file(path)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, IMAGE)


@pytest.mark.parametrize("ext", [".jpg", ".webp"])
def test_lossy_formats_decode_close(tmp_path: Path, ext: str) -> None:
    path = write_bytes(tmp_path / f"part{ext}", encode(IMAGE, ext))
    out = decode_image_file(path)
    assert out.shape == IMAGE.shape
    assert np.abs(out.astype(int) - IMAGE.astype(int)).mean() < 4


@pytest.mark.parametrize("ext", [".png", ".bmp", ".jpg"])
def test_grey_becomes_three_equal_channels(tmp_path: Path, ext: str) -> None:
    grey = IMAGE[:, :, 1].copy()
    out = decode_image_file(write_bytes(tmp_path / f"grey{ext}", encode(grey, ext)))
    assert out.shape == (*grey.shape, 3)
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 2])
    if ext != ".jpg":
        np.testing.assert_array_equal(out[:, :, 0], grey)


def test_rgba_drops_alpha(tmp_path: Path) -> None:
    bgra = np.dstack([IMAGE, np.full(IMAGE.shape[:2], 7, np.uint8)])
    out = decode_image_file(write_bytes(tmp_path / "rgba.png", encode(bgra, ".png")))
    np.testing.assert_array_equal(out, IMAGE)


@pytest.mark.parametrize("ext", [".png", ".tiff"])
@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_keeps_full_range(tmp_path: Path, ext: str, channels: int) -> None:
    row = np.array([[0, 255, 256, 32768, 65280, 65535]], dtype=np.uint16)
    image = row if channels == 1 else np.repeat(row[:, :, None], 3, axis=2)
    out = decode_image_file(write_bytes(tmp_path / f"deep{ext}", encode(image, ext)))
    assert out.dtype == np.uint8
    assert out.shape == (1, 6, 3)
    # Full range kept (not wrapped or clipped); OpenCV's codecs differ by at most one level.
    expected = np.array([0, 0, 1, 128, 254, 255])
    assert np.abs(out[0, :, 0].astype(int) - expected).max() <= 1
    assert out[0, 0, 0] == 0
    assert out[0, -1, 0] == 255
    assert np.all(np.diff(out[0, :, 0].astype(int)) >= 0)


def _png() -> bytes:
    return encode(IMAGE, ".png")


def _jpeg() -> bytes:
    return encode(IMAGE, ".jpg")


def _corrupt_png() -> bytes:
    data = bytearray(_png())
    mid = len(data) // 2
    data[mid : mid + 64] = bytes(64)  # zeros inside IDAT: structure intact, CRC and zlib broken
    return bytes(data)


def _bmp_cut() -> bytes:
    data = encode(IMAGE, ".bmp")
    return data[: len(data) - 100]


BROKEN: list[tuple[str, str, Callable[[], bytes], str]] = [
    ("zero-byte", "empty.png", lambda: b"", "zero-byte file"),
    ("jpeg cut in half", "half.jpg", lambda: _jpeg()[: len(_jpeg()) // 2], "truncated jpeg"),
    ("jpeg without EOI", "noeoi.jpg", lambda: _jpeg()[:-2], "FFD9"),
    ("jpeg header only", "head.jpg", lambda: _jpeg()[:100], "truncated jpeg"),
    ("png cut", "cut.png", lambda: _png()[:-40], "truncated png"),
    ("png missing IEND", "noiend.png", lambda: _png()[:-12], "no IEND chunk"),
    ("png signature only", "sig.png", lambda: _png()[:8], "truncated png"),
    ("png corrupt data", "bad.png", _corrupt_png, "not a decodable image (corrupt png"),
    ("bmp cut", "cut.bmp", _bmp_cut, "truncated bmp"),
    ("random bytes", "noise.png", lambda: bytes(range(256)) * 8, "unknown format"),
    ("text file", "notes.png", lambda: b"part 17 passed\nno defects\n", "looks like text"),
    ("text with image name", "labels.jpg", lambda: b"name,label\n", "looks like text"),
]


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [(name, make(), expected) for _, name, make, expected in BROKEN],
    ids=[case[0] for case in BROKEN],
)
def test_broken_files_say_what_is_wrong(
    tmp_path: Path, name: str, data: bytes, expected: str
) -> None:
    path = write_bytes(tmp_path / name, data)
    with pytest.raises(FrameReadError) as info:
        decode_image_file(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FrameReadError, match=r"missing\.png: file not found"):
        decode_image_file(tmp_path / "missing.png")


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(FrameReadError, match="is a directory"):
        decode_image_file(tmp_path / "dir.png")


def test_bytes_api_names_the_origin() -> None:
    with pytest.raises(FrameReadError, match=r"^upload 3: empty data"):
        decode_image_bytes(b"", "upload 3")
    with pytest.raises(FrameReadError, match=r"^upload 4: truncated png"):
        decode_image_bytes(_png()[:100], "upload 4")
    np.testing.assert_array_equal(decode_image_bytes(_png(), "upload 5"), IMAGE)


def test_jpeg_with_trailing_bytes_after_eoi_is_not_truncated() -> None:
    out = decode_image_bytes(_jpeg() + b"\x00" * 32 + b"vendor trailer", "trailer.jpg")
    assert out.shape == IMAGE.shape


@pytest.mark.parametrize(
    ("ext", "kind"),
    [(".png", "png"), (".jpg", "jpeg"), (".bmp", "bmp"), (".tiff", "tiff"), (".webp", "webp")],
)
def test_sniff_format(ext: str, kind: str) -> None:
    assert sniff_format(encode(IMAGE, ext)) == kind


@pytest.mark.parametrize("data", [b"", b"hello", b"\x89PN"])
def test_sniff_unknown(data: bytes) -> None:
    assert sniff_format(data) is None


@pytest.mark.parametrize(
    ("image", "shape"),
    [
        (np.zeros((4, 5), np.uint8), (4, 5, 3)),
        (np.zeros((4, 5, 1), np.uint8), (4, 5, 3)),
        (np.zeros((4, 5, 3), np.uint8), (4, 5, 3)),
        (np.zeros((4, 5, 4), np.uint8), (4, 5, 3)),
        (np.zeros((4, 5, 3), np.uint16), (4, 5, 3)),
        (np.zeros((8, 10, 3), np.uint8)[::2, ::2], (4, 5, 3)),
    ],
)
def test_to_bgr8_shapes(image: np.ndarray, shape: tuple[int, ...]) -> None:
    out = to_bgr8(image, "cam")
    assert out.shape == shape
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (None, "no image data"),
        (np.zeros((0, 5, 3), np.uint8), "empty image"),
        (np.zeros((4, 5, 3), np.float32), "dtype float32"),
        (np.zeros((4, 5, 2), np.uint8), "1, 3 or 4 channels"),
        (np.zeros((4,), np.uint8), "1, 3 or 4 channels"),
    ],
)
def test_to_bgr8_rejects(image: np.ndarray | None, message: str) -> None:
    with pytest.raises(FrameReadError, match=f"^cam: .*{message}"):
        to_bgr8(image, "cam")
