"""FileListSource: one item per path, in order, with failures in place of bad files."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from cellinspect.entities import Frame, FrameFailure
from cellinspect.errors import SourceError
from cellinspect.sources.base import FrameSource, SourceState
from cellinspect.sources.files import FileListSource

from .helpers import encode, make_image, write_bytes, write_image


def _mixed_inputs(tmp: Path) -> list[tuple[Path, str | None]]:
    """(path, None for a good file or the phrase its failure reason must contain)."""
    jpeg = encode(make_image(seed=2), ".jpg")
    png = encode(make_image(seed=3), ".png")
    deep = np.full((8, 8), 40000, np.uint16)
    return [
        (write_image(tmp / "a_good.png", make_image(seed=1)), None),
        (write_bytes(tmp / "b_empty.png", b""), "zero-byte file"),
        (write_bytes(tmp / "c_good.jpg", jpeg), None),
        (write_bytes(tmp / "d_cut.jpg", jpeg[: len(jpeg) // 2]), "truncated jpeg"),
        (write_bytes(tmp / "e_cut.png", png[:-30]), "truncated png"),
        (write_bytes(tmp / "f_noise.png", bytes(range(256)) * 4), "not a decodable image"),
        (write_bytes(tmp / "g_notes.txt", b"operator notes\n"), "not a decodable image"),
        (tmp / "h_missing.png", "file not found"),
        (write_image(tmp / "i_good.bmp", make_image(seed=4)), None),
        (write_image(tmp / "j_grey.png", make_image(seed=5)[:, :, 0]), None),
        (write_image(tmp / "k_rgba.png", np.dstack([make_image(), make_image()[:, :, :1]])), None),
        (write_image(tmp / "l_deep.png", deep), None),
    ]


def test_nothing_is_lost_and_order_is_kept(tmp_path: Path) -> None:
    inputs = _mixed_inputs(tmp_path)
    source = FileListSource([p for p, _ in inputs], name="line1")
    t0 = time.monotonic()
    items = list(source.frames())
    t1 = time.monotonic()

    assert len(items) == len(inputs)
    assert [i.frame_id for i in items] == list(range(len(inputs)))
    assert [i.path for i in items] == [str(p) for p, _ in inputs]
    for item, (path, problem) in zip(items, inputs, strict=True):
        assert item.source == "line1"
        assert t0 <= item.captured_mono <= t1
        if problem is None:
            assert isinstance(item, Frame), getattr(item, "reason", "")
            assert item.image.shape[2] == 3
        else:
            assert isinstance(item, FrameFailure)
            assert str(path) in item.reason
            assert problem in item.reason
    monos = [i.captured_mono for i in items]
    assert monos == sorted(monos)
    assert source.state is SourceState.CLOSED


def test_good_file_content_comes_through(tmp_path: Path) -> None:
    image = make_image(seed=9)
    source = FileListSource([write_image(tmp_path / "x.png", image)])
    (frame,) = list(source.frames())
    assert isinstance(frame, Frame)
    np.testing.assert_array_equal(frame.image, image)


def test_empty_list_yields_nothing() -> None:
    source = FileListSource([])
    assert list(source.frames()) == []
    assert source.state is SourceState.CLOSED


def test_states_and_protocol(tmp_path: Path) -> None:
    seen: list[tuple[SourceState, SourceState]] = []
    source = FileListSource(
        [write_image(tmp_path / "x.png")], on_state=lambda old, new, _: seen.append((old, new))
    )
    assert isinstance(source, FrameSource)
    assert source.state is SourceState.CREATED
    list(source.frames())
    assert seen == [
        (SourceState.CREATED, SourceState.OPEN),
        (SourceState.OPEN, SourceState.CLOSED),
    ]


def test_frames_may_be_called_once(tmp_path: Path) -> None:
    source = FileListSource([write_image(tmp_path / "x.png")])
    list(source.frames())
    with pytest.raises(SourceError, match="only once"):
        source.frames()


def test_close_stops_early_and_is_idempotent(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{i}.png") for i in range(5)]
    source = FileListSource(paths)
    it = source.frames()
    first = next(it)
    source.close()
    source.close()
    assert first.frame_id == 0
    assert list(it) == []
    assert source.state is SourceState.CLOSED


def test_close_before_frames_yields_nothing(tmp_path: Path) -> None:
    source = FileListSource([write_image(tmp_path / "x.png")])
    source.close()
    assert list(source.frames()) == []
    assert source.state is SourceState.CLOSED
