"""State, stop signal and last error of one source, with the allowed transitions enforced.

Every source owns one `Lifecycle`. The reading thread moves it (OPEN, RECONNECTING, FAILED,
CLOSED at the end); any other thread may call `close()`, which sets the stop event so sleeps
end at once, and moves to CLOSED. CLOSED and FAILED are terminal: a reader that wakes up after
a close cannot reopen the source, and a close after a failure keeps FAILED and its reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator

from cellinspect.entities import SourceItem
from cellinspect.errors import SourceError
from cellinspect.sources.base import SourceState

log = logging.getLogger(__name__)

StateListener = Callable[[SourceState, SourceState, str], None]
"""Called as listener(old, new, why) after every state change, from the thread that made it."""

TERMINAL = frozenset({SourceState.CLOSED, SourceState.FAILED})

ALLOWED: dict[SourceState, frozenset[SourceState]] = {
    SourceState.CREATED: frozenset(
        {SourceState.OPEN, SourceState.RECONNECTING, SourceState.CLOSED, SourceState.FAILED}
    ),
    SourceState.OPEN: frozenset({SourceState.RECONNECTING, SourceState.CLOSED, SourceState.FAILED}),
    SourceState.RECONNECTING: frozenset({SourceState.OPEN, SourceState.CLOSED, SourceState.FAILED}),
    SourceState.CLOSED: frozenset(),
    SourceState.FAILED: frozenset(),
}


class Lifecycle:
    """Thread-safe state machine plus the stop event a source's loop waits on."""

    def __init__(self, name: str, on_state: StateListener | None = None) -> None:
        self.name = name
        self._on_state = on_state
        self._lock = threading.Lock()
        self._state = SourceState.CREATED
        self._last_error: str | None = None
        self._started = False
        self._stop = threading.Event()

    @property
    def state(self) -> SourceState:
        return self._state

    @property
    def last_error(self) -> str | None:
        """Why the source FAILED (or the last recoverable problem while it reconnected)."""
        return self._last_error

    @property
    def stopping(self) -> bool:
        """True once close() was called or the source reached a terminal state."""
        return self._stop.is_set()

    def start(self) -> None:
        """Mark `frames()` as called; a second call is a programming error."""
        with self._lock:
            if self._started:
                raise SourceError(f"source {self.name}: frames() may be called only once")
            self._started = True

    def move(self, to: SourceState, why: str = "") -> bool:
        """Change state; False when the source is already CLOSED or FAILED (nothing changes).

        A transition outside `ALLOWED` from a live state is a bug and raises SourceError.
        """
        with self._lock:
            old = self._state
            if old is to:
                return True
            if old in TERMINAL:
                return False
            if to not in ALLOWED[old]:
                raise SourceError(f"source {self.name}: illegal state change {old} -> {to}")
            self._state = to
            if to is SourceState.FAILED or (to is SourceState.RECONNECTING and why):
                self._last_error = why or self._last_error
            if to in TERMINAL:
                self._stop.set()
        log.log(
            logging.WARNING if to is SourceState.FAILED else logging.INFO,
            "source %s: %s -> %s%s",
            self.name,
            old,
            to,
            f" ({why})" if why else "",
        )
        if self._on_state is not None:
            try:
                self._on_state(old, to, why)
            except Exception:
                log.exception("source %s: state listener failed", self.name)
        return True

    def note_error(self, why: str) -> None:
        """Record a recoverable problem (a failed reconnect) without changing state."""
        with self._lock:
            if self._state not in TERMINAL:
                self._last_error = why

    def fail(self, why: str) -> bool:
        """Move to FAILED, keeping `why` as last_error."""
        return self.move(SourceState.FAILED, why)

    def close(self, why: str = "closed") -> None:
        """Stop the loop soon (wakes any wait) and move to CLOSED unless already terminal."""
        self._stop.set()
        self.move(SourceState.CLOSED, why)

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`; returns True at once when the source is stopping."""
        return self._stop.wait(max(0.0, seconds))


class LifecycleSource:
    """Base of sources driven by a Lifecycle: state, last error, close, and a single run.

    Subclasses set `self._life` in `__init__` and implement `_run()`, the frame loop.
    """

    name: str
    _life: Lifecycle

    @property
    def state(self) -> SourceState:
        return self._life.state

    @property
    def last_error(self) -> str | None:
        return self._life.last_error

    def close(self) -> None:
        self._life.close()

    def frames(self) -> Iterator[SourceItem]:
        """Iterate once; a second call raises SourceError."""
        self._life.start()
        return self._run()

    def _run(self) -> Iterator[SourceItem]:
        raise NotImplementedError
