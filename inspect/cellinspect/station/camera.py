"""A recipe's frame source behind the station's triggered-camera seam.

The station asks for one picture per job (`acquire`). How a source answers depends on what
it is:

- **Queued** sources (files, folder, hot folder, video, synthetic in free run): every frame
  is a part, so frames wait in a bounded queue and each job takes the next one. The reader
  waits while the queue is full: nothing is dropped.
- **Live** sources (camera, stream) in PLC or software trigger mode: the camera runs freely
  and the part is under it when the trigger comes, so a job takes the first frame captured
  after its trigger. Frames in between are not parts and are let go.
- **Live** sources in free run: every frame is a part; a full queue drops its oldest frame,
  and the drop comes back as a FrameFailure, so it still becomes a fail-safe result.

A job that gets no frame within `frame_timeout_s` (a stream reconnecting, an empty hot
folder in trigger mode) gets a FrameFailure naming the source's state and last error: the
station turns it into a fail-safe result. A FrameFailure the source itself yields (a failed
grab, a reconnect attempt) is handed to the next job in queued modes and to the waiting job
in live modes.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from cellinspect.entities import FrameFailure, SourceItem
from cellinspect.sources.base import FrameSource, SourceState

log = logging.getLogger(__name__)

LIVE_SOURCE_TYPES = frozenset({"camera", "stream"})
_DROPPED = "dropped: the station fell behind the free-running camera"


class SourceCamera:
    """Reads a FrameSource on its own thread and answers one `acquire` per job."""

    def __init__(
        self,
        source: FrameSource,
        *,
        live: bool,
        every_frame: bool,
        frame_timeout_s: float = 1.0,
        queue_size: int = 8,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.name = source.name
        self.live = live
        self.every_frame = every_frame
        self.frame_timeout_s = frame_timeout_s
        self.queue_size = queue_size
        self._clock = clock
        self._cond = threading.Condition()
        self._queue: collections.deque[SourceItem] = collections.deque()
        self._drops: collections.deque[FrameFailure] = collections.deque()
        self._latest: SourceItem | None = None
        self._ended = False
        self._closing = False
        self._keep_late = False  # stop_reading(): keep, rather than drop, a frame in hand
        self._late: list[SourceItem] = []
        self.frames_read = 0
        self.failures_read = 0
        self.dropped = 0
        self.timeouts = 0
        self._thread = threading.Thread(target=self._read, name=f"camera:{self.name}", daemon=True)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SourceCamera:
        self._thread.start()
        return self

    def close(self) -> None:
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.source.close()
        self._thread.join(timeout=5)

    def stop_reading(self) -> list[SourceItem]:
        """Close the source and return every frame already read, oldest first, to be judged.

        At a stop in free run these were already taken from the source (a hot-folder file, a
        stream frame): judging them keeps the record complete instead of losing them. A frame
        the reader held while the stop came is kept too.
        """
        with self._cond:
            self._keep_late = True
        self.close()
        with self._cond:
            items: list[SourceItem] = [*self._drops, *self._queue, *self._late]
            self._drops.clear()
            self._queue.clear()
            self._late.clear()
        return items

    @property
    def ended(self) -> bool:
        """The source has no more frames and every queued one was taken."""
        with self._cond:
            return self._ended and not self._queue and not self._drops

    @property
    def state(self) -> SourceState:
        return self.source.state

    @property
    def reconnects(self) -> int:
        """Reconnects of the source (a stream's; 0 for sources that do not reconnect)."""
        return int(getattr(self.source, "reconnects", 0))

    @property
    def last_error(self) -> str | None:
        return getattr(self.source, "last_error", None)

    # ------------------------------------------------------------------ reader

    def _read(self) -> None:
        try:
            for item in self.source.frames():
                if isinstance(item, FrameFailure):
                    self.failures_read += 1
                else:
                    self.frames_read += 1
                if not self._offer(item):
                    return
        except Exception:  # the reason is the source's last_error; jobs then time out safely
            log.exception("camera %s: source failed", self.name)
        finally:
            with self._cond:
                self._ended = True
                self._cond.notify_all()

    def _offer(self, item: SourceItem) -> bool:
        with self._cond:
            if self._closing:
                if self._keep_late:
                    self._late.append(item)
                return False
            if self.every_frame and not self.live:
                while len(self._queue) >= self.queue_size and not self._closing:
                    self._cond.wait(0.1)
                if self._closing:
                    if self._keep_late:
                        self._late.append(item)
                    return False
                self._queue.append(item)
            elif self.every_frame:  # live, free run: drop the oldest, kept as a failure
                if len(self._queue) >= self.queue_size:
                    self._drops.append(FrameFailure.instead_of(self._queue.popleft(), _DROPPED))
                    self.dropped += 1
                self._queue.append(item)
            else:
                self._latest = item
            self._cond.notify_all()
            return True

    # ------------------------------------------------------------------ jobs

    def acquire(self, part_id: int, encoder: int, acquisition_id: int) -> SourceItem:
        """The frame of this job, or a FrameFailure saying why there is none."""
        trigger_mono = self._clock()
        deadline = trigger_mono + self.frame_timeout_s
        with self._cond:
            while True:
                item = self._take(trigger_mono)
                if item is not None:
                    return replace(item, part_id=part_id, encoder=encoder)
                remaining = deadline - self._clock()
                if remaining <= 0 or self._closing or (self._ended and not self._queue):
                    break
                self._cond.wait(min(remaining, 0.1))
        self.timeouts += 1
        return FrameFailure(
            frame_id=acquisition_id,
            source=self.name,
            reason=self._no_frame_reason(),
            part_id=part_id,
            encoder=encoder,
        )

    def next_item(self, timeout_s: float) -> SourceItem | None:
        """Free run: the next queued item, or None when none came within `timeout_s`."""
        deadline = self._clock() + timeout_s
        with self._cond:
            while True:
                item = self._pop()
                if item is not None:
                    return item
                remaining = deadline - self._clock()
                if remaining <= 0 or self._closing or self._ended:
                    return None
                self._cond.wait(min(remaining, 0.1))

    def _pop(self) -> SourceItem | None:
        if self._drops:  # older than anything still queued
            return self._drops.popleft()
        if self._queue:
            item = self._queue.popleft()
            self._cond.notify_all()
            return item
        return None

    def _take(self, trigger_mono: float) -> SourceItem | None:
        if self.every_frame or not self.live:
            return self._pop()
        latest = self._latest
        if latest is not None and latest.captured_mono >= trigger_mono:
            self._latest = None
            return latest
        if isinstance(latest, FrameFailure):  # the camera is failing now: say so at once
            self._latest = None
            return latest
        return None

    def _no_frame_reason(self) -> str:
        state = self.source.state
        why = f"no frame from {self.name} within {self.frame_timeout_s * 1000:.0f} ms"
        if self._ended and not self._queue:
            why += " (the source has ended)"
        extra = self.last_error
        if state is not SourceState.OPEN or extra:
            why += f" (source {state.value}" + (f": {extra}" if extra else "") + ")"
        return why
