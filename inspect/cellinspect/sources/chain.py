"""Several sources read one after another, as one source: images and videos from one command.

Each segment is opened only when the chain reaches it, so a long list of videos never holds
more than one capture open, and a segment that cannot be opened (a corrupt video) becomes one
FrameFailure at its place in the order instead of ending the run: the same rule as a file that
is not an image. Items keep the frame ids and source names their segment gave them.

`close()` may be called from any thread: it stops the chain and closes the segment being
read, which ends soon after (each segment's own close semantics); later segments are never
opened. The chain is CLOSED when every segment has ended, even if one of them FAILED (that
segment already yielded the failure; its reason is kept as `last_error`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cellinspect.entities import FrameFailure, SourceItem
from cellinspect.errors import SourceError
from cellinspect.sources.base import FrameSource, SourceState
from cellinspect.sources.lifecycle import Lifecycle, LifecycleSource, StateListener

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Segment:
    """One part of a chain: how to open it, and the path a failure to open it names."""

    open: Callable[[], FrameSource]
    path: str | None = None


class ChainSource(LifecycleSource):
    """Yields every item of each segment in turn; segments are opened lazily, in order."""

    def __init__(
        self,
        segments: Sequence[Segment],
        name: str = "files",
        on_state: StateListener | None = None,
    ) -> None:
        self.name = name
        self._segments = tuple(segments)
        self._life = Lifecycle(name, on_state)
        self._lock = threading.Lock()
        self._current: FrameSource | None = None
        self._segment_error: str | None = None

    @property
    def segments(self) -> tuple[Segment, ...]:
        """The parts of this chain, in the order they will be read."""
        return self._segments

    @property
    def last_error(self) -> str | None:
        """Why the chain failed, else the last segment failure (open error or FAILED state)."""
        return self._life.last_error or self._segment_error

    def close(self) -> None:
        self._life.close()
        with self._lock:
            current = self._current
        if current is not None:
            current.close()

    def _open(self, segment: Segment) -> FrameSource | FrameFailure:
        """Open a segment under the lock (so close() sees it), or the failure saying why not."""
        mono, wall = time.monotonic(), datetime.now(UTC)
        try:
            source = segment.open()
        except SourceError as err:
            reason = str(err)
        except Exception as err:  # an opener bug must not end the chain: it is one bad input
            log.exception("source %s: unexpected error opening %s", self.name, segment.path)
            reason = f"{segment.path}: unexpected {type(err).__name__} while opening: {err}"
        else:
            self._current = source
            return source
        self._segment_error = reason
        log.warning("source %s: %s", self.name, reason)
        return FrameFailure(0, self.name, reason, mono, wall, path=segment.path)

    def _run(self) -> Iterator[SourceItem]:
        life = self._life
        if not life.move(SourceState.OPEN):
            return
        try:
            for segment in self._segments:
                with self._lock:
                    if life.stopping:
                        return
                    opened = self._open(segment)
                if isinstance(opened, FrameFailure):
                    yield opened
                    continue
                try:
                    yield from opened.frames()
                finally:
                    opened.close()
                    with self._lock:
                        self._current = None
                if opened.state is SourceState.FAILED:
                    self._segment_error = getattr(opened, "last_error", None) or (
                        f"{opened.name} failed"
                    )
        finally:
            life.move(SourceState.CLOSED, "end of chain")
