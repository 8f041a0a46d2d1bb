"""Frames of a video file, for replaying a recorded line.

The file is opened when the source is created, so a missing or unreadable video is a
SourceError up front instead of an empty run. Frame ids are frame indices in the file, so with
`every_nth=3` they read 0, 3, 6... and point back at the exact frame. A failed read ends the
video normally: OpenCV reports end-of-file that way.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

from cellinspect.entities import Frame, FrameFailure, SourceItem
from cellinspect.errors import FrameReadError, SourceError
from cellinspect.sources.base import SourceState
from cellinspect.sources.capture import (
    CaptureFactory,
    CaptureLike,
    capture_time,
    open_capture,
    safe_release,
    try_open,
)
from cellinspect.sources.decode import to_bgr8
from cellinspect.sources.lifecycle import Lifecycle, LifecycleSource, StateListener

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset(
    {".avi", ".mp4", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts"}
)
"""File name endings (case-insensitive) that command-line paths open as a video, not an image."""


def is_video_path(path: Path | str) -> bool:
    """Whether a path names a video file by its extension (`parts.AVI` counts)."""
    return Path(path).suffix.casefold() in VIDEO_SUFFIXES


class VideoFileSource(LifecycleSource):
    """Every `every_nth` frame of a video file; skipped frames are grabbed, not decoded."""

    def __init__(
        self,
        path: Path | str,
        every_nth: int = 1,
        name: str | None = None,
        capture_factory: CaptureFactory = open_capture,
        on_state: StateListener | None = None,
    ) -> None:
        self.path = Path(path)
        if every_nth < 1:
            raise SourceError(f"video {self.path}: every_nth must be >= 1, got {every_nth}")
        if not self.path.is_file():
            raise SourceError(f"video file not found: {self.path}")
        self.every_nth = every_nth
        self.name = name or f"video:{self.path.name}"
        self._what = f"video {self.path}"
        self._life = Lifecycle(self.name, on_state)
        self._lock = threading.Lock()
        self._started = False
        cap, why = try_open(capture_factory, str(self.path), self._what)
        if cap is None:
            raise SourceError(f"{why} (not a video OpenCV can decode?)")
        self._cap: CaptureLike | None = cap

    def close(self) -> None:
        self._life.close()
        with self._lock:
            if not self._started and self._cap is not None:
                safe_release(self._cap, self._what)  # no reader will ever release it
                self._cap = None

    def frames(self) -> Iterator[SourceItem]:
        with self._lock:
            self._life.start()
            self._started = True
            cap = self._cap
        return self._read(cap)

    def _read(self, cap: CaptureLike | None) -> Iterator[SourceItem]:
        life, what = self._life, self._what
        if cap is None:
            return
        index = 0
        try:
            if not life.move(SourceState.OPEN):
                return
            while not life.stopping:
                if index % self.every_nth:
                    if not cap.grab():
                        break
                    index += 1
                    continue
                try:
                    ok, raw = cap.read()
                except Exception as err:  # the decoder state is unknown: stop here
                    reason = f"{what}: read failed at frame {index} ({type(err).__name__}: {err})"
                    mono, wall = capture_time()
                    yield FrameFailure(index, self.name, reason, mono, wall, path=str(self.path))
                    life.fail(reason)
                    return
                mono, wall = capture_time()
                if not ok or raw is None:
                    break  # end of file
                try:
                    image = to_bgr8(raw, f"{what} frame {index}")
                except FrameReadError as err:
                    yield FrameFailure(index, self.name, str(err), mono, wall, path=str(self.path))
                else:
                    yield Frame(image, index, self.name, mono, wall, path=str(self.path))
                index += 1
        finally:
            log.info("%s: stopped at frame index %d", what, index)
            safe_release(cap, what)
            life.move(SourceState.CLOSED, "end of video")
