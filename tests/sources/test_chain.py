"""ChainSource: segments read in order, opened lazily, closed once, open errors as failures."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from cellinspect.entities import Frame, FrameFailure, SourceItem
from cellinspect.errors import SourceError
from cellinspect.sources.base import FrameSource, SourceState
from cellinspect.sources.chain import ChainSource, Segment
from cellinspect.sources.files import FileListSource
from cellinspect.sources.video import VideoFileSource

from .helpers import GOOD, FakeFactory, write_image, write_video


def test_segments_in_order_and_opened_only_when_reached(tmp_path: Path) -> None:
    opened: list[str] = []
    image = write_image(tmp_path / "a.png")
    video = write_video(tmp_path / "v.avi", 2)

    def files() -> FrameSource:
        opened.append("files")
        return FileListSource([image])

    def clip() -> FrameSource:
        opened.append("video")
        return VideoFileSource(video)

    source = ChainSource([Segment(files, str(image)), Segment(clip, str(video))])
    assert isinstance(source, FrameSource)
    frames = source.frames()
    first = next(frames)
    assert opened == ["files"] and first.path == str(image)
    rest = list(frames)
    assert opened == ["files", "video"]
    assert [i.frame_id for i in rest] == [0, 1]
    assert all(isinstance(i, Frame) for i in [first, *rest])
    assert source.state is SourceState.CLOSED


def test_open_error_is_one_failure_and_the_chain_goes_on(tmp_path: Path) -> None:
    image = write_image(tmp_path / "a.png")

    def broken() -> FrameSource:
        raise SourceError("video x.avi: cannot open")

    def buggy() -> FrameSource:
        raise RuntimeError("boom")

    source = ChainSource(
        [
            Segment(broken, "x.avi"),
            Segment(buggy, "y.avi"),
            Segment(lambda: FileListSource([image])),
        ]
    )
    items = list(source.frames())
    assert [type(i) for i in items] == [FrameFailure, FrameFailure, Frame]
    reasons = [i.reason for i in items if isinstance(i, FrameFailure)]
    assert reasons[0] == "video x.avi: cannot open"
    assert "unexpected RuntimeError" in reasons[1] and "y.avi" in reasons[1]
    assert [i.path for i in items[:2]] == ["x.avi", "y.avi"]
    assert source.state is SourceState.CLOSED
    assert source.last_error is not None and "y.avi" in source.last_error


def test_failed_segment_is_remembered_and_the_next_one_read(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 1)
    factory = FakeFactory([[GOOD, RuntimeError("decoder died")]])
    image = write_image(tmp_path / "a.png")
    source = ChainSource(
        [
            Segment(lambda: VideoFileSource(video, capture_factory=factory)),
            Segment(lambda: FileListSource([image])),
        ]
    )
    items = list(source.frames())
    assert [type(i) for i in items] == [Frame, FrameFailure, Frame]
    assert factory.captures[0].released
    assert "decoder died" in (source.last_error or "")
    assert source.state is SourceState.CLOSED


def test_close_from_another_thread_stops_the_current_segment(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", 1)
    factory = FakeFactory([[GOOD] * 100_000])
    later: list[str] = []

    def never() -> FrameSource:
        later.append("opened")
        return FileListSource([])

    source = ChainSource(
        [Segment(lambda: VideoFileSource(video, capture_factory=factory)), Segment(never)]
    )
    items: list[SourceItem] = []
    started = threading.Event()

    def read() -> None:
        for item in source.frames():
            items.append(item)
            started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    assert started.wait(5.0)
    source.close()
    reader.join(5.0)
    assert not reader.is_alive()
    assert 0 < len(items) < 100_000
    assert factory.captures[0].released
    assert later == []
    assert source.state is SourceState.CLOSED


def test_close_before_reading_opens_nothing() -> None:
    opened: list[int] = []

    def segment() -> FrameSource:
        opened.append(1)
        return FileListSource([])

    source = ChainSource([Segment(segment)])
    source.close()
    assert list(source.frames()) == []
    assert opened == []
    assert source.state is SourceState.CLOSED


def test_frames_only_once() -> None:
    source = ChainSource([])
    assert list(source.frames()) == []
    with pytest.raises(SourceError, match="only once"):
        source.frames()
