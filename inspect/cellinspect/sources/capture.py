"""Live sources on cv2.VideoCapture: a local camera, and a network stream that reconnects.

Failure policy (both sources): a failed grab is yielded as a FrameFailure, never skipped.
When a source gives up, `frames()` simply ends; `state` is then FAILED and `last_error` says
why. Nothing is raised out of the iterator, so the station loop handles "source ended" in one
place and reads the reason from the source.

- CameraSource gives up after `max_failures` failed grabs in a row (a good grab resets it).
- StreamSource reopens the stream after every failed grab, waiting with capped exponential
  backoff (plus jitter); it gives up after `max_reconnects` reconnects in a row. The count
  starts again once a connection has delivered frames for `stable_s` seconds, so a stream
  that flaps (a finite file served as a stream, a camera rebooting in a loop) still ends.
  Every failed connect (the first one, and each reconnect attempt) is a FrameFailure too,
  whose reason names the stream (password redacted), the attempt and the error: a station
  in free-run on a stream records an outage as fail-safe results, one per attempt, instead
  of a silent gap.

`close()` may be called from any thread: it wakes a backoff wait at once and the loop ends
after the grab in progress returns (OpenCV's FFmpeg backend bounds that with the open/read
timeouts set by `open_stream_capture`). The capture is released by the reading thread.

The VideoCapture factory is injectable, so tests drive these sources with a fake capture.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import cv2
import numpy.typing as npt

from cellinspect.entities import Frame, FrameFailure, ImageU8, SourceItem
from cellinspect.errors import FrameReadError, SourceError
from cellinspect.sources.backoff import backoff_delay
from cellinspect.sources.base import SourceState
from cellinspect.sources.decode import to_bgr8
from cellinspect.sources.lifecycle import Lifecycle, LifecycleSource, StateListener

log = logging.getLogger(__name__)

STREAM_TIMEOUT_MS = 5000


class CaptureLike(Protocol):
    """The part of cv2.VideoCapture the sources use."""

    def isOpened(self) -> bool: ...  # noqa: N802 - OpenCV's name

    def read(self) -> tuple[bool, npt.NDArray[Any] | None]: ...

    def grab(self) -> bool: ...

    def set(self, propId: int, value: float) -> bool: ...  # noqa: N803 - OpenCV's name

    def release(self) -> None: ...


CaptureFactory = Callable[[int | str], CaptureLike]


def open_capture(target: int | str) -> CaptureLike:
    """Default factory: cv2.VideoCapture on a device index, device path or file."""
    return cv2.VideoCapture(target)


def open_stream_capture(target: int | str) -> CaptureLike:
    """Factory for network streams: bounded open and read waits, so close() is never stuck."""
    timeouts = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        STREAM_TIMEOUT_MS,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        STREAM_TIMEOUT_MS,
    ]
    return cv2.VideoCapture(target, cv2.CAP_ANY, timeouts)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***, for names, logs and error messages."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        netloc = f"{parts.username or ''}:***@{host}"
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return url


def try_open(
    factory: CaptureFactory, target: int | str, what: str
) -> tuple[CaptureLike | None, str]:
    """Open a capture; (None, reason) instead of raising, releasing a half-open one."""
    try:
        cap = factory(target)
    except Exception as err:
        return None, f"{what}: cannot open ({type(err).__name__}: {err})"
    try:
        opened = cap.isOpened()
    except Exception:
        log.exception("%s: isOpened failed", what)
        opened = False
    if not opened:
        safe_release(cap, what)
        return None, f"{what}: cannot open"
    return cap, ""


def try_grab(cap: CaptureLike, what: str) -> tuple[ImageU8 | None, str]:
    """Read one frame as BGR uint8; (None, reason) when the grab fails."""
    try:
        ok, image = cap.read()
    except Exception as err:
        return None, f"{what}: grab failed ({type(err).__name__}: {err})"
    if not ok or image is None:
        return None, f"{what}: grab failed"
    try:
        return to_bgr8(image, what), ""
    except FrameReadError as err:
        return None, f"grab failed: {err}"


def safe_release(cap: CaptureLike, what: str) -> None:
    try:
        cap.release()
    except Exception:
        log.exception("%s: release failed", what)


def capture_time() -> tuple[float, datetime]:
    """(monotonic, wall) timestamps for a frame, taken when it is read."""
    return time.monotonic(), datetime.now(UTC)


class CameraSource(LifecycleSource):
    """A local camera (device index or path); FAILED after `max_failures` bad grabs in a row."""

    def __init__(
        self,
        device: int | str = 0,
        width: int | None = None,
        height: int | None = None,
        max_failures: int = 10,
        name: str | None = None,
        capture_factory: CaptureFactory = open_capture,
        retry_s: float = 0.05,
        on_state: StateListener | None = None,
    ) -> None:
        if max_failures < 1:
            raise SourceError(f"camera {device}: max_failures must be >= 1, got {max_failures}")
        if isinstance(device, str) and device.strip().isdigit():
            device = int(device)  # "0" from a form or env var means the index, not a file
        self.device: int | str = device
        self.name = name or f"camera:{device}"
        self._width, self._height = width, height
        self._max_failures = max_failures
        self._factory = capture_factory
        self._retry_s = retry_s
        self._what = f"camera {device}"
        self._life = Lifecycle(self.name, on_state)

    def _configure(self, cap: CaptureLike) -> None:
        for prop, value in (
            (cv2.CAP_PROP_FRAME_WIDTH, self._width),
            (cv2.CAP_PROP_FRAME_HEIGHT, self._height),
        ):
            if value is not None and not cap.set(prop, float(value)):
                log.warning("%s: the driver refused property %d = %d", self._what, prop, value)

    def _run(self) -> Iterator[SourceItem]:
        life = self._life
        if life.stopping:
            return
        cap, why = try_open(self._factory, self.device, self._what)
        if cap is None:
            life.fail(why)
            return
        try:
            if not life.move(SourceState.OPEN):
                return
            self._configure(cap)
            frame_id = failures = 0
            while not life.stopping:
                image, why = try_grab(cap, self._what)
                mono, wall = capture_time()
                if image is not None:
                    failures = 0
                    yield Frame(image, frame_id, self.name, mono, wall)
                    frame_id += 1
                    continue
                failures += 1
                reason = f"{why} ({failures} in a row, limit {self._max_failures})"
                yield FrameFailure(frame_id, self.name, reason, mono, wall)
                frame_id += 1
                if failures >= self._max_failures:
                    life.fail(f"{self._what}: {failures} failed grabs in a row")
                    return
                life.wait(self._retry_s)
        finally:
            safe_release(cap, self._what)
            life.move(SourceState.CLOSED, "camera released")


class StreamSource(LifecycleSource):
    """A network stream (RTSP/HTTP, or anything VideoCapture opens) that reconnects."""

    def __init__(
        self,
        url: str,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 10.0,
        max_reconnects: int | None = None,
        name: str | None = None,
        capture_factory: CaptureFactory = open_stream_capture,
        jitter: float = 0.1,
        stable_s: float = 10.0,
        rng: random.Random | None = None,
        on_state: StateListener | None = None,
    ) -> None:
        shown = redact_url(url)
        if reconnect_initial_s <= 0 or reconnect_max_s <= 0:
            raise SourceError(f"stream {shown}: reconnect waits must be > 0")
        if max_reconnects is not None and max_reconnects < 0:
            raise SourceError(f"stream {shown}: max_reconnects must be >= 0 or None")
        if not 0.0 <= jitter <= 1.0:
            raise SourceError(f"stream {shown}: jitter must be within [0, 1], got {jitter}")
        self.url = url
        self.name = name or f"stream:{shown}"
        self._what = f"stream {shown}"
        self._initial_s, self._max_s = reconnect_initial_s, reconnect_max_s
        self._max_reconnects = max_reconnects
        self._factory = capture_factory
        self._jitter, self._rng = jitter, rng
        self._stable_s = stable_s
        self._reconnects = 0
        self._life = Lifecycle(self.name, on_state)

    @property
    def reconnects(self) -> int:
        """Reconnect attempts over the source's life (for metrics)."""
        return self._reconnects

    def _redact(self, text: str) -> str:
        """`text` with the URL's password hidden (an OpenCV error may quote the full URL)."""
        shown = redact_url(self.url)
        if shown == self.url:
            return text
        text = text.replace(self.url, shown)
        password = urlsplit(self.url).password
        return text.replace(f":{password}@", ":***@") if password else text

    def _open(self) -> tuple[CaptureLike | None, str]:
        cap, why = try_open(self._factory, self.url, self._what)
        return cap, self._redact(why)

    def _gap(self, frame_id: int, attempt: int, why: str) -> FrameFailure:
        """The failure item for a connect attempt that failed (attempt 0: the first connect)."""
        prefix = f"{self._what}: "
        detail = why[len(prefix) :] if why.startswith(prefix) else why
        if attempt == 0:
            what = "connect"
        else:
            limit = "" if self._max_reconnects is None else f"/{self._max_reconnects}"
            what = f"reconnect attempt {attempt}{limit}"
        reason = f"{self._what}: {what} failed: {detail}"
        log.warning("source %s: frame %d failed: %s", self.name, frame_id, reason)
        mono, wall = capture_time()
        return FrameFailure(frame_id, self.name, reason, mono, wall)

    def _run(self) -> Iterator[SourceItem]:
        life = self._life
        cap: CaptureLike | None = None
        frame_id = 0
        attempts = 0  # reconnects since the connection was last stable
        try:
            if life.stopping:
                return
            cap, why = self._open()
            if cap is None:
                yield self._gap(frame_id, 0, why)
                frame_id += 1
            while not life.stopping:
                if cap is None:
                    if self._max_reconnects is not None and attempts >= self._max_reconnects:
                        life.fail(f"{why}; gave up after {attempts} reconnects in a row")
                        return
                    attempts += 1
                    self._reconnects += 1
                    delay = backoff_delay(
                        attempts, self._initial_s, self._max_s, self._jitter, self._rng
                    )
                    limit = "" if self._max_reconnects is None else f"/{self._max_reconnects}"
                    note = f"{why}; reconnect {attempts}{limit} in {delay:.2f} s"
                    life.note_error(note)
                    if not life.move(SourceState.RECONNECTING, note) or life.wait(delay):
                        return
                    cap, why = self._open()
                    if cap is None and not life.stopping:
                        yield self._gap(frame_id, attempts, why)
                        frame_id += 1
                    continue
                if not life.move(SourceState.OPEN, f"{self._what} connected"):
                    return
                opened_at = time.monotonic()
                while not life.stopping:
                    image, why = try_grab(cap, self._what)
                    mono, wall = capture_time()
                    if image is None:
                        yield FrameFailure(frame_id, self.name, self._redact(why), mono, wall)
                        frame_id += 1
                        safe_release(cap, self._what)
                        cap = None
                        break
                    yield Frame(image, frame_id, self.name, mono, wall)
                    frame_id += 1
                    if attempts and mono - opened_at >= self._stable_s:
                        log.info("%s: stable again after %d reconnects", self._what, attempts)
                        attempts = 0
        finally:
            if cap is not None:
                safe_release(cap, self._what)
            life.move(SourceState.CLOSED, "stream closed")
