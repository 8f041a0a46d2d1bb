"""VideoFileSource on real MJPG files written with cv2.VideoWriter, plus fakes for odd reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cellinspect.entities import Frame, FrameFailure
from cellinspect.errors import SourceError
from cellinspect.sources.base import FrameSource, SourceState
from cellinspect.sources.video import VideoFileSource

from .helpers import FAIL, GOOD, FakeFactory, write_bytes, write_video

COUNT = 10


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return write_video(tmp_path / "line.avi", COUNT)


@pytest.mark.parametrize(
    ("every_nth", "ids"),
    [(1, list(range(COUNT))), (3, [0, 3, 6, 9]), (4, [0, 4, 8]), (COUNT, [0]), (50, [0])],
)
def test_every_nth_frame_ids_are_frame_indices(video: Path, every_nth: int, ids: list[int]) -> None:
    source = VideoFileSource(video, every_nth=every_nth)
    items = list(source.frames())
    assert [i.frame_id for i in items] == ids
    assert all(isinstance(i, Frame) for i in items)
    frames = [i for i in items if isinstance(i, Frame)]
    # frame i was written at grey level 20 * i: the right frames come, in order
    assert [round(float(f.image.mean()) / 20) for f in frames] == ids
    assert all(f.path == str(video) for f in frames)
    assert all(f.image.shape == (48, 64, 3) for f in frames)
    assert source.state is SourceState.CLOSED


def test_protocol_and_name(video: Path) -> None:
    source = VideoFileSource(video)
    assert isinstance(source, FrameSource)
    assert source.name == "video:line.avi"
    source.close()


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("missing.avi", None, "video file not found"),
        ("empty.avi", b"", "cannot open"),
        ("notes.avi", b"this is not a video\n" * 20, "cannot open"),
    ],
)
def test_unopenable_video_is_a_source_error(
    tmp_path: Path, name: str, data: bytes | None, message: str
) -> None:
    path = tmp_path / name
    if data is not None:
        write_bytes(path, data)
    with pytest.raises(SourceError, match=message) as info:
        VideoFileSource(path)
    assert str(path) in str(info.value)


def test_every_nth_must_be_positive(video: Path) -> None:
    with pytest.raises(SourceError, match="every_nth must be >= 1"):
        VideoFileSource(video, every_nth=0)


def test_read_failure_ends_normally(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "fake.avi", b"x")
    factory = FakeFactory([[GOOD, GOOD, GOOD, FAIL, GOOD]])
    source = VideoFileSource(path, capture_factory=factory)
    assert [i.frame_id for i in source.frames()] == [0, 1, 2]
    assert source.state is SourceState.CLOSED
    assert factory.captures[0].released


def test_odd_frames_are_converted_or_reported(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "fake.avi", b"x")
    grey = np.full((4, 6), 9, np.uint8)
    bad = np.zeros((4, 6, 3), np.float32)
    source = VideoFileSource(path, capture_factory=FakeFactory([[grey, bad, GOOD]]))
    items = list(source.frames())
    assert [type(i) for i in items] == [Frame, FrameFailure, Frame]
    assert isinstance(items[0], Frame)
    assert items[0].image.shape == (4, 6, 3)
    assert isinstance(items[1], FrameFailure)
    assert "frame 1" in items[1].reason
    assert "float32" in items[1].reason


def test_read_exception_fails_the_source(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "fake.avi", b"x")
    source = VideoFileSource(path, capture_factory=FakeFactory([[GOOD, RuntimeError("boom")]]))
    items = list(source.frames())
    assert [type(i) for i in items] == [Frame, FrameFailure]
    assert source.state is SourceState.FAILED
    assert "boom" in (source.last_error or "")


def test_close_before_frames_releases_capture(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "fake.avi", b"x")
    factory = FakeFactory([[GOOD, GOOD]])
    source = VideoFileSource(path, capture_factory=factory)
    source.close()
    assert factory.captures[0].released
    assert list(source.frames()) == []
    assert source.state is SourceState.CLOSED


def test_close_while_reading_stops(video: Path) -> None:
    source = VideoFileSource(video)
    it = source.frames()
    next(it)
    source.close()
    assert list(it) == []
    assert source.state is SourceState.CLOSED
